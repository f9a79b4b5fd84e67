"""ONNX target: torch.onnx.export (dynamo) with dynamic batch and sequence, then checked by onnx.checker."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError


@dataclass(frozen=True)
class OnnxConfig:
    precision: str = "fp32"
    max_batch: int = 64
    max_seq_len: int = 128
    opset: int = 18


def export(model, path: str | Path, cfg: OnnxConfig, metadata: dict | None = None) -> dict:
    """Export `model` to a single-file ONNX graph at `path`; returns export facts."""
    import warnings

    import onnx
    import torch

    from .wrapper import EdgeClassifier, dynamic_shapes, example_inputs

    if cfg.precision not in ("fp32", "fp16"):
        raise ExportError(f"ONNX precision {cfg.precision!r} is not available in this build (fp32, fp16)")
    wrapper = EdgeClassifier(model).eval()
    args = example_inputs(2, min(16, cfg.max_seq_len), model.config.vocab_size)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            wrapper, args, dynamo=True, opset_version=cfg.opset,
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
            dynamic_shapes=dynamic_shapes(cfg.max_batch, cfg.max_seq_len), verbose=False,
        )
        prog.optimize()
        prog.save(str(path), external_data=False)
    m = onnx.load(str(path))
    for k, v in (metadata or {}).items():
        entry = m.metadata_props.add()
        entry.key, entry.value = str(k), str(v)
    facts = {}
    if cfg.precision == "fp16":  # fp16 weights, fp32 arithmetic (see targets/fp16.py)
        from .fp16 import weights_to_fp16

        m, facts["fp16_initializers"] = weights_to_fp16(m)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"opset": cfg.opset, "nodes": len(m.graph.node), "op_types": ops, **facts}
