"""ExecuTorch int8: PT2E quantization with the XNNPACK quantizer, int8 embedding tables, lowered to XNNPACK.

Stages, named as ExecuTorch's own tester names them: source transform (weight-only int8 embedding
tables through torchao) → export → quantize (prepare, calibrate on real text, convert) → re-export →
lower to XNNPACK → fuse the quantized embeddings → to_executorch. The quantized program before
lowering is shared with the debug twin (`debug_twin=True`): the same program with every Linear and
LayerNorm output tapped as an extra output (ExecuTorch's devtools intermediate-output taps), so
`toolformer debug` can read per-layer values from inside the XNNPACK delegate.

Only linears are quantized. The XNNPACK quantizer's global static config would also quantize every
add and mul, including the additive attention mask (0 / -10000) summed into the attention scores:
one int8 scale spanning -10000..10 leaves nothing of the scores. LayerNorm, softmax, GELU and the
residual adds stay fp32 (and, like in the fp32 artifact, LayerNorm runs outside the delegate).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import DelegationError, ExportError  # one error for matmul work left outside XNNPACK, fp32 or int8
from .executorch import program_constants
from .formats import INT8_MODES as MODES

# Tapped in the debug twin: the outputs that mark each sub-layer of a BERT block.
TAPPED_OPS = ("aten.linear.default", "aten.layer_norm.default")
# Ops that must not run outside XNNPACK in an int8 program (a quantized linear left outside, or the
# quantize/dequantize ops of one). Embedding tables are dequantized by `embedding_byte`, outside.
_MUST_BE_DELEGATED = ("linear", "addmm", "mm", "bmm", "quantize_per", "dequantize_per", "choose_qparams",
                      "quantize_affine", "dequantize_affine")


@dataclass(frozen=True)
class ExecuTorchInt8Config:
    precision: str = "int8"
    max_batch: int = 64
    max_seq_len: int = 128
    mode: str = "dynamic"         # dynamic: ranges per batch at run time (the recipe default, measured); static: calibrated
    per_channel: bool = True      # per-output-channel weight scales (per-tensor is lossy on encoders)
    int8_embeddings: bool = True  # weight-only int8 embedding tables (most of a small BERT's bytes)
    debug_twin: bool = False      # also write <stem>.debug.pte + <stem>.debug.json for `toolformer debug`

    def __post_init__(self):
        if self.mode not in MODES:
            raise ExportError(f"ExecuTorch int8 mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.precision != "int8":
            raise ExportError(f"ExecuTorchInt8Config is for int8, got precision {self.precision!r}")


def _to_tensors(arrays: dict):
    import numpy as np
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.int64))
                 for k in ("input_ids", "attention_mask", "token_type_ids"))


def _int8_embeddings_(wrapper) -> int:
    """Weight-only int8 (per-row) embedding tables through torchao; returns how many were quantized."""
    import torch
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    tables = [m for m in wrapper.modules() if isinstance(m, torch.nn.Embedding)]
    for m in tables:
        # padding_idx only shapes gradients; the embedding_byte fusion pattern has no padding_idx
        # argument, so a table that keeps it stays an fp32 dequantize + gather in the program.
        m.padding_idx = None
    quantize_(wrapper, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
              filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Embedding))
    return len(tables)


def quantize_program(model, cfg: ExecuTorchInt8Config, calibration: list | None):
    """The quantized ExportedProgram (before lowering); `calibration`: token-array dicts of real text."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .wrapper import EdgeClassifier, dynamic_shapes, example_inputs

    if cfg.mode == "static" and not calibration:
        raise ExportError("static int8 needs calibration text (token arrays of real task text)")
    # A private copy: the source model keeps its fp32 tables, attention implementation and padding_idx.
    wrapper = EdgeClassifier(copy.deepcopy(model).cpu().eval()).eval()
    tables = _int8_embeddings_(wrapper) if cfg.int8_embeddings else 0
    args = example_inputs(2, min(16, cfg.max_seq_len), model.config.vocab_size)
    shapes = dynamic_shapes(cfg.max_batch, cfg.max_seq_len)
    with torch.no_grad():
        ep = torch.export.export(wrapper, args, dynamic_shapes=shapes, strict=False)
        qconfig = get_symmetric_quantization_config(is_per_channel=cfg.per_channel, is_dynamic=cfg.mode == "dynamic")
        quantizer = XNNPACKQuantizer().set_operator_type(torch.ops.aten.linear.default, qconfig)
        prepared = prepare_pt2e(ep.module(), quantizer)
        # Weight observers need one pass in either mode; static mode also learns activation ranges here.
        batches = [_to_tensors(a) for a in calibration] if calibration else [args]
        from tqdm.auto import tqdm  # drawn on a terminal only

        for batch in tqdm(batches if cfg.mode == "static" else batches[:1], desc="calibrate executorch int8",
                          unit="batch", leave=False, disable=None if cfg.mode == "static" else True):
            prepared(*batch)
        converted = convert_pt2e(prepared)
        qep = torch.export.export(converted, args, dynamic_shapes=shapes, strict=False)
    facts = {"mode": cfg.mode, "per_channel": cfg.per_channel, "int8_embedding_tables": tables,
             "calibration_batches": len(batches) if cfg.mode == "static" else 0,
             "calibration_rows": int(sum(len(b[0]) for b in batches)) if cfg.mode == "static" else 0}
    return qep, facts


def _fuse_quantized_embeddings(edge) -> None:
    """Rewrite dequantize_affine → embedding into quantized_decomposed.embedding_byte.

    ExecuTorch's own fusion (to_executorch with do_quant_fusion_and_const_prop) reads the table
    values from parameters and buffers only; after PT2E's convert and re-export, torchao's int8
    tables are lifted constants, so the pattern's zero-point check never matched. Same pass, with
    the constants included.
    """
    from executorch.exir.passes.quant_fusion_pass import QuantFusionPass
    from torch.export.graph_signature import TensorArgument

    prog = edge.exported_program()
    values = {}
    for spec in prog.graph_signature.input_specs:
        if isinstance(spec.arg, TensorArgument):
            if spec.target in prog.state_dict:
                values[spec.arg.name] = prog.state_dict[spec.target]
            elif spec.target in prog.constants:
                values[spec.arg.name] = prog.constants[spec.target]
    QuantFusionPass(_fix_node_meta_val=True, node_value_dict=values)(prog.graph_module)


def delegation_report(exported_program) -> dict:
    """Per-op counts inside and outside the XNNPACK delegates (ExecuTorch's devtools delegation info)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(exported_program.graph_module)
    inside = {k: v.delegated for k, v in info.delegation_by_operator.items() if v.delegated}
    outside = {k: v.non_delegated for k, v in info.delegation_by_operator.items() if v.non_delegated}
    quant_inside = {k: v for k, v in inside.items() if "quantize" in k or "choose_qparams" in k}
    bad = {k: v for k, v in outside.items() if any(m in k for m in _MUST_BE_DELEGATED) and "embedding" not in k}
    return {"delegate_calls": info.num_delegated_subgraphs, "linears_delegated": inside.get("aten_linear_default", 0),
            "quant_ops_delegated": sum(quant_inside.values()), "ops_inside": inside, "ops_outside": outside,
            "undelegated": bad}


def check_delegation(report: dict) -> None:
    """Raise DelegationError unless every linear and its quantize/dequantize ops run inside XNNPACK."""
    if report["undelegated"] or not report["linears_delegated"] or not report["quant_ops_delegated"]:
        raise DelegationError(
            f"XNNPACK did not take the quantized linears: {report['linears_delegated']} linears and "
            f"{report['quant_ops_delegated']} quantize ops delegated; left outside: {report['undelegated']}")


def _leaf_module(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else node.name
    # The exported wrapper holds the classifier as `.model`: strip it to get the Hugging Face names.
    return path[len("model."):] if path.startswith("model.") else path


def tap_points(ep) -> dict:
    """{node to tap: module name} for every Linear and LayerNorm output of a (quantized) program.

    In a static int8 program a linear's output goes straight into a quantize op, and XNNPACK only
    takes the quantized linear in that shape: tapping the linear itself left it (and its weights'
    dequantize) outside the delegate. The dequantized value after it is tapped instead, which is
    also what the next op reads.
    """
    points = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or str(node.target) not in TAPPED_OPS:
            continue
        tapped, users = node, list(node.users)
        if len(users) == 1 and "quantize_per_tensor" in str(users[0].target):
            dqs = [u for u in users[0].users if "dequantize_per_tensor" in str(u.target)]
            tapped = dqs[0] if dqs else node
        points[tapped.name] = _leaf_module(node)
    return points


def lower(ep, constants: dict, taps: bool = False):
    """ExportedProgram → (ExecuTorch program, delegation report, tap list or None)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    tap_list = None
    if taps:
        from executorch.devtools.intermediate_output_tap import FULL_TENSOR, strip_taps_, tap_intermediate_outputs_

        ep = copy.deepcopy(ep)
        points = tap_points(ep)
        ep, specs = tap_intermediate_outputs_(ep, [(lambda n: n.op == "call_function" and n.name in points, FULL_TENSOR)])
        tap_list = [{"output": s.output_index, "module": points[s.node_name], "op": s.op_target} for s in specs]
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], constant_methods=constants)
    if taps:
        strip_taps_(edge)
    _fuse_quantized_embeddings(edge)
    report = delegation_report(edge.exported_program())
    program = edge.to_executorch(ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True))
    return program, report, tap_list


def twin_paths(path: str | Path) -> tuple[Path, Path]:
    """Where the debug twin of artifact `path` and its tap list live."""
    path = Path(path)
    return path.with_name(path.stem + ".debug.pte"), path.with_name(path.stem + ".debug.json")


def write_twin(ep, path: str | Path, constants: dict, info: dict) -> dict:
    """Lower `ep` with taps next to the artifact at `path`; returns the twin's facts."""
    program, _, taps = lower(ep, constants, taps=True)
    twin, meta = twin_paths(path)
    twin.write_bytes(program.buffer)
    meta.write_text(json.dumps({"artifact": Path(path).name, "taps": taps, **info}, indent=1), encoding="utf-8")
    return {"debug_twin": twin.name, "taps": len(taps)}


def export(model, path: str | Path, cfg: ExecuTorchInt8Config, metadata: dict | None = None,
           calibration: list | None = None) -> dict:
    """Quantize `model` to int8, lower it to an XNNPACK .pte at `path`, check delegation; returns export facts."""
    qep, facts = quantize_program(model, cfg, calibration)
    constants = program_constants(model, cfg.max_seq_len, metadata)
    program, report, _ = lower(qep, constants)
    check_delegation(report)
    path = Path(path)
    path.write_bytes(program.buffer)
    facts.update({"delegate_calls": report["delegate_calls"], "linears_delegated": report["linears_delegated"],
                  "quant_ops_delegated": report["quant_ops_delegated"], "ops_outside_delegate": report["ops_outside"]})
    if cfg.debug_twin:
        facts.update(write_twin(qep, path, constants, {"config": asdict(cfg)}))
    return facts


def export_fp32_twin(model, path: str | Path, max_batch: int, max_seq_len: int, metadata: dict | None = None) -> dict:
    """The debug twin of an fp32 .pte (same export as targets.executorch, plus taps)."""
    from .wrapper import export_program

    ep, _ = export_program(copy.deepcopy(model).cpu().eval(), max_batch, max_seq_len)
    return write_twin(ep, path, program_constants(model, max_seq_len, metadata), {"config": {"precision": "fp32"}})
