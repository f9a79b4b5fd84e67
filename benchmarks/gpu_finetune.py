"""GPU fine-tuning proof: the embedded all-MiniLM-L6-v2 on SST-2 with mixed precision, next to the CPU figure.

The original is trained with `toolformer finetune` (toolchain.pipeline.finetune, i.e. Accelerate,
bf16 autocast on GPUs that have it, else fp16 with a gradient scaler) on a GPU machine; the checkpoint
comes back and is exported, parity-checked, bundled and verified here on the CPU. Four steps:

  here:  python benchmarks/gpu_finetune.py prepare                  # .cache/gpu_carry: model, SST-2, tomli_w
  here:  python benchmarks/gpu_finetune.py cpu --max-train 512      # CPU figure (same code, a subset)
  GPU:   cd REPO && PYTHONUNBUFFERED=1 python3 benchmarks/gpu_finetune.py gpu --out $OUT
         (device tool: carry [".cache/gpu_carry"]; about 1–3 min on an H200, budget 8 min)
  here:  python benchmarks/gpu_finetune.py export DIR_WITH_RETURNED_FILES

Transfers are capped (64 MiB there, 16 MiB a file back), so the 87 MiB fp32 weights travel as fp16
(45 MiB; tar split into 15 MiB parts) and are widened to fp32 at each end before training/export; the
rounding (relative 2^-11) is far below what fine-tuning changes, and the CPU side re-measures accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CARRY = ROOT / ".cache" / "gpu_carry"  # git-ignored; travels to the GPU machine via the device tool's `carry`
SST2 = ROOT.parent / "shared" / "data" / "sst2"
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
PART_BYTES = 15 * 1024 * 1024
# The GPU machine's Python has torch/transformers/accelerate but not tomli_w (recipe.toml is written with it).
sys.path.append(str(CARRY / "site"))


def _cast_weights(src: Path, dst: Path, dtype_name: str) -> None:
    """Copy a checkpoint dir, its safetensors weights cast to `dtype_name` (float16 to travel, float32 to use)."""
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy2(f, dst / f.name)
    dtype = getattr(torch, dtype_name)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})


def prepare(args) -> None:
    """Fill .cache/gpu_carry with what the GPU machine lacks: the model (fp16), SST-2 and tomli_w."""
    import tomli_w

    from toolchain.model import default_model_dir

    if CARRY.exists():
        shutil.rmtree(CARRY)
    src = default_model_dir()
    tmp = CARRY / "minilm-src"
    tmp.mkdir(parents=True)
    for name in (*MODEL_FILES, "model.safetensors"):
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    _cast_weights(tmp, CARRY / "minilm-fp16", "float16")
    shutil.rmtree(tmp)
    (CARRY / "sst2").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy2(SST2 / name, CARRY / "sst2" / name)
    shutil.copytree(Path(tomli_w.__file__).parent, CARRY / "site" / "tomli_w")
    total = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
    print(f"{CARRY}: {total / 2**20:.1f} MiB to carry")


def _recipe(data_dir: Path, model_dir: Path, out: Path, device: str, epochs: float, max_train: int, batch: int, lr: float):
    from toolchain import recipe as recipe_mod

    return recipe_mod.build({
        "out": str(out),
        "model": {"path": str(model_dir)},
        "data": {"train": str(data_dir / "train.tsv"), "validation": str(data_dir / "dev.tsv"),
                 "text_column": ["sentence", "content"], "label_column": ["label"], "labels": ["0", "1"],
                 "max_train_samples": max_train},
        "train": {"epochs": epochs, "batch_size": batch, "learning_rate": lr, "max_seq_len": 64, "device": device},
    })


def _finetune(args, device: str, data_dir: Path, model_fp16: Path, work: Path) -> tuple[dict, Path]:
    """Widen the carried weights to fp32, fine-tune with `toolformer finetune`'s code, return its figures."""
    from toolchain.pipeline import finetune as finetune_original

    model_dir = work / "minilm-fp32"
    _cast_weights(model_fp16, model_dir, "float32")
    ckpt = work / "original"
    r = _recipe(data_dir, model_dir, ckpt, device, args.epochs, args.max_train, args.batch_size, args.lr)
    t0 = time.perf_counter()
    res = finetune_original(r, ckpt, force=True)
    fig = {**res.facts(), "dev_accuracy": res.best_accuracy, "best_epoch": res.best_epoch, "epochs": args.epochs,
           "train_rows": _rows(r),
           "train_seconds": round(res.train_seconds, 1), "wall_seconds": round(time.perf_counter() - t0, 1),
           "history": res.history}
    return fig, ckpt


def _rows(r) -> int:
    from toolchain.data import load_dataset

    return len(load_dataset(r.data, r.train.seed).train)


def table(rows: list) -> str:
    head = f"{'run':<10} {'device':<26} {'precision':<9} {'procs':>5} {'train rows':>10} {'epochs':>6} {'examples/s':>11} {'train s':>8} {'dev acc':>8}"
    lines = [head, "-" * len(head)]
    for name, f in rows:
        lines.append(f"{name:<10} {(f['device'] + ' ' + f.get('device_name', ''))[:26]:<26} {f['precision']:<9} {f['processes']:>5} "
                     f"{f['train_rows']:>10} {f['epochs']:>6g} {f['examples_per_s']:>11.1f} {f['train_seconds']:>8.1f} {f['dev_accuracy']:>8.4f}")
    return "\n".join(lines)


def cpu(args) -> None:
    """The CPU figure: the same fine-tune on a subset here; saved next to the carry for the GPU table."""
    import tempfile

    torch_threads()
    with tempfile.TemporaryDirectory(prefix="gpu-finetune-cpu-") as tmp:
        fig, _ = _finetune(args, "cpu", CARRY / "sst2", CARRY / "minilm-fp16", Path(tmp))
    fig["load"] = os.getloadavg()[0]
    (CARRY / "cpu_result.json").write_text(json.dumps(fig, indent=2))
    print(table([("cpu", fig)]))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


def torch_threads() -> None:
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)


def gpu(args) -> None:
    """On the GPU machine: fine-tune in mixed precision, print the table, pack the checkpoint (fp16 parts) into OUT."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu: no CUDA device visible (--device cpu runs the same steps on the CPU, as a dry run)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu_finetune")
    shutil.rmtree(work, ignore_errors=True)
    fig, ckpt = _finetune(args, args.device, CARRY / "sst2", CARRY / "minilm-fp16", work)
    (out / "gpu_result.json").write_text(json.dumps(fig, indent=2))
    rows = [(args.device, fig)]
    if (CARRY / "cpu_result.json").is_file():
        rows.insert(0, ("cpu", json.loads((CARRY / "cpu_result.json").read_text())))
    print(table(rows))
    if args.device == "cuda":
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}; "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    packed = work / "packed"
    _cast_weights(ckpt, packed, "float16")
    tar_path = work / "original.tar"
    with tarfile.open(tar_path, "w") as tf:
        tf.add(packed, arcname="original")
    data = tar_path.read_bytes()
    for i in range(0, len(data), PART_BYTES):
        (out / f"original.tar.part{i // PART_BYTES:02d}").write_bytes(data[i:i + PART_BYTES])
    print(f"packed {len(data) / 2**20:.1f} MiB into {-(-len(data) // PART_BYTES)} parts under {out}")


def export(args) -> None:
    """Here: reassemble the returned checkpoint, widen to fp32, build (train.skip) + verify on the CPU."""
    import tempfile

    src = Path(args.returned)
    parts = sorted(src.glob("original.tar.part*"))
    if not parts:
        sys.exit(f"export: no original.tar.part* files in {src}")
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="gpu-finetune-export-") as tmp:
        tar_path = Path(tmp) / "original.tar"
        tar_path.write_bytes(b"".join(p.read_bytes() for p in parts))
        with tarfile.open(tar_path) as tf:
            tf.extractall(tmp, filter="data")
        model_dir = out.parent / f"{out.name}-original"
        shutil.rmtree(model_dir, ignore_errors=True)
        _cast_weights(Path(tmp) / "original", model_dir, "float32")
    cmd = [sys.executable, "-m", "toolchain.cli", "build", "--model", str(model_dir), "--train", str(SST2 / "train.tsv"),
           "--validation", str(SST2 / "dev.tsv"), "--text-column", "sentence,content", "--label-column", "label",
           "--max-seq-len", "64", "--num-layers", str(args.num_layers), "--out", str(out), "--force",
           "--set", "train.skip=true", "--set", 'data.labels=["0","1"]', "--set", "parity.num_examples=0"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    subprocess.run([sys.executable, "-m", "toolchain.cli", "verify", str(out / "bundle")], cwd=ROOT, check=True)
    summary = json.loads((out / "summary.json").read_text())
    gpu_fig = json.loads((src / "gpu_result.json").read_text()) if (src / "gpu_result.json").is_file() else None
    print(f"dev accuracy of the returned original: {gpu_fig['dev_accuracy']:.4f} where it trained ({gpu_fig['device']} {gpu_fig['precision']}), "
          if gpu_fig else "", end="")
    print(f"{summary['original']['val_accuracy']:.4f} on the CPU (fp32, weights via fp16); "
          + ", ".join(f"{a['artifact']} {a['accuracy']:.4f}" for a in summary["artifacts"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="fill .cache/gpu_carry (run here)")
    for name, default_train, default_epochs in (("cpu", 512, 1.0), ("gpu", 0, 2.0)):
        p = sub.add_parser(name, help=f"fine-tune on the {name.upper()}")
        p.add_argument("--max-train", type=int, default=default_train, help="training rows (0 = all 67,349)")
        p.add_argument("--epochs", type=float, default=default_epochs)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--lr", type=float, default=5e-5)
        if name == "gpu":
            p.add_argument("--out", required=True, help="where the results go ($OUT on the device machine)")
            p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the same steps")
    p = sub.add_parser("export", help="export + verify the returned checkpoint here")
    p.add_argument("returned", help="folder holding original.tar.part* and gpu_result.json")
    p.add_argument("--out", default=str(ROOT / "runs" / "gpu-sst2"))
    p.add_argument("--num-layers", type=int, default=0, help="0 ships the GPU-trained original itself")
    args = ap.parse_args()
    {"prepare": prepare, "cpu": cpu, "gpu": gpu, "export": export}[args.cmd](args)


if __name__ == "__main__":
    main()
