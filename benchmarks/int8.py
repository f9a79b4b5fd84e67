"""Int8 vs fp32 artifacts of a fine-tuned SST-2 build: size, accuracy, agreement, CPU latency.

    flock /tmp/toolformer-heavy.lock python benchmarks/int8.py [--run runs/sst2] [--model student]
        [--variants] [--threads 2] [--iters 30] [--reuse] [--json int8.json]

Exports fp32 and int8 artifacts for ExecuTorch (XNNPACK) and ONNX Runtime from RUN/MODEL (the
build's 2-layer student by default, or its 6-layer original) with the int8 settings of the
recipe's [quant] section, calibrated on the build's training split. Every artifact is scored on
the full validation split through runtime_py: accuracy, top-1 agreement with the original (the
fine-tuned 6-layer model) and with its own fp32 source, and median latency over real dev sentences
at batch 1 (each sentence at its own length) and batch 32 (padded to the longest), `--threads`
intra-op threads, every artifact timed in the same rounds (interleaved: each round runs every artifact on the same
batch, in a rotating order, so drift in the machine's speed falls on all of them alike). Where the recipe holds out a test split,
accuracy there is shown too (it chose nothing). `--variants` adds the other int8 modes (static/dynamic, per-tensor, no fusion,
fp32 embeddings, each ONNX weight preset), the measurements the recipe defaults were chosen from. `cosine` is the int8 gate's
metric (cosine of the row-centred logit matrices vs the fp32 source); `row min` the worst single row's.
Artifacts go to .cache/bench-int8/<run>-<model>/ (`--reuse` keeps existing ones).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from alternate import alternate  # noqa: E402

# (name, target, precision, [quant] overrides) — the first four are the recipe's defaults.
MAIN = [
    ("executorch-fp32", "executorch", "fp32", {}),
    ("executorch-int8", "executorch", "int8", {}),
    ("onnx-fp32", "onnx", "fp32", {}),
    ("onnx-int8", "onnx", "int8", {}),
]
VARIANTS = [
    ("et-int8-static", "executorch", "int8", {"executorch_mode": "static"}),
    ("et-int8-dynamic", "executorch", "int8", {"executorch_mode": "dynamic"}),
    ("et-int8-static-pertensor", "executorch", "int8", {"executorch_mode": "static", "per_channel": False}),
    ("et-int8-dynamic-pertensor", "executorch", "int8", {"executorch_mode": "dynamic", "per_channel": False}),
    ("et-int8-static-fp32emb", "executorch", "int8", {"executorch_mode": "static", "int8_embeddings": False}),
    ("onnx-int8-dynamic", "onnx", "int8", {"onnx_mode": "dynamic"}),
    ("onnx-int8-static", "onnx", "int8", {"onnx_mode": "static"}),
    ("onnx-int8-dynamic-pertensor", "onnx", "int8", {"onnx_mode": "dynamic", "per_channel": False}),
    ("onnx-int8-dynamic-nofusion", "onnx", "int8", {"onnx_mode": "dynamic", "onnx_optimize": False}),
    ("onnx-int8-static-nofusion", "onnx", "int8", {"onnx_mode": "static", "onnx_optimize": False}),
    ("onnx-int8-dynamic-fp32emb", "onnx", "int8", {"onnx_mode": "dynamic", "int8_embeddings": False}),
    ("onnx-int8-x86-vnni", "onnx", "int8", {"onnx_preset": "x86-vnni"}),
    ("onnx-int8-x86-avx2", "onnx", "int8", {"onnx_preset": "x86-avx2"}),
]


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def batched(arrays_fn, texts, bs):
    return [arrays_fn(texts[i:i + bs]) for i in range(0, len(texts), bs)]


def interleaved_ms(backends: dict, batches, iters: int, warmup: int = 3) -> dict:
    """Median wall time (ms) of each backend's run over `iters` calls cycling through `batches`, after `warmup`
    rounds: every backend runs the same batch in each round, in a rotating order (benchmarks/alternate.py)."""
    inputs = [batches[i % len(batches)] for i in range(-warmup, iters)]
    times = alternate({k: be.run for k, be in backends.items()}, inputs, warmup_rounds=warmup)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "sst2"), help="A finished build's OUT (recipe.toml, original/, student/).")
    ap.add_argument("--model", default="student", choices=["student", "original"])
    ap.add_argument("--original", help="The fine-tuned original (default: RUN/original; a `toolformer compress` OUT has none).")
    ap.add_argument("--variants", action="store_true", help="Also every other int8 mode.")
    ap.add_argument("--only", nargs="*", help="Artifact names to run (default: all of the selected set).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--reuse", action="store_true", help="Reuse artifacts already in the cache directory.")
    ap.add_argument("--json", type=Path, help="Also write the rows (and the settings they were measured with) here.")
    args = ap.parse_args()

    import torch

    import targets
    from runtime_py import parity
    from runtime_py.backends import open_backend
    from runtime_py.tokenize import TextEncoder
    from toolchain import recipe as recipe_mod
    from toolchain.data import load_dataset
    from toolchain.debug import load_checkpoint
    from toolchain.int8 import export_int8
    from toolchain.model import save_tokenizer_json
    from toolchain.parity import torch_logits

    run = Path(args.run)
    ckpt = run / args.model
    orig_dir = Path(args.original) if args.original else run / "original"
    for need in (run / "recipe.toml", ckpt / "config.json", orig_dir / "config.json"):
        if not need.is_file():
            sys.exit(f"{need}: missing (build {run} first, e.g. toolformer build samples/recipes/sst2.toml --out runs/sst2)")
    base = recipe_mod.load(run / "recipe.toml")
    data = load_dataset(base.data, base.train.seed)
    cache = ROOT / ".cache" / "bench-int8" / f"{run.name}-{args.model}"
    cache.mkdir(parents=True, exist_ok=True)
    tok = save_tokenizer_json(str(ckpt), cache / "tokenizer.json")
    max_len = base.train.max_seq_len
    enc = TextEncoder(tok, max_len)
    texts, labels = data.validation.texts, np.asarray(data.validation.labels)
    torch.set_num_threads(args.threads)
    model = load_checkpoint(ckpt)
    original = load_checkpoint(orig_dir)
    eval_batches = batched(enc.encode, texts, 32)
    src_logits = np.concatenate([torch_logits(model, b) for b in eval_batches])
    test = data.test if data.test is not None and len(data.test) else None
    test_batches = batched(enc.encode, test.texts, 64) if test else []
    test_labels = np.asarray(test.labels) if test else None

    def test_acc(run_fn):
        return float((np.concatenate([run_fn(b) for b in test_batches]).argmax(1) == test_labels).mean()) if test else None

    if args.model == "original":
        orig_logits = src_logits
    else:  # the original reads its own tokenizer: a vocabulary-pruned student numbers the same text differently
        orig_enc = TextEncoder(save_tokenizer_json(str(orig_dir), cache / "original-tokenizer.json"), max_len)
        orig_logits = np.concatenate([torch_logits(original, b) for b in batched(orig_enc.encode, texts, 32)])
    rows = [dict(name=f"pytorch {args.model} (eager)", bytes=None, acc=float((src_logits.argmax(1) == labels).mean()),
                 heldout=test_acc(lambda b: torch_logits(model, b)),
                 agree_orig=float((src_logits.argmax(1) == orig_logits.argmax(1)).mean()), agree_src=1.0, cos=1.0, mincos=1.0)]
    print(f"# {run}/{args.model}: {len(texts)} validation rows, max_seq_len {max_len}, threads {args.threads}; "
          f"original accuracy {float((orig_logits.argmax(1) == labels).mean()):.4f}", flush=True)

    lat_b1 = [enc.encode(texts[i:i + 1]) for i in range(0, 64)]
    lat_b32 = batched(enc.encode, texts[:32 * 8], 32)
    chosen = MAIN + (VARIANTS if args.variants else [])
    if args.only:
        chosen = [c for c in chosen if c[0] in args.only]
    meta = {"max_seq_len": max_len}

    def export(tname, prec, quant, path):
        if prec == "int8":
            r = recipe_mod.load(run / "recipe.toml", {"quant": quant})
            return export_int8(tname, model, path, r, meta, data.train, tok)
        t = targets.get(tname)
        cfg = t.config_type(precision="fp32", max_batch=base.export.max_batch, max_seq_len=max_len,
                            **({"opset": base.export.opset} if tname == "onnx" else {}))
        return t.export(model, path, cfg, meta)

    backends = {}
    for name, tname, prec, quant in chosen:
        path = cache / f"{name}{targets.FILE_SUFFIX[tname]}"
        built = run / "artifacts" / f"model-{tname}-fp32{targets.FILE_SUFFIX[tname]}"
        if prec == "fp32" and args.model == "student" and built.is_file():
            path = built  # the build's own fp32 artifact of this student
        elif not (args.reuse and path.is_file()):
            t0 = time.perf_counter()
            try:
                facts = export(tname, prec, quant, path)
            except Exception as e:  # one failing variant must not hide the others' numbers
                print(f"  {name}: export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
                continue
            secs = time.perf_counter() - t0
            print(f"  exported {name} in {secs:.0f} s: " + ", ".join(f"{k}={v}" for k, v in facts.items()
                                                                    if k not in ("op_types", "ops_outside_delegate")), flush=True)
        backend = open_backend(path, tname, threads=args.threads)
        logits = np.concatenate([backend.run(b) for b in eval_batches])
        cmp = parity.compare(logits, src_logits)  # logit-matrix cosine (the int8 gate) and the worst row's
        row = dict(name=name, bytes=path.stat().st_size, acc=float((logits.argmax(1) == labels).mean()),
                   heldout=test_acc(backend.run),
                   agree_orig=float((logits.argmax(1) == orig_logits.argmax(1)).mean()),
                   agree_src=float((logits.argmax(1) == src_logits.argmax(1)).mean()),
                   cos=cmp["logit_cosine"], mincos=cmp["min_cosine"])
        rows.append(row)
        backends[name] = backend

    load_before = load()
    by_name = {r["name"]: r for r in rows}
    for key, batches, iters in (("b1", lat_b1, args.iters), ("b32", lat_b32, max(5, args.iters // 3))):
        for name, ms in interleaved_ms(backends, batches, iters).items():
            by_name[name][key] = ms

    fp32 = {r["name"][:-5]: r["bytes"] for r in rows if r["name"] in ("executorch-fp32", "onnx-fp32")}
    print(f"\nmodel: {args.model}; all artifacts timed interleaved; load average (1/5/15 min) before timing {load_before}, "
          f"after {load()}")
    print(f"{'artifact':<28} {'size MB':>8} {'vs fp32':>8} {'val acc':>8} {'held-out':>8} {'agree orig':>10} {'agree src':>9} "
          f"{'cosine':>8} {'row min':>8} {'b1 ms':>7} {'b32 ms':>8}")
    for r in rows:
        size = f"{r['bytes'] / 1e6:8.2f}" if r["bytes"] else f"{'-':>8}"
        kind = "executorch" if r["name"].startswith(("executorch", "et-")) else "onnx"
        ratio = f"{fp32[kind] / r['bytes']:7.2f}x" if r["bytes"] and fp32.get(kind) else f"{'-':>8}"
        lat = f"{r['b1']:7.2f} {r['b32']:8.2f}" if "b1" in r else f"{'-':>7} {'-':>8}"
        held = f"{r['heldout']:8.4f}" if r.get("heldout") is not None else f"{'-':>8}"
        print(f"{r['name']:<28} {size} {ratio} {r['acc']:8.4f} {held} {r['agree_orig']:10.4f} {r['agree_src']:9.4f} {r['cos']:8.4f} {r['mincos']:8.4f} {lat}")
    if args.json:
        import json
        import platform

        from targets.quant_onnx import host_preset

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "run": str(run), "model": args.model, "threads": args.threads, "iters": args.iters,
            "validation_rows": len(texts), "heldout_rows": len(test) if test else 0, "max_seq_len": max_len,
            "machine": platform.machine(), "onnx_auto_preset": host_preset(),
            "load_before": load_before, "load_after": load(), "rows": rows}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
