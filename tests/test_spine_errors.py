"""Issue 2's error list through the CLI: one line, exit 2, no traceback, nothing written."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolchain.cli import main

from helpers import SAMPLES


@pytest.fixture
def invoke(tmp_path):
    def run(*args):
        out = tmp_path / "out"
        res = CliRunner().invoke(main, ["build", "--out", str(out), *map(str, args)])
        return res, out
    return run


def _assert_clean_failure(res, out, match):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    err = res.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and match in err, err
    assert "Traceback" not in res.output
    assert not out.exists() and not (out.parent / f".{out.name}.partial").exists()


def test_missing_file(invoke, tmp_path):
    res, out = invoke("--train", tmp_path / "nope.csv")
    _assert_clean_failure(res, out, "nope.csv: no such file")


def test_missing_column(invoke):
    res, out = invoke("--train", SAMPLES / "train.csv", "--text-column", "review")
    _assert_clean_failure(res, out, "no text column 'review'")


def test_unknown_label_in_validation(invoke, tmp_path):
    v = tmp_path / "v.csv"
    v.write_text("text,label\nhello,greeting\n")
    res, out = invoke("--train", SAMPLES / "train.csv", "--validation", v)
    _assert_clean_failure(res, out, "'greeting' not seen in training")


def test_empty_split(invoke, tmp_path):
    v = tmp_path / "v.csv"
    v.write_text("text,label\n")
    res, out = invoke("--train", SAMPLES / "train.csv", "--validation", v)
    _assert_clean_failure(res, out, "validation split is empty")


def test_model_dir_without_weights(invoke, tmp_path, tiny_model_dir):
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    res, out = invoke("--model", m)
    _assert_clean_failure(res, out, "no model weights")


def test_non_bert_architecture(invoke, tmp_path, tiny_model_dir):
    m = tmp_path / "m"
    m.mkdir()
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (m / "config.json").write_text(json.dumps(cfg))
    res, out = invoke("--model", m)
    _assert_clean_failure(res, out, "model_type 'gpt2' is not supported")


def test_num_layers_out_of_range(invoke, tiny_model_dir):
    res, out = invoke("--model", tiny_model_dir, "--num-layers", "9")
    _assert_clean_failure(res, out, "--num-layers 9 out of range")


def test_unknown_set_key(invoke):
    res, out = invoke("--set", "train.epochz=1")
    _assert_clean_failure(res, out, "train.epochz")
