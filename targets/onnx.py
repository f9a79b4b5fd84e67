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


def export_graph(model, path: Path, cfg: OnnxConfig) -> None:
    """torch.onnx.export (dynamo) of `model` to a single fp32 ONNX file at `path`."""
    import warnings

    import torch

    from .wrapper import EdgeClassifier, dynamic_shapes, example_inputs

    wrapper = EdgeClassifier(model).eval()
    names = wrapper.input_names  # the family's inputs: no token_type_ids for DistilBERT/RoBERTa/XLM-R
    args = example_inputs(2, min(16, cfg.max_seq_len), model.config.vocab_size, names)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            wrapper, args, dynamo=True, opset_version=cfg.opset,
            input_names=list(names), output_names=["logits"],
            dynamic_shapes=dynamic_shapes(cfg.max_batch, cfg.max_seq_len, names), verbose=False,
        )
        prog.optimize()
        prog.save(str(path), external_data=False)


def load_graph(model, path: Path, cfg: OnnxConfig, fp32_source: str | Path | None):
    """The fp32 graph of `model` as an onnx ModelProto, without metadata: exported to `path`, or read from
    `fp32_source`, an fp32 artifact this target already exported from the same model with the same shapes and
    opset (a build exports fp32 first; its fp16 and int8 artifacts start from that graph instead of tracing again)."""
    import onnx

    if fp32_source is None:
        export_graph(model, path, cfg)
        m = onnx.load(str(path))
    else:
        m = onnx.load(str(fp32_source))
        if max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None) != cfg.opset:
            raise ExportError(f"{fp32_source} was exported at another opset than {cfg.opset}")
    del m.metadata_props[:]
    return m


def export(model, path: str | Path, cfg: OnnxConfig, metadata: dict | None = None,
           fp32_source: str | Path | None = None) -> dict:
    """Export `model` to a single-file ONNX graph at `path` (from `fp32_source` when given, see load_graph);
    returns export facts."""
    import onnx

    if cfg.precision not in ("fp32", "fp16"):
        raise ExportError(f"ONNX precision {cfg.precision!r} is not available in this build (fp32, fp16)")
    path = Path(path)
    m = load_graph(model, path, cfg, fp32_source)
    for k, v in (metadata or {}).items():
        entry = m.metadata_props.add()
        entry.key, entry.value = str(k), str(v)
    facts = {"traced": fp32_source is None}
    if cfg.precision == "fp16":  # fp16 weights, fp32 arithmetic (see targets/fp16.py)
        from .fp16 import weights_to_fp16

        m, facts["fp16_initializers"] = weights_to_fp16(m)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"opset": cfg.opset, "nodes": len(m.graph.node), "op_types": ops, **facts}
