"""Soak test: thousands of mixed-length predictions per artifact, RSS sampled as they run.

    python benchmarks/soak.py [BUNDLE] [--n 5000] [--threads 1] [--only onnx-fp32] [--texts FILE]

Each artifact runs in its own process (so one runtime's memory never shows up in another's): load
the bundle with runtime_py, warm up (every thread at once on the largest batch, so memory arenas
reach the size the peak work needs), then predict batches of 1-16 texts whose lengths run from one
word to twice max_seq_len (so truncation is exercised), from `--threads` threads at once. RSS
(VmRSS) is sampled every tenth of the run; the table shows it after load, after warm-up, at the
end and the growth from warm-up to the end, with a verdict: flat when the growth stays under
max(8 MB, 3% of the warm RSS) and the last three samples do not keep rising.
Default BUNDLE: runs/sst2/bundle, else runs/default/bundle.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def text_pool(bundle: Path, texts_file: str | None) -> list[str]:
    if texts_file:
        lines = [x.strip() for x in Path(texts_file).read_text(encoding="utf-8").splitlines() if x.strip()]
    else:
        golden = json.loads((bundle / "golden.json").read_text(encoding="utf-8"))["texts"]
        lines = [t if isinstance(t, str) else " ".join(t) for t in golden]
    return lines


def worker(bundle: Path, artifact: str, n: int, threads: int, texts_file: str | None, seed: int) -> dict:
    """Run the soak for one artifact in this process; returns the measurements."""
    import runtime_py

    t0 = time.perf_counter()
    model = runtime_py.load(bundle, artifact=artifact)
    load_s = time.perf_counter() - t0
    rss_load = rss_mb()
    words = " ".join(text_pool(bundle, texts_file)).split()
    rng = random.Random(seed)
    max_words = 2 * model.max_seq_len

    def batch():
        return [" ".join(rng.choices(words, k=rng.randint(1, max_words))) for _ in range(rng.randint(1, 16))]

    biggest = [" ".join(rng.choices(words, k=max_words)) for _ in range(16)]
    batches, total = [], 0
    while total < n:
        b = batch()
        batches.append(b)
        total += len(b)
    samples, done = [], 0
    step = max(1, len(batches) // 10)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        # Warm-up: runtimes size their memory arenas to the largest work in flight at once, so every
        # thread runs the largest batch (16 texts at max_seq_len) together, then some mixed batches.
        for _ in range(3):
            list(pool.map(model.predict, [biggest] * threads))
        list(pool.map(model.predict, [batch() for _ in range(40)]))
        rss_warm = rss_mb()
        t1 = time.perf_counter()
        for i in range(0, len(batches), step):
            for preds in pool.map(model.predict, batches[i:i + step]):
                done += len(preds)
            samples.append(round(rss_mb(), 1))
    seconds = time.perf_counter() - t1
    growth = samples[-1] - rss_warm
    rising = len(samples) >= 3 and samples[-1] > samples[-2] > samples[-3] and samples[-1] - samples[-3] > 1.0
    flat = growth < max(8.0, 0.03 * rss_warm) and not rising
    return {"artifact": artifact, "predictions": done, "batches": len(batches), "threads": threads,
            "load_s": round(load_s, 2), "seconds": round(seconds, 1), "pred_per_s": round(done / seconds, 1),
            "rss_load_mb": round(rss_load, 1), "rss_warm_mb": round(rss_warm, 1), "rss_end_mb": samples[-1],
            "growth_mb": round(growth, 1), "samples_mb": samples, "flat": flat}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--n", type=int, default=5000, help="predictions per artifact (default 5000)")
    ap.add_argument("--threads", type=int, default=1, help="threads calling one model at once (default 1)")
    ap.add_argument("--only", action="append", help="artifact key, e.g. onnx-fp32 (repeatable; default: all)")
    ap.add_argument("--texts", help="a text file, one text per line, to draw words from (default: the golden texts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.bundle:
        bundle = Path(args.bundle)
    else:
        bundle = next((p for p in (ROOT / "runs/sst2/bundle", ROOT / "runs/default/bundle") if p.is_dir()), None)
        if bundle is None:
            ap.error("no bundle given and neither runs/sst2/bundle nor runs/default/bundle exists")
    if args.worker:
        print(json.dumps(worker(bundle, args.worker, args.n, args.threads, args.texts, args.seed)))
        return 0

    from runtime_py.bundle import artifact_key, read_manifest

    keys = [artifact_key(a) for a in read_manifest(bundle)["artifacts"]]
    keys = [k for k in keys if not args.only or k in args.only]
    print(f"soak: {bundle}, {args.n} predictions per artifact, {args.threads} thread(s), load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for key in keys:
        cmd = [sys.executable, __file__, str(bundle), "--worker", key, "--n", str(args.n), "--threads", str(args.threads),
               "--seed", str(args.seed)] + (["--texts", args.texts] if args.texts else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{key}: worker failed\n{res.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    head = f"{'artifact':<16} {'preds':>6} {'thr':>3} {'pred/s':>8} {'RSS load':>9} {'RSS warm':>9} {'RSS end':>8} {'growth':>7}  verdict"
    print(head)
    for r in rows:
        print(f"{r['artifact']:<16} {r['predictions']:>6} {r['threads']:>3} {r['pred_per_s']:>8.1f} {r['rss_load_mb']:>7.1f}MB "
              f"{r['rss_warm_mb']:>7.1f}MB {r['rss_end_mb']:>6.1f}MB {r['growth_mb']:>+5.1f}MB  {'flat' if r['flat'] else 'GROWING'}")
    for r in rows:
        print(f"{r['artifact']}: RSS every tenth of the run (MB): {r['samples_mb']}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if all(r["flat"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
