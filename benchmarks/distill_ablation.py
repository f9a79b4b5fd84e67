"""What each distillation option buys, measured: one student shape, compressed from the same original with one
option changed at a time (logit distillation; + hidden-state and attention matching; + an augmented transfer
set; + quantization-aware training; the word-embedding table trained rather than frozen), scored on validation (dev, what settings are chosen on) and on the
recipe's held-out split (carved from train, never used to choose anything), for the student in PyTorch and
for every int8 artifact of its bundle (through runtime_py).

    python benchmarks/distill_ablation.py --original runs/sst2_full/original --recipe samples/recipes/sst2_full_student.toml \\
        --set data.max_train_samples=8000 --json docs/results/distill-ablation.json

Each variant is a `toolformer compress` run into --work/NAME (reused when its bundle exists, so an
interrupted sweep continues); --set applies to every variant. The gates against the original are off
(parity.max_accuracy_drop = 1, min_top1_vs_original = 0): this measures students, it does not ship them;
the numeric int8-vs-source gates still hold.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = {
    "no distillation (labels only)": ["--set", "compress.distill=false"],
    "logit distillation": [],
    "+ hidden states and attention": ["--set", "compress.hidden_weight=1.0", "--set", "compress.attention_weight=1.0"],
    "+ augmented transfer set (2 copies)": ["--set", "compress.augment=2"],
    "+ QAT (1 epoch)": ["--set", "quant.qat_epochs=1.0"],
    "logit distillation, vocabulary keeps single characters": ["--set", "compress.vocab_keep_chars=true"],
    "logit distillation, word embeddings trained": ["--set", "compress.freeze_embeddings=false"],
}


def log(msg: str) -> None:
    print(f"[ablation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")[:40]


def heldout_accuracy(bundle: Path, artifact: str, texts: list, labels) -> float:
    import numpy as np

    import runtime_py

    m = runtime_py.load(bundle, artifact=artifact)
    preds = np.concatenate([m.logits(texts[i:i + 64]).argmax(1) for i in range(0, len(texts), 64)])
    return float((preds == np.asarray(labels)).mean())


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", type=Path, required=True, help="the fine-tuned original (the teacher)")
    ap.add_argument("--recipe", type=Path, required=True, help="the student recipe every variant starts from")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "distill-ablation")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override for every variant (repeatable)")
    ap.add_argument("--only", action="append", default=[], help="run only these variants (by name; repeatable)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from peers import heldout_split

    from alternate import markdown_table

    common = ["--set", "parity.max_accuracy_drop=1.0", "--set", "parity.min_top1_vs_original=0.0"]
    common += [x for s in a.sets for x in ("--set", s)]
    rows = []
    for name, extra in VARIANTS.items():
        if a.only and name not in a.only:
            continue
        out = a.work / slug(name)
        if not (out / "bundle" / "manifest.json").is_file():
            cmd = ["toolformer", "compress", str(a.original), str(a.recipe), "--out", str(out), "--force", *common, *extra]
            log("$ " + " ".join(cmd))
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            (a.work / f"{slug(name)}.log").parent.mkdir(parents=True, exist_ok=True)
            (a.work / f"{slug(name)}.log").write_text(r.stdout + r.stderr)
            if r.returncode != 0:
                log(f"{name}: exit {r.returncode}; see {a.work / (slug(name) + '.log')}")
                rows.append({"variant": name, "failed": r.returncode})
                continue
            (out / "ablation-seconds.txt").write_text(f"{secs:.0f}\n")
        s = json.loads((out / "summary.json").read_text())
        manifest = json.loads((out / "bundle" / "manifest.json").read_text())
        held = heldout_split(out / "bundle" / "recipe.toml", manifest["labels"])
        row = {"variant": name, "seconds": float((out / "ablation-seconds.txt").read_text()) if (out / "ablation-seconds.txt").is_file() else None,
               "student_val": s["shipped"]["val_accuracy"], "student_heldout": s["shipped"].get("test_accuracy"),
               "original_val": s["original"]["val_accuracy"], "original_heldout": s["original"].get("test_accuracy"),
               "artifacts": {}}
        for art in s["artifacts"]:
            if "int8" in art["artifact"]:
                row["artifacts"][art["artifact"]] = {"val": art.get("accuracy"),
                                                     "heldout": heldout_accuracy(out / "bundle", art["artifact"], held[0], held[1]) if held else None}
        rows.append(row)
        log(f"{name}: {json.dumps(row)}")

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    arts = sorted({k for r in rows for k in r.get("artifacts", {})})
    print(markdown_table(["variant", "student dev", "student held-out"] + [f"{k} {w}" for k in arts for w in ("dev", "held-out")] + ["build s"],
                         [[r["variant"], pct(r.get("student_val")), pct(r.get("student_heldout"))]
                          + [pct(r.get("artifacts", {}).get(k, {}).get(w)) for k in arts for w in ("val", "heldout")]
                          + [f"{r['seconds']:.0f}" if r.get("seconds") else "-"] for r in rows]))
    if rows and "original_val" in rows[0]:
        print(f"\noriginal: dev {pct(rows[0]['original_val'])}, held-out {pct(rows[0]['original_heldout'])}; overrides: {a.sets}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"original": str(a.original), "recipe": str(a.recipe), "sets": a.sets, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
