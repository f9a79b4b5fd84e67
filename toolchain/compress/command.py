"""Compression flags shared by `toolformer build` and `toolformer compress`, and the compress run.

Only click is imported at module level so `toolformer --help` stays fast.
"""
from __future__ import annotations

from pathlib import Path

import click

_FLAGS = [
    click.option("--prune-heads", type=float, metavar="FRACTION", help="Attention heads removed per layer (fraction < 1, or a count)."),
    click.option("--prune-ffn", type=float, metavar="FRACTION", help="FFN neurons removed per layer (fraction < 1, or a count)."),
    click.option("--prune-importance", type=click.Choice(["gradient", "magnitude"]), help="How heads/neurons are ranked."),
    click.option("--prune-steps", type=int, help="Iterative pruning: steps to reach the target, recovering in between."),
    click.option("--sparsity", type=float, metavar="FRACTION", help="Unstructured magnitude sparsity of encoder weights (real zeros)."),
    click.option("--prune-vocab/--no-prune-vocab", default=None, help="Keep only the token ids the training corpus uses."),
    click.option("--distill/--no-distill", default=None, help="Distil the student from the original (default on)."),
    click.option("--archive", type=click.Choice(["zst", "gz"]), help="Also write OUT/bundle.tar.zst (or .tar.gz)."),
]
_KEYS = {"prune_heads": "prune_heads", "prune_ffn": "prune_ffn", "prune_importance": "prune_importance",
         "prune_steps": "prune_steps", "sparsity": "sparsity", "prune_vocab": "prune_vocab", "distill": "distill",
         "archive": "archive"}


_SEARCH_FLAGS = [
    click.option("--trials", type=int, metavar="N", help="Search N student settings (Optuna TPE, seeded) and ship the "
                 "fastest that keeps --min-retention of the original's validation accuracy (recipe [search])."),
    click.option("--min-retention", type=float, metavar="SHARE", help="With --trials: the share of the original's validation "
                 "accuracy a trial must keep, in (0, 1] (default 0.99, search.min_retention)."),
]


def _with(flags: list, fn):
    """`fn` decorated with every click option of `flags`, in their listed order in --help."""
    for opt in reversed(flags):
        fn = opt(fn)
    return fn


def search_options(fn):
    """Add --trials and --min-retention (the [search] section) to a click command."""
    return _with(_SEARCH_FLAGS, fn)


def apply_search_flags(over: dict, kw: dict) -> dict:
    """--trials / --min-retention into the [search] overrides; a flag outside its range is bad input (exit 2)."""
    from ..errors import UsageError

    trials, keep = kw.pop("trials", None), kw.pop("min_retention", None)
    if trials is not None:
        if trials < 1:
            raise UsageError(f"--trials must be >= 1, got {trials}")
        over.setdefault("search", {})["trials"] = trials
    if keep is not None:
        if not 0 < keep <= 1:
            raise UsageError(f"--min-retention must be in (0, 1], got {keep:g}")
        over.setdefault("search", {})["min_retention"] = keep
    return over


def compress_options(fn):
    """Add the compression flags to a click command (they arrive as keyword arguments)."""
    return _with(_FLAGS, fn)


def apply_flags(over: dict, kw: dict) -> dict:
    """Put the flags that were given into the [compress] overrides (flags beat the recipe)."""
    for name, key in _KEYS.items():
        if kw.get(name) is not None:
            over.setdefault("compress", {})[key] = kw[name]
    return over


def find_recipe(checkpoint: Path) -> Path | None:
    """The recipe a checkpoint was trained with (`finetune` writes OUT/recipe.toml; `build` writes it one level up)."""
    for cand in (checkpoint / "recipe.toml", checkpoint.parent / "recipe.toml"):
        if cand.is_file():
            return cand
    return None


def default_out(checkpoint: Path) -> str:
    """CHECKPOINT-compressed; for a build's OUT/original, OUT-compressed (never inside another build's OUT)."""
    ckpt = Path(str(checkpoint).rstrip("/"))
    if ckpt.name == "original" and (ckpt.parent / "recipe.toml").is_file():
        return f"{ckpt.parent}-compressed"
    return f"{ckpt}-compressed"


def checkpoint_labels(checkpoint: Path) -> list | None:
    """Label order of a fine-tuned checkpoint's head (config id2label), unless it is the generic LABEL_i."""
    import json

    try:
        cfg = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    id2 = cfg.get("id2label") or {}
    labels = [id2[k] for k in sorted(id2, key=lambda k: int(k))]
    if not labels or all(l == f"LABEL_{i}" for i, l in enumerate(labels)):
        return None
    return labels


def echo_summary(summary: dict, out: str) -> None:
    """Print the stages of the compression report and each artifact's parity verdict."""
    comp = summary.get("compression") or {}
    for row in comp.get("stages", []):
        acc = row.get("val_accuracy")
        click.echo(f"{row['stage']:<10} layers {row['layers']}  heads {sum(row['heads']):>3}  ffn {sum(row['ffn']):>6}  "
                   f"vocab {row['vocab']:>6}  params {row['params']:>11,}  {row['fp32_bytes'] / 1e6:7.2f} MB  "
                   f"zstd {row['zstd_bytes'] / 1e6:7.2f} MB  val accuracy {acc if acc is None else f'{acc:.4f}'}")
    sr = summary.get("search")
    if sr and sr.get("winner") is not None:
        p, w = sr["winner_params"], sr["winner_proxy"]
        click.echo(f"search: {sr['qualified']} of {sr['trials']} trials kept >= {sr['min_retention']:g} of the original "
                   f"(val accuracy {sr['threshold']:.4f}); shipped trial {sr['winner']} ({p['num_layers']} layers {p['layer_selection']}, "
                   f"heads -{p['prune_heads']:g}, ffn -{p['prune_ffn']:g}, vocab {'pruned' if p['prune_vocab'] else 'full'}): "
                   f"proxy val accuracy {w['val_accuracy']:.4f}, {w['latency_ms']:.3f} ms {sr['judged_by']['target']}-"
                   f"{sr['judged_by']['precision']}; trials: {Path(out) / 'trials.json'}, plot: {Path(out) / 'pareto.png'}")
    for a in summary["artifacts"]:
        click.echo(f"{a['artifact']:<16} accuracy {a['accuracy']:.4f}  max-abs vs source {a['vs_reference']['max_abs']:.2e}  "
                   f"top-1 vs original {a['vs_original']['top1_agreement']:.3f}  {'PASS' if a['passed'] else 'FAIL'}")
    if summary.get("archive"):
        click.echo(f"archive: {Path(out) / summary['archive']['file']} ({summary['archive']['bytes'] / 1e6:.2f} MB)")
    click.echo(f"student: {Path(out) / 'student'}\nreport: {Path(out) / 'compression.md'}\nbundle: {Path(out) / 'bundle'}")
