"""Compression sweep on real weights and data: the embedded all-MiniLM-L6-v2 fine-tuned on SST-2
(the original) and students of 1, 2 and 3 layers, each trained with plain cross-entropy, with
distillation, and with distillation after structured pruning (half the heads and FFN neurons), plus
the vocabulary-pruned version of the distilled ones. For every model: SST-2 dev accuracy (all 872
sentences), parameters, ONNX fp32 size, FLOPs per sequence and ONNX Runtime latency at batch 1.

    flock /tmp/toolformer-heavy.lock python benchmarks/compression.py

Trained students are cached under .cache/compression-bench (keyed by every setting that shapes
them), so a rerun only measures. The original is runs/sst2/original when that build exists.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def log(msg: str) -> None:
    print(f"[compression-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()[:16]


def load_data(args):
    from toolchain.data import load_dataset
    from toolchain.recipe import DataSection

    cfg = DataSection(train=str(SST2 / "train.tsv"), validation=str(SST2 / "dev.tsv"), text_column=["sentence", "content"],
                      label_column=["label"], labels=["0", "1"], max_train_samples=args.train_samples)
    return load_dataset(cfg, args.seed)


def train_cfg(args, epochs: float, lr: float):
    from toolchain.finetune import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=32, learning_rate=lr, eval_batch_size=128, seed=args.seed, device="cpu", precision="fp32")


def get_original(args, data, cache: Path):
    """The fine-tuned 6-layer original: runs/sst2/original when present, else fine-tuned once and cached."""
    from toolchain import model as model_mod
    from toolchain.finetune import train

    src = Path(args.original) if args.original else ROOT / "runs" / "sst2" / "original"
    if (src / "model.safetensors").is_file():
        log(f"original: {src}")
        return model_mod.load_classifier(str(src), data.labels), src
    dest = cache / f"original-n{args.train_samples}-s{args.seed}"
    if not (dest / "model.safetensors").is_file():
        log(f"original: {src} not found; fine-tuning the embedded MiniLM on {len(data.train)} rows into {dest}")
        from runtime_py.tokenize import TextEncoder

        m = model_mod.load_classifier(str(model_mod.default_model_dir()), data.labels)
        tok = model_mod.save_tokenizer_json(str(model_mod.default_model_dir()), cache / "tokenizer.json")
        train(m, data.train, data.validation, TextEncoder(tok, args.max_seq_len), train_cfg(args, 1.0, 5e-5), dest, "original")
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(model_mod.default_model_dir()).save_pretrained(dest)
    return model_mod.load_classifier(str(dest), data.labels), dest


def build_student(args, original, data, encoder, layers: int, variant: str, teacher_cache: dict, dest: Path):
    """Truncate to the bottom `layers`, optionally prune, then train with CE or distillation; saved to `dest`."""
    import torch

    from toolchain.compress import prune
    from toolchain.compress.distill import DistillConfig, Distiller
    from contextlib import nullcontext as _Null
    from toolchain.compress.truncate import truncate
    from toolchain.finetune import batches, to_torch, train

    torch.manual_seed(args.seed)
    student = truncate(original, list(range(layers)))
    if "prune" in variant:
        heads, ffn = prune_spec(args, variant)
        imp = [(to_torch(a, torch.device("cpu")), torch.from_numpy(y))
               for (a, y), _ in zip(batches(data.train, encoder, 32, shuffle=True, seed=args.seed), range(args.importance_batches))]
        prune.prune(student, prune.PruneConfig(heads=heads, ffn=ffn, importance="gradient"), batches=imp)
    student.bert.embeddings.word_embeddings.weight.requires_grad_(not args.freeze_embeddings)
    distiller = None
    if variant.startswith("kd"):
        distiller = Distiller(original, student, DistillConfig(temperature=args.temperature, alpha=args.alpha))
        distiller.cache = teacher_cache  # one teacher pass per sentence for the whole sweep
    t0 = time.perf_counter()
    with (distiller or _Null()):
        res = train(student, data.train, data.validation, encoder, train_cfg(args, args.epochs, args.lr), dest, f"L{layers} {variant}",
                    loss_fn=distiller)
    student.bert.embeddings.word_embeddings.weight.requires_grad_(True)
    student.save_pretrained(dest)
    (dest / "bench.json").write_text(json.dumps({"train_seconds": time.perf_counter() - t0, "best_epoch": res.best_epoch}))
    return student


def prune_spec(args, variant: str) -> tuple[float, float]:
    """Heads/FFN fractions of a pruning variant: 'kd-prune' uses --prune-heads/--prune-ffn, 'kd-prune:H:F' its own."""
    parts = variant.split(":")
    return (float(parts[1]), float(parts[2])) if len(parts) == 3 else (args.prune_heads, args.prune_ffn)


def jobs(args) -> list[tuple[int, str]]:
    """(layers, variant) pairs: every --layers x --variants, then each --extra 'L:variant'."""
    out = [(int(L), v) for L in args.layers.split(",") for v in args.variants.split(",")]
    for e in args.extra:
        L, v = e.split(":", 1)
        out.append((int(L), v))
    return out


def export_onnx(model, path: Path, max_seq_len: int) -> Path:
    from targets.onnx import OnnxConfig, export

    if not path.is_file():
        export(model, path, OnnxConfig(max_batch=64, max_seq_len=max_seq_len))
    return path


def export_int8(model, path: Path, max_seq_len: int) -> Path:
    """ONNX Runtime dynamic int8 (per-channel weights, int8 embedding tables): the default int8 artifact."""
    from targets.quant_onnx import OnnxInt8Config, export

    if not path.is_file():
        export(model, path, OnnxInt8Config(max_batch=64, max_seq_len=max_seq_len))
    return path


def onnx_accuracy(path: Path, encoder, split, threads: int) -> float:
    """Validation accuracy of an ONNX file through runtime_py's backend (batches of 64)."""
    import numpy as np

    from runtime_py.backends import OnnxBackend
    from runtime_py.parity import accuracy

    sess = OnnxBackend(path, threads=threads)
    logits = np.concatenate([sess.run(encoder.encode(split.texts[i:i + 64])) for i in range(0, len(split.texts), 64)])
    return accuracy(logits, np.asarray(split.labels))


def latency(onnx_files: dict, encoders: dict, texts: list, threads: int, rounds: int) -> dict:
    """p50/mean ms per sentence at batch 1, models interleaved sentence by sentence so load noise is shared."""
    import numpy as np

    from runtime_py.backends import OnnxBackend

    sess = {k: OnnxBackend(p, threads=threads) for k, p in onnx_files.items()}
    arrays = {k: [encoders[k].encode([t]) for t in texts] for k in onnx_files}
    for k in sess:  # warm-up
        for a in arrays[k][:20]:
            sess[k].run(a)
    times = {k: [] for k in sess}
    for _ in range(rounds):
        for i in range(len(texts)):
            for k in sess:
                t = time.perf_counter()
                sess[k].run(arrays[k][i])
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: {"p50_ms": float(np.median(v)), "mean_ms": float(np.mean(v)), "runs": len(v)} for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--original", help="Fine-tuned checkpoint (default: runs/sst2/original).")
    ap.add_argument("--train-samples", type=int, default=8000, help="Seeded SST-2 train subset (CPU budget).")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--layers", default="1,2,3")
    ap.add_argument("--variants", default="ce,kd,kd-prune", help="ce | kd | kd-prune | ce-prune, comma-separated.")
    ap.add_argument("--extra", action="append", default=[], metavar="L:VARIANT",
                    help="One more student, e.g. 3:kd-prune:0.25:0.25 (3 layers, a quarter of the heads and FFN neurons pruned).")
    ap.add_argument("--vocab-rows", action=argparse.BooleanOptionalAction, default=True,
                    help="Add each student's vocabulary-pruned version (+vocab) to the table.")
    ap.add_argument("--vocab-min-count", type=int, default=1, help="Occurrences in the train file a token needs to keep its row.")
    ap.add_argument("--prune-heads", type=float, default=0.5)
    ap.add_argument("--prune-ffn", type=float, default=0.5)
    ap.add_argument("--importance-batches", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True,
                    help="Keep the word embeddings fixed while students train (their AdamW update dominates a CPU step).")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="Training threads: on 2 shared cores one thread beat two (no OpenMP oversubscription).")
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for latency.")
    ap.add_argument("--latency-sentences", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "compression-bench"))
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                    help="Also export each model to ONNX int8 (dynamic, int8 embeddings) and score it on dev.")
    ap.add_argument("--json", help="Also write the rows as JSON here.")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain.compress import measure, vocab
    from toolchain.data import read_table
    from toolchain.finetune import evaluate

    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    log(f"start; {uptime()}; torch threads {torch.get_num_threads()}")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data = load_data(args)
    log(f"data: train {len(data.train)} (subset of SST-2 train), dev {len(data.validation)}")
    original, orig_dir = get_original(args, data, cache)
    original.eval()
    tok = model_mod.save_tokenizer_json(str(orig_dir), cache / "tokenizer.json")
    encoder = TextEncoder(tok, args.max_seq_len)
    orig_key = file_digest(orig_dir / "model.safetensors")

    # Vocabulary kept for the pruned-vocabulary rows: every token of the full SST-2 train file (not dev).
    rows_all, cols = read_table(SST2 / "train.tsv")
    keep_ids = vocab.corpus_ids(tok, list(dict.fromkeys(r["sentence"] for r in rows_all)), vocab.VocabConfig(min_count=args.vocab_min_count))
    vocab_tok = vocab.prune_tokenizer(tok, keep_ids, cache / f"vocab-{orig_key}-m{args.vocab_min_count}" / "tokenizer.json")
    vocab_encoder = TextEncoder(vocab_tok, args.max_seq_len)
    log(f"vocabulary of the full train file: {len(keep_ids)} of {original.config.vocab_size} tokens")

    models = {"original": (original, encoder, {"layers": 6, "variant": "original"})}
    teacher_cache: dict = {}
    for L, variant in jobs(args):
        heads, ffn = prune_spec(args, variant)
        key = (f"{orig_key}-L{L}-{variant.split(':')[0]}-n{args.train_samples}-e{args.epochs:g}-lr{args.lr:g}-s{args.seed}"
               + (f"-T{args.temperature:g}-a{args.alpha:g}" if variant.startswith("kd") else "") + ("-fz" if args.freeze_embeddings else "")
               + (f"-h{heads:g}-f{ffn:g}-b{args.importance_batches}" if "prune" in variant else ""))
        dest = cache / key
        if (dest / "bench.json").is_file():
            log(f"L{L} {variant}: cached ({dest.name})")
            m = model_mod.load_classifier(str(dest), data.labels)
        else:
            log(f"L{L} {variant}: training ({uptime()})")
            m = build_student(args, original, data, encoder, L, variant, teacher_cache, dest)
        m.to("cpu").eval()
        meta = json.loads((dest / "bench.json").read_text())
        models[f"L{L} {variant}"] = (m, encoder, {"layers": L, "variant": variant, "dir": str(dest), **meta})
        if args.vocab_rows:
            import copy

            # Post-hoc and exact for in-vocabulary text: no retraining.
            small = vocab.prune_positions(vocab.prune_embeddings(copy.deepcopy(m), keep_ids), args.max_seq_len)
            models[f"L{L} {variant}+vocab"] = (small, vocab_encoder, {"layers": L, "variant": variant + "+vocab", "dir": str(dest)})

    log(f"evaluating and exporting {len(models)} models")
    rows, onnx_files, encoders = [], {}, {}
    orig_acc = None
    for name, (m, enc, meta) in models.items():
        acc = evaluate(m, data.validation, enc, 128)
        orig_acc = acc if name == "original" else orig_acc
        out_dir = Path(meta.get("dir", cache / f"original-onnx-{orig_key}"))
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_name = f"model-vocab{args.vocab_min_count}-pos{args.max_seq_len}.onnx" if name.endswith("+vocab") else "model.onnx"
        onnx_path = export_onnx(m, out_dir / onnx_name, args.max_seq_len)
        onnx_files[name], encoders[name] = onnx_path, enc
        row = measure.describe(m, name, args.max_seq_len, acc)
        row.update({"variant": meta["variant"], "onnx_bytes": onnx_path.stat().st_size, "train_seconds": meta.get("train_seconds")})
        if args.int8:
            q = export_int8(m, onnx_path.with_name(onnx_path.stem + "-int8.onnx"), args.max_seq_len)
            row.update({"int8_bytes": q.stat().st_size, "int8_accuracy": onnx_accuracy(q, enc, data.validation, args.threads)})
        rows.append(row)
        log(f"{name}: dev accuracy {acc:.4f}, {row['params']:,} params, ONNX {row['onnx_bytes'] / 1e6:.2f} MB"
            + (f", int8 {row['int8_bytes'] / 1e6:.2f} MB at {row['int8_accuracy']:.4f}" if args.int8 else ""))

    load_before = uptime()
    log(f"latency at batch 1 ({args.threads} thread(s), {args.latency_sentences} dev sentences x {args.rounds} rounds); {load_before}")
    lat = latency(onnx_files, encoders, data.validation.texts[:args.latency_sentences], args.threads, args.rounds)
    load_after = uptime()
    for r in rows:
        r.update(lat[r["stage"]])

    hdr = (f"| model | layers | heads | FFN | vocab | params | ONNX fp32 MB | GFLOPs/seq@{args.max_seq_len} | "
           f"dev accuracy | % of original | b1 p50 ms |" + (" int8 MB | int8 dev accuracy |" if args.int8 else ""))
    print("\n" + hdr + "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.int8 else ""))
    for r in rows:
        print(f"| {r['stage']} | {r['layers']} | {sum(r['heads'])} | {sum(r['ffn'])} | {r['vocab']:,} | {r['params']:,} | "
              f"{r['onnx_bytes'] / 1e6:.2f} | {r['flops'] / 1e9:.3f} | {100 * r['val_accuracy']:.2f}% | "
              f"{100 * r['val_accuracy'] / orig_acc:.1f}% | {r['p50_ms']:.2f} |"
              + (f" {r['int8_bytes'] / 1e6:.2f} | {100 * r['int8_accuracy']:.2f}% |" if args.int8 else ""))
    best = [r for r in rows[1:] if r["onnx_bytes"] < 40e6 and r["val_accuracy"] >= 0.97 * orig_acc]
    print(f"\n+vocab: word-embedding rows kept for the {len(keep_ids)} tokens seen >= {args.vocab_min_count}x in the distinct sentences of the SST-2 train file, position rows "
          f"cut to {args.max_seq_len}; no retraining.")
    print(f"students under 40 MB (ONNX fp32) keeping >= 97% of the original's dev accuracy: "
          f"{', '.join(r['stage'] for r in best) or 'none'}")
    if args.int8:
        best10 = [r for r in rows[1:] if r["int8_bytes"] < 10e6 and r["int8_accuracy"] >= 0.97 * orig_acc]
        print(f"int8 students under 10 MB keeping >= 97% of the original's dev accuracy: "
              f"{', '.join(r['stage'] for r in best10) or 'none'}")
    print(f"train subset {len(data.train)} rows, {args.epochs:g} epochs per student, dev {len(data.validation)} sentences; "
          f"{'frozen' if args.freeze_embeddings else 'trained'} word embeddings, {args.torch_threads} training thread(s); "
          f"sweep wall time {time.perf_counter() - t_start:.0f} s")
    print(f"load before latency: {load_before}\nload after latency:  {load_after}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "uptime": [load_before, load_after]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
