"""LoRA fine-tuning of the original through `peft`, merged back into a plain checkpoint.

`train.method = "lora"` wraps the original in a peft model (task type SEQ_CLS, so the new
classification head is in `modules_to_save` and trained in full), trains only the low-rank
adapters and the head with the ordinary loop (toolchain.finetune.train: CPU, Accelerate, several
processes, per-epoch checkpoints of the trainable weights for `--resume`), then merges the
adapters (`merge_and_unload`). Everything downstream (student, distillation teacher, export,
parity, bundle) sees an ordinary model; the adapter itself is kept in `original/adapter/`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .errors import RecipeError

# Default LoRA targets per model family, as peft matches module names (the last dotted parts).
# BERT: every Linear of the encoder - the attention projections (query, key, value), the attention
# output and both FFN projections (all named `dense`), and the pooler's `dense` that feeds the head.
# peft's own default for bert is query + value only; benchmarks/lora.py measures both (docs/lora.md).
LORA_TARGETS = {"bert": ["query", "key", "value", "dense"]}

ADAPTER_DIR = "adapter"
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md")


def target_modules(model, requested: list[str] | tuple = ()) -> list[str]:
    """The module names to adapt: `requested` or the family default, each checked against the model.

    A name matches as peft matches it (the whole module name or its last dotted parts) and must be
    a Linear layer outside the head; otherwise a one-line UsageError lists the names that exist.
    """
    import torch

    mtype = getattr(model.config, "model_type", "")
    names = list(requested) or LORA_TARGETS.get(mtype)
    if not names:
        raise RecipeError(f"train.lora_target_modules: no default LoRA targets for model_type {mtype!r}; name them "
                         f"(known families: {', '.join(LORA_TARGETS)})")
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.startswith("classifier")]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
    for t in names:
        if not any(n == t or n.endswith("." + t) for n in linear):
            raise RecipeError(f"train.lora_target_modules: {t!r} names no Linear module of the model "
                             f"(Linear modules it has: {', '.join(leaves)})")
    return list(names)


def apply(model, r):
    """The original wrapped for LoRA training with `r.train`'s rank, alpha, dropout and targets."""
    from peft import LoraConfig, get_peft_model

    t = r.train
    cfg = LoraConfig(task_type="SEQ_CLS", r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                     target_modules=target_modules(model, t.lora_target_modules))
    return get_peft_model(model, cfg)


def param_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters: for a peft model, the adapters + head against everything it holds."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(trainable), int(sum(p.numel() for p in model.parameters()))


def merge(peft_model, out_dir: Path | None):
    """Merge the adapters into the weights; with `out_dir`, keep the adapter in out_dir/adapter and
    write the merged model there as a plain Hugging Face checkpoint. Returns the plain model."""
    if out_dir is not None:
        out_dir = Path(out_dir)
        for name in _ADAPTER_FILES:  # what train() saved at the best epoch: the adapter, not a model
            (out_dir / name).unlink(missing_ok=True)
        adapter = out_dir / ADAPTER_DIR
        shutil.rmtree(adapter, ignore_errors=True)
        peft_model.save_pretrained(adapter)
    model = peft_model.merge_and_unload()
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return model


def train_original(model, r, train_split, val_split, encoder, cfg, out_dir: Path, save: bool = True):
    """Fine-tune the original by `r.train.method`; returns (plain model, TrainResult).

    `save`: this process writes out_dir (the main one); the others train and merge only.
    """
    import json

    from .finetune import train

    if r.train.method != "lora":
        return model, train(model, train_split, val_split, encoder, cfg, out_dir, "original")
    peft_model = apply(model, r)
    # train() counts what is trainable (adapters + head) against all the peft model holds.
    res = train(peft_model, train_split, val_split, encoder, cfg, out_dir, "original")
    res.method, res.lora_r, res.lora_alpha = "lora", r.train.lora_r, r.train.lora_alpha
    res.lora_target_modules = sorted(peft_model.peft_config["default"].target_modules)
    model = merge(peft_model, out_dir if save else None)
    if save:  # train() wrote it before the method was known
        (Path(out_dir) / "train_result.json").write_text(json.dumps(res.to_dict(), indent=2))
    return model, res
