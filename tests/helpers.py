"""Helpers the tests import (`from helpers import ...`): paths, the tiny random BERT, tiny recipes, run_cli.

Fixtures built from them live in tests/conftest.py.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "support_intents"
SHARED_DATA = ROOT.parent / "shared" / "data"


def make_tiny_model_dir(dest: Path, layers: int = 4, hidden: int = 32, heads: int = 4, intermediate: int = 64,
                        seed: int = 0, corpus: list[str] | None = None) -> Path:
    """A random BertModel with a WordPiece tokenizer trained on the sample texts, saved as safetensors."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    dest.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        corpus = []
        for split in ("train", "dev"):
            with open(SAMPLES / f"{split}.csv", newline="", encoding="utf-8") as f:
                corpus += [r["text"] for r in csv.DictReader(f)]
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(corpus, vocab_size=600, min_frequency=1,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    wp.save_model(str(dest))
    # transformers 5 ignores vocab_file= (it builds a 5-token vocab, so every word became [UNK]): pass the vocab itself.
    vocab = {w.rstrip("\n"): i for i, w in enumerate((dest / "vocab.txt").read_text(encoding="utf-8").splitlines(True))}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tok.save_pretrained(dest)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(dest)
    return dest


def tiny_recipe_dict(model_dir: Path, out: Path, **sections) -> dict:
    """A recipe that builds in seconds: tiny model, a slice of the sample data, short sequences."""
    base = {
        "out": str(out),
        "model": {"path": str(model_dir)},
        "data": {"train": str(SAMPLES / "train.csv"), "validation": str(SAMPLES / "dev.csv"),
                 "max_train_samples": 160},
        "train": {"epochs": 1.0, "batch_size": 16, "learning_rate": 1e-3, "max_seq_len": 32, "eval_batch_size": 32},
        # One student layer: ExecuTorch lowering costs seconds per layer; tiny_int8_build keeps 2 (debug localisation).
        "student": {"num_layers": 1, "epochs": 1.0, "batch_size": 16, "learning_rate": 1e-3},
        # fp32 only: int8 (also a default) is built by `tiny_int8_build` for the tests that need it.
        "export": {"max_batch": 16, "precisions": ["fp32"]},
        # A random tiny model barely learns in one epoch: gate artifacts on numeric parity, not accuracy.
        "parity": {"min_top1_vs_original": 0.0, "max_accuracy_drop": 1.0, "num_examples": 48, "golden_size": 8,
                   "seq_lens": [5, 19, 31]},  # none equals the export example's length (16)
    }
    for sec, vals in sections.items():
        if isinstance(vals, dict):
            base.setdefault(sec, {}).update(vals)
        else:
            base[sec] = vals
    return base


def onnx_recipe_dict(model_dir: Path, out: Path, **sections) -> dict:
    """A second, smaller tiny recipe: ONNX only (fast to export), seed 7 (other weights than tiny_build), two
    epochs of the original (so a killed build has an epoch checkpoint to resume from), max_seq_len 16 (texts get cut)."""
    d = tiny_recipe_dict(model_dir, out, export={"targets": ["onnx"]}, train={"seed": 7, "epochs": 2.0, "max_seq_len": 16},
                         data={"max_train_samples": 64, "max_eval_samples": 40}, parity={"num_examples": 32})
    for sec, vals in sections.items():
        d.setdefault(sec, {}).update(vals) if isinstance(vals, dict) else d.__setitem__(sec, vals)
    return d


def run_cli(*args, cwd=None, env=None, timeout=900, isolated: bool = False) -> subprocess.CompletedProcess:
    """Run the `toolformer` CLI as a user would; returns a CompletedProcess (returncode, stdout, stderr).

    By default in this process, through click's CliRunner on the very entry point the console script calls
    (`toolchain.cli:main`): same parsing, same error handling, same exit codes, without paying torch's and
    transformers' import (~5 s) per call. `isolated=True` runs `python -m toolchain.cli` in a subprocess:
    for what only a real process shows (native writes to fd 2, environment read at import, signals).
    `timeout` applies to the subprocess only.
    """
    if isolated:
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([sys.executable, "-m", "toolchain.cli", *map(str, args)], cwd=cwd or ROOT, env=e,
                              capture_output=True, text=True, timeout=timeout)
    return _run_cli_here([str(a) for a in args], cwd or ROOT, env or {})


def _run_cli_here(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    import traceback

    from click.testing import CliRunner

    from toolchain.cli import main

    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    threads = _torch_threads()
    try:
        os.chdir(cwd)
        res = CliRunner().invoke(main, args, env=env, prog_name="toolformer", catch_exceptions=True)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        import torch

        torch.set_num_threads(threads)  # `bench --threads N` sets torch's intra-op threads for the process
    stderr = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        # What a console script would print for an exception that escaped the CLI's own handling.
        stderr += "".join(traceback.format_exception(res.exception))
    return subprocess.CompletedProcess(["toolformer", *args], res.exit_code, res.stdout, stderr)


def _torch_threads() -> int:
    import torch  # nearly every command imports it anyway

    return torch.get_num_threads()


# --- Identity and equality of builds (crash-safety tests: test_kill.py, test_resume_states.py) ---

def tree(path: Path) -> dict:
    """relative path → sha256 of every file under `path` (the identity of a build directory)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def verified(bundle: Path) -> bool:
    """runtime_py's verification (checksums, tokenizer, labels, golden outputs) of an ONNX-only bundle."""
    from runtime_py.verify import verify_bundle

    return verify_bundle(bundle)["passed"]


def golden_logits(out: Path):
    import numpy as np

    g = json.loads((out / "bundle" / "golden.json").read_text())
    return np.asarray(next(iter(g["artifact_logits"].values())), dtype=np.float64)


def assert_same_build(a: Path, b: Path) -> None:
    """Two builds of the same recipe/data/seed: same metrics, same artifact outputs (fp32 rounding)."""
    import numpy as np

    sa, sb = (json.loads((x / "summary.json").read_text()) for x in (a, b))
    assert sa["original"]["val_accuracy"] == sb["original"]["val_accuracy"]
    assert sa["shipped"]["val_accuracy"] == sb["shipped"]["val_accuracy"]
    assert [h["val_accuracy"] for h in sa["original"]["train"]["history"]] == [h["val_accuracy"] for h in sb["original"]["train"]["history"]]
    np.testing.assert_allclose(golden_logits(a), golden_logits(b), rtol=1e-5, atol=1e-6)
