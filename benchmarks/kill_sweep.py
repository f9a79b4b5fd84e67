"""Kill sweep: SIGKILL a real `toolformer build` at random moments, resume, and check the invariants.

    python benchmarks/kill_sweep.py [--trials 10] [--kills 2] [--seed 20] [--mode both] [--targets all] [--json FILE] [--budget-s S]

First one uninterrupted build of the tiny kill recipe (tests/helpers.py onnx_recipe_dict: a random tiny
BERT, a distilled student; `--targets all`: ExecuTorch and ONNX, fp32 and int8; `--targets onnx`: ONNX
fp32 only) is timed; it is the reference. Then each trial starts a build — `first`: no OUT yet
(`build --resume`); `rebuild`: OUT holds a previous complete build (`build --force --resume`) — and
SIGKILLs its process group after a random delay, `--kills` times in a row (each kill hits the resumed
build of the previous one), then resumes to the end. The first delay is drawn uniformly from [0,
reference time]; each later one from [0, what is left of it after the earlier delays] (at least a
tenth of it), so that a chain's kills walk through the build rather than land after its end.
`--at-stages` aims instead: one chain per stage the reference printed (or per `--stages`), killed 0 to
`--max-delay-s` (1 s) after that stage's header, so that short stages are hit too (a kill that lands after a
stage shorter than the delay counts for the stage it hit). After every kill OUT must be absent (first build
only), the previous build byte for byte, or the new complete build (verifies, same metrics as the reference); every final
`--resume` must exit 0 with a bundle that verifies and equals the reference's metrics. The stage a
kill hit is the last `[toolformer] <stage>` line the build printed before it (`start` = none yet:
imports, data, tokenizer; `finished` = the build had already exited).

Prints a table (kills per stage and what OUT was after each) and writes the JSON (default
kill_sweep.json, rewritten after every trial). `--budget-s` starts no new trial once that many
seconds have passed (the table says how many trials ran). Any broken invariant is listed and
makes the exit status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The stage headers the build prints (toolchain.pipeline.Stages.start, plus the commit line).
STAGE = re.compile(r"^\[toolformer\] (fine-tune original|student|export \S+ \S+|parity|latency|package|commit)\b")
STAGES = ["start", "fine-tune original", "student", "export executorch fp32", "export executorch int8", "export onnx fp32",
          "export onnx int8", "parity", "latency", "package", "commit", "finished"]


class Run:
    """One `toolformer build` subprocess, read line by line; the stage it is in is always known."""

    def __init__(self, args, env=None):
        e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "build", *map(str, args)], cwd=ROOT, env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.t0 = time.monotonic()
        self.lines, self.stage, self.seen = [], "start", []
        self._events = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._events:
                self.lines.append(line)
                m = STAGE.match(line)
                if m:
                    self.stage = m.group(1)
                    self.seen.append(self.stage)
                self._events.notify_all()
        with self._events:
            self._events.notify_all()

    def wait_for(self, pattern: str, timeout: float = 900) -> bool:
        """Block until a line matching `pattern` was printed (True) or the build exited (False)."""
        rx, deadline = re.compile(pattern), time.monotonic() + timeout
        with self._events:
            while True:
                if any(rx.search(x) for x in self.lines):
                    return True
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    return False
                self._events.wait(timeout=1.0)

    def kill_after(self, delay: float) -> str:
        """SIGKILL the build's process group `delay` seconds from now unless it exits first.
        Returns the stage the kill hit ('finished' when the build had already exited)."""
        try:
            self.proc.wait(timeout=max(0.0, delay))
            stage = "finished"
        except subprocess.TimeoutExpired:
            with self._events:
                stage = self.stage
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # exited between the timeout and the kill
                stage = "finished"
            self.proc.wait(timeout=120)
        self._reader.join(timeout=60)
        return stage

    def finish(self, timeout: float = 1800) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=60)
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)


def tree(path: Path) -> dict:
    import hashlib

    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def same_metrics(a: Path, b: Path) -> bool:
    import numpy as np

    sa, sb = (json.loads((x / "summary.json").read_text()) for x in (a, b))
    ga, gb = (json.loads((x / "bundle" / "golden.json").read_text())["artifact_logits"] for x in (a, b))
    return (sa["original"]["val_accuracy"] == sb["original"]["val_accuracy"]
            and sa["shipped"]["val_accuracy"] == sb["shipped"]["val_accuracy"]
            and [h["val_accuracy"] for h in sa["original"]["train"]["history"]] == [h["val_accuracy"] for h in sb["original"]["train"]["history"]]
            and all(np.allclose(ga[k], gb[k], rtol=1e-5, atol=1e-6) for k in ga) and ga.keys() == gb.keys())


def out_state(out: Path, previous: dict | None, reference: Path) -> str:
    """What OUT is after a kill: absent, previous (byte for byte), new (complete, verified, same
    metrics as the reference), or BROKEN (an invariant does not hold)."""
    from runtime_py.verify import verify_bundle

    visible = sorted(p.name for p in out.parent.iterdir() if not p.name.startswith("."))
    if visible not in ([], [out.name]):
        return f"BROKEN: unexpected entries {visible}"
    if not out.exists():
        return "absent" if previous is None else "BROKEN: previous build gone"
    if previous is not None and tree(out) == previous:
        return "previous"
    try:
        ok = verify_bundle(out / "bundle")["passed"] and same_metrics(out, reference)
    except Exception as e:  # noqa: BLE001 - a broken OUT is what we look for
        return f"BROKEN: {type(e).__name__}: {e}"
    if (out / "progress.json").exists():
        return "BROKEN: OUT holds stage records"
    return "new" if ok else "BROKEN: OUT is neither the previous nor a verified new build"


def kill_chain(recipe: Path, runs: Path, reference: Path, delays: list, previous: Path | None = None,
               markers: list | None = None, log=print) -> list[dict]:
    """Build into runs/out, kill once per delay (after `markers[i]` was printed, when given), then
    resume to the end. Returns one row per kill and a last row for the final resume."""
    out = runs / "out"
    if runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    before = None
    if previous is not None:
        shutil.copytree(previous, out)
        before = tree(out)
    args = [recipe, "--out", out, "--resume", *(["--force"] if previous is not None else [])]
    rows = []
    for i, delay in enumerate(delays):
        run = Run(args)
        marker = markers[i] if markers else None
        if marker is not None:
            run.wait_for(marker)
        stage = run.kill_after(delay)
        rc = run.proc.returncode
        state = out_state(out, before, reference)
        if stage == "finished" and rc != 0:
            state = f"BROKEN: exited {rc} before the kill: {run.output[-600:]}"
        if "Traceback" in run.output:
            state = f"BROKEN: traceback: {run.output[-1500:]}"
        rows.append({"kill": i + 1, "marker": marker, "delay_s": round(delay, 3), "stage": stage, "out": state,
                     "stages_seen": run.seen})
        log(f"  kill {i + 1}: {'after ' + repr(marker) + ' + ' if marker else ''}{delay:.2f} s -> stage {stage}: OUT {state}")
        if state == "new":
            before = tree(out)  # committed: from now on OUT is this build byte for byte, or a newer complete one
    run = Run(args)
    rc = run.finish()
    state = out_state(out, before, reference) if rc == 0 else f"BROKEN: --resume exited {rc}: {run.output[-1500:]}"
    if rc == 0 and state == "previous":
        state = "new" if same_metrics(out, reference) else state  # a resume that had nothing left to do
    leftovers = sorted(p.name for p in runs.iterdir() if p.name != "out")
    if rc == 0 and leftovers:
        state = f"BROKEN: left {leftovers}"
    if "Traceback" in run.output:
        state = f"BROKEN: traceback: {run.output[-1500:]}"
    rows.append({"kill": "resume", "stage": "resume", "out": state, "rc": rc,
                 "resumed": [s["stage"] for s in json.loads((out / "summary.json").read_text())["stages"] if s.get("resumed")]
                 if rc == 0 and (out / "summary.json").is_file() else None})
    log(f"  resume: exit {rc}: OUT {state}")
    return rows


def write_recipe(dest: Path, targets: str = "all") -> Path:
    """The tiny kill recipe of tests/test_kill.py (model built offline in seconds); `targets="all"` adds
    ExecuTorch and int8 to its ONNX fp32."""
    import tomli_w

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import make_tiny_model_dir, onnx_recipe_dict

    model = make_tiny_model_dir(dest / "tiny-bert")
    export = {"targets": ["executorch", "onnx"], "precisions": ["fp32", "int8"]} if targets == "all" else {}
    r = onnx_recipe_dict(model, dest / "unused", **({"export": export} if export else {}))
    r.pop("out")
    path = dest / "kill.toml"
    path.write_text(tomli_w.dumps(r))
    return path


def table(rows: list[dict]) -> str:
    kills = [r for r in rows if r["kill"] != "resume"]
    cols = ["absent", "previous", "new", "BROKEN"]
    by = defaultdict(Counter)
    for r in kills:
        by[r["stage"]][r["out"] if not r["out"].startswith("BROKEN") else "BROKEN"] += 1
    lines = ["| stage hit | kills | " + " | ".join(f"OUT {c}" for c in cols) + " |",
             "|---|--:|" + "--:|" * len(cols)]
    for st in [s for s in STAGES if s in by] + sorted(set(by) - set(STAGES)):
        c = by[st]
        lines.append(f"| {st} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + " |")
    tot = Counter(r["out"] if not r["out"].startswith("BROKEN") else "BROKEN" for r in kills)
    lines.append(f"| **all** | {len(kills)} | " + " | ".join(str(tot[k]) for k in cols) + " |")
    res = [r for r in rows if r["kill"] == "resume"]
    ok = sum(r["rc"] == 0 and r["out"] == "new" for r in res)
    lines.append("")
    lines.append(f"final `--resume`: {ok}/{len(res)} exited 0 with a verified bundle equal to the uninterrupted build's metrics")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10, help="Builds killed and resumed (per mode).")
    ap.add_argument("--kills", type=int, default=2, help="Kills per trial before the final resume.")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--mode", choices=["first", "rebuild", "both"], default="both")
    ap.add_argument("--json", default="kill_sweep.json")
    ap.add_argument("--work", help="Scratch directory (default: a temporary one, removed afterwards).")
    ap.add_argument("--budget-s", type=float, help="Start no new trial after this many seconds.")
    ap.add_argument("--at-stages", action="store_true",
                    help="Instead of random moments: one chain per stage and mode, killed 0-1 s after the stage's header "
                         "(every stage hit, the short ones too), then resumed.")
    ap.add_argument("--stages", help="With --at-stages: only these stages (comma-separated, as in the table).")
    ap.add_argument("--max-delay-s", type=float, default=1.0, help="With --at-stages: kill within this long after the header.")
    ap.add_argument("--targets", choices=["all", "onnx"], default="all",
                    help="all: ExecuTorch + ONNX, fp32 + int8 (every export stage); onnx: ONNX fp32 only (faster).")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="kill-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        recipe = write_recipe(work, a.targets)
        ref = work / "reference" / "out"
        t0 = time.monotonic()
        run = Run([recipe, "--out", ref])
        if run.finish() != 0:
            print(run.output[-3000:], file=sys.stderr)
            return 1
        t_ref = time.monotonic() - t0
        print(f"reference build: {t_ref:.1f} s")
        modes = ["first", "rebuild"] if a.mode == "both" else [a.mode]
        rows, done, broken = [], 0, []
        wanted = set(a.stages.split(",")) if a.stages else set(STAGES)
        aims = [s for s in STAGES[1:-1] if s in run.seen and s in wanted] if a.at_stages else [None] * a.trials
        for t, aim in enumerate(aims):
            for mode in modes:
                if a.budget_s is not None and time.monotonic() - t0 > a.budget_s:
                    break
                if aim is None:
                    delays, markers = [], None
                    for _ in range(a.kills):
                        delays.append(rng.uniform(0, max(t_ref - sum(delays), t_ref / 10)))
                else:
                    delays, markers = [rng.uniform(0, a.max_delay_s)], [rf"^\[toolformer\] {re.escape(aim)}\b"]
                print(f"trial {t + 1} ({mode}{', at ' + aim if aim else ''}):", flush=True)
                chain = kill_chain(recipe, work / "runs", ref, delays, previous=ref if mode == "rebuild" else None,
                                   markers=markers)
                rows += [{"trial": t + 1, "mode": mode, **r} for r in chain]
                done += 1
                broken = [r for r in rows if r["out"].startswith("BROKEN")]
                result = {"seed": a.seed, "trials": len(aims), "kills_per_trial": len(delays), "modes": modes,
                          "targets": a.targets, "at_stages": a.at_stages,
                          "chains_run": done, "reference_build_s": round(t_ref, 1),
                          "wall_s": round(time.monotonic() - t0, 1), "rows": rows, "broken": len(broken)}
                Path(a.json).write_text(json.dumps(result, indent=2))
        print()
        print(f"{done} kill chains ({1 if a.at_stages else a.kills} kill(s) each, then a resume to the end); reference build {t_ref:.1f} s")
        print(table(rows))
        print(f"\nwrote {a.json}")
        for r in broken:
            print(f"BROKEN: trial {r['trial']} {r['mode']} kill {r['kill']} ({r['stage']}): {r['out']}", file=sys.stderr)
        return 1 if broken else 0
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
