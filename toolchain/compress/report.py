"""The compression report: every stage next to the original, as JSON, Markdown and a PNG plot."""
from __future__ import annotations

import json
from pathlib import Path

FILES = ("compression.json", "compression.md", "compression.png")


def _mb(n) -> str:
    return f"{n / 1e6:.2f}" if isinstance(n, (int, float)) else "-"


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def markdown(report: dict) -> str:
    """A table of the stages: parameters, zeros, sizes, FLOPs and accuracy relative to the original."""
    rows = report["stages"]
    base = rows[0]
    lines = ["# Compression report", "",
             f"FLOPs per sequence at {base['seq_len']} tokens, batch 1. Sizes are the tensors as saved (fp32) and "
             "the same bytes zstd-compressed (level 3), which is what a compressed bundle archive gains from zeros.", "",
             "| stage | layers | heads | FFN | vocab | parameters | zeros | fp32 MB | zstd MB | GFLOPs | val accuracy | vs original |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rel = r["val_accuracy"] / base["val_accuracy"] if r.get("val_accuracy") is not None and base.get("val_accuracy") else None
        lines.append(f"| {r['stage']} | {r['layers']} | {sum(r['heads'])} | {sum(r['ffn'])} | {r['vocab']:,} | {r['params']:,} | "
                     f"{r['zeros']:,} | {_mb(r['fp32_bytes'])} | {_mb(r['zstd_bytes'])} | {r['flops'] / 1e9:.3f} | "
                     f"{_pct(r.get('val_accuracy'))} | {_pct(rel)} |")
    last = rows[-1]
    lines += ["", f"Shipped student: {base['params'] / max(1, last['params']):.2f}× fewer parameters, "
                  f"{base['flops'] / max(1, last['flops']):.2f}× fewer FLOPs, "
                  f"{base['fp32_bytes'] / max(1, last['fp32_bytes']):.2f}× smaller (fp32)."]
    for key, val in report.get("facts", {}).items():
        if val:
            lines.append(f"- {key}: `{json.dumps(val)}`")
    if report.get("archive"):
        a = report["archive"]
        lines.append(f"- bundle archive: {a['file']} {_mb(a['bytes'])} MB (bundle directory {_mb(a['bundle_bytes'])} MB)")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Accuracy and size per stage, the original as a dashed line (PNG via matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["stages"]
    names = [r["stage"] for r in rows]
    acc = [100 * (r.get("val_accuracy") or 0) for r in rows]
    size = [r["fp32_bytes"] / 1e6 for r in rows]
    zstd = [r["zstd_bytes"] / 1e6 for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.bar(names, acc, color="#4c72b0")
    a1.axhline(acc[0], ls="--", color="k", lw=1, label="original")
    a1.set_ylim(max(0, min(acc) - 10), 100)
    a1.set_ylabel("validation accuracy (%)")
    a1.set_title("accuracy per stage")
    a1.legend(loc="lower left")
    x = range(len(names))
    a2.bar([i - 0.2 for i in x], size, width=0.4, label="fp32", color="#55a868")
    a2.bar([i + 0.2 for i in x], zstd, width=0.4, label="zstd", color="#c44e52")
    a2.set_xticks(list(x), names)
    a2.set_ylabel("MB")
    a2.set_title("size per stage")
    a2.legend()
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict, out_dir: Path) -> list[Path]:
    """Write compression.{json,md,png} into `out_dir`; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FILES[0]).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out_dir / FILES[1]).write_text(markdown(report), encoding="utf-8")
    plot(report, out_dir / FILES[2])
    return [out_dir / f for f in FILES]
