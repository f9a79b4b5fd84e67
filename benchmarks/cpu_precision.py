"""Does bf16 autocast help training on this CPU? Training steps of a MiniLM student, fp32 vs bf16.

    python benchmarks/cpu_precision.py [--layers 3] [--steps 20] [--batch 32] [--seq 64] [--threads 2]

Takes the embedded all-MiniLM-L6-v2 (bottom `--layers` layers, a 2-label head), real SST-2 training
sentences, and times full optimizer steps (forward, backward, AdamW) in fp32 and under
`torch.autocast("cpu", dtype=torch.bfloat16)` — what `train.precision = "bf16"` gives on the CPU
through Accelerate. The two precisions alternate step by step from the same weights so machine load
hits both alike; the table shows median step time and the loss after the last step. `train.precision
= "auto"` keeps fp32 on the CPU; this is the measurement behind that default.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain.compress.truncate import truncate
    from toolchain.data import read_table

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    src = model_mod.default_model_dir()
    base = truncate(model_mod.load_classifier(str(src), ["0", "1"]), list(range(args.layers)))
    tok = model_mod.save_tokenizer_json(str(src), ROOT / ".cache" / "cpu-precision" / "tokenizer.json")
    enc = TextEncoder(tok, args.seq)
    rows, _ = read_table(SST2 / "train.tsv")
    rows = rows[: args.batch * args.steps]
    batches = []
    for i in range(0, len(rows), args.batch):
        chunk = rows[i:i + args.batch]
        arrays = enc.encode([r["sentence"] for r in chunk], pad_to=args.seq)
        batches.append(({k: torch.from_numpy(v) for k, v in arrays.items()}, torch.tensor([int(r["label"]) for r in chunk])))

    runs = {}
    for name in ("fp32", "bf16"):
        m = copy.deepcopy(base).train()
        runs[name] = {"model": m, "opt": torch.optim.AdamW(m.parameters(), lr=1e-4), "times": [], "loss": None}

    def step(r, name, x, y):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
            out = r["model"](**x, labels=y)
        out.loss.backward()
        r["opt"].step()
        r["opt"].zero_grad(set_to_none=True)
        r["times"].append((time.perf_counter() - t0) * 1e3)
        r["loss"] = float(out.loss)

    for i, (x, y) in enumerate(batches):
        for name in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            step(runs[name], name, x, y)

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    bf16_isa = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags.split()]
    print(f"{cpu}; {args.threads} threads; bf16 instructions: {', '.join(bf16_isa) or 'none'}; load average {load}")
    print(f"MiniLM student, {args.layers} layers, batch {args.batch} x {args.seq} tokens, {len(batches)} steps each "
          f"(first 2 excluded from the median)\n")
    print("| precision | median step ms | steps/s | loss after last step |")
    print("|---|---:|---:|---:|")
    for name, r in runs.items():
        med = statistics.median(r["times"][2:])
        print(f"| {name} | {med:.1f} | {1e3 / med:.2f} | {r['loss']:.6f} |")
    ratio = statistics.median(runs["bf16"]["times"][2:]) / statistics.median(runs["fp32"]["times"][2:])
    print(f"\nbf16 / fp32 step time: {ratio:.2f} ({'bf16 faster' if ratio < 1 else 'fp32 faster'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
