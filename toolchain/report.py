"""A readable report.md of a build: stages, accuracy, sizes and parity verdicts."""
from __future__ import annotations

from pathlib import Path

from runtime_py.parity import gate_cosine


def _mb(n) -> str:
    return f"{n / 1e6:.2f} MB" if isinstance(n, (int, float)) else "-"


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def write_markdown(summary: dict, path: Path) -> None:
    o, s = summary["original"], summary["shipped"]
    lines = [
        "# Toolformer build report",
        "",
        f"Verdict: **{'PASS' if summary['passed'] else 'FAIL'}** · labels: {', '.join(map(str, summary['labels']))}",
        "",
        "## Models",
        "",
        "| model | layers | parameters | validation accuracy |",
        "|---|---:|---:|---:|",
        f"| original ({o['source']}) | {o['layers']} | {o['params']:,} | {_pct(o['val_accuracy'])} |",
    ]
    if s["model"] != "original":
        lines.append(f"| {s['model']} (shipped) | {s['layers']} | {s['params']:,} | {_pct(s['val_accuracy'])} |")
    if s.get("test_accuracy") is not None:
        lines += ["", f"Test accuracy of the shipped model (PyTorch): {_pct(s['test_accuracy'])}"
                      + (f", of the original: {_pct(o['test_accuracy'])}" if o.get("test_accuracy") is not None else "")]
    lines += training_lines(summary)
    lines += [
        "",
        "## Artifacts and parity",
        "",
        "Against the PyTorch model each was exported from (max-abs, cosine) and the original (top-1 agreement, accuracy) on validation text. "
        "Cosine is the worst row's for fp32/fp16 and that of the row-centred logit matrices for int8 (what each gate judges).",
        "",
        "| artifact | size | max-abs vs source | cosine | top-1 vs original | accuracy | original accuracy | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in summary["artifacts"]:
        ref, org = a["vs_reference"], a["vs_original"]
        size = next((st.get("bytes") for st in summary["stages"] if st["detail"] == a["file"]), None)
        verdict = "pass" if a["passed"] else "FAIL: " + "; ".join(a["reasons"])
        lines.append(f"| {a['artifact']} | {_mb(size)} | {ref['max_abs']:.2e} | {gate_cosine(ref, a.get('gate', {}).get('vs_reference')):.6f} | "
                     f"{org['top1_agreement']:.4f} | {_pct(a['accuracy'])} | {_pct(a['original_accuracy'])} | {verdict} |")
    lines += latency_lines(summary)
    d = summary["data"]
    lines += [
        "",
        "## Data",
        "",
        f"train {d['train']} rows, validation {d['validation']}, test {d['test']}; "
        f"texts longer than max_seq_len (truncated): {d['truncated_texts']}",
    ]
    lines += [f"- {n}" for n in d["notes"]]
    lines += ["", "## Stages", "", "| stage | detail | seconds |", "|---|---|---:|"]
    lines += [f"| {st['stage']} | {st['detail']} | {st.get('seconds', '-')} |" for st in summary["stages"]]
    lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in summary["versions"].items()),
              "", f"Recipe sha256: `{summary['recipe_sha256']}`", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def training_lines(summary: dict) -> list:
    """The 'Training' section: how each trained model was trained (method, LoRA rank, what was trainable, cost)."""
    rows = summary.get("training") or {}
    if not rows:
        return []
    lines = ["", "## Training", "",
             "| model | method | trainable parameters | trainable fraction | step time | peak memory | device |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, t in rows.items():
        method = t.get("method", "full")
        if method == "lora":
            method = f"LoRA r={t.get('lora_r')} alpha={t.get('lora_alpha'):g} ({', '.join(t.get('lora_target_modules', []))}), merged"
        mem = f"{t['peak_memory_mb']:.0f} MB ({t.get('peak_memory_kind', '')})" if t.get("peak_memory_mb") else "-"
        step = f"{1000 * t['step_seconds']:.1f} ms" if t.get("step_seconds") else "-"
        lines.append(f"| {name} | {method} | {t.get('trainable_params', 0):,} | {_pct(t.get('trainable_fraction'))} | {step} | {mem} | "
                     f"{t.get('device', '')} {t.get('precision', '')} |")
    return lines


def _accuracy_of(summary: dict, name: str):
    """Validation accuracy of the original or an artifact, from the same parity rows for all."""
    arts = summary.get("artifacts", [])
    if name == "original":
        return arts[0]["original_accuracy"] if arts else summary["original"]["val_accuracy"]
    for a in arts:
        if name in (a["artifact"], a["file"].rsplit(".", 1)[0]):
            return a["accuracy"]
    return None


def latency_lines(summary: dict) -> list:
    """The 'Latency and size' section: batch-1 latency, size and accuracy of the original and each artifact."""
    rows = summary.get("latency") or []
    if not rows:
        return []
    r0 = rows[0]
    lines = ["", "## Latency and size", "",
             f"Batch 1, {r0['seq_len']} tokens of real validation text, {r0['iters']} timed runs after warm-up, in the "
             f"build process (load average {r0['load_avg_1m']:.2f}). `toolformer bench` measures more shapes, load time "
             "and memory, each subject in its own process.", "",
             "| model | format | precision | size | p50 ms | p90 ms | p99 ms | accuracy |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['format']} | {r['precision']} | {_mb(r['bytes'])} | {r['p50_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {_pct(_accuracy_of(summary, r['name']))} |")
    if summary.get("plot"):
        lines += ["", f"![accuracy versus latency]({summary['plot']})"]
    return lines


def write_accuracy_latency_plot(summary: dict, path: Path) -> Path | None:
    """accuracy_latency.png: validation accuracy against batch-1 p50 latency, the original and every artifact."""
    fig = accuracy_latency_figure(summary)
    if fig is None:
        return None
    path = Path(path)
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def accuracy_latency_figure(summary: dict):
    """The figure behind accuracy_latency.png (None without latency rows); `fig.toolformer_labels` are its labels."""
    rows = [r for r in summary.get("latency") or [] if _accuracy_of(summary, r["name"]) is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on build machines
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .plots import COLORS, MARKERS, Point, finish, tradeoff

    points = [Point(label=f"{r['name']}\n{r['bytes'] / 1e6:.1f} MB, {100 * _accuracy_of(summary, r['name']):.2f}%",
                    x=r["p50_ms"], y=100 * _accuracy_of(summary, r["name"]), size=r["bytes"],
                    color=COLORS.get(r["format"], COLORS["stage"]), marker=MARKERS.get(r["precision"], "o"),
                    reference=r["format"] == "pytorch" and r["name"] == "original") for r in rows]
    fig, ax = plt.subplots(figsize=(8.6, 5.0), dpi=120)
    texts, size_keys = tradeoff(ax, points, log_x=True,
                                xlabel=f"p50 latency, ms (batch 1, {rows[0]['seq_len']} tokens, log scale)")
    ax.set_title("Accuracy versus latency: up and left is better than the original (star)", fontsize=10)
    formats = sorted({r["format"] for r in rows} - {"pytorch"})
    precs = [p for p in MARKERS if p in {r["precision"] for r in rows if r["format"] != "pytorch"}]
    kinds = ([Line2D([], [], ls="", marker="s", color=COLORS[f], markersize=8, label=f) for f in formats if f in COLORS]
             + [Line2D([], [], ls="", marker=MARKERS[p], color="#bbbbbb", markeredgecolor="black", markersize=8, label=p)
                for p in precs])
    return finish(fig, ax, kinds + size_keys, texts, "size")
