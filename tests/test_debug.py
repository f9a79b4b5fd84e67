"""`toolformer debug`: the per-layer report names the layer whose weights were deliberately perturbed."""
from __future__ import annotations

import json
import shutil

import torch

from helpers import SAMPLES, run_cli

PERTURBED = "bert.encoder.layer.1.intermediate.dense"


def _perturbed_checkpoint(src, dest):
    """A copy of checkpoint `src` whose layer-1 intermediate dense weights carry strong noise."""
    from toolchain.debug import load_checkpoint

    shutil.copytree(src, dest)
    model = load_checkpoint(src)
    w = model.get_submodule(PERTURBED).weight
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 3 * w.std())
    model.save_pretrained(dest)
    return model


def _debug(artifact, reference, out):
    res = run_cli("debug", artifact, "--reference", reference, "--texts", SAMPLES / "dev.csv", "--num", "24",
                  "--max-seq-len", "32", "--json", out, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return json.loads(out.read_text()), res.stdout


def test_debug_executorch_names_the_perturbed_layer(tiny_int8_build, tmp_path):
    # The artifact (with its debug twin from the build) against a reference whose layer 1 was perturbed.
    ref = tmp_path / "perturbed"
    _perturbed_checkpoint(tiny_int8_build / "student", ref)
    art = tiny_int8_build / "artifacts" / "model-executorch-int8.pte"
    rep, text = _debug(art, ref, tmp_path / "et.json")
    assert rep["twin"]["twin_vs_artifact_max_abs"] <= 1e-5  # the twin computes exactly what the artifact does
    assert rep["grows_most"] == "bert.encoder.layer.1", text
    assert rep["worst"][0]["module"] == PERTURBED, text
    assert "error grows most in: bert.encoder.layer.1" in text
    # Against its true reference the same artifact shows int8 noise only, far below the perturbation.
    clean, _ = _debug(art, tiny_int8_build / "student", tmp_path / "clean.json")
    by = {r["module"]: r for r in rep["modules"]}
    assert max(r["growth"] for r in clean["modules"]) < by[PERTURBED]["growth"] / 5


def test_debug_onnx_names_the_perturbed_layer(tiny_int8_build, tmp_path):
    # The artifact exported from a perturbed model, against the clean checkpoint.
    import targets
    from targets.quant_onnx import OnnxInt8Config

    model = _perturbed_checkpoint(tiny_int8_build / "student", tmp_path / "perturbed")
    art = tmp_path / "drifting.onnx"
    targets.get("onnx", "int8").export(model, art, OnnxInt8Config(max_batch=16, max_seq_len=32))
    rep, text = _debug(art, tiny_int8_build / "student", tmp_path / "onnx.json")
    assert rep["grows_most"] == "bert.encoder.layer.1", text
    assert rep["worst"][0]["layer"] == "bert.encoder.layer.1", text
    assert rep["logits"]["max_abs"] > 0 and len(rep["modules"]) >= 8


def test_debug_needs_a_twin_for_executorch(tiny_build, tmp_path):
    res = run_cli("debug", tiny_build / "bundle" / "model-executorch-fp32.pte", "--reference", tiny_build / "student")
    assert res.returncode == 2 and "no debug twin" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("debug", tmp_path / "missing.onnx", "--reference", tiny_build / "student", "--texts", SAMPLES / "dev.csv")
    assert res.returncode == 2 and "no such artifact" in res.stderr
