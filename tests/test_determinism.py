"""Determinism: the same recipe, data and seed give the same validation metrics, the same weights and
artifacts whose outputs agree to fp32 rounding; the manifest records what produced them."""
from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from helpers import onnx_recipe_dict


@pytest.fixture(scope="module")
def rebuilt(tiny_model_dir, tmp_path_factory) -> Path:
    """tiny_onnx_build's recipe built a second time, from scratch, in another directory."""
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    out = tmp_path_factory.mktemp("rebuild") / "out"
    build(recipe_mod.build(onnx_recipe_dict(tiny_model_dir, out)))
    return out


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_same_seed_same_metrics(rebuilt, tiny_onnx_build):
    a, b = _summary(rebuilt), _summary(tiny_onnx_build)
    for key in ("original", "shipped"):
        assert a[key]["val_accuracy"] == b[key]["val_accuracy"]
    assert [h["val_accuracy"] for h in a["original"]["train"]["history"]] == [h["val_accuracy"] for h in b["original"]["train"]["history"]]
    assert [h["train_loss"] for h in a["original"]["train"]["history"]] == pytest.approx(
        [h["train_loss"] for h in b["original"]["train"]["history"]], rel=1e-6)
    for x, y in zip(a["artifacts"], b["artifacts"]):
        assert x["accuracy"] == y["accuracy"] and x["vs_original"]["top1_agreement"] == y["vs_original"]["top1_agreement"]


@pytest.mark.parametrize("model", ["original", "student"])
def test_same_seed_same_weights(rebuilt, tiny_onnx_build, model):
    from safetensors.numpy import load_file

    wa, wb = (load_file(str(o / model / "model.safetensors")) for o in (rebuilt, tiny_onnx_build))
    assert wa.keys() == wb.keys()
    worst = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    print(f"\ndeterminism: {model} weights, largest difference between the two builds {worst:.2e}")
    assert worst <= 1e-6


def test_same_seed_same_artifact_outputs(rebuilt, tiny_onnx_build):
    """Both builds' ONNX artifacts on the same text: equal to fp32 rounding (and the golden files agree)."""
    import runtime_py

    texts = json.loads((tiny_onnx_build / "bundle" / "golden.json").read_text())["texts"]
    texts += ["where is my parcel", "the app crashes when I upload a photo " * 4]
    la, lb = (runtime_py.load(o / "bundle").logits(texts) for o in (rebuilt, tiny_onnx_build))
    print(f"\ndeterminism: ONNX logits of the two builds, max-abs difference {float(np.abs(la - lb).max()):.2e}")
    np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-6)
    ga, gb = (json.loads((o / "bundle" / "golden.json").read_text()) for o in (rebuilt, tiny_onnx_build))
    assert ga["inputs"] == gb["inputs"] and ga["original_predictions"] == gb["original_predictions"]
    np.testing.assert_allclose(ga["original_logits"], gb["original_logits"], rtol=1e-5, atol=1e-6)


def test_manifest_records_versions_and_recipe_hash(rebuilt):
    from toolchain import recipe as recipe_mod

    m = json.loads((rebuilt / "bundle" / "manifest.json").read_text())
    for pkg in ("torch", "transformers", "executorch", "onnxruntime", "onnx", "tokenizers"):
        assert m["versions"][pkg] == version(pkg), pkg
    # The hash is of the fully resolved recipe shipped next to it, so a reader can check one against the other.
    shipped = recipe_mod.load(rebuilt / "bundle" / "recipe.toml")
    assert m["recipe_sha256"] == shipped.sha256() == _summary(rebuilt)["recipe_sha256"]


def test_truncation_is_counted_in_summary_report_and_manifest(rebuilt):
    """max_seq_len 16 cuts some sample texts: the count is in summary.json, report.md and the manifest."""
    s = _summary(rebuilt)["data"]["truncated_texts"]
    assert sum(s.values()) > 0, s
    m = json.loads((rebuilt / "bundle" / "manifest.json").read_text())
    assert m["data"]["truncated_texts"] == s and m["data"]["max_seq_len"] == 16
    report = (rebuilt / "report.md").read_text()
    assert "truncated" in report and str(s["train"]) in report


def test_student_seed_changes_the_student_only(tiny_model_dir, tiny_onnx_build, tmp_path):
    """[student] seed: another student from the same original, on the same splits (train.seed unchanged)."""
    from safetensors.numpy import load_file

    from toolchain import recipe as recipe_mod
    from toolchain.finetune import TrainConfig
    from toolchain.pipeline import build

    d = onnx_recipe_dict(tiny_model_dir, tmp_path / "out")
    d.setdefault("student", {})["seed"] = 5
    r = recipe_mod.build(d)
    assert recipe_mod.student_seed(r) == 5 and TrainConfig.from_recipe(r, "student").seed == 5
    assert TrainConfig.from_recipe(r, "train").seed == r.train.seed == 7
    build(r)
    a, b = _summary(tmp_path / "out"), _summary(tiny_onnx_build)
    assert a["data"] == b["data"]  # the same rows in every split
    assert a["original"]["val_accuracy"] == b["original"]["val_accuracy"]
    wa, wb = (load_file(str(o / "student" / "model.safetensors")) for o in (tmp_path / "out", tiny_onnx_build))
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) > 1e-4  # another student


def test_student_seed_defaults_to_train_seed_and_rejects_below_minus_one(tiny_model_dir, tmp_path):
    from toolchain import recipe as recipe_mod
    from toolchain.errors import RecipeError

    d = onnx_recipe_dict(tiny_model_dir, tmp_path / "out")
    assert recipe_mod.student_seed(recipe_mod.build(d)) == 7
    d.setdefault("student", {})["seed"] = -2
    with pytest.raises(RecipeError, match="student.seed"):
        recipe_mod.build(d)
