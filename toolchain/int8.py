"""Int8 export glue: the recipe's [quant] section → a target's int8 config, and calibration text.

Calibration is real task text from the training split (seeded), tokenized exactly as the artifact
will see it at run time: padded to each batch's longest row, so padding is in the calibrated ranges.
"""
from __future__ import annotations

from targets.errors import ExportError

from .data import Split

CALIBRATION_BATCH = 16


def calibration_batches(split: Split, tokenizer_file, max_seq_len: int, n: int, seed: int,
                        batch_size: int = CALIBRATION_BATCH, input_names=None) -> list[dict]:
    """Token-array batches of `n` seeded rows of `split` (the training split)."""
    from runtime_py.tokenize import INPUT_NAMES, TextEncoder

    rows = split.subset(n, seed)
    enc = TextEncoder(tokenizer_file, max_seq_len, input_names=input_names or INPUT_NAMES)
    if getattr(split, "task", "") == "token-classification":  # sentences as words, tokenized as at run time
        from runtime_py.token import encode_words

        return [encode_words(enc, rows.texts[i:i + batch_size])[0] for i in range(0, len(rows), batch_size)]
    return [enc.encode(rows.texts[i:i + batch_size]) for i in range(0, len(rows), batch_size)]


def target_config(target: str, r, debug_twin: bool | None = None):
    """The int8 config of `target` ("executorch" | "onnx") from recipe `r`."""
    q = r.quant
    common = {"max_batch": r.export.max_batch, "max_seq_len": r.train.max_seq_len, "per_channel": q.per_channel,
              "int8_embeddings": q.int8_embeddings}
    if target == "executorch":
        from targets.quant_executorch import ExecuTorchInt8Config

        return ExecuTorchInt8Config(mode=q.executorch_mode, debug_twin=q.debug_twins if debug_twin is None else debug_twin,
                                    **common)
    if target == "onnx":
        from targets.quant_onnx import OnnxInt8Config

        return OnnxInt8Config(mode=q.onnx_mode, opset=r.export.opset, preset=q.onnx_preset, optimize=q.onnx_optimize,
                              exclude_op_types=tuple(q.onnx_exclude_op_types), **common)
    raise ExportError(f"no int8 path for target {target!r}")


def needs_calibration(target: str, r) -> bool:
    """Static modes learn activation ranges from text; dynamic ones only need one pass (any batch)."""
    mode = r.quant.executorch_mode if target == "executorch" else r.quant.onnx_mode
    return mode == "static"


def export_int8(target: str, model, path, r, metadata: dict, train_split: Split, tokenizer_file,
                debug_twin: bool | None = None, fp32_source=None) -> dict:
    """Quantize `model` for `target` at `path` as recipe `r` says, calibrated on `train_split`; returns export facts.
    `fp32_source`: the build's fp32 ONNX artifact of the same model, quantized instead of a fresh trace (onnx only)."""
    import targets

    cfg = target_config(target, r, debug_twin)
    n = r.quant.calibration_samples if needs_calibration(target, r) else CALIBRATION_BATCH
    from .families import of

    calib = calibration_batches(train_split, tokenizer_file, r.train.max_seq_len, n, r.train.seed,
                                input_names=of(model).inputs)
    extra = {"fp32_source": fp32_source} if fp32_source is not None else {}
    facts = targets.get(target, "int8").export(model, path, cfg, metadata, calibration=calib, **extra)
    if needs_calibration(target, r):
        facts["calibration_source"] = f"{sum(len(b['input_ids']) for b in calib)} rows of {train_split.source or 'the training split'} (seed {r.train.seed})"
    return facts
