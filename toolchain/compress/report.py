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
    """compression.png: accuracy against size for every stage, the original as the reference (PNG, no display)."""
    import matplotlib.pyplot as plt

    fig = figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(report: dict):
    """The figure behind compression.png; `fig.toolformer_labels` are its labels (the tests check they do not overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import COLORS, Point, finish, tradeoff

    rows = report["stages"]
    fig, ax = plt.subplots(figsize=(8.6, 5.0))
    scored = [r for r in rows if r.get("val_accuracy") is not None]
    if not scored:  # nothing was evaluated: say so instead of drawing empty axes
        ax.axis("off")
        ax.text(0.5, 0.5, "no stage has a validation accuracy", ha="center", va="center", transform=ax.transAxes)
        fig.toolformer_labels = []
        return fig
    points = []
    for i, r in enumerate(scored):
        sparse = r["zstd_bytes"] < 0.8 * r["fp32_bytes"]  # zeros from sparsity: the archive size is the one that moved
        extra = f", {_mb(r['zstd_bytes'])} zstd" if sparse else ""
        points.append(Point(label=f"{r['stage']}\n{_mb(r['fp32_bytes'])} MB{extra}, {_pct(r['val_accuracy'])}",
                            x=r["fp32_bytes"] / 1e6, y=100 * r["val_accuracy"], size=r["flops"],
                            color=COLORS["pytorch"] if i == 0 else COLORS["stage"], reference=i == 0))
    texts, keys = tradeoff(ax, points, xlabel="size, MB (fp32 tensors as saved)", size_unit=1e9, size_name="GFLOPs/seq",
                           path_line=True)
    ax.set_title(f"Compression stages in order (grey line) against the original (star); "
                 f"FLOPs at {rows[0]['seq_len']} tokens", fontsize=10)
    return finish(fig, ax, keys, texts, "FLOPs")


def write(report: dict, out_dir: Path) -> list[Path]:
    """Write compression.{json,md,png} into `out_dir`; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FILES[0]).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out_dir / FILES[1]).write_text(markdown(report), encoding="utf-8")
    plot(report, out_dir / FILES[2])
    return [out_dir / f for f in FILES]
