"""Peers for the comparison, built the way users build them today, each in an environment it can live in.

- Optimum ONNX: `optimum-cli export onnx` then `optimum-cli onnxruntime quantize --avx512_vnni`
  (and `--arm64`). optimum-onnx needs transformers<4.58, which cannot share Toolformer's
  environment, so it gets a virtual environment of its own under the cache directory, with
  torch pinned to the CPU build (an unpinned torch resolves to a multi-GB CUDA build).
- ExecuTorch plain: the Hugging Face model as is (default attention), `torch.export` →
  `to_edge_transform_and_lower(XnnpackPartitioner)` → `.pte`, as ExecuTorch's examples do. It
  lives in Toolformer's own environment (same executorch and transformers versions).

Peers are built into the cache, keyed by the checkpoint's hash; nothing here is vendored or committed.
Run alone: `python benchmarks/peer_env.py executorch-plain --model DIR --out FILE.pte`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache" / "peers"
TORCH_PIN = "torch==2.13.0"
OPTIMUM_REQS = [TORCH_PIN, "optimum-onnx[onnxruntime]==0.1.0"]
# Bumped when the way a peer is produced changes, so cached peers are rebuilt.
FLOW_VERSION = "1"


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def checkpoint_key(ckpt: Path) -> str:
    """Short hash of a checkpoint's weights and config (the cache key for its peers)."""
    h = hashlib.sha256(FLOW_VERSION.encode())
    for name in ("config.json", "model.safetensors"):
        p = ckpt / name
        if p.is_file():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _run(cmd: list, **kw) -> None:
    log("$ " + " ".join(map(str, cmd)))
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-25:])
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{tail}")


def optimum_env(cache: Path) -> Path:
    """A virtual environment with optimum-onnx (created once); returns its bin directory."""
    env = cache / "optimum-onnx"
    marker = env / ".toolformer-ready"
    if marker.is_file():
        return env / "bin"
    log(f"creating {env} for optimum-onnx (needs transformers<4.58; one-time, about a minute)")
    if env.exists():
        shutil.rmtree(env)
    _run([sys.executable, "-m", "venv", env])
    pip = env / "bin" / "pip"
    constraints = cache / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    _run([pip, "install", "-q", "-c", constraints, *OPTIMUM_REQS])
    freeze = subprocess.run([str(pip), "freeze"], capture_output=True, text=True).stdout
    marker.write_text(freeze)
    return env / "bin"


def env_versions(bin_dir: Path) -> dict:
    """Versions of the peer environment's key packages (reported with the results)."""
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('optimum-onnx', 'optimum', 'transformers', 'onnxruntime', 'onnx', 'torch')}))")
    out = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def optimum_onnx_peers(ckpt: Path, cache: Path, presets=("avx512_vnni", "arm64"), rebuild: bool = False) -> dict:
    """Optimum's ONNX export and its dynamic int8 quantization per preset: {name: onnx file}."""
    bin_dir = optimum_env(cache)
    base = cache / "artifacts" / checkpoint_key(ckpt)
    fp32_dir = base / "optimum-onnx"
    out = {}
    if rebuild or not (fp32_dir / "model.onnx").is_file():
        shutil.rmtree(fp32_dir, ignore_errors=True)
        t0 = time.perf_counter()
        _run([bin_dir / "optimum-cli", "export", "onnx", "--model", ckpt, "--task", "text-classification", fp32_dir],
             env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        log(f"optimum export: {time.perf_counter() - t0:.1f} s")
    out["optimum-onnx-fp32"] = fp32_dir / "model.onnx"
    for preset in presets:
        q_dir = base / f"optimum-onnx-int8-{preset}"
        if rebuild or not (q_dir / "model_quantized.onnx").is_file():
            shutil.rmtree(q_dir, ignore_errors=True)
            _run([bin_dir / "optimum-cli", "onnxruntime", "quantize", "--onnx_model", fp32_dir, f"--{preset}", "-o", q_dir])
        out[f"optimum-onnx-int8-{preset}"] = q_dir / "model_quantized.onnx"
    return out


def executorch_plain_peer(ckpt: Path, cache: Path, max_seq_len: int, rebuild: bool = False) -> Path:
    """The plain ExecuTorch flow's .pte (built in a child process of this environment, then cached)."""
    dest = cache / "artifacts" / checkpoint_key(ckpt) / f"executorch-plain-s{max_seq_len}.pte"
    if rebuild or not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        _run([sys.executable, __file__, "executorch-plain", "--model", ckpt, "--out", dest, "--max-seq-len", max_seq_len])
        log(f"executorch plain export: {time.perf_counter() - t0:.1f} s")
    return dest


def toolformer_same_model(ckpt: Path, cache: Path, max_seq_len: int, max_batch: int, rebuild: bool = False) -> dict:
    """The original itself through Toolformer's exporters (no compression): isolates what the export adds."""
    base = cache / "artifacts" / checkpoint_key(ckpt) / f"toolformer-original-s{max_seq_len}-b{max_batch}"
    out = {"executorch-fp32": base / "model-executorch-fp32.pte", "onnx-fp32": base / "model-onnx-fp32.onnx"}
    if rebuild or not all(p.is_file() for p in out.values()):
        base.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        _run([sys.executable, __file__, "toolformer-export", "--model", ckpt, "--out-dir", base,
              "--max-seq-len", max_seq_len, "--max-batch", max_batch])
        log(f"toolformer export of the original: {time.perf_counter() - t0:.1f} s")
    return out


def export_toolformer(ckpt: Path, out_dir: Path, max_seq_len: int, max_batch: int) -> None:
    """targets.executorch and targets.onnx on the unmodified checkpoint, as a build would call them."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoModelForSequenceClassification

    import targets

    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    for name in ("executorch", "onnx"):
        t = targets.get(name)
        cfg = t.config_type(precision="fp32", max_batch=max_batch, max_seq_len=max_seq_len)
        tmp = out_dir / f"partial-model-{name}-fp32{t.suffix}"
        t.export(model, tmp, cfg, {"max_seq_len": max_seq_len})
        tmp.replace(out_dir / f"model-{name}-fp32{t.suffix}")


def export_executorch_plain(ckpt: Path, out: Path, max_seq_len: int, max_batch: int = 64) -> None:
    """HF model as is → torch.export → XNNPACK → .pte; dynamic batch and sequence so it runs any input."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torch.export import Dim
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)

    class Logits(torch.nn.Module):
        # torch.export needs tensors out, not a ModelOutput; nothing else about the model changes.
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    enc = tok(["a short example sentence", "another one, a little longer than the first"], padding="max_length",
              max_length=16, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    batch, seq = Dim("batch", min=1, max=max_batch), Dim("seq", min=2, max=max_seq_len)
    spec = {0: batch, 1: seq}
    wrapper = Logits(model).eval()
    with torch.no_grad():
        ep = torch.export.export(wrapper, args, dynamic_shapes={"input_ids": spec, "attention_mask": spec, "token_type_ids": spec})
    program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    tmp = out.with_name(out.name + ".partial")
    tmp.write_bytes(program.buffer)
    tmp.replace(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("executorch-plain", help="export the plain ExecuTorch peer")
    e.add_argument("--model", required=True, type=Path)
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--max-seq-len", type=int, default=128)
    t = sub.add_parser("toolformer-export", help="the original through Toolformer's own exporters")
    t.add_argument("--model", required=True, type=Path)
    t.add_argument("--out-dir", required=True, type=Path)
    t.add_argument("--max-seq-len", type=int, default=128)
    t.add_argument("--max-batch", type=int, default=64)
    o = sub.add_parser("optimum", help="build the Optimum ONNX peers (and their environment)")
    o.add_argument("--model", required=True, type=Path)
    o.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = ap.parse_args(argv)
    if a.cmd == "executorch-plain":
        export_executorch_plain(a.model, a.out, a.max_seq_len)
    elif a.cmd == "toolformer-export":
        export_toolformer(a.model, a.out_dir, a.max_seq_len, a.max_batch)
    else:
        for k, v in optimum_onnx_peers(a.model, a.cache).items():
            print(f"{k}\t{v}")


if __name__ == "__main__":
    main()
