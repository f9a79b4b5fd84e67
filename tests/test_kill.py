"""Crash safety: SIGKILL a real `toolformer build` subprocess and look at OUT.

The tests synchronise on what the product prints (stage headers, the commit line), never on
timings: a kill lands wherever the machine's speed puts it, and every legal outcome is accepted
and checked. After every kill OUT is absent (a first build), byte-for-byte the previous complete
build (a `--force` rebuild) or the new complete build; `--resume` then continues and the finished
build matches an uninterrupted one. The on-disk states a kill can leave are built one by one,
without timing, in test_resume_states.py; benchmarks/kill_sweep.py is the long random sweep.
"""
from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, assert_same_build, onnx_recipe_dict, run_cli, tree, verified

sys.path.insert(0, str(ROOT / "benchmarks"))
from kill_sweep import Run, kill_chain  # noqa: E402  (the sweep's kill machinery, shared)



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


def test_first_build_killed_mid_export_leaves_no_out(recipe_file, tmp_path):
    """No previous build: killed once the export has started. Whatever the kill caught (the file
    being written, the export recorded, or on a fast machine an even later stage), OUT is absent
    or — had the kill come after the commit — the complete build; a recorded export's file is the
    one its record describes (so a resume may reuse it), an unrecorded one is redone."""
    from toolchain.staging import file_facts

    runs = tmp_path / "runs"
    out, staging = runs / "out", runs / ".out.partial"
    run = Run([recipe_file, "--out", out])
    assert run.wait_for(r"^\[toolformer\] export onnx fp32"), run.output[-3000:]
    stage = run.kill_after(0)
    assert "Traceback" not in run.output, run.output
    if out.exists():  # the build got to its commit before the kill landed
        assert sorted(p.name for p in runs.iterdir()) == ["out"] and verified(out / "bundle")
        record("first build", f"export started; kill landed in {stage}", "OUT = complete build")
        return
    assert [p.name for p in runs.iterdir()] == [".out.partial"]  # hidden staging only, resumable
    progress = json.loads((staging / "progress.json").read_text())["stages"]
    rec = progress.get("export model-onnx-fp32.onnx")
    if rec is not None:  # exported and recorded before the kill: the record matches the file
        assert file_facts(staging, [staging / f for f in rec["files"]]) == rec["files"]
    record("first build", f"export started; kill landed in {stage}",
           "OUT absent; hidden .out.partial only" + ("; export recorded, verifiable" if rec else ""))


# Stage headers every build prints, resumed or not: where the random kills are aimed.
KILL_POINTS = [r"^\[toolformer\] fine-tune original", r"^\[toolformer\] student", r"^\[toolformer\] export onnx fp32",
               r"^\[toolformer\] parity", r"^\[toolformer\] latency", r"^\[toolformer\] package", r"^\[toolformer\] commit"]


@pytest.mark.parametrize("seed", [20])
def test_rebuild_killed_at_random_moments_keeps_previous_then_resumes(recipe_file, tiny_onnx_build, tmp_path, seed):
    """`--force --resume` over a complete build, SIGKILLed three times (each time the resumed build)
    at a seeded random moment: a random stage header, then a random delay of up to a second. After
    each kill OUT is the previous build byte for byte or the new complete build (never anything
    else, never a traceback); the last `--resume` exits 0 with a bundle that verifies and equals an
    uninterrupted build's metrics. Every outcome a race allows is accepted and checked."""
    rng = random.Random(seed)
    points = [rng.choice(KILL_POINTS) for _ in range(3)]
    delays = [rng.uniform(0, 1.0) for _ in range(3)]
    rows = kill_chain(recipe_file, tmp_path / "runs", tiny_onnx_build, delays, previous=tiny_onnx_build,
                      markers=points, log=print)
    for row in rows[:-1]:
        assert row["out"] in ("previous", "new"), row
        record("--force rebuild", f"{row['marker'].split('] ')[-1]} + {row['delay_s']:.2f} s (hit {row['stage']})", f"OUT {row['out']}")
    last = rows[-1]
    assert last["rc"] == 0 and last["out"] == "new", last
    assert_same_build(tmp_path / "runs" / "out", tiny_onnx_build)
    record("--force rebuild", f"resumed to the end (reused: {', '.join(last['resumed']) or 'nothing'})", "OUT = verified new build")


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
