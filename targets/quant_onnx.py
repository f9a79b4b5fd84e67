"""ONNX int8 through ONNX Runtime's quantization tools: fp32 export → transformer fusions → quantize.

Two modes: dynamic (QOperator: int8 weights, activation ranges computed per batch at run time; no
calibration) and static (QDQ: activation ranges calibrated on real task text). Numerically sensitive
nodes (LayerNorm, GELU, Softmax, residual and embedding-sum Adds) stay fp32 in static mode, and so do
activation×activation MatMuls (attention scores): only weight MatMuls and, optionally, the embedding
Gathers are quantized. Presets pick the integer types ONNX Runtime's own guidance gives per CPU.

The artifact keeps a map {module name: tensor name} (metadata `toolformer.module_outputs`, made from
the fp32 graph before fusion and quantization) so `toolformer debug` can name the layers of the
quantized graph.
"""
from __future__ import annotations

import ast
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError
from .formats import INT8_MODES as MODES
from .formats import ONNX_INT8_PRESETS

# ONNX Runtime's quantize_static guidance: (activation type, weight type, reduce_range).
PRESETS = {
    "x86-vnni": ("QUInt8", "QInt8", False),  # VNNI accumulates u8×s8 without saturation
    "x86-avx2": ("QUInt8", "QInt8", True),   # no VNNI: 7-bit weights avoid VPMADDUBSW saturation
    "arm64": ("QInt8", "QInt8", False),      # ARM kernels prefer symmetric int8 activations
}


def host_preset(machine: str | None = None, cpuinfo: str | None = None) -> str:
    """The preset "auto" resolves to on this CPU: x86-avx2 on an x86 CPU without VNNI (AVX2's VPMADDUBSW saturates
    u8×s8 products of full 8-bit weights, which the parity gate caught on an AVX2-only EPYC), else x86-vnni."""
    import platform
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return "x86-vnni"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return "x86-vnni"
    return "x86-vnni" if ("avx512_vnni" in cpuinfo or "avx_vnni" in cpuinfo) else "x86-avx2"


DEFAULT_EXCLUDED = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "Gelu", "BiasGelu",
                    "FastGelu", "Softmax", "Add", "Mul", "Where")
MODULE_MAP_KEY = "toolformer.module_outputs"


@dataclass(frozen=True)
class OnnxInt8Config:
    precision: str = "int8"
    max_batch: int = 64
    max_seq_len: int = 128
    opset: int = 18
    mode: str = "dynamic"
    per_channel: bool = True
    int8_embeddings: bool = True
    preset: str = "auto"                       # auto: host_preset()
    optimize: bool = True                      # onnxruntime.transformers fusions before quantizing
    exclude_op_types: tuple = DEFAULT_EXCLUDED  # kept fp32 by static quantization

    def __post_init__(self):
        if self.mode not in MODES:
            raise ExportError(f"ONNX int8 mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.preset not in ONNX_INT8_PRESETS:
            raise ExportError(f"ONNX int8 preset must be one of {', '.join(ONNX_INT8_PRESETS)}, got {self.preset!r}")
        if self.precision != "int8":
            raise ExportError(f"OnnxInt8Config is for int8, got precision {self.precision!r}")


def _scopes(node, key: str) -> list:
    for p in node.metadata_props:
        if p.key == key and p.value.startswith("["):
            try:
                return list(ast.literal_eval(p.value))
            except (ValueError, SyntaxError):
                return []
    return []


def module_outputs(model) -> dict:
    """{Hugging Face module name: output tensor} of every Linear and LayerNorm, from the exporter's name scopes."""
    out = {}
    for node in model.graph.node:
        scopes = _scopes(node, "pkg.torch.onnx.name_scopes")
        classes = _scopes(node, "pkg.torch.onnx.class_hierarchy")
        if len(scopes) < 2 or len(classes) < 2:
            continue
        leaf, cls = scopes[-2], str(classes[-2])
        if cls.endswith(".Linear") or cls.endswith(".LayerNorm"):
            # The last node inside the module produces its output (MatMul then Add for a Linear).
            out[leaf[len("model."):] if leaf.startswith("model.") else leaf] = node.output[0]
    return out


def stored_module_outputs(model) -> dict:
    """The module map stored in an int8 artifact, else one made from the graph's own name scopes."""
    for p in model.metadata_props:
        if p.key == MODULE_MAP_KEY:
            return json.loads(p.value)
    return module_outputs(model)


def _reader(batches: list, names: list):
    """An onnxruntime CalibrationDataReader over token-array batches."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            from tqdm.auto import tqdm  # drawn on a terminal only

            self._items = iter(tqdm([{n: np.ascontiguousarray(b[n], dtype=np.int64) for n in names} for b in batches],
                                    desc="calibrate onnx int8", unit="batch", leave=False, disable=None))

        def get_next(self):
            return next(self._items, None)

    return Reader()


def _optimize(src: Path, dst: Path, config) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    from toolchain.families import of as family_of

    # opt_level 0: the Python fusions only, so the graph stays free of CPU-specific ORT kernels.
    opt = optimize_model(str(src), model_type=family_of(config).ort_model_type, num_heads=int(config.num_attention_heads),
                         hidden_size=int(config.hidden_size), opt_level=0)
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def export(model, path: str | Path, cfg: OnnxInt8Config, metadata: dict | None = None,
           calibration: list | None = None, fp32_source: str | Path | None = None) -> dict:
    """Export `model` to fp32 ONNX (or start from `fp32_source`, an fp32 artifact of the same model and shapes:
    targets.onnx.load_graph), fuse, quantize to int8 at `path`; returns export facts."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from .onnx import OnnxConfig
    from .onnx import export as export_fp32

    if cfg.mode == "static" and not calibration:
        raise ExportError("static int8 needs calibration text (token arrays of real task text)")
    preset = host_preset() if cfg.preset == "auto" else cfg.preset
    act_type, weight_type, reduce_range = PRESETS[preset]
    path = Path(path)
    facts = {"mode": cfg.mode, "per_channel": cfg.per_channel, "preset": preset, "preset_asked": cfg.preset,
             "reduce_range": reduce_range,
             "int8_embeddings": cfg.int8_embeddings}
    with tempfile.TemporaryDirectory(prefix="toolformer-int8-", dir=path.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(model, fp32, OnnxConfig(precision="fp32", max_batch=cfg.max_batch, max_seq_len=cfg.max_seq_len,
                                            opset=cfg.opset), metadata, fp32_source=fp32_source)
        facts["traced"] = fp32_source is None
        src_model = onnx.load(str(fp32), load_external_data=False)
        modules = module_outputs(src_model)
        props = {p.key: p.value for p in src_model.metadata_props}
        src = fp32
        if cfg.optimize:
            src = Path(tmp) / "fused.onnx"
            facts["fusions"] = _optimize(fp32, src, model.config)
        graph = onnx.load(str(src), load_external_data=False).graph
        input_names = [i.name for i in graph.input]
        quant_out = Path(tmp) / "int8.onnx"
        # ORT logs a pre-processing hint on every call; the fp32 graph is already shape-inferred and fused.
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))
        try:
            if cfg.mode == "dynamic":
                ops = ["MatMul", "Attention"] + (["Gather", "EmbedLayerNormalization"] if cfg.int8_embeddings else [])
                quantize_dynamic(str(src), str(quant_out), op_types_to_quantize=ops, per_channel=cfg.per_channel,
                                 reduce_range=reduce_range, weight_type=getattr(QuantType, weight_type),
                                 extra_options={"MatMulConstBOnly": True})
            else:
                excluded = set(cfg.exclude_op_types) | (set() if cfg.int8_embeddings else {"Gather"})
                skip = [n.name for n in graph.node if n.op_type in excluded]
                quantize_static(str(src), str(quant_out), _reader(calibration, input_names), quant_format=QuantFormat.QDQ,
                                per_channel=cfg.per_channel, reduce_range=reduce_range,
                                activation_type=getattr(QuantType, act_type), weight_type=getattr(QuantType, weight_type),
                                nodes_to_exclude=skip, calibrate_method=CalibrationMethod.MinMax,
                                extra_options={"MatMulConstBOnly": True})
                facts.update({"activation_type": act_type, "excluded_nodes": len(skip), "calibration_batches": len(calibration),
                              "calibration_rows": int(sum(len(b["input_ids"]) for b in calibration))})
        finally:
            root.setLevel(level)
        m = onnx.load(str(quant_out))
    present = {o for n in m.graph.node for o in n.output}
    kept = {k: v for k, v in modules.items() if v in present}
    del m.metadata_props[:]
    for k, v in {**props, MODULE_MAP_KEY: json.dumps(kept)}.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    facts.update({"opset": cfg.opset, "nodes": len(m.graph.node), "op_types": ops, "quantized_nodes":
                  sum(v for k, v in ops.items() if k in ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention",
                                                         "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                                                         "QGemm", "QEmbedLayerNormalization"))})
    return facts
