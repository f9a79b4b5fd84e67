"""Int8 artifacts: quantized ops delegated to XNNPACK, artifacts running through runtime_py and
`verify`, the export command, and gates failing on a deliberately broken calibration."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import run_cli, tiny_recipe_dict

TEXTS = ["how do I reset my password", "my card was charged twice for one order", "where is my parcel"]


def _manifest(build):
    return json.loads((build / "bundle" / "manifest.json").read_text())


def test_quantized_linears_are_delegated_to_xnnpack(tiny_int8_build):
    arts = {a["format"]: a for a in _manifest(tiny_int8_build)["artifacts"]}
    assert {a["precision"] for a in arts.values()} == {"int8"} and set(arts) == {"executorch", "onnx"}
    et = arts["executorch"]["export"]
    # 2 layers × (q, k, v, attention out, intermediate, output) + pooler + classifier, all inside XNNPACK.
    assert et["linears_delegated"] == 14, et
    assert et["quant_ops_delegated"] >= 2 * 14  # each linear's weight dequantize + activation q/dq
    outside = et["ops_outside_delegate"]
    assert not [k for k in outside if "linear" in k or "quantize_per" in k or "dequantize_affine" in k], outside
    assert outside.get("embedding_byte_default") == 3  # int8 word, position and token-type tables
    assert et["mode"] == "dynamic" and et["per_channel"]  # the default, chosen by measured accuracy
    on = arts["onnx"]["export"]
    assert on["mode"] == "dynamic" and on["op_types"].get("MatMulInteger", 0) == 14, on["op_types"]
    assert on["op_types"].get("DequantizeLinear", 0) == 3  # the three int8 embedding tables, after their Gathers


def test_static_int8_calibrates_on_training_text_and_delegates(tiny_int8_build, tmp_path):
    import targets
    from targets.quant_executorch import ExecuTorchInt8Config
    from toolchain.data import load_dataset
    from toolchain.compress.truncate import truncate
    from toolchain.debug import load_checkpoint
    from toolchain.int8 import calibration_batches
    from toolchain import recipe as recipe_mod

    r = recipe_mod.load(tiny_int8_build / "recipe.toml")
    train = load_dataset(r.data, r.train.seed).train
    calib = calibration_batches(train, tiny_int8_build / "student" / "tokenizer.json", 32, 48, r.train.seed)
    assert len(calib) == 3  # 48 training rows in batches of 16
    # The student cut to its first layer: static mode's quantize ops are per linear, so one layer shows them all,
    # and ExecuTorch lowering costs seconds per layer.
    model = truncate(load_checkpoint(tiny_int8_build / "student"), [0])
    facts = targets.get("executorch", "int8").export(model, tmp_path / "s.pte",
                                                    ExecuTorchInt8Config(mode="static", max_batch=16, max_seq_len=32),
                                                    calibration=calib)
    assert facts["calibration_rows"] == 48 and facts["linears_delegated"] == 8  # 6 in the layer + pooler + classifier
    # static: every linear's input and output quantize/dequantize pairs run inside XNNPACK as well
    assert facts["quant_ops_delegated"] >= 6 * 8 and not [k for k in facts["ops_outside_delegate"] if "quantize_per" in k]
    with pytest.raises(ValueError, match="calibration"):
        targets.get("executorch", "int8").export(load_checkpoint(tiny_int8_build / "student"), tmp_path / "x.pte",
                                                 ExecuTorchInt8Config(mode="static"), calibration=[])


def test_logit_matrix_cosine_judges_int8_and_tables_show_it():
    from runtime_py.parity import check, compare, gate_cosine

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (200, 2)).astype(np.float32)
    ref[0] = [0.05, -0.05]  # a near-tied row: a 0.1 change flips its direction
    got = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32)
    got[0] = [-0.03, 0.04]
    m = compare(got, ref)
    assert m["min_cosine"] < -0.9 and m["logit_cosine"] > 0.999  # one tied row vs the whole matrix
    int8_gate, fp32_gate = {"min_logit_cosine": 0.99, "min_top1": 0.95}, {"min_cosine": 0.9999}
    assert check(m, int8_gate) == [] and gate_cosine(m, int8_gate) == m["logit_cosine"]
    assert gate_cosine(m, fp32_gate) == m["min_cosine"] and check(m, fp32_gate)
    # Softmax ignores a per-row shift, and so does the metric; swapped labels on every row do not pass.
    assert compare(got + rng.normal(0, 5, (200, 1)).astype(np.float32), ref)["logit_cosine"] == pytest.approx(m["logit_cosine"], abs=1e-6)
    flipped = compare(got[:, ::-1].copy(), ref)
    assert flipped["logit_cosine"] < -0.99 and any("logit-matrix cosine" in r for r in check(flipped, int8_gate))


def test_check_delegation_refuses_work_left_outside():
    from targets.quant_executorch import DelegationError, check_delegation

    with pytest.raises(DelegationError):  # a quantized linear left to the portable kernels
        check_delegation({"undelegated": {"aten_linear_default": 1}, "linears_delegated": 13, "quant_ops_delegated": 40})
    with pytest.raises(DelegationError):  # linears delegated, but nothing quantized
        check_delegation({"undelegated": {}, "linears_delegated": 14, "quant_ops_delegated": 0})
    check_delegation({"undelegated": {}, "linears_delegated": 14, "quant_ops_delegated": 40})


def test_int8_artifacts_run_through_runtime_py_and_verify(tiny_int8_build):
    import runtime_py
    from runtime_py.verify import verify_bundle
    from toolchain.debug import load_checkpoint
    from toolchain.parity import torch_logits

    bundle = tiny_int8_build / "bundle"
    manifest = _manifest(tiny_int8_build)
    student = load_checkpoint(tiny_int8_build / "student")
    for key in ("executorch-int8", "onnx-int8"):
        model = runtime_py.load(bundle, artifact=key)
        preds = model.predict(TEXTS)
        assert [p["label"] in manifest["labels"] for p in preds] == [True] * 3
        got = model.logits(TEXTS)
        want = torch_logits(student, model.encode(TEXTS))
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() > 0.98 and (got.argmax(1) == want.argmax(1)).all(), (key, got, want)
        assert np.abs(got - want).max() > 0  # really quantized, not an fp32 artifact
    report = verify_bundle(bundle)
    assert report["passed"] and len(report["artifacts"]) == 2, report
    for art in manifest["artifacts"]:  # int8 thresholds from the recipe travel in the manifest
        assert art["gate"]["vs_reference"] == {"min_logit_cosine": 0.99, "min_top1": 0.95, "max_tie_scale": 8.0,
                                               "max_tie_floor": 1e-4, "min_decisive": 0.2,
                                               "decisive_waiver_cosine": 0.998}
        assert art["parity"]["passed"]


def test_export_command_writes_a_gated_int8_artifact(tiny_int8_build, tmp_path):
    out = tmp_path / "student-int8.onnx"
    res = run_cli("export", tiny_int8_build / "student", "--target", "onnx", "--precision", "int8",
                  "--out", out, "--set", "quant.onnx_mode=static", "--set", "quant.calibration_samples=32", timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "PASS" in res.stdout and out.is_file() and str(tiny_int8_build / "recipe.toml") in res.stdout
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no staging left behind
    bad = run_cli("export", tiny_int8_build / "student", "--target", "onnx", "--out", tmp_path / "x.pte")
    assert bad.returncode == 2 and "must end in .onnx" in bad.stderr and "Traceback" not in bad.stderr


def _sensitive_checkpoint(model_dir, dest, labels):
    """A random tiny classifier drawn with init std 0.15: at the default 0.02 a random tiny BERT gives
    nearly the same logits for every text, so no calibration could make a difference to them."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    cfg = BertConfig.from_pretrained(model_dir)
    cfg.initializer_range, cfg.num_labels, cfg.num_hidden_layers = 0.15, len(labels), 2
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(dest)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(dest)
    return dest


def test_broken_calibration_fails_the_gate(tiny_model_dir, tmp_path, monkeypatch):
    from toolchain import int8
    from toolchain import recipe as recipe_mod
    from toolchain.data import Split, load_dataset
    from toolchain.errors import GateError
    from toolchain.export import export_checkpoint

    r = recipe_mod.build(tiny_recipe_dict(tiny_model_dir, tmp_path / "out", quant={"onnx_mode": "static", "calibration_samples": 32}))
    ckpt = _sensitive_checkpoint(tiny_model_dir, tmp_path / "ckpt", load_dataset(r.data, 0).labels)
    good = export_checkpoint(ckpt, "onnx", "int8", tmp_path / "good.onnx", r)  # real training text: passes
    assert good["parity"]["passed"] and good["export"]["calibration_rows"] == 32

    real = int8.calibration_batches

    def degenerate(split, *args, **kwargs):
        # A broken calibration: one word repeated to full length stands in for every training text, so the
        # activation ranges come from an input nothing like the task's (good: cosine 0.9994; this: 0.977).
        return real(Split(split.name, [" ".join(["hello"] * 40)] * len(split), split.labels, split.source), *args, **kwargs)

    monkeypatch.setattr(int8, "calibration_batches", degenerate)
    out = tmp_path / "broken.onnx"
    with pytest.raises(GateError, match=r"parity gate failed.*logit-matrix cosine"):
        export_checkpoint(ckpt, "onnx", "int8", out, r)
    assert not out.exists() and not list(tmp_path.glob(".broken*"))


def test_auto_onnx_preset_follows_the_cpu():
    """quant.onnx_preset = auto (the default): 7-bit weights on an x86 CPU without VNNI, full 8-bit ones with it."""
    from targets.formats import ONNX_INT8_PRESETS
    from targets.quant_onnx import PRESETS, OnnxInt8Config, host_preset

    assert OnnxInt8Config().preset == "auto"
    assert host_preset("x86_64", "flags: fpu sse2 avx avx2 fma") == "x86-avx2"
    assert host_preset("x86_64", "flags: avx2 avx512f avx512_vnni") == "x86-vnni"
    assert host_preset("x86_64", "flags: avx2 avx_vnni") == "x86-vnni"
    assert host_preset("aarch64", "") == "x86-vnni"
    assert PRESETS[host_preset("x86_64", "avx2")][2] is True  # reduce_range
    assert host_preset() in PRESETS
    assert set(PRESETS) == set(ONNX_INT8_PRESETS) - {"auto"}  # every named preset has its quantization types
