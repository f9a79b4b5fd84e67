"""Regenerate docs/results.md from the benchmark JSON kept in docs/results/.

    python docs/gen_results.py                       # rewrite docs/results.md from docs/results/*.json
    python docs/gen_results.py --check               # exit 1 if docs/results.md is out of date
    python docs/gen_results.py --add bench runs/bench.json \\
        --command "toolformer bench runs/default/bundle --threads 2 --json runs/bench.json"

`--add KIND FILE --command CMD` files one benchmark output (KIND: build, bench, peers, roofline,
compression, int8, serve, gates) as docs/results/<date>-<kind>-<name>.json together with the command that produced
it and the file's date, then regenerates the page. Every table on the page is rendered from those
files, with its command and date above it; the tables measured before the JSON existed are kept
verbatim below them, under "Historical (hand-recorded)", from docs/results/historical.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"
PAGE = DOCS / "results.md"
HISTORICAL = RESULTS / "historical.md"
KINDS = ("build", "bench", "peers", "roofline", "compression", "int8", "serve", "gates")


def _pct(x):
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def _mb(n):
    return f"{n / 1e6:.2f}" if isinstance(n, (int, float)) else "-"


def _num(x, fmt="{:.2f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def table(header: list[str], rows: list[list]) -> list[str]:
    right = [i for i, h in enumerate(header) if i > 0]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def render_build(d: dict) -> list[str]:
    """A build's summary.json: original, student and every artifact, accuracy and batch-1 latency."""
    lat = {r["name"]: r for r in d.get("latency") or []}
    o, s = d["original"], d.get("shipped", {})
    rows = [["original (PyTorch eager)", f"{o['layers']} layers", _pct(o["val_accuracy"]), "-", "-",
             _mb(lat.get("original", {}).get("bytes")), _num(lat.get("original", {}).get("p50_ms"))]]
    if s.get("model") == "student":
        rows.append(["student (PyTorch eager)", f"{s['layers']} layers", _pct(s["val_accuracy"]), "-", "-", "-", "-"])
    for a in d.get("artifacts", []):
        name = a["artifact"]
        key = a.get("file", name).rsplit(".", 1)[0]
        l_ = lat.get(name) or lat.get(key) or {}
        rows.append([name, a.get("precision", name.rsplit("-", 1)[-1]), _pct(a.get("accuracy")),
                     _num(a.get("vs_original", {}).get("top1_agreement"), "{:.3f}"), "PASS" if a.get("passed") else "FAIL",
                     _mb(l_.get("bytes")), _num(l_.get("p50_ms"))])
    seq = next(iter(lat.values()), {}).get("seq_len", "?")
    data = d.get("data", {})
    out = [f"Train {data.get('train', '?')} rows, validation {data.get('validation', '?')} rows, "
           f"labels: {len(d.get('labels', []))}. Latency: batch 1, {seq} tokens, in the build process.", ""]
    return out + table(["model", "layers / precision", "val accuracy", "top-1 vs original", "gate", "size MB",
                        "p50 ms"], rows)


def render_bench(d) -> list[str]:
    rows = d if isinstance(d, list) else d.get("rows", [])
    return table(["name", "format", "batch", "seq", "p50 ms", "p90 ms", "p99 ms", "seq/s", "load ms", "peak MB", "size MB"],
                 [[r["name"], r["format"], r["batch"], r["seq_len"], _num(r["p50_ms"]), _num(r["p90_ms"]), _num(r["p99_ms"]),
                   _num(r["throughput"], "{:.1f}"), _num(r.get("load_ms"), "{:.0f}"), _num(r.get("peak_rss_mb"), "{:.0f}"),
                   _mb(r.get("bytes"))] for r in rows])


def render_generic(d) -> list[str]:
    """Any other JSON: each list of flat records becomes a table of its scalar fields."""
    out = []
    lists = {"rows": d} if isinstance(d, list) else {k: v for k, v in d.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    for name, rows in lists.items():
        keys = [k for k in rows[0] if all(isinstance(r.get(k), (str, int, float, type(None))) for r in rows)]
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else v)  # noqa: E731
        out += ["", f"**{name}**", ""] + table(keys, [[fmt(r.get(k)) for k in keys] for r in rows])
    if isinstance(d, dict):
        scalars = {k: v for k, v in d.items() if isinstance(v, (str, int, float))}
        if scalars:
            out += [""] + [f"- {k}: {v}" for k, v in scalars.items()]
    return out


def render_serve(d: dict) -> list[str]:
    """benchmarks/serve_load.py: throughput and latency per artifact, batching on/off, concurrency."""
    rows = [[r["artifact"], r["batching"], r["concurrency"], _num(r["throughput_rps"], "{:.1f}"), _num(r["p50_ms"], "{:.1f}"),
             _num(r["p90_ms"], "{:.1f}"), _num(r["p99_ms"], "{:.1f}"), _num(r.get("mean_batch"), "{:.2f}"), r["wrong"], r["lost"]]
            for r in d["rows"]]
    return [f"Bundle `{d.get('bundle', '?')}`, {d.get('cpus', '?')} CPUs; one text per request, closed-loop clients on the "
            "same machine; every answer checked against runtime_py.", ""] + table(
        ["artifact", "batching", "concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "mean batch", "wrong", "lost"], rows)


def render_gates(d: dict) -> list[str]:
    """benchmarks/gates.py: false alarms on faithful artifacts and faults caught."""
    c = d["counts"]
    return [f"{c['faithful_artifacts']} faithful artifacts, **{c['false_alarms']} false alarms**; "
            f"**{c['caught']} of {c['faults']} injected faults caught**; controls failed {c['control_false_alarms']} of "
            f"{c['controls']}. Per-subject and per-fault tables: [gates](gates.md).", ""] + table(
        ["fault", "artifact", "caught by"], [[r["fault"], r["artifact"], r.get("caught_by") or "not caught"]
                                             for r in d["faults"] if r["artifact"] != "bundle"])


RENDER = {"build": render_build, "bench": render_bench, "serve": render_serve, "gates": render_gates}
TITLES = {"build": "Build report", "bench": "`toolformer bench`", "peers": "Peers (`benchmarks/peers.py`)",
          "roofline": "Roofline (`benchmarks/roofline.py`)", "compression": "Compression sweep (`benchmarks/compression.py`)",
          "int8": "Int8 vs fp32 (`benchmarks/int8.py`)", "serve": "Serving load test (`benchmarks/serve_load.py`)",
          "gates": "Parity gates sweep (`benchmarks/gates.py`)"}


def page() -> str:
    lines = ["# Results", "",
             "<!-- generated by `python docs/gen_results.py` from docs/results/*.json; edit those, not this page -->", "",
             "Every table below is rendered from a benchmark's JSON output in `docs/results/`, with the command "
             "and the date that produced it. Add a run with `python docs/gen_results.py --add KIND FILE --command CMD` "
             "(see [benchmarks](benchmarks.md) for what each script measures).", ""]
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        lines += ["No benchmark JSON has been filed yet.", ""]
    for f in files:
        rec = json.loads(f.read_text(encoding="utf-8"))
        kind = rec["kind"]
        lines += [f"## {TITLES.get(kind, kind)}: {rec.get('name', f.stem)} ({rec['date']})", "",
                  f"`{rec['command']}`", ""]
        if rec.get("machine"):
            lines += [f"Machine: {rec['machine']}", ""]
        if rec.get("note"):
            lines += [rec["note"], ""]
        lines += RENDER.get(kind, render_generic)(rec["data"]) + ["", f"Source: `docs/results/{f.name}`", ""]
    if HISTORICAL.is_file():
        lines += ["## Historical (hand-recorded)", "",
                  "Measured before the benchmarks' JSON was kept: these tables were typed into the README at the "
                  "time and are kept verbatim, with the commands and dates given there. Rerun a command and file its "
                  "JSON with `--add` to replace one with a generated table.", ""]
        body = HISTORICAL.read_text(encoding="utf-8")
        body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)  # one level below this section
        lines += [body.rstrip(), ""]
    return "\n".join(lines)


def add(kind: str, src: Path, command: str, name: str | None, note: str | None, machine: str | None) -> Path:
    data = json.loads(src.read_text(encoding="utf-8"))
    date = dt.datetime.fromtimestamp(src.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d")
    name = name or src.parent.name if src.name in ("summary.json",) else (name or src.stem)
    if kind == "build":  # keep what the results page shows, not the whole summary (stages, versions are in the bundle)
        data = {k: data[k] for k in ("labels", "data", "original", "shipped", "artifacts", "latency", "versions") if k in data}
        for a in data.get("artifacts", []):
            for k in ("per_seq_len", "rows"):
                a.pop(k, None)
    RESULTS.mkdir(exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    dest = RESULTS / f"{date}-{kind}-{slug}.json"
    rec = {"kind": kind, "name": name, "date": date, "command": command, "data": data}
    if note:
        rec["note"] = note
    if machine or (isinstance(data, dict) and data.get("machine")):
        rec["machine"] = machine or data["machine"]
    dest.write_text(json.dumps(rec, indent=1, default=str) + "\n", encoding="utf-8")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--add", nargs=2, metavar=("KIND", "FILE"), help=f"file a benchmark JSON; KIND one of {', '.join(KINDS)}")
    ap.add_argument("--command", help="the command that produced FILE (required with --add)")
    ap.add_argument("--name", help="a short name for the run (default: the file's stem)")
    ap.add_argument("--note", help="one line shown above the table (machine load, caveats)")
    ap.add_argument("--machine", help="the machine, if the JSON does not say")
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/results.md differs from what the JSON gives")
    a = ap.parse_args(argv)
    if a.add:
        kind, src = a.add[0], Path(a.add[1])
        if kind not in KINDS:
            print(f"error: unknown kind {kind!r}; one of {', '.join(KINDS)}", file=sys.stderr)
            return 2
        if not a.command:
            print("error: --add needs --command (the command that produced the file)", file=sys.stderr)
            return 2
        if not src.is_file():
            print(f"error: {src}: no such file", file=sys.stderr)
            return 2
        try:
            print(f"filed {add(kind, src, a.command, a.name, a.note, a.machine)}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            print(f"error: {src}: not JSON ({e})", file=sys.stderr)
            return 2
    text = page()
    if a.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"error: {PAGE} is out of date; run python docs/gen_results.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
