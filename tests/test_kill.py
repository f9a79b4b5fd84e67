"""Crash safety: SIGKILL a real `toolformer build` subprocess at several points and look at OUT.

After every kill OUT must be absent (a first build) or byte-for-byte the previous complete build
(a `--force` rebuild), never something that looks complete. `--resume` then continues from the
staging directory: finished stages are reused, fine-tuning restarts after its last epoch, a
half-written artifact is exported again, and the finished build matches an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, onnx_recipe_dict, run_cli



def record(chain: str, point: str, end: str) -> None:
    """One line per kill point (shown with `pytest -s`): where the build died and what OUT was after."""
    print(f"\nkill: {chain:<16} {point:<52} -> {end}")


@pytest.fixture(scope="module")
def recipe_file(tiny_model_dir, tmp_path_factory) -> Path:
    import tomli_w

    d = tmp_path_factory.mktemp("kill-recipe")
    r = onnx_recipe_dict(tiny_model_dir, d / "unused")
    r.pop("out")
    path = d / "kill.toml"
    path.write_text(tomli_w.dumps(r))
    return path


def tree(path: Path) -> dict:
    """relative path → sha256 of every file under `path` (the identity of a build directory)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def build_until_killed(args, marker: str, then=None, timeout: float = 600) -> str:
    """Start `toolformer build ARGS`, SIGKILL its process group once a stdout line matches `marker`
    (and, if given, once `then()` is true or 20 s passed); returns the output it printed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "build", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, t0 = [], time.monotonic()
    try:
        for line in proc.stdout:
            lines.append(line)
            if re.search(marker, line):
                if then is not None:
                    t1 = time.monotonic()
                    while not then() and time.monotonic() - t1 < 20:
                        time.sleep(0.005)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return "".join(lines)
            if time.monotonic() - t0 > timeout:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    raise AssertionError(f"build ended (exit {proc.returncode}) before {marker!r}:\n" + "".join(lines)[-4000:])


def verified(bundle: Path) -> bool:
    """runtime_py's verification (checksums, tokenizer, labels, golden outputs) of an ONNX-only bundle."""
    from runtime_py.verify import verify_bundle

    return verify_bundle(bundle)["passed"]


def golden_logits(out: Path) -> np.ndarray:
    g = json.loads((out / "bundle" / "golden.json").read_text())
    return np.asarray(next(iter(g["artifact_logits"].values())), dtype=np.float64)


def assert_same_build(a: Path, b: Path) -> None:
    """Two builds of the same recipe/data/seed: same metrics, same artifact outputs (fp32 rounding)."""
    sa, sb = (json.loads((x / "summary.json").read_text()) for x in (a, b))
    assert sa["original"]["val_accuracy"] == sb["original"]["val_accuracy"]
    assert sa["shipped"]["val_accuracy"] == sb["shipped"]["val_accuracy"]
    assert [h["val_accuracy"] for h in sa["original"]["train"]["history"]] == [h["val_accuracy"] for h in sb["original"]["train"]["history"]]
    np.testing.assert_allclose(golden_logits(a), golden_logits(b), rtol=1e-5, atol=1e-6)


def test_first_build_killed_mid_export_leaves_no_out(recipe_file, tmp_path):
    """No previous build: a kill while the artifact file is being written leaves no OUT at all."""
    runs = tmp_path / "runs"
    out, staging = runs / "out", runs / ".out.partial"
    art = staging / "artifacts" / "model-onnx-fp32.onnx"
    build_until_killed([recipe_file, "--out", out], r"\[toolformer\] export onnx fp32", then=art.exists)
    assert not out.exists()
    assert [p.name for p in runs.iterdir()] == [".out.partial"]  # hidden staging only, resumable
    progress = json.loads((staging / "progress.json").read_text())["stages"]
    assert "export model-onnx-fp32.onnx" not in progress  # so a resume exports it again
    record("first build", "mid-export (ONNX file being written)", "OUT absent; hidden .out.partial only")


def test_rebuild_killed_three_times_keeps_previous_then_resumes(recipe_file, tiny_onnx_build, tmp_path):
    """`--force` over a complete build: after each kill OUT is the previous build byte for byte;
    `--resume` then reuses finished stages, restarts fine-tuning after its last epoch, re-exports a
    half-written artifact, and the finished build equals an uninterrupted one."""
    runs = tmp_path / "runs"
    out, staging = runs / "out", runs / ".out.partial"
    shutil.copytree(tiny_onnx_build, out)
    before = tree(out)
    args = [recipe_file, "--out", out, "--force", "--resume"]

    def unchanged(point: str) -> None:
        assert tree(out) == before, f"OUT changed after a kill {point}"
        assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == ["out"]
        record("--force rebuild", point, "OUT = previous build, byte for byte")

    # 1. During fine-tuning, just after the original's first epoch checkpoint.
    log = build_until_killed(args, r"original: epoch 1 validation accuracy",
                             then=lambda: (staging / "original" / "checkpoint" / "state.json").is_file())
    assert "no interrupted build" in log
    assert (staging / "original" / "checkpoint" / "state.json").is_file()
    unchanged("fine-tuning the original (after epoch 1 of 2)")

    # 2. Resumed, then killed as the export starts.
    log = build_until_killed(args, r"\[toolformer\] export onnx fp32")
    assert "resuming original fine-tuning after epoch 1" in log, log
    unchanged("mid-export (ONNX)")
    # What a kill during the write leaves: a truncated artifact. It must be exported again, not reused.
    art = staging / "artifacts" / "model-onnx-fp32.onnx"
    art.parent.mkdir(exist_ok=True)
    art.write_bytes(b"\x08\x07truncated")

    # 3. Resumed, then killed while the bundle is being packaged.
    log = build_until_killed(args, r"\[toolformer\] package",
                             then=lambda: (staging / ".bundle.partial").exists() or (staging / "bundle").exists())
    assert "resume: continuing" in log and "reused from the interrupted build" in log, log
    unchanged("mid-package")
    assert verified(out / "bundle")

    # 4. Resumed to the end: OUT swapped for the new build, equal to an uninterrupted one.
    res = run_cli("build", *args, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert [p.name for p in runs.iterdir()] == ["out"]  # no staging, no old build left
    assert tree(out) != before and verified(out / "bundle")
    assert not (out / "progress.json").exists() and not (out / "original" / "checkpoint").exists()
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert [s["stage"] for s in stages if s.get("resumed")] == ["fine-tune original", "student", "export onnx fp32"]
    assert_same_build(out, tiny_onnx_build)
    record("--force rebuild", "resumed three times to the end", "OUT replaced; verify passes; equals an uninterrupted build")


def test_kill_while_swapping_in_the_new_build(tmp_path):
    """The commit itself: killed right after the atomic swap, before the old build is deleted."""
    runs = tmp_path / "runs"
    out, staging = runs / "out", runs / ".out.partial"
    for d, tag in ((out, "old"), (staging, "new")):
        (d / "bundle").mkdir(parents=True)
        (d / "bundle" / "manifest.json").write_text(tag)
    code = ("import os, shutil, sys\n"
            "from pathlib import Path\n"
            "from toolchain import staging\n"
            "staging.shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), 9)\n"
            "staging.commit(Path(sys.argv[1]), Path(sys.argv[2]))\n")
    res = subprocess.run([sys.executable, "-c", code, staging, out], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert (out / "bundle" / "manifest.json").read_text() == "new"
    assert not staging.exists()
    leftovers = [p.name for p in runs.iterdir() if p.name != "out"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.old-")  # hidden, never looks like a build
    record("commit", "after the atomic swap, before deleting the old build", "OUT = new build; hidden .out.old-* left")
    # The next commit of this OUT clears what the killed one left behind.
    (staging / "bundle").mkdir(parents=True)
    (staging / "bundle" / "manifest.json").write_text("newer")
    from toolchain.staging import commit

    commit(staging, out)
    assert sorted(p.name for p in runs.iterdir()) == ["out"]
    assert (out / "bundle" / "manifest.json").read_text() == "newer"


def test_resume_refuses_another_recipe(recipe_file, tmp_path):
    """A staging dir is only continued by the build that started it."""
    from toolchain.staging import Progress, staging_dir

    out = tmp_path / "runs" / "out"
    st = staging_dir(out)
    st.mkdir(parents=True)
    Progress(st, "0" * 64).save()
    res = run_cli("build", recipe_file, "--out", out, "--resume", timeout=300)
    assert res.returncode == 2 and "another recipe" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert (st / "progress.json").is_file() and not out.exists()  # left as it was
