"""How far from this machine's limit are the artifacts? Measures the achieved fp32 and int8
matrix-multiply rate through the same runtimes the artifacts use (ONNX Runtime, ExecuTorch's
XNNPACK, and PyTorch for the eager original), then prints each artifact's achieved rate
(FLOPs per sequence / time) as a fraction of that ceiling.

    python benchmarks/roofline.py                     # runs/sst2, 2 threads, batch 1 and 32
    python benchmarks/roofline.py --build runs/x --threads 2 --seq-len 64 --batches 1,32

FLOPs per sequence are counted with torch's FlopCounterMode on the PyTorch checkpoint each
artifact was exported from (OUT/original, OUT/student), eager attention, at the timed shape:
2·M·K·N for every matmul, nothing for softmax, layer norm or GELU. The int8 ceiling is int8
operations per second of a large GEMM (u8·s8 MatMulInteger in ONNX Runtime; dynamically
quantized linear in XNNPACK), so it includes what each runtime needs around the GEMM itself.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP workers must not spin (ONNX Runtime is run with spinning off too); set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from alternate import markdown_table  # noqa: E402

# GEMM shapes (M, K, N): two large ones for the ceiling, and one shaped like a MiniLM FFN at 64 tokens.
SHAPES = [(512, 1024, 1024), (256, 2048, 1024), (64, 384, 1536)]


def best_time(fn, warmup: int, iters: int) -> float:
    """Fastest of `iters` runs of fn() after warm-up: what the machine can do, not what other jobs left over."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.min(ts))


def ort_gemm(m: int, k: int, n: int, int8: bool, threads: int, tmp: Path):
    """fn() running one (m×k)·(k×n) MatMul (fp32) or MatMulInteger (u8·s8 → s32) in ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        w = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "W")
        x_in = helper.make_tensor_value_info("X", TensorProto.UINT8, [m, k])
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
        node = helper.make_node("MatMulInteger", ["X", "W"], ["Y"])
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    else:
        w = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "W")
        x_in = helper.make_tensor_value_info("X", TensorProto.FLOAT, [m, k])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])
        node = helper.make_node("MatMul", ["X", "W"], ["Y"])
        x = rng.standard_normal((m, k), dtype=np.float32)
    model = helper.make_model(helper.make_graph([node], "gemm", [x_in], [y], [w]), opset_imports=[helper.make_opsetid("", 18)])
    path = tmp / f"gemm-{m}-{k}-{n}-{'int8' if int8 else 'fp32'}.onnx"
    onnx.save(model, str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"X": x})


def xnnpack_gemm(m: int, k: int, n: int, int8: bool, tmp: Path):
    """fn() running an (m×k) input through Linear(k, n) lowered to XNNPACK (int8: dynamic, per-channel)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)).eval()
    x = torch.randn(m, k)
    with torch.no_grad():
        if int8:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                                 get_symmetric_quantization_config)
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
            prepared = prepare_pt2e(torch.export.export(lin, (x,)).module(), q)
            prepared(x)
            lin = convert_pt2e(prepared)
        ep = torch.export.export(lin, (x,))
        prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = tmp / f"gemm-{m}-{k}-{n}-{'int8' if int8 else 'fp32'}.pte"
    path.write_bytes(prog.buffer)
    method = Runtime.get().load_program(path).load_method("forward")
    return lambda: method.execute([x])


def torch_gemm(m: int, k: int, n: int):
    """fn() running one fp32 matmul in eager PyTorch."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    return lambda: torch.mm(a, b)


def ceilings(threads: int, warmup: int, iters: int) -> tuple[dict, list]:
    """{(runtime, precision): best GFLOP/s or GOP/s} and every measured GEMM row."""
    rows, best = [], {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for m, k, n in SHAPES:
            cands = [("onnxruntime", "fp32", lambda: ort_gemm(m, k, n, False, threads, tmp)),
                     ("onnxruntime", "int8", lambda: ort_gemm(m, k, n, True, threads, tmp)),
                     ("xnnpack", "fp32", lambda: xnnpack_gemm(m, k, n, False, tmp)),
                     ("xnnpack", "int8", lambda: xnnpack_gemm(m, k, n, True, tmp)),
                     ("pytorch", "fp32", lambda: torch_gemm(m, k, n))]
            for runtime, prec, make in cands:
                t = best_time(make(), warmup, iters)
                rate = 2 * m * k * n / t / 1e9
                rows.append({"runtime": runtime, "precision": prec, "m": m, "k": k, "n": n, "ms": t * 1e3, "g_per_s": rate})
                best[(runtime, prec)] = max(best.get((runtime, prec), 0.0), rate)
    return best, rows


def count_flops(ckpt: Path, batch: int, seq_len: int) -> int:
    """Matmul FLOPs of one forward pass of a checkpoint (eager attention, so every matmul is seen)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(ckpt, attn_implementation="eager").eval()
    ids = torch.ones(batch, seq_len, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    return int(fc.get_total_flops())


RUNTIME_OF = {"onnx": "onnxruntime", "executorch": "xnnpack", "pytorch": "pytorch"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=ROOT / "runs" / "sst2")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seq-len", type=int, help="tokens per sequence (default: the bundle's max_seq_len)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    bundle = a.build / "bundle"
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{a.build}: no bundle/manifest.json (build first: toolformer build samples/recipes/sst2.toml --out {a.build})")

    import torch

    from runtime_py.backends import open_backend, reset_executorch_threadpool
    from runtime_py.bundle import artifact_key, read_manifest
    from toolchain.bench import machine_line, real_inputs, time_calls, torch_runner

    reset_executorch_threadpool(a.threads)  # before any program is loaded
    torch.set_num_threads(a.threads)
    manifest = read_manifest(bundle)
    seq = a.seq_len or int(manifest["max_seq_len"])
    batches = [int(b) for b in a.batches.split(",")]
    texts = json.loads((bundle / "golden.json").read_text())["texts"]
    print(machine_line(a.threads))
    best, gemm_rows = ceilings(a.threads, warmup=3, iters=a.iters)
    print(f"\nAchieved matrix-multiply rate (best of {a.iters} runs; G = 1e9 FLOP/s fp32, 1e9 int8 op/s):\n")
    print(markdown_table(["runtime", "precision", "M×K×N", "ms", "G/s"],
                         [[r["runtime"], r["precision"], f"{r['m']}×{r['k']}×{r['n']}", f"{r['ms']:.2f}", f"{r['g_per_s']:.1f}"]
                          for r in gemm_rows]))

    subjects = []
    if (a.build / "original" / "config.json").is_file():
        from transformers import AutoModelForSequenceClassification

        m = AutoModelForSequenceClassification.from_pretrained(a.build / "original").eval()
        otok = a.build / "original" / "tokenizer.json"
        subjects.append(("original (eager)", "pytorch", "fp32", a.build / "original", torch_runner(m),
                         otok if otok.is_file() else bundle / "tokenizer.json"))
    for art in manifest["artifacts"]:
        src = a.build / str(art.get("source") or manifest.get("model", {}).get("shipped", ""))
        if not (src / "config.json").is_file():
            print(f"note: {art['file']}: no checkpoint {src} to count FLOPs from; skipped")
            continue
        # The bundle's tokenizer is the one its artifacts read (a vocabulary-pruned student's own ids).
        subjects.append((artifact_key(art), art["format"], art["precision"], src,
                         open_backend(bundle / art["file"], art["format"], threads=a.threads).run, bundle / "tokenizer.json"))
    rows = []
    flops_cache = {}
    for batch in batches:
        for name, fmt, prec, src, fn, tok in subjects:
            key = (str(src), batch)
            if key not in flops_cache:
                flops_cache[key] = count_flops(src, batch, seq)
            arrays = real_inputs(tok, texts, batch, seq)
            t = float(np.min(time_calls(fn, arrays, 5, a.iters)))  # best of N, like the ceiling
            ceil_key = (RUNTIME_OF[fmt], "int8" if prec == "int8" else "fp32")
            achieved = flops_cache[key] / t / 1e9
            rows.append({"name": name, "format": fmt, "precision": prec, "batch": batch, "seq_len": seq,
                         "gflops_per_seq": flops_cache[key] / batch / 1e9, "ms": t * 1e3, "achieved_g_per_s": achieved,
                         "ceiling": f"{ceil_key[0]} {ceil_key[1]}", "ceiling_g_per_s": best[ceil_key],
                         "fraction": achieved / best[ceil_key]})
    print(f"\nEach artifact against its runtime's ceiling ({seq} tokens of real text, best of {a.iters} runs; fraction = achieved / ceiling):\n")
    print(markdown_table(["artifact", "batch", "GFLOP/seq", "ms", "achieved G/s", "ceiling", "ceiling G/s", "fraction"],
                         [[r["name"], r["batch"], f"{r['gflops_per_seq']:.3f}", f"{r['ms']:.2f}", f"{r['achieved_g_per_s']:.1f}",
                           r["ceiling"], f"{r['ceiling_g_per_s']:.1f}", f"{100 * r['fraction']:.1f}%"] for r in rows]))
    print("\n" + machine_line(a.threads))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"machine": machine_line(a.threads), "gemm": gemm_rows,
                                      "ceilings": {f"{k[0]} {k[1]}": v for k, v in best.items()}, "artifacts": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
