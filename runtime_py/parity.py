"""Numeric parity metrics and gates, shared by the build and by `verify`. numpy only."""
from __future__ import annotations

import numpy as np


def compare(logits: np.ndarray, reference: np.ndarray) -> dict:
    """Error of `logits` against `reference` (same shape): max/mean abs, cosine, top-1 agreement."""
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
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "min_cosine": float(cos.min()) if cos.size else 1.0,
        "mean_cosine": float(cos.mean()) if cos.size else 1.0,
        "logit_cosine": float((ac * bc).sum() / mden) if mden > 0 else 1.0,
        "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 1.0,
    }


def accuracy(logits: np.ndarray, labels) -> float:
    """Fraction of rows whose argmax equals the label id."""
    labels = np.asarray(labels)
    return float((np.asarray(logits).argmax(1) == labels).mean()) if len(labels) else float("nan")


def gate_cosine(metrics: dict, gate: dict | None = None) -> float:
    """The cosine a gate judges: the logit-matrix cosine under an int8 gate (min_logit_cosine), else the
    worst row's cosine. Tables show this one, so a passed int8 row never displays a meaningless -0.9."""
    if gate and "min_logit_cosine" in gate:
        return metrics.get("logit_cosine", float("nan"))
    return metrics.get("min_cosine", float("nan"))


def check(metrics: dict, gate: dict) -> list[str]:
    """Reasons a set of metrics fails a gate (empty list: passed).

    Gate keys: max_abs (upper bound), min_cosine, min_logit_cosine, min_top1 (lower bounds),
    max_accuracy_drop (upper bound on `accuracy_drop`, when the metrics carry one).
    """
    reasons = []
    if "max_abs" in gate and metrics.get("max_abs", 0.0) > gate["max_abs"]:
        reasons.append(f"max-abs error {metrics['max_abs']:.3g} > {gate['max_abs']:.3g}")
    if "min_cosine" in gate and metrics.get("min_cosine", 1.0) < gate["min_cosine"]:
        reasons.append(f"cosine {metrics['min_cosine']:.6f} < {gate['min_cosine']}")
    if "min_logit_cosine" in gate and metrics.get("logit_cosine", 1.0) < gate["min_logit_cosine"]:
        reasons.append(f"logit-matrix cosine {metrics['logit_cosine']:.6f} < {gate['min_logit_cosine']}")
    if "min_top1" in gate and metrics.get("top1_agreement", 1.0) < gate["min_top1"]:
        reasons.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {gate['min_top1']}")
    if "max_accuracy_drop" in gate and metrics.get("accuracy_drop") is not None:
        if metrics["accuracy_drop"] > gate["max_accuracy_drop"]:
            reasons.append(f"accuracy drop {metrics['accuracy_drop']:.4f} > {gate['max_accuracy_drop']}")
    for k, v in metrics.items():
        if isinstance(v, float) and np.isnan(v) and k != "accuracy":
            reasons.append(f"{k} is NaN")
    return reasons


# The loosest artifact-vs-source gate `verify` accepts per precision, whatever a manifest says: the
# manifest is the one file its own checksums cannot cover, so loosening its gates must not let a
# perturbed artifact pass. The recipe refuses looser [parity] values, so builds stay within them too.
GATE_LIMITS = {
    "fp32": {"max_abs": 1e-3, "min_cosine": 0.9999},
    "fp16": {"max_abs": 0.1, "min_cosine": 0.999, "min_top1": 0.95},
    "int8": {"min_logit_cosine": 0.9, "min_top1": 0.8},
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
