"""Load test of `toolformer serve` on 127.0.0.1: throughput and p50/p90/p99 at several concurrencies, batching on and off.

For each artifact of the bundle and each mode (dynamic batching on: --max-batch-size B; off: 1, one request per
model run) a fresh server is started (`python -m runtime_py.serve`, the torch-free entry point), warmed up, and
driven by closed-loop clients (each sends its next request when the last is answered), every request one text.
Every answer is checked against runtime_py on the same text in this process (label equal, logits within --atol):
the table counts wrong and lost (non-200 or no answer) responses. Bounded: --requests per cell and --time-limit.

    nice -n 10 python benchmarks/serve_load.py runs/x/bundle --json serve_load.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "serve-load-benchmark-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_texts(bundle: Path, path: str | None, n: int) -> list:
    if path:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        golden = json.loads((bundle / "golden.json").read_text(encoding="utf-8"))
        lines = [tuple(t) if isinstance(t, list) else t for t in golden["texts"]]
    return lines[:n]


def start_server(bundle: Path, artifact: str, max_batch_size: int, delay_us: int, threads: int | None, log: Path):
    import httpx

    port = free_port()
    env = dict(os.environ, TOOLFORMER_API_KEY=KEY, TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "runtime_py.serve", str(bundle), "--name", "m", "--artifact", artifact, "--port", str(port),
           "--max-batch-size", str(max_batch_size), "--max-queue-delay-us", str(delay_us), "--max-queue-size", "1024"]
    if threads:
        cmd += ["--threads", str(threads)]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server not ready in 180 s: {log.read_text()[-1500:]}")
        time.sleep(0.2)


def run_async(coro):
    """uvloop's event loop where installed (the server's too): less client CPU per request than asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of toolformer_batch_size for model m."""
    import httpx

    s = c = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('toolformer_batch_size_sum{model="m"}'):
            s = float(line.rsplit(" ", 1)[1])
        elif line.startswith('toolformer_batch_size_count{model="m"}'):
            c = float(line.rsplit(" ", 1)[1])
    return s, c


async def drive(url: str, texts: list, expected: np.ndarray, labels: list, concurrency: int, n_requests: int,
                time_limit: float, atol: float) -> dict:
    """Closed-loop clients on aiohttp (one keep-alive connection each). The clients share the server's 2 cores, so
    the client must cost little per request: httpx's async pool, used before, spent so much CPU per request at
    32 connections that throughput fell from c=8 to c=32 and the server saw mean batches of 1.2."""
    import aiohttp

    pair = isinstance(texts[0], tuple)
    lat, wrong, lost, max_err = [], 0, 0, 0.0
    counter = {"next": 0}
    stop_at = time.perf_counter() + time_limit
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def body(t):
        if pair:
            return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t[0]]},
                               {"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": [t[1]]}]}
        return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]}

    bodies = [json.dumps(body(t)).encode() for t in texts]
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def worker():
            nonlocal wrong, lost, max_err
            while counter["next"] < n_requests and time.perf_counter() < stop_at:
                i = counter["next"] % len(texts)
                counter["next"] += 1
                t0 = time.perf_counter()
                try:
                    async with client.post(url + "/v2/models/m/infer", data=bodies[i]) as r:
                        status, payload = r.status, await r.read()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    lost += 1
                    continue
                dt = time.perf_counter() - t0
                if status != 200:
                    lost += 1
                    continue
                out = {o["name"]: o["data"] for o in json.loads(payload)["outputs"]}
                err = float(np.max(np.abs(np.asarray(out["logits"], np.float32) - expected[i])))
                max_err = max(max_err, err)
                if err > atol or out["label"] != [labels[int(expected[i].argmax())]]:
                    wrong += 1
                lat.append(dt)

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t_start
    lat_ms = np.asarray(lat) * 1000
    pct = (lambda q: float(np.percentile(lat_ms, q))) if len(lat_ms) else (lambda q: float("nan"))
    return {"requests": counter["next"], "ok": len(lat) - wrong, "wrong": wrong, "lost": lost, "seconds": wall,
            "throughput_rps": len(lat) / wall if wall else 0.0, "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "max_abs_err": max_err}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--artifacts", help="comma-separated artifact keys (default: every artifact in the bundle)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=600, help="requests per cell at most")
    ap.add_argument("--time-limit", type=float, default=20.0, help="seconds per cell at most")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--max-batch-size", type=int, default=32, help="the batching-on setting")
    ap.add_argument("--max-queue-delay-us", type=int, default=2000)
    ap.add_argument("--threads", type=int, help="intra-op threads of the server's runtime (default: the server's own default)")
    ap.add_argument("--texts", help="one text per line (default: the bundle's golden texts)")
    ap.add_argument("--num-texts", type=int, default=256)
    ap.add_argument("--atol", type=float, default=1e-4, help="logit tolerance (a batch pads to its longest text, so sums reorder)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)

    import runtime_py
    from runtime_py.bundle import artifact_key, read_manifest

    bundle = runtime_py.resolve_bundle(args.bundle)
    manifest = read_manifest(bundle)
    keys = args.artifacts.split(",") if args.artifacts else [artifact_key(a) for a in manifest["artifacts"]]
    texts = load_texts(bundle, args.texts, args.num_texts)
    if not texts:
        raise SystemExit("error: no texts to send (empty --texts file?)")
    conc = [int(c) for c in args.concurrency.split(",")]
    rows = []
    logdir = Path(os.environ.get("TMPDIR", "/tmp"))
    print(f"bundle {bundle}: {len(texts)} distinct texts, 1 text per request, cells bounded by {args.requests} requests / {args.time_limit:g} s; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    for key in keys:
        ref = runtime_py.load(bundle, artifact=key, threads=args.threads)
        expected = np.concatenate([ref.logits([t]) for t in texts])  # each text alone: no batch company at all
        labels = ref.labels
        del ref
        for mode, mbs in (("on", args.max_batch_size), ("off", 1)):
            proc, url = start_server(bundle, key, mbs, args.max_queue_delay_us, args.threads, logdir / f"serve_load_{key}_{mode}.log")
            try:
                import httpx

                meta = httpx.get(url + "/v2/models/m", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
                across = bool(meta["parameters"].get("cross_request_batching", True))
                run_async(drive(url, texts, expected, labels, 4, args.warmup, 60, args.atol))
                for c in conc:
                    s0, n0 = batch_stats(url)
                    load0 = os.getloadavg()[0]
                    r = run_async(drive(url, texts, expected, labels, c, args.requests, args.time_limit, args.atol))
                    s1, n1 = batch_stats(url)
                    r.update({"artifact": key, "batching": mode if across or mode == "off" else "on*", "max_batch_size": mbs, "concurrency": c,
                              "mean_batch": (s1 - s0) / (n1 - n0) if n1 > n0 else float("nan"),
                              "load_avg_1m": [load0, os.getloadavg()[0]]})
                    rows.append(r)
                    print(f"{key:<16} batching {mode:<3} c={c:<3} {r['requests']:>5} req  {r['throughput_rps']:8.1f} req/s  "
                          f"p50 {r['p50_ms']:7.1f}  p90 {r['p90_ms']:7.1f}  p99 {r['p99_ms']:7.1f} ms  batch {r['mean_batch']:5.2f}  "
                          f"wrong {r['wrong']} lost {r['lost']}  max|d| {r['max_abs_err']:.1e}  load {load0:.1f}", flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
    print()
    print(table(rows, conc))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"bundle": str(bundle), "cpus": os.cpu_count(), "rows": rows}, indent=2))
    return 0 if all(r["wrong"] == 0 and r["lost"] == 0 for r in rows) else 1


def table(rows: list, conc: list) -> str:
    """Markdown table plus, per artifact, the aims at the highest concurrency."""
    out = ["| artifact | batching | concurrency | req/s | p50 ms | p90 ms | p99 ms | mean batch | wrong | lost |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['artifact']} | {r['batching']} | {r['concurrency']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | "
                   f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.2f} | {r['wrong']} | {r['lost']} |")
    top = max(conc)
    for art in dict.fromkeys(r["artifact"] for r in rows):
        cell = {(r["batching"], r["concurrency"]): r for r in rows if r["artifact"] == art}
        if ("on*", top) in cell:
            out.append(f"\n{art}: on* = the server found this artifact's outputs depend on batch company and runs one request per run")
        if ("on", top) in cell and ("off", top) in cell and ("off", 1) in cell:
            on, off, single = cell[("on", top)], cell[("off", top)], cell[("off", 1)]
            out.append(f"\n{art}: at c={top} batching gives {on['throughput_rps'] / off['throughput_rps']:.2f}x the throughput of "
                       f"one request per run; its p99 is {on['p99_ms'] / single['p50_ms']:.2f}x the single-request latency "
                       f"(p50 at c=1, batching off: {single['p50_ms']:.1f} ms)")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
