"""Every kind of bad input a user will hit, run through the real CLI (in this process through click's runner;
the cases in ISOLATED also as a real `python -m toolchain.cli` subprocess, where native writes to fd 2 show).

Each case must end with exit code 2, exactly one line on stderr that starts with `error:` and
names the offending file/column/key, no traceback, and nothing written: neither OUT, nor the
staging directory `.OUT.partial`, nor OUT's parent directory.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import SAMPLES, run_cli, tiny_recipe_dict

HEADER = "text,label\n"


def _rows(n: int = 40, labels=("billing", "shipping", "refund", "account")) -> list[tuple[str, str]]:
    words = ["parcel", "invoice", "password", "refund", "late", "charged", "login", "box", "money", "reset"]
    return [(f"my {words[i % len(words)]} is {words[(i * 3) % len(words)]} number {i}", labels[i % len(labels)]) for i in range(n)]


def _csv(path: Path, rows, header: str = HEADER, sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header.replace(",", sep) + "".join(f"{t}{sep}{l}\n" for t, l in rows), encoding="utf-8")
    return path


def _copy_model(src: Path, dest: Path, drop=(), config_edit=None) -> Path:
    shutil.copytree(src, dest)
    for name in drop:
        (dest / name).unlink()
    if config_edit:
        cfg = json.loads((dest / "config.json").read_text())
        config_edit(cfg)
        (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def _pickle_only(src: Path, dest: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    d = _copy_model(src, dest, drop=["model.safetensors"])
    torch.save(load_file(str(src / "model.safetensors")), d / "pytorch_model.bin")
    return d


def _mismatched_weights(src: Path, dest: Path) -> Path:
    """config.json says hidden 32, the safetensors hold a hidden-48 model: must not load as random weights."""
    from transformers import BertConfig, BertModel

    d = _copy_model(src, dest, drop=["model.safetensors"])
    cfg = BertConfig.from_pretrained(src)
    cfg.hidden_size, cfg.intermediate_size = 48, 96
    BertModel(cfg).save_pretrained(dest / "other")
    (dest / "other" / "model.safetensors").rename(d / "model.safetensors")
    shutil.rmtree(dest / "other")
    return d


def _remote_code(src: Path, dest: Path) -> Path:
    """A checkpoint whose config asks transformers to import modeling code shipped next to it."""
    d = _copy_model(src, dest, config_edit=lambda c: c.update(
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}))
    marker = dest.parent / "EVIL_CODE_RAN"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return d


def _unreadable(path: Path) -> Path:
    """A .csv that exists but cannot be read (root ignores file modes, so point it at /proc/self/mem: EIO)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/proc/self/mem")
    return path


# (id, setup(tmp, model_dir) -> extra CLI args, substrings the one error line must contain)
CASES = [
    ("train-missing", lambda t, m: ["--train", t / "nope.csv"], ["nope.csv", "no such file"]),
    ("train-is-directory", lambda t, m: ["--train", (t / "dir.csv").mkdir() or t / "dir.csv"], ["dir.csv", "not a file"]),
    ("train-unreadable", lambda t, m: ["--train", _unreadable(t / "locked.csv")], ["locked.csv", "cannot read"]),
    ("train-unknown-type", lambda t, m: ["--train", _csv(t / "train.txt", _rows())], ["train.txt", "unknown file type"]),
    ("validation-missing", lambda t, m: ["--validation", t / "dev.csv"], ["dev.csv", "no such file"]),
    ("test-missing", lambda t, m: ["--test", t / "test.csv"], ["test.csv", "no such file"]),
    ("tsv-named-csv", lambda t, m: ["--train", _csv(t / "train.csv", _rows(), sep="\t")], ["train.csv", "tab-separated"]),
    ("csv-named-tsv", lambda t, m: ["--train", _csv(t / "train.tsv", _rows())], ["train.tsv", "comma-separated"]),
    ("semicolon-csv", lambda t, m: ["--train", _csv(t / "train.csv", _rows(), sep=";")], ["train.csv", "';'"]),
    ("ragged-row", lambda t, m: ["--train", _csv(t / "train.csv", _rows() + [("a,b", "c,d")])], ["train.csv:42", "fields"]),
    ("text-column-missing", lambda t, m: ["--text-column", "review"], ["train.csv", "'review'", "--text-column"]),
    ("label-column-missing", lambda t, m: ["--label-column", "verdict"], ["train.csv", "'verdict'", "--label-column"]),
    ("pair-column-missing", lambda t, m: ["--text-pair-column", "sentence2"], ["train.csv", "'sentence2'"]),
    ("text-cell-empty", lambda t, m: ["--train", _csv(t / "train.csv", _rows(5) + [("", "billing")] + _rows(5))],
     ["train.csv", "row 7", "'text'", "empty"]),
    ("text-whitespace-only", lambda t, m: ["--train", _csv(t / "train.csv", _rows(3) + [("   \t ", "billing")] + _rows(5))],
     ["train.csv", "row 5", "'text'", "empty"]),
    ("label-cell-empty", lambda t, m: ["--train", _csv(t / "train.csv", _rows(3) + [("hello there", "")] + _rows(5))],
     ["train.csv", "row 5", "'label'", "empty"]),
    ("label-column-is-text", lambda t, m: ["--label-column", "text", "--text-column", "label"],
     ["train.csv", "'text'", "distinct"]),
    ("jsonl-text-not-string", lambda t, m: ["--train", _jsonl(t / "train.jsonl", {"text": ["a", "list"], "label": "billing"})],
     ["train.jsonl", "'text'", "string"]),
    ("jsonl-label-object", lambda t, m: ["--train", _jsonl(t / "train.jsonl", {"text": "hello", "label": {"id": 1}})],
     ["train.jsonl", "'label'"]),
    ("jsonl-not-json", lambda t, m: ["--train", _bad_jsonl(t / "train.jsonl")], ["train.jsonl:3", "JSON"]),
    ("validation-unseen-label", lambda t, m: ["--validation", _csv(t / "dev.csv", _rows(8, ("billing", "weather")))],
     ["dev.csv", "'weather'", "not seen in training"]),
    ("test-unseen-label", lambda t, m: ["--test", _csv(t / "test.csv", _rows(8, ("billing", "weather")))],
     ["test.csv", "'weather'", "not seen in training"]),
    ("recipe-labels-missing-one", lambda t, m: ["--set", 'data.labels=["billing","shipping"]'], ["train.csv", "not in data.labels"]),
    ("single-class-train", lambda t, m: ["--train", _csv(t / "train.csv", _rows(20, ("billing",)))], ["train.csv", "single class"]),
    ("train-header-only", lambda t, m: ["--train", _csv(t / "train.csv", [])], ["train.csv", "empty"]),
    ("train-zero-bytes", lambda t, m: ["--train", _touch(t / "train.csv")], ["train.csv", "empty"]),
    ("validation-header-only", lambda t, m: ["--validation", _csv(t / "dev.csv", [])], ["dev.csv", "empty"]),
    ("test-header-only", lambda t, m: ["--test", _csv(t / "test.csv", [])], ["test.csv", "empty"]),
    ("train-not-utf8", lambda t, m: ["--train", _latin1(t / "train.csv")], ["train.csv", "UTF-8", "line 4"]),
    ("model-missing", lambda t, m: ["--model", t / "no-model"], ["no-model", "no such model directory"]),
    ("model-is-file", lambda t, m: ["--model", _touch(t / "model.bin")], ["model.bin", "directory"]),
    ("model-no-config", lambda t, m: ["--model", _copy_model(m, t / "m", drop=["config.json"])], ["config.json"]),
    ("model-bad-config-json", lambda t, m: ["--model", _broken_config(m, t / "m")], ["config.json", "JSON"]),
    ("model-no-weights", lambda t, m: ["--model", _copy_model(m, t / "m", drop=["model.safetensors"])], ["no model weights"]),
    ("model-pickle-only", lambda t, m: ["--model", _pickle_only(m, t / "m")], ["pytorch_model.bin", "pickle", "safetensors"]),
    ("model-unsupported-arch", lambda t, m: ["--model", _copy_model(m, t / "m", config_edit=lambda c: c.update(model_type="gpt2"))],
     ["'gpt2'", "not supported"]),
    ("model-weights-mismatch", lambda t, m: ["--model", _mismatched_weights(m, t / "m")], ["model.safetensors", "config.json"]),
    ("model-remote-code", lambda t, m: ["--model", _remote_code(m, t / "m")], ["auto_map", "--trust-remote-code"]),
    ("model-no-tokenizer", lambda t, m: ["--model", _copy_model(m, t / "m", drop=["vocab.txt", "tokenizer.json"])], ["tokenizer"]),
    ("model-hub-id-offline", lambda t, m: ["--model", "nobody/no-such-model"], ["nobody/no-such-model"]),
    ("recipe-missing", lambda t, m: ["RECIPE", t / "nope.toml"], ["nope.toml", "no such file"]),
    ("recipe-not-toml", lambda t, m: ["RECIPE", _text(t / "r.toml", "[train\nepochs = ")], ["r.toml", "TOML"]),
    ("recipe-unknown-key", lambda t, m: ["RECIPE", _text(t / "r.toml", "[train]\nepochz = 2\n")], ["train.epochz"]),
    ("recipe-unknown-section", lambda t, m: ["RECIPE", _text(t / "r.toml", "[trian]\nepochs = 2\n")], ["'trian'"]),
    ("recipe-wrong-type", lambda t, m: ["RECIPE", _text(t / "r.toml", "[train]\nbatch_size = \"big\"\n")], ["train.batch_size", "integer"]),
    ("set-unknown-key", lambda t, m: ["--set", "student.layerz=2"], ["student.layerz"]),
    ("set-wrong-type", lambda t, m: ["--set", "train.epochs=many"], ["train.epochs", "number"]),
    ("set-malformed", lambda t, m: ["--set", "epochs"], ["epochs", "section.key=value"]),
    ("num-layers-too-many", lambda t, m: ["--num-layers", "9"], ["--num-layers 9", "4 layers"]),
    ("num-layers-negative", lambda t, m: ["--num-layers", "-1"], ["student.num_layers"]),
    ("max-seq-len-too-long", lambda t, m: ["--max-seq-len", "4096"], ["4096", "max_position_embeddings"]),
    ("out-exists", lambda t, m: ["OUT_EXISTS"], ["output directory exists", "--force"]),
]


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")
    return p


def _text(p: Path, s: str) -> Path:
    p.write_text(s, encoding="utf-8")
    return p


def _jsonl(p: Path, bad: dict) -> Path:
    rows = [{"text": t, "label": l} for t, l in _rows(6)] + [bad] + [{"text": t, "label": l} for t, l in _rows(6)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def _bad_jsonl(p: Path) -> Path:
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", label: z}\n', encoding="utf-8")
    return p


def _latin1(p: Path) -> Path:
    body = HEADER + "".join(f"{t},{l}\n" for t, l in _rows(2)) + "le café est froid,billing\n"
    p.write_bytes(body.encode("latin-1"))
    return p


def _broken_config(src: Path, dest: Path) -> Path:
    d = _copy_model(src, dest)
    (d / "config.json").write_text('{"model_type": "bert", ')
    return d


@pytest.fixture(scope="module")
def base_recipe(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny, fast recipe (ONNX only): if a bad input slipped through, the build would still end quickly."""
    import tomli_w

    d = tmp_path_factory.mktemp("bad-input-recipe")
    r = tiny_recipe_dict(tiny_model_dir, d / "unused", export={"targets": ["onnx"]})
    r.pop("out")
    path = d / "base.toml"
    path.write_text(tomli_w.dumps(r))
    return path


RESULTS: dict = {}
# One case per layer that refuses (data file, data content, model weights, recipe): also run in a real process.
ISOLATED = {"train-missing", "single-class-train", "model-weights-mismatch", "recipe-labels-missing-one"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, base_recipe, tiny_model_dir, tmp_path):
    name, setup, expect = case
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    runs = tmp_path / "runs"
    out = runs / "out"
    args = [str(a) for a in setup(inputs, tiny_model_dir)]
    recipe = str(base_recipe)
    if args and args[0] == "RECIPE":
        recipe, args = args[1], args[2:]
    before = None
    if args and args[0] == "OUT_EXISTS":
        args = args[1:]
        out.mkdir(parents=True)
        (out / "keep.txt").write_text("an earlier build")
        before = sorted(p.name for p in runs.iterdir())
    res = run_cli("build", recipe, "--out", out, *args, timeout=300, isolated=name in ISOLATED)
    err_lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in err_lines if line.startswith("error: ")]
    RESULTS[name] = (res.returncode, errors[0] if errors else res.stderr[-300:])
    assert res.returncode == 2, f"exit {res.returncode}\nstdout:\n{res.stdout[-2000:]}\nstderr:\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert len(errors) == 1, res.stderr
    assert err_lines == errors, f"stderr should be the one error line, got:\n{res.stderr}"
    for s in expect:
        assert s in errors[0], f"{s!r} not in {errors[0]!r}"
    if before is None:
        assert not runs.exists() or not any(runs.iterdir()), sorted(p.name for p in runs.iterdir())
    else:  # the existing OUT is untouched and nothing was added next to it
        assert sorted(p.name for p in runs.iterdir()) == before
        assert (out / "keep.txt").read_text() == "an earlier build"
    if name == "model-remote-code":
        assert not (inputs / "EVIL_CODE_RAN").exists(), "code shipped with the checkpoint ran"


def test_remote_code_flag_is_only_a_flag(tiny_model_dir, tmp_path):
    """--trust-remote-code sets model.trust_remote_code; the default recipe keeps it off."""
    from toolchain import recipe as recipe_mod

    assert recipe_mod.build({}).model.trust_remote_code is False
    res = run_cli("build", "--help")
    assert "--trust-remote-code" in res.stdout


def test_long_texts_are_truncated_and_counted(tiny_model_dir, tmp_path):
    """Texts longer than max_seq_len are not an error: they are cut, and counted per split."""
    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain import recipe as recipe_mod
    from toolchain.data import load_dataset

    long = " ".join(["parcel invoice password refund"] * 20)
    rows = _rows(20) + [(long, "billing"), (long + " late", "refund")]
    train = _csv(tmp_path / "train.csv", rows)
    r = recipe_mod.build(tiny_recipe_dict(tiny_model_dir, tmp_path / "out", data={"train": str(train), "validation": ""}))
    data = load_dataset(r.data, r.train.seed)
    tok = model_mod.save_tokenizer_json(str(tiny_model_dir), tmp_path / "tok" / "tokenizer.json")
    enc = TextEncoder(tok, r.train.max_seq_len)
    counts = {s.name: enc.count_truncated(s.texts) for s in data.splits()}
    assert sum(counts.values()) == 2
    assert enc.encode([long])["input_ids"].shape[1] == r.train.max_seq_len
