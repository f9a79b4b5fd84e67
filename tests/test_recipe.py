"""Recipe: typed sections, overrides, unknown keys and wrong types named, shipped recipes parse."""
from pathlib import Path

import pytest

from toolchain import recipe as R
from toolchain.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_valid():
    r = R.build({})
    assert r.student.num_layers == 2 and r.export.targets == ["executorch", "onnx"]
    assert len(r.sha256()) == 64


@pytest.mark.parametrize("path", sorted((ROOT / "samples" / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_parses(path):
    r = R.load(path)
    assert r.out


def test_unknown_key_is_named():
    with pytest.raises(UsageError, match=r"train\.epoch"):
        R.build({"train": {"epoch": 3}})
    with pytest.raises(UsageError, match="trian"):
        R.build({"trian": {}})


def test_wrong_type_is_named():
    with pytest.raises(UsageError, match=r"train\.batch_size must be an integer"):
        R.build({"train": {"batch_size": "big"}})
    with pytest.raises(UsageError, match=r"model\.trust_remote_code must be true or false"):
        R.build({"model": {"trust_remote_code": 1}})


def test_set_overrides_parse_toml_literals_and_strings():
    over = R.parse_set(["train.epochs=2", "export.targets=[\"onnx\"]", "data.train=foo.csv", "out=runs/z"])
    r = R.build(over)
    assert r.train.epochs == 2.0 and r.export.targets == ["onnx"] and r.data.train == "foo.csv" and r.out == "runs/z"
    with pytest.raises(UsageError, match="section.key"):
        R.parse_set(["epochs=2"])


def test_export_skip_leaves_out_named_artifacts_only():
    from toolchain.search import judged

    assert R.planned_artifacts(R.build({}).export) == ["executorch-fp32", "executorch-int8", "onnx-fp32", "onnx-int8"]
    r = R.build({"export": {"skip": "executorch-fp32", "precisions": ["fp32", "fp16", "int8"]}})
    assert R.planned_artifacts(r.export) == ["executorch-int8", "onnx-fp32", "onnx-fp16", "onnx-int8"]
    # The build walks this plan and prints each reason (toolchain.stages.export): one rule, in one place.
    assert [(t, p, why) for t, p, why in R.artifact_plan(r.export) if why] == [
        ("executorch", "fp32", "export.skip"), ("executorch", "fp16", "fp16 weights are offered for onnx only")]
    with pytest.raises(UsageError, match=r"export\.skip names artifacts .*\['executorch-fp16'\].*known: executorch-fp32"):
        R.build({"export": {"skip": ["executorch-fp16"]}})  # ExecuTorch has no fp16 artifact to skip
    with pytest.raises(UsageError, match="leaves no artifact"):
        R.build({"export": {"targets": ["onnx"], "precisions": ["fp32"], "skip": ["onnx-fp32"]}})
    # The search judges a shipped artifact: auto picks one export.skip keeps, an explicit skipped one is refused.
    kept = R.build({"search": {"trials": 2}, "export": {"skip": ["onnx-int8", "onnx-fp32"]}})
    assert judged(kept) == ("executorch", "int8")
    assert judged(R.build({"search": {"trials": 2}, "export": {"skip": ["onnx-int8"]}})) == ("onnx", "fp32")
    with pytest.raises(UsageError, match="judges onnx-int8, which export.skip leaves out"):
        R.build({"search": {"trials": 2, "target": "onnx", "precision": "int8"}, "export": {"skip": ["onnx-int8"]}})


def test_flags_override_recipe_file(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('out = "a"\n[train]\nepochs = 5.0\nmax_seq_len = 64\n')
    r = R.load(f, R.merge({}, {"train": {"epochs": 1.0}}))
    assert r.train.epochs == 1.0 and r.train.max_seq_len == 64 and r.out == "a"


def test_scalar_column_becomes_list_and_ranges_checked():
    assert R.build({"data": {"text_column": "sentence"}}).data.text_column == ["sentence"]
    with pytest.raises(UsageError, match="layer_selection"):
        R.build({"student": {"layer_selection": "middle"}})
    with pytest.raises(UsageError, match="export.targets"):
        R.build({"export": {"targets": ["tflite"]}})
    with pytest.raises(UsageError, match=r"parity\.golden_size \(40\) must be <= export\.max_batch \(16\)"):
        R.build({"export": {"max_batch": 16}, "parity": {"golden_size": 40}})  # was an internal error at package time


def test_resolved_recipe_round_trips(tmp_path):
    r = R.build({"train": {"epochs": 2.5}, "data": {"text_column": ["a", "b"]}})
    R.dump(r, tmp_path / "recipe.toml")
    assert R.load(tmp_path / "recipe.toml") == r


def test_missing_and_invalid_recipe_files(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        R.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        R.load(bad)


def test_quickstart_recipe_is_the_default():
    """samples/recipes/quickstart.toml spells out exactly what `toolformer build` with no arguments does."""
    import dataclasses

    from toolchain import data as D

    q, d = R.load(ROOT / "samples" / "recipes" / "quickstart.toml"), R.build({})
    assert Path(q.data.train).resolve() == D.default_train_file().resolve()
    assert Path(q.data.validation).resolve() == (D.SAMPLE_DIR / "dev.csv").resolve()
    q = dataclasses.replace(q, data=dataclasses.replace(q.data, train=d.data.train, validation=d.data.validation))
    assert q == d
