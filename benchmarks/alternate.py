"""Alternating timing: every subject runs on the same input in each round, in a rotating order, so
load from other jobs on the machine falls on all of them alike, and ratios are taken per round."""
from __future__ import annotations

import time

import numpy as np


def alternate(runners: dict, inputs: list, warmup_rounds: int = 5, on_round=None) -> dict:
    """{name: per-round seconds} for `runners` ({name: fn(arrays)}) over `inputs` (one per round).

    Round r runs the subjects starting at position r (a rotation), so no subject always runs
    right after the same neighbour. The first `warmup_rounds` rounds are run and discarded.
    """
    names = list(runners)
    times = {n: [] for n in names}
    for r, arrays in enumerate(inputs):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            runners[n](arrays)
            dt = time.perf_counter() - t0
            if r >= warmup_rounds:
                times[n].append(dt)
        if on_round:
            on_round(r)
    return {n: np.asarray(v) for n, v in times.items()}


def pairwise_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """Median over rounds of a[r] / b[r]: a's latency relative to b's, robust to noisy rounds."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("pairwise_ratio needs two equally long, non-empty series from the same rounds")
    return float(np.median(a / b))


def summary_ms(t: np.ndarray) -> dict:
    """p50/p90/p99 of a series of seconds, in milliseconds."""
    ms = np.asarray(t, dtype=np.float64) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99))}


def markdown_table(head: list, rows: list) -> str:
    """A GitHub markdown table (also readable as plain text)."""
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
