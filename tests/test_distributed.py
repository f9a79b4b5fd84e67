"""Training through Accelerate: devices, precision, batch splitting, and a real two-process (gloo) build.

The two-process build runs `toolformer build` under `torchrun --nproc-per-node 2` on the CPU and is
compared with the same build as one process: a dropout-free tiny model makes the two runs the same
computation (same examples per optimizer step, gradients averaged), so metrics and weights agree to
float rounding, and only one OUT (one bundle) may appear.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, make_tiny_model_dir, run_cli, tiny_recipe_dict


@pytest.fixture(scope="module")
def still_model_dir(tmp_path_factory) -> Path:
    """The tiny model without dropout, so one-process and two-process training compute the same thing."""
    d = make_tiny_model_dir(tmp_path_factory.mktemp("tiny-nodrop") / "model")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


# --- how a global batch is split -------------------------------------------------------------

@pytest.mark.parametrize("n,world,accum", [(16, 1, 1), (16, 2, 2), (16, 4, 1), (5, 2, 4), (1, 2, 1)])
def test_step_shards_cover_the_global_batch_once(n, world, accum):
    from toolchain.distributed import step_shards

    rows = list(range(100, 100 + n))
    parts = [step_shards(rows, rank, world, accum) for rank in range(world)]
    assert all(len(p) == accum for p in parts)
    flat = [r for p in parts for micro in p for r in micro]
    assert flat == rows  # every example of the step exactly once, in order
    sizes = [len(m) for p in parts for m in p]
    assert max(sizes) - min(sizes) <= 1  # micro-batch = global / (processes × accumulation), near-equal


@pytest.mark.parametrize("n,world", [(10, 1), (10, 3), (5, 4), (1, 2), (8, 2)])
def test_eval_shards_gather_back_in_order(n, world):
    from toolchain.distributed import eval_shard

    shards = [eval_shard(n, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal sizes: what a gather needs
    gathered = [r for s in shards for r in s]
    assert gathered[:n] == list(range(n))  # padding duplicates only at the tail, dropped by [:n]


def test_epoch_order_is_seeded_and_process_independent():
    from toolchain.distributed import epoch_order

    a, b = epoch_order(50, 7), epoch_order(50, 7)
    assert (a == b).all() and sorted(a) == list(range(50)) and not (a == epoch_order(50, 8)).all()


# --- devices and precision -------------------------------------------------------------------

def test_device_and_precision_resolution_on_this_machine():
    import torch

    from toolchain.distributed import resolve_device, resolve_precision
    from toolchain.errors import UsageError

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")
    assert resolve_precision("cpu", "auto") == "fp32"
    assert resolve_precision("cpu", "bf16") == "bf16"
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        resolve_precision("cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("cuda:0")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_build_device_cuda_without_gpu_is_one_line_usage_error(tmp_path):
    res = run_cli("build", "--device", "cuda", "--out", tmp_path / "out", timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == ["error: --device cuda: no CUDA device is available here (use --device cpu or auto)"]
    assert not (tmp_path / "out").exists()


# --- one process: accumulation is exact, results say where they were trained ----------------

def _tiny_train(model_dir: Path, out: Path, **cfg_kw):
    import torch

    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain import recipe as recipe_mod
    from toolchain.data import load_dataset
    from toolchain.finetune import TrainConfig, train

    r = recipe_mod.build(tiny_recipe_dict(model_dir, out))
    data = load_dataset(r.data, 0)
    tok = model_mod.save_tokenizer_json(str(model_dir), out / "tok" / "tokenizer.json")
    torch.manual_seed(0)
    model = model_mod.load_classifier(str(model_dir), data.labels)
    cfg = TrainConfig(epochs=1.0, batch_size=16, learning_rate=1e-3, eval_batch_size=32, **cfg_kw)
    res = train(model, data.train, data.validation, TextEncoder(tok, 32), cfg, out / "ckpt", "t")
    return res, model


def test_gradient_accumulation_matches_one_big_batch(still_model_dir, tmp_path):
    r1, m1 = _tiny_train(still_model_dir, tmp_path / "a", grad_accum=1)
    r4, m4 = _tiny_train(still_model_dir, tmp_path / "b", grad_accum=4)
    assert (r1.global_batch_size, r1.micro_batch_size) == (16, 16)
    assert (r4.global_batch_size, r4.micro_batch_size, r4.grad_accum) == (16, 4, 4)
    assert r1.steps == r4.steps == 10  # 160 rows / global batch 16
    assert r4.history[0]["train_loss"] == pytest.approx(r1.history[0]["train_loss"], rel=1e-5)
    w1, w4 = m1.state_dict(), m4.state_dict()
    assert max(float((w1[k] - w4[k]).abs().max()) for k in w1) < 1e-5
    saved = json.loads((tmp_path / "b" / "ckpt" / "train_result.json").read_text())
    assert saved["device"] == "cpu" and saved["precision"] == "fp32" and saved["processes"] == 1
    # The caller gets its plain module back (no DDP wrapper, no autocast-patched forward).
    assert "forward" not in m4.__dict__ and type(m4).__name__ == "BertForSequenceClassification"


def test_bf16_autocast_on_cpu_then_fp32_again(still_model_dir, tmp_path):
    """Mixed precision goes through Accelerate's autocast; a later fp32 run in the same process is plain fp32 again."""
    import torch

    r16, m16 = _tiny_train(still_model_dir, tmp_path / "bf16", precision="bf16")
    assert r16.precision == "bf16" and np.isfinite(r16.history[0]["train_loss"])
    assert "forward" not in m16.__dict__ and next(m16.parameters()).dtype == torch.float32  # fp32 master weights
    r32, _ = _tiny_train(still_model_dir, tmp_path / "fp32", precision="fp32")
    assert r32.precision == "fp32"
    assert r16.history[0]["train_loss"] == pytest.approx(r32.history[0]["train_loss"], rel=0.05)


def test_batch_smaller_than_processes_times_accumulation_is_usage_error(still_model_dir, tmp_path):
    from toolchain.errors import UsageError

    with pytest.raises(UsageError, match="smaller than processes × grad_accum"):
        _tiny_train(still_model_dir, tmp_path, grad_accum=32)


# --- two CPU processes (gloo) vs one ----------------------------------------------------------

def _weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_two_process_build_matches_one_process_and_writes_once(still_model_dir, tmp_path):
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    # Global batch 16 = 2 processes × 2 accumulation steps × micro-batch 4 in the launched run.
    # ONNX alone keeps the test short; export is not what differs between the runs.
    sections = {"train": {"epochs": 2.0, "grad_accum": 1}, "student": {"epochs": 1.0}, "export": {"targets": ["onnx"]}}
    one = build(recipe_mod.build(tiny_recipe_dict(still_model_dir, tmp_path / "one" / "out", **sections)))

    launched = tmp_path / "two"
    launched.mkdir()
    recipe_file = tmp_path / "two.toml"
    recipe_mod.dump(recipe_mod.build(tiny_recipe_dict(still_model_dir, launched / "out", **sections)), recipe_file)
    scratch = tmp_path / "scratch"  # TMPDIR of the launched processes: worker scratch must not outlive them
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "toolchain.cli", "build", str(recipe_file), "--set", "train.grad_accum=2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = launched / "out"
    two = json.loads((out / "summary.json").read_text())

    # Metrics of both trainings agree with the one-process run.
    for name in ("original", "student"):
        t2 = two["training"][name]
        assert (t2["processes"], t2["grad_accum"], t2["micro_batch_size"], t2["device"], t2["precision"]) == (2, 2, 4, "cpu", "fp32")
        assert one["training"][name]["processes"] == 1
    h1, h2 = one["original"]["train"]["history"], two["original"]["train"]["history"]
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [10, 20]
    for a, b in zip(h1, h2):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=1e-9)
    assert two["shipped"]["val_accuracy"] == pytest.approx(one["shipped"]["val_accuracy"], abs=1e-9)
    for ckpt in ("original", "student"):
        w1, w2 = _weights(tmp_path / "one" / "out" / ckpt / "model.safetensors"), _weights(out / ckpt / "model.safetensors")
        assert w1.keys() == w2.keys()
        dw = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
        assert dw < 1e-4
        print(f"{ckpt}: max |w1 - w2| {dw:.2e}")  # shown with pytest -s: the figures behind the tolerances
    for a, b in zip(one["original"]["train"]["history"], two["original"]["train"]["history"]):
        print(f"original epoch {a['epoch']:g}: train loss {a['train_loss']:.7f} (1 process) vs {b['train_loss']:.7f} "
              f"(2 processes), val accuracy {a['val_accuracy']:.4f} vs {b['val_accuracy']:.4f}")
    s1, s2 = (json.loads((d / "student" / "train_result.json").read_text())["history"] for d in (tmp_path / "one" / "out", out))
    for a, b in zip(s1, s2):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        print(f"student epoch {a['epoch']:g}: train loss {a['train_loss']:.7f} vs {b['train_loss']:.7f}, "
              f"val accuracy {a['val_accuracy']:.4f} vs {b['val_accuracy']:.4f}")
    print(f"shipped val accuracy {one['shipped']['val_accuracy']:.4f} vs {two['shipped']['val_accuracy']:.4f}")

    # Exactly one set of outputs: one OUT with one bundle, no staging or worker leftovers, one report.
    assert sorted(p.name for p in launched.iterdir()) == ["out"]
    assert [p.name for p in scratch.iterdir() if p.name.startswith("toolformer")] == []
    assert (out / "bundle" / "manifest.json").is_file() and two["passed"]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["original"]["processes"] == 2
    assert res.stdout.count("bundle: ") == 1  # one process reports
    assert res.stdout.count("[toolformer] fine-tune original") == 1
    verify = run_cli("verify", out / "bundle", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --- `toolformer finetune`: the original alone, into a checkpoint dir -------------------------

def test_finetune_command_writes_a_loadable_checkpoint(still_model_dir, tmp_path):
    from toolchain import model as model_mod
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import finetune as finetune_original

    from toolchain.data import load_dataset

    # A held-out split carved from train (data.test_fraction) is scored once after training and recorded.
    r = recipe_mod.build(tiny_recipe_dict(still_model_dir, tmp_path / "unused", train={"epochs": 1.0},
                                          data={"test_fraction": 0.1}))
    out = tmp_path / "ckpt"
    res = finetune_original(r, out)
    assert res.processes == 1 and res.device == "cpu"
    held = load_dataset(r.data, r.train.seed).test
    assert res.test_rows == len(held) > 0 and 0.0 <= res.test_accuracy <= 1.0
    assert json.loads((out / "train_result.json").read_text())["test_accuracy"] == res.test_accuracy
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_result.json", "recipe.toml"} <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging left, nothing at recipe.out
    labels = json.loads((out / "config.json").read_text())["id2label"]
    m = model_mod.load_classifier(str(out), [labels[str(i)] for i in range(len(labels))])  # what train.skip loads
    assert m.config.num_labels == len(labels)
