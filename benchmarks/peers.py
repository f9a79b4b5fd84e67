"""Toolformer's artifacts side by side with the way users export the same fine-tuned model today.

Peers (built from the build's fine-tuned original, see peer_env.py): Optimum's ONNX export +
`optimum-cli onnxruntime quantize` int8 (avx512_vnni and arm64 presets), and ExecuTorch's plain
torch.export → XNNPACK flow on the Hugging Face model as is. optimum-executorch is not a peer: its
1.1.0 release has no text-classification task (and pins transformers==5.0.0rc1).

Everything is timed in this one process, alternating subject by subject on the same input each
round (ONNX Runtime sessions with spinning off so idle threads do not steal the cores), and each
ratio is the median of the per-round ratios. Accuracy is measured on the whole validation file.

    python benchmarks/peers.py                        # uses runs/sst2 and ../shared/data/sst2/dev.tsv
    python benchmarks/peers.py --build runs/x --dev dev.tsv --threads 2 --json runs/peers.json

Re-runnable: peers are cached by checkpoint hash; whatever artifacts the bundle holds (fp32, int8,
compressed variants) are compared, so running it again after new artifacts land updates the table.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

import peer_env  # noqa: E402
from alternate import alternate, markdown_table, pairwise_ratio, summary_ms  # noqa: E402

ROOT = peer_env.ROOT
ONNX_PEER = "optimum-onnx-int8-avx512_vnni"
ET_PEER = "executorch-plain-fp32"


def read_dev(path: Path, text_col: str, label_col: str, labels: list, limit: int = 0):
    """Texts and label indices from a CSV/TSV validation file (CRLF tolerated)."""
    delim = "\t" if path.suffix == ".tsv" else ","
    texts, ys = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter=delim):
            texts.append(row[text_col])
            ys.append(labels.index(str(row[label_col]).strip()))
    if limit:
        texts, ys = texts[:limit], ys[:limit]
    return texts, np.asarray(ys)


def open_subjects(build: Path, peers: dict, threads: int, with_original: bool, same_model: dict | None = None,
                  extra: list | None = None, original: Path | None = None):
    """{name: (info, fn(arrays) -> logits)} for the bundle's artifacts, the peers and the original."""
    import torch

    from runtime_py.backends import open_backend, reset_executorch_threadpool
    from runtime_py.bundle import artifact_key, read_manifest

    reset_executorch_threadpool(threads)  # only possible before the first program is loaded
    torch.set_num_threads(threads)
    bundle = build / "bundle"
    manifest = read_manifest(bundle)
    subjects = {}
    for a in manifest["artifacts"]:
        name = "toolformer " + artifact_key(a)
        if name in subjects:
            name = "toolformer " + Path(a["file"]).stem
        b = open_backend(bundle / a["file"], a["format"], threads=threads)
        subjects[name] = ({"side": "toolformer", "format": a["format"], "precision": a["precision"],
                           "bytes": int(a["bytes"]), "file": str(bundle / a["file"]), "max_tokens": int(manifest["max_seq_len"]),
                           "model": f"{manifest.get('model', {}).get('shipped', '?')}, {manifest.get('model', {}).get('layers', '?')} layers"}, b.run)
    for path in extra or []:
        # Toolformer artifacts outside the bundle (e.g. int8 exported later with `toolformer export`).
        from toolchain.bench import SUFFIX_FORMAT, _guess_precision

        fmt = SUFFIX_FORMAT[path.suffix]
        prec = _guess_precision(path, fmt)
        name = f"toolformer {fmt}-{prec}"
        if name in subjects:
            name = f"toolformer {fmt}-{prec} ({path.stem})"
        b = open_backend(path, fmt, threads=threads)
        subjects[name] = ({"side": "toolformer", "format": fmt, "precision": prec, "bytes": path.stat().st_size,
                           "file": str(path), "max_tokens": int(manifest["max_seq_len"]), "model": f"{manifest.get('model', {}).get('shipped', '?')} (--artifact)"}, b.run)
    for name, path in peers.items():
        fmt = "executorch" if path.suffix == ".pte" else "onnx"
        prec = "int8" if "int8" in name else "fp32"
        b = open_backend(path, fmt, threads=threads)
        subjects[name] = ({"side": "peer", "format": fmt, "precision": prec, "bytes": path.stat().st_size,
                           "file": str(path), "model": "original as is"}, b.run)
    for key, path in (same_model or {}).items():
        fmt, prec = key.rsplit("-", 1)
        b = open_backend(path, fmt, threads=threads)
        subjects[f"same-model toolformer {key}"] = ({"side": "same-model", "format": fmt, "precision": prec,
                                                     "bytes": path.stat().st_size, "file": str(path),
                                                     "model": "original through Toolformer's exporter"}, b.run)
    if with_original:
        from transformers import AutoModelForSequenceClassification

        from toolchain.bench import checkpoint_bytes, torch_runner

        original = original or build / "original"
        m = AutoModelForSequenceClassification.from_pretrained(original).eval()
        subjects["original (eager PyTorch)"] = ({"side": "reference", "format": "pytorch", "precision": "fp32",
                                                 "bytes": checkpoint_bytes(original), "file": str(original),
                                                 "model": f"original, {m.config.num_hidden_layers} layers"}, torch_runner(m))
    return subjects, manifest


def logits_of(fn, encoder, texts: list, batch: int) -> np.ndarray:
    """Logits over the whole file, batches padded to their longest text."""
    return np.concatenate([np.asarray(fn(encoder.encode(texts[i:i + batch]))) for i in range(0, len(texts), batch)])


def paired(tf_logits: np.ndarray, peer_logits: np.ndarray, labels) -> dict:
    """Toolformer vs a peer on the same rows (runtime_py.parity.paired_accuracy, the gates' own test): rows only
    one of them gets right, and the one-sided exact McNemar p-value that Toolformer is the less accurate."""
    from runtime_py.parity import paired_accuracy

    p = paired_accuracy(tf_logits, peer_logits, labels)
    return {"toolformer_only": p["discordant_better"], "peer_only": p["discordant_worse"], "p_worse": p["mcnemar_p"]}


def heldout_split(recipe_path: Path, labels: list):
    """(texts, label ids, where) of the recipe's held-out split -- carved from train exactly as the build carved
    it (data.test_fraction, seeded) or read from data.test -- or None when the recipe holds nothing out."""
    if not recipe_path.is_file():
        return None
    from toolchain import recipe as recipe_mod
    from toolchain.data import load_dataset

    r = recipe_mod.load(recipe_path)
    if not (r.data.test_fraction or r.data.test):
        return None
    cwd = os.getcwd()
    os.chdir(ROOT)  # recipe paths are relative to the repository root
    try:
        ds = load_dataset(r.data, r.train.seed)
    finally:
        os.chdir(cwd)
    if [str(x) for x in ds.labels] != [str(x) for x in labels]:
        sys.exit(f"{recipe_path}: labels {ds.labels} differ from the bundle's {labels}")
    return ds.test.texts, np.asarray(ds.test.labels), ds.test.source


def headline_pairs(names: list) -> list:
    """(toolformer subject, peer) pairs the issue asks for: ONNX int8 and ExecuTorch against their peers, and
    ExecuTorch int8 against Optimum's ONNX int8 too (the int8 peer an app team would otherwise ship)."""
    tf = [n for n in names if n.startswith("toolformer ")]

    def pick(fmt: str, precs: tuple) -> list:
        return [n for p in precs for n in tf if n.startswith(f"toolformer {fmt}-{p}")]

    pairs = []
    onnx = pick("onnx", ("int8",)) or pick("onnx", ("fp32",))
    for n in onnx[:1]:
        pairs += [(n, p) for p in names if p.startswith("optimum-onnx-int8")]
    for n in pick("executorch", ("int8", "fp32")):
        pairs.append((n, ET_PEER))
    for n in pick("executorch", ("int8",)):  # any int8 artifact against the peer: Optimum's ONNX int8
        pairs.append((n, ONNX_PEER))
    return [(a, b) for a, b in pairs if b in names]


def main(argv=None) -> int:
    # Torch's OpenMP workers would otherwise spin after each eager call and steal the cores from
    # whichever runtime is timed next; torch is first imported below, after this.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=ROOT / "runs" / "sst2", help="build directory (original/ and bundle/)")
    ap.add_argument("--original", type=Path, help="the fine-tuned original (default: BUILD/original; a `toolformer compress` OUT has none)")
    ap.add_argument("--dev", type=Path, default=ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv")
    ap.add_argument("--text-column", default="content")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds-b1", type=int, default=300, help="timed rounds at batch 1 (one dev sentence each)")
    ap.add_argument("--rounds-b32", type=int, default=30, help="timed rounds at the larger batch")
    ap.add_argument("--batch", type=int, default=32, help="the larger batch (capped by the bundle's export.max_batch)")
    ap.add_argument("--warmup-rounds", type=int, default=10)
    ap.add_argument("--pad-to", type=int, action="append", default=[],
                    help="also time batch 1 and the larger batch padded to exactly this many tokens (repeatable: "
                         "--pad-to 64 --pad-to 128); a subject whose position table is shorter is left out there")
    ap.add_argument("--max-examples", type=int, default=0, help="dev rows for accuracy (0 = all)")
    ap.add_argument("--recipe", type=Path, help="recipe whose held-out split (data.test_fraction or data.test) every subject is "
                                               "also scored on (default: the bundle's recipe.toml, when it has one)")
    ap.add_argument("--cache", type=Path, default=peer_env.DEFAULT_CACHE)
    ap.add_argument("--rebuild-peers", action="store_true")
    ap.add_argument("--no-original", action="store_true", help="leave the eager PyTorch original out")
    ap.add_argument("--no-same-model", action="store_true",
                    help="leave out the original exported by Toolformer itself (isolates the exporter from compression)")
    ap.add_argument("--artifact", type=Path, action="append", default=[],
                    help="also time this Toolformer artifact (.onnx/.pte reading the bundle's tokenizer); repeatable")
    ap.add_argument("--json", type=Path, help="write every figure as JSON")
    a = ap.parse_args(argv)

    orig_dir = a.original or a.build / "original"
    if not (orig_dir / "config.json").is_file() or not (a.build / "bundle" / "manifest.json").is_file():
        sys.exit(f"{a.build}: needs original/ and bundle/ of a finished build "
                 f"(toolformer build samples/recipes/sst2.toml --out {a.build})")
    if not a.dev.is_file():
        sys.exit(f"{a.dev}: no such validation file")
    sys.path.insert(0, str(ROOT))
    from runtime_py.parity import accuracy as parity_accuracy
    from runtime_py.tokenize import TextEncoder
    from toolchain.bench import _max_batch_from_recipe, machine_line

    ckpt = orig_dir.resolve()
    manifest = json.loads((a.build / "bundle" / "manifest.json").read_text())
    max_seq = int(manifest["max_seq_len"])
    big = min(a.batch, _max_batch_from_recipe(a.build / "bundle" / "recipe.toml") or a.batch)
    load_before = os.getloadavg()
    peers = peer_env.optimum_onnx_peers(ckpt, a.cache, rebuild=a.rebuild_peers)
    peers[ET_PEER] = peer_env.executorch_plain_peer(ckpt, a.cache, max(128, max_seq), rebuild=a.rebuild_peers)
    peer_versions = peer_env.env_versions(a.cache / "optimum-onnx" / "bin")
    same = None if a.no_same_model else peer_env.toolformer_same_model(ckpt, a.cache, max_seq, big, rebuild=a.rebuild_peers)

    for p in a.artifact:
        if not p.is_file() or p.suffix not in (".onnx", ".pte"):
            sys.exit(f"--artifact {p}: not an .onnx or .pte file")
    subjects, manifest = open_subjects(a.build, peers, a.threads, not a.no_original, same, a.artifact, orig_dir)
    subjects[ET_PEER][0]["max_tokens"] = max(128, max_seq)  # exported at that length (peer_env.executorch_plain_peer)
    for nm, (info, _) in subjects.items():
        if info["side"] == "same-model":
            info["max_tokens"] = max_seq
    # Toolformer's artifacts read the bundle's tokenizer, everything made from the original its own: they
    # differ when the bundle's vocabulary was pruned (other ids for the same text).
    from toolchain.model import save_tokenizer_json

    encoders = {"bundle": TextEncoder(a.build / "bundle" / manifest["tokenizer"]["file"], max_seq),
                "original": TextEncoder(save_tokenizer_json(str(ckpt), a.cache / "original-tokenizer" / ckpt.name / "tokenizer.json"), max_seq)}
    enc_of = {n: "bundle" if info["side"] == "toolformer" else "original" for n, (info, _) in subjects.items()}
    texts, ys = read_dev(a.dev, a.text_column, a.label_column, [str(l) for l in manifest["labels"]], a.max_examples)
    truncated = encoders["bundle"].count_truncated(texts)
    peer_env.log(f"accuracy on {len(texts)} rows of {a.dev.name} ({truncated} longer than {max_seq} tokens, truncated for every subject)")
    acc, out = {}, {}
    for name, (_, fn) in subjects.items():
        out[name] = logits_of(fn, encoders[enc_of[name]], texts, big)
        acc[name] = parity_accuracy(out[name], ys)
        peer_env.log(f"  {name}: {acc[name]:.4f}")
    held = heldout_split(a.recipe or a.build / "bundle" / "recipe.toml", manifest["labels"])
    held_acc, held_out = {}, {}
    if held:
        peer_env.log(f"held-out accuracy on {len(held[0])} rows ({held[2]})")
        for name, (_, fn) in subjects.items():
            held_out[name] = logits_of(fn, encoders[enc_of[name]], held[0], big)
            held_acc[name] = parity_accuracy(held_out[name], held[1])
            peer_env.log(f"  {name}: {held_acc[name]:.4f}")

    # Each round holds the same texts encoded by both tokenizers; a runner picks its own (a dict lookup).
    runners = {n: (lambda fn, k: lambda arrays: fn(arrays[k]))(fn, enc_of[n]) for n, (_, fn) in subjects.items()}
    n = len(texts)
    w = a.warmup_rounds

    def encode_all(batch: list) -> dict:
        return {k: e.encode(batch) for k, e in encoders.items()}

    b1_inputs = [encode_all([texts[i % n]]) for i in range(w + a.rounds_b1)]
    b32_inputs = [encode_all([texts[(r * big + j) % n] for j in range(big)]) for r in range(w + a.rounds_b32)]
    t0 = time.perf_counter()
    peer_env.log(f"timing: {len(runners)} subjects alternating, {a.rounds_b1} rounds at batch 1 (natural length), "
                 f"{a.rounds_b32} at batch {big}, {a.threads} threads")
    times = {"b1": alternate(runners, b1_inputs, w), "b32": alternate(runners, b32_inputs, w)}
    padded = {}  # {L: {"b1": {name: series}, "b32": ...}} at exactly L tokens
    for L in a.pad_to:
        fits = {nm: r for nm, r in runners.items() if subjects[nm][0].get("max_tokens", 10 ** 9) >= L}

        def encode_pad(batch: list, L=L) -> dict:
            return {k: e.encode(batch, pad_to=L) for k, e in encoders.items()}
        peer_env.log(f"timing padded to {L} tokens: {len(fits)} subjects ({', '.join(sorted(set(runners) - set(fits))) or 'all fit'} left out)")
        padded[L] = {"b1": alternate(fits, [encode_pad([texts[i % n]]) for i in range(w + a.rounds_b1)], w),
                     "b32": alternate(fits, [encode_pad([texts[(r * big + j) % n] for j in range(big)]) for r in range(w + a.rounds_b32)], w)}
    peer_env.log(f"timing took {time.perf_counter() - t0:.0f} s")
    load_after = os.getloadavg()

    rows = []
    for name, (info, _) in subjects.items():
        rows.append({"name": name, **info, "accuracy": acc[name], "heldout_accuracy": held_acc.get(name),
                     **{f"{k}_{m}": v for k in times for m, v in summary_ms(times[k][name]).items()}})
    names = list(subjects)
    pairs = []
    for tf in [x for x in names if x.startswith(("toolformer ", "same-model "))]:
        for pe in [x for x in names if subjects[x][0]["side"] == "peer"]:
            pairs.append({"toolformer": tf, "peer": pe,
                          "ratio_b1": pairwise_ratio(times["b1"][tf], times["b1"][pe]),
                          "ratio_b32": pairwise_ratio(times["b32"][tf], times["b32"][pe]),
                          "toolformer_accuracy": acc[tf], "peer_accuracy": acc[pe],
                          "toolformer_heldout_accuracy": held_acc.get(tf), "peer_heldout_accuracy": held_acc.get(pe),
                          "dev_paired": paired(out[tf], out[pe], ys),
                          "heldout_paired": paired(held_out[tf], held_out[pe], held[1]) if held_out else None,
                          "size_ratio": subjects[tf][0]["bytes"] / subjects[pe][0]["bytes"]})
    head = headline_pairs(names)

    print(f"## Peer comparison: {a.build} on {a.dev} ({len(texts)} rows)\n")
    print(machine_line(a.threads))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"peer environment: {', '.join(f'{k} {v}' for k, v in peer_versions.items())}\n")
    ho = bool(held_acc)

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    print(markdown_table(
        ["subject", "model", "format", "prec", "size MB", "dev acc"] + (["held-out acc"] if ho else [])
        + ["b1 p50 ms", "b1 p90 ms", f"b{big} p50 ms", f"b{big} p90 ms"],
        [[r["name"], r["model"], r["format"], r["precision"], f"{r['bytes'] / 1e6:.1f}", pct(r["accuracy"])]
         + ([pct(r["heldout_accuracy"])] if ho else [])
         + [f"{r['b1_p50_ms']:.2f}", f"{r['b1_p90_ms']:.2f}", f"{r['b32_p50_ms']:.1f}", f"{r['b32_p90_ms']:.1f}"] for r in rows]))
    if ho:
        print(f"\nheld-out: {len(held[0])} rows of {held[2]}, carved before training and never used to choose a setting")
    print("\nToolformer latency / peer latency (median of per-round ratios; < 1 = Toolformer faster), size ratio:\n")
    print(markdown_table(["toolformer", "peer", "b1 ratio", f"b{big} ratio", "size ratio", "toolformer dev", "peer dev"]
                         + (["toolformer held-out", "peer held-out", "held-out rows right only for (tf / peer), p worse"] if ho else []),
                         [[p["toolformer"], p["peer"], f"{p['ratio_b1']:.3f}", f"{p['ratio_b32']:.3f}", f"{p['size_ratio']:.3f}",
                           pct(p["toolformer_accuracy"]), pct(p["peer_accuracy"])]
                          + ([pct(p["toolformer_heldout_accuracy"]), pct(p["peer_heldout_accuracy"]),
                              "{toolformer_only} / {peer_only}, p = {p_worse:.3g}".format(**p["heldout_paired"])] if ho else [])
                          for p in pairs if (p["toolformer"], p["peer"]) in head]))
    if not any(x.startswith("toolformer onnx-int8") for x in names):
        print("\nnote: the bundle has no ONNX int8 artifact yet; its ONNX fp32 artifact stands in against the int8 peers.")
    if not any(x.startswith("toolformer executorch-int8") for x in names):
        print("note: the bundle has no ExecuTorch int8 artifact yet; compared: ExecuTorch fp32.")
    if same:
        print("\nSame model (the 6-layer original, no compression) through Toolformer's exporter vs the peers:\n")
        print(markdown_table(["toolformer exporter", "peer", "b1 ratio", f"b{big} ratio", "toolformer acc", "peer acc"],
                             [[p["toolformer"], p["peer"], f"{p['ratio_b1']:.3f}", f"{p['ratio_b32']:.3f}",
                               f"{100 * p['toolformer_accuracy']:.2f}%", f"{100 * p['peer_accuracy']:.2f}%"]
                              for p in pairs if p["toolformer"].startswith("same-model ")
                              and p["peer"] in (ONNX_PEER, ET_PEER, "optimum-onnx-fp32")]))
    # The headline pairs at each padded length where both subjects ran (printed and written below).
    padded_head = {L: [{"toolformer": x, "peer": y, **{f"ratio_{k}": pairwise_ratio(tl[k][x], tl[k][y]) for k in tl}}
                       for x, y in head if x in tl["b1"] and y in tl["b1"]] for L, tl in padded.items()}
    for L, tl in padded.items():
        print(f"\nPadded to {L} tokens (p50 ms; ratio = median of per-round ratios to the peer):\n")
        print(markdown_table(["subject", "size MB", "b1 p50 ms", f"b{big} p50 ms"],
                             [[nm, f"{subjects[nm][0]['bytes'] / 1e6:.1f}", f"{summary_ms(tl['b1'][nm])['p50_ms']:.2f}",
                               f"{summary_ms(tl['b32'][nm])['p50_ms']:.1f}"] for nm in tl["b1"]]))
        if padded_head[L]:
            print()
            print(markdown_table(["toolformer", "peer", "b1 ratio", f"b{big} ratio"],
                                 [[h["toolformer"], h["peer"], f"{h['ratio_b1']:.3f}", f"{h['ratio_b32']:.3f}"] for h in padded_head[L]]))
    print("\nAll pairs:\n")
    print(markdown_table(["toolformer", "peer", "b1 ratio", f"b{big} ratio"],
                         [[p["toolformer"], p["peer"], f"{p['ratio_b1']:.3f}", f"{p['ratio_b32']:.3f}"] for p in pairs]))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"machine": machine_line(a.threads), "load_before": load_before, "load_after": load_after,
                                      "threads": a.threads, "rounds": {"b1": a.rounds_b1, "b32": a.rounds_b32}, "big_batch": big,
                                      "dev": str(a.dev), "examples": len(texts),
                                      "heldout": {"rows": len(held[0]), "source": held[2]} if held else None, "peer_versions": peer_versions,
                                      "subjects": rows, "pairs": pairs, "headline": head,
                                      "padded": {str(L): {"subjects": {nm: {k: summary_ms(tl[k][nm]) for k in tl} for nm in tl["b1"]},
                                                          "headline": padded_head[L]}
                                                 for L, tl in padded.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
