"""Model families: one adapter per architecture, so every stage reaches a model's parts the same way.

The adapter contract (families/base.py `Family`; one file per family, e.g. families/bert.py):

- `name`, `model_types`: the family and the `config.model_type` values it serves.
- `inputs`: what the model's forward takes, in the exported graph's order
  (("input_ids", "attention_mask", "token_type_ids") for BERT; a family without token types omits it).
- `ort_model_type`: onnxruntime.transformers' optimizer name for the family's fusions (int8 ONNX).
- `position_offset`: position ids are arange(seq) + offset (0 for BERT; RoBERTa-style models use
  padding_idx + 1), so position pruning keeps rows [offset, offset + max_seq_len).
- model-level paths (dotted, from the task model): `embeddings`, `word_embeddings`, `position_embeddings`,
  `token_type_embeddings` (or None), `embedding_norm`, `layer_list`, `pooler` (or None), `classifier`, `dropout`.
- layer-level paths (from one transformer layer): `attention` (holds the head count), `query`, `key`,
  `value`, `attention_out`, `ffn` (the activation module), `ffn_in`, `ffn_out`.
- behaviour a family may override: `embed` (embeddings from the inputs), `run_layer`, `classify`
  (pooler → dropout → classifier, i.e. how the head is built on the hidden states), `set_num_heads`,
  `block_of` / `is_trunk` (the debug taps).

Truncation, head/FFN pruning, vocabulary/position pruning, distillation taps, the export wrapper
(targets/wrapper.py) and `toolformer debug` reach model parts only through an adapter. Adding a family
is a new file here (subclass `Family`, set the paths, `FAMILY = ...`), its name in `_MODULES`, and a row
in tests/test_families.py's table of tested stages.
"""
from __future__ import annotations

import importlib

from ..errors import FamilyError
from .base import Family

_MODULES = ("bert", "distilbert", "roberta", "electra")  # one file per family
_REGISTRY: dict[str, Family] = {}


def load_all() -> dict[str, Family]:
    if not _REGISTRY:
        for name in _MODULES:
            fam = importlib.import_module(f"{__name__}.{name}").FAMILY
            for mt in fam.model_types:
                _REGISTRY[mt] = fam
    return _REGISTRY


def supported() -> tuple[str, ...]:
    """Every model_type some family serves."""
    return tuple(sorted(load_all()))


def get(model_type: str) -> Family:
    """The adapter for `model_type`; FamilyError names it and the supported ones when there is none."""
    try:
        return load_all()[model_type]
    except KeyError:
        raise FamilyError(f"model_type {model_type!r} is not supported: no model family adapter for it "
                          f"(supported: {', '.join(supported())})") from None


def of(model) -> Family:
    """The adapter for a model (or a config)."""
    config = getattr(model, "config", model)
    return get(getattr(config, "model_type", None))


__all__ = ["Family", "get", "of", "supported"]
