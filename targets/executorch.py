"""ExecuTorch target: torch.export → to_edge_transform_and_lower(XNNPACK) → .pte, delegation checked."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DelegationError, ExportError

# Compute ops that must run inside XNNPACK; finding one outside the delegate is a failed export.
MATMUL_OPS = ("aten.linear", "aten.mm", "aten.addmm", "aten.bmm", "aten.matmul", "aten.baddbmm",
              "aten.convolution", "quantized_decomposed", "torchao.")


@dataclass(frozen=True)
class ExecuTorchConfig:
    precision: str = "fp32"
    max_batch: int = 64
    max_seq_len: int = 128


def _op_name(target) -> str:
    """'aten.linear.default' for an (Edge)OpOverload, the plain name otherwise."""
    name = getattr(target, "_name", None) or getattr(target, "__name__", None) or str(target)
    return str(name).replace("::", ".")


def delegation_summary(exported_program) -> dict:
    """Count delegate calls and the aten ops left outside them in a lowered program."""
    delegates, outside = 0, {}
    for node in exported_program.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if "executorch_call_delegate" in name:
            delegates += 1
        elif name != "getitem":
            outside[name] = outside.get(name, 0) + 1
    undelegated = {k: v for k, v in outside.items() if any(m in k for m in MATMUL_OPS) and "embedding" not in k}
    return {"delegate_calls": delegates, "ops_outside": outside, "undelegated_matmuls": undelegated}


def program_constants(model, max_seq_len: int, metadata: dict | None = None) -> dict:
    """The constant methods every .pte carries (fp32, int8, debug twins): max_seq_len, num_labels and
    the numeric metadata entries (an app reads them without the manifest)."""
    constants = {"max_seq_len": int(max_seq_len), "num_labels": int(model.config.num_labels)}
    constants.update({k: v for k, v in (metadata or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return constants


def export(model, path: str | Path, cfg: ExecuTorchConfig, metadata: dict | None = None) -> dict:
    """Lower `model` (BertForSequenceClassification) to an XNNPACK .pte at `path`; returns export facts."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from .wrapper import export_program

    if cfg.precision == "fp16":
        # Measured with executorch 1.5.1 on x86: XNNPACK's fp16 path gave identical logits for every
        # input of a BERT (wrong), so fp16 weights are offered for ONNX only (targets/fp16.py).
        raise ExportError("fp16 is not supported for ExecuTorch (XNNPACK fp16 produced wrong outputs on x86); use it with onnx")
    if cfg.precision != "fp32":
        raise ExportError(f"ExecuTorch precision {cfg.precision!r} is not available in this build (fp32 only)")
    ep, _ = export_program(model, cfg.max_batch, cfg.max_seq_len)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                       constant_methods=program_constants(model, cfg.max_seq_len, metadata))
    summary = delegation_summary(edge.exported_program())
    if summary["delegate_calls"] == 0 or summary["undelegated_matmuls"]:
        raise DelegationError(f"XNNPACK did not take all matmul work: {summary['delegate_calls']} delegate calls, left outside: {summary['undelegated_matmuls']}")
    program = edge.to_executorch()
    path = Path(path)
    path.write_bytes(program.buffer)
    return {"delegate_calls": summary["delegate_calls"], "ops_outside_delegate": summary["ops_outside"]}
