"""A readable report.md of a build: stages, accuracy, sizes and parity verdicts."""
from __future__ import annotations

from pathlib import Path


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
        lines += ["", f"Test accuracy of the shipped model (PyTorch): {_pct(s['test_accuracy'])}"]
    lines += [
        "",
        "## Artifacts and parity",
        "",
        "Against the PyTorch model each was exported from (max-abs, cosine) and the original (top-1 agreement, accuracy) on validation text.",
        "",
        "| artifact | size | max-abs vs source | min cosine | top-1 vs original | accuracy | original accuracy | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in summary["artifacts"]:
        ref, org = a["vs_reference"], a["vs_original"]
        size = next((st.get("bytes") for st in summary["stages"] if st["detail"] == a["file"]), None)
        verdict = "pass" if a["passed"] else "FAIL: " + "; ".join(a["reasons"])
        lines.append(f"| {a['artifact']} | {_mb(size)} | {ref['max_abs']:.2e} | {ref['min_cosine']:.6f} | "
                     f"{org['top1_agreement']:.4f} | {_pct(a['accuracy'])} | {_pct(a['original_accuracy'])} | {verdict} |")
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
