"""Numeric parity metrics and gates, shared by the build and by `verify`. numpy only.

Top-1 agreement counts a disagreement only on a *decisive* row: one whose reference margin (top
logit minus runner-up) exceeds the artifact's own error scale, so near-ties that any faithful
low-precision artifact may tip either way are not counted (docs/gates.md). The accuracy-drop gate
is a paired test on the same rows (McNemar's exact test on the discordant pairs), so a drop of a
few examples on a small validation set is not mistaken for a real one.
"""
from __future__ import annotations

import math

import numpy as np

# Near-tie tolerance: a row is decisive when its reference margin exceeds
# max(tie_floor, tie_scale × median over rows of the largest change of any gap to the reference's top logit).
TIE_SCALE = 8.0
TIE_FLOOR = 1e-4
# min_decisive binds only below this logit-matrix cosine (faithful low-decision artifacts measured at
# >= 0.9993; the zeroed-layer int8 fault at 0.9946).
DECISIVE_WAIVER_COSINE = 0.998


def tie_tolerance(logits: np.ndarray, reference: np.ndarray, scale: float = TIE_SCALE, floor: float = TIE_FLOOR) -> float:
    """The margin below which a reference row counts as a near-tie for this artifact's error."""
    a = np.asarray(logits, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if not len(b) or b.shape[1] < 2:
        return float(floor)
    top = b.argmax(1)
    rows = np.arange(len(b))
    # Change of every gap (top logit minus class j): a row's prediction flips only if one of them exceeds its margin.
    dgap = np.abs((a[rows, top][:, None] - a) - (b[rows, top][:, None] - b))
    err = dgap.max(1)
    err = err[np.isfinite(err)]
    med = float(np.median(err)) if err.size else float("inf")
    return float(max(floor, scale * med))


def compare(logits: np.ndarray, reference: np.ndarray, tie: dict | None = None, tolerance: float | None = None) -> dict:
    """Error of `logits` against `reference` (same shape): max/mean abs, cosine, top-1 agreement.

    Top-1 is reported raw (`top1_agreement`) and on decisive rows only (`decisive_top1`): rows whose
    reference margin exceeds `tolerance` (by default tie_tolerance() with the gate's max_tie_scale /
    max_tie_floor from `tie`).
    """
    a = np.asarray(logits, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} differs from the reference's {b.shape}")
    diff = np.abs(a - b)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    # One cosine for the whole logit matrix, each row centred first (softmax ignores a per-row shift).
    # A row's own cosine swings on near-tied rows of a two-label head (logits ~[0.05, -0.05] flip
    # direction under a 0.1 change): on SST-2, int8 artifacts with 99% top-1 agreement had row
    # cosines down to -0.9 while this stayed above 0.99.
    ac, bc = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    mden = float(np.linalg.norm(ac) * np.linalg.norm(bc))
    n = len(a)
    if tolerance is None:
        tie = tie or {}
        tolerance = tie_tolerance(a, b, tie.get("max_tie_scale", TIE_SCALE), tie.get("max_tie_floor", TIE_FLOOR))
    flips = a.argmax(1) != b.argmax(1) if n else np.zeros(0, bool)
    srt = np.sort(b, axis=1)
    margin = srt[:, -1] - srt[:, -2] if b.ndim == 2 and b.shape[1] >= 2 else np.full(n, np.inf)
    decisive = margin > tolerance
    nd = int(decisive.sum())
    return {
        "rows": int(n),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "min_cosine": float(cos.min()) if cos.size else 1.0,
        "mean_cosine": float(cos.mean()) if cos.size else 1.0,
        "logit_cosine": float((ac * bc).sum() / mden) if mden > 0 else 1.0,
        "top1_agreement": float(1.0 - flips.mean()) if n else 1.0,
        "flips": int(flips.sum()),
        "tie_tolerance": float(tolerance),
        "decisive_rows": nd,
        "decisive_fraction": float(nd / n) if n else 1.0,
        "decisive_flips": int((flips & decisive).sum()),
        "decisive_top1": float(1.0 - (flips & decisive).sum() / nd) if nd else 1.0,
        "max_flip_margin": float(margin[flips].max()) if flips.any() else 0.0,
    }


def accuracy(logits: np.ndarray, labels) -> float:
    """Fraction of rows whose argmax equals the label id."""
    labels = np.asarray(labels)
    return float((np.asarray(logits).argmax(1) == labels).mean()) if len(labels) else float("nan")


def mcnemar_worse(worse: int, better: int) -> float:
    """One-sided exact McNemar p-value that the artifact is worse: P(X >= worse), X ~ Binomial(worse + better, 1/2)."""
    n = worse + better
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(worse, n + 1)) / 2.0 ** n)


def paired_accuracy(logits: np.ndarray, original_logits: np.ndarray, labels) -> dict:
    """Accuracy of an artifact and of the original on the same rows, with the paired test of the drop."""
    labels = np.asarray(labels)
    ok = np.asarray(logits).argmax(1) == labels
    ok0 = np.asarray(original_logits).argmax(1) == labels
    worse, better = int((ok0 & ~ok).sum()), int((ok & ~ok0).sum())
    n = len(labels)
    return {"accuracy_drop": float((worse - better) / n) if n else 0.0, "accuracy_rows": int(n),
            "discordant_worse": worse, "discordant_better": better, "mcnemar_p": mcnemar_worse(worse, better)}


def gate_cosine(metrics: dict, gate: dict | None = None) -> float:
    """The cosine a gate judges: the logit-matrix cosine under an int8 gate (min_logit_cosine), else the
    worst row's cosine. Tables show this one, so a passed int8 row never displays a meaningless -0.9."""
    if gate and "min_logit_cosine" in gate:
        return metrics.get("logit_cosine", float("nan"))
    return metrics.get("min_cosine", float("nan"))


def _on(metrics: dict) -> str:
    return f" on {metrics['rows']} rows" if "rows" in metrics else ""


def check(metrics: dict, gate: dict) -> list[str]:
    """Reasons a set of metrics fails a gate (empty list: passed).

    Gate keys: max_abs (upper bound), min_cosine, min_logit_cosine, min_top1 (lower bounds; top-1 on
    decisive rows when the metrics carry them), min_decisive (lower bound on the fraction of rows
    whose margin exceeds the error scale), max_accuracy_drop (upper bound on `accuracy_drop`, failed
    only when McNemar's exact test also finds the drop significant at accuracy_alpha, default 0.05).
    max_tie_scale / max_tie_floor parametrise the decisive rows (read by compare(), not here).
    """
    reasons = []
    on = _on(metrics)
    if "max_abs" in gate and metrics.get("max_abs", 0.0) > gate["max_abs"]:
        reasons.append(f"max-abs error {metrics['max_abs']:.3g} > {gate['max_abs']:.3g}{on}")
    if "min_cosine" in gate and metrics.get("min_cosine", 1.0) < gate["min_cosine"]:
        reasons.append(f"cosine {metrics['min_cosine']:.6f} < {gate['min_cosine']} (worst row{on})")
    if "min_logit_cosine" in gate and metrics.get("logit_cosine", 1.0) < gate["min_logit_cosine"]:
        reasons.append(f"logit-matrix cosine {metrics['logit_cosine']:.6f} < {gate['min_logit_cosine']}{on}")
    if "min_top1" in gate:
        if "decisive_top1" in metrics:
            if metrics["decisive_top1"] < gate["min_top1"]:
                tol, nd, fl = metrics["tie_tolerance"], metrics["decisive_rows"], metrics["flips"]
                reasons.append(
                    f"top-1 agreement {metrics['decisive_top1']:.4f} < {gate['min_top1']} on {nd} of {metrics['rows']} rows "
                    f"with reference margin > {tol:.3g} ({metrics['decisive_flips']} flips there, largest margin "
                    f"{metrics['max_flip_margin']:.3g}; {fl - metrics['decisive_flips']} more flips on near-ties)")
        elif metrics.get("top1_agreement", 1.0) < gate["min_top1"]:
            reasons.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {gate['min_top1']}{on}")
    # Waived where the artifact reproduces the logit matrix almost exactly: then few decisive rows mean the
    # model itself decides little (a random tiny ELECTRA: 0 of 136 rows decisive at logit cosine 0.99993),
    # not that the artifact's error swamps its decisions (a zeroed layer under int8: cosine 0.9946).
    waived = metrics.get("logit_cosine", 0.0) >= gate.get("decisive_waiver_cosine", DECISIVE_WAIVER_COSINE)
    if "min_decisive" in gate and not waived and metrics.get("decisive_fraction", 1.0) < gate["min_decisive"]:
        reasons.append(f"only {metrics['decisive_rows']} of {metrics['rows']} rows ({metrics['decisive_fraction']:.2f} < "
                       f"{gate['min_decisive']}) have a reference margin above the error scale {metrics['tie_tolerance']:.3g}")
    if "max_accuracy_drop" in gate and metrics.get("accuracy_drop") is not None:
        drop, alpha = metrics["accuracy_drop"], gate.get("accuracy_alpha", 0.05)
        p = metrics.get("mcnemar_p", 0.0)
        if drop > gate["max_accuracy_drop"] and p < alpha:
            reasons.append(f"accuracy drop {drop:.4f} > {gate['max_accuracy_drop']} on {metrics.get('accuracy_rows', '?')} rows "
                           f"({metrics.get('discordant_worse', '?')} rows lost vs {metrics.get('discordant_better', '?')} gained, "
                           f"McNemar exact p={p:.3g} < {alpha})")
    for k, v in metrics.items():
        if isinstance(v, float) and np.isnan(v) and k != "accuracy":
            reasons.append(f"{k} is NaN")
    return reasons


# The loosest artifact-vs-source gate `verify` accepts per precision, whatever a manifest says: the
# manifest is the one file its own checksums cannot cover, so loosening its gates must not let a
# perturbed artifact pass. The recipe refuses looser [parity] values, so builds stay within them too.
# The near-tie keys are bounded too: a manifest cannot widen what counts as a near-tie.
_TIES = {"max_tie_scale": TIE_SCALE, "max_tie_floor": 1e-2}
GATE_LIMITS = {
    "fp32": {"max_abs": 1e-3, "min_cosine": 0.9999, **_TIES},
    "fp16": {"max_abs": 0.1, "min_logit_cosine": 0.999, "min_top1": 0.95, "min_decisive": 0.1, "decisive_waiver_cosine": DECISIVE_WAIVER_COSINE, **_TIES},
    "int8": {"min_logit_cosine": 0.9, "min_top1": 0.8, "min_decisive": 0.1, "decisive_waiver_cosine": DECISIVE_WAIVER_COSINE, **_TIES},
}


def bounded_gate(precision: str, gate: dict | None) -> dict:
    """`gate` with every threshold made at least as strict as GATE_LIMITS[precision] (missing keys take the limit)."""
    limits = GATE_LIMITS.get(precision, GATE_LIMITS["int8"])
    out = {}
    for k, v in {**limits, **(gate or {})}.items():
        lim = limits.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            v = lim
        if lim is not None:
            v = min(v, lim) if k.startswith("max_") else max(v, lim)
        if v is not None:
            out[k] = v
    return out
