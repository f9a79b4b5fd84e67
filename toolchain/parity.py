"""Build-time parity: each artifact against the PyTorch model it came from and against the original,
on real validation text at several sequence lengths and a batch size above 1."""
from __future__ import annotations

import numpy as np

from runtime_py import parity as metrics
from runtime_py.tokenize import INPUT_NAMES, TextEncoder

from .data import Split
from .finetune import to_torch


def parity_batches(split: Split, tokenizer_file, max_seq_len: int, seq_lens: list, batch_size: int, n: int,
                   input_names=INPUT_NAMES):
    """[(tag, arrays, label ids)]: natural-length batches, then batches padded/truncated to each fixed length.
    `input_names`: the arrays the model takes (its family adapter's inputs)."""
    m = len(split) if n <= 0 else min(n, len(split))
    texts, labels = split.texts[:m], np.asarray(split.labels[:m])
    out = []
    enc = TextEncoder(tokenizer_file, max_seq_len, input_names=input_names)
    for i in range(0, m, batch_size):
        out.append(("natural", enc.encode(texts[i:i + batch_size]), labels[i:i + batch_size]))
    for L in seq_lens:
        if not 2 <= L <= max_seq_len:
            continue
        enc_l = TextEncoder(tokenizer_file, L, input_names=input_names)
        k = min(m, batch_size * 2)
        for i in range(0, k, batch_size):
            out.append((f"len{L}", enc_l.encode(texts[i:i + batch_size], pad_to=L), labels[i:i + batch_size]))
    return out


def torch_logits(model, arrays: dict) -> np.ndarray:
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(**to_torch(arrays, device)).logits.float().cpu().numpy()


def reference_outputs(model, sets) -> list:
    """PyTorch logits of `model` for every parity batch (computed once, reused per artifact)."""
    model.eval()
    return [torch_logits(model, arrays) for _, arrays, _ in sets]


def gate_for(precision: str, p) -> dict:
    """Thresholds for an artifact of `precision`, from the recipe's [parity] section."""
    if precision == "fp32":
        vs_ref = {"max_abs": p.fp32_max_abs, "min_cosine": p.fp32_min_cosine}
    elif precision == "fp16":
        # Centred whole-matrix cosine, as for int8: a row's own uncentred cosine swings on near-zero two-label
        # rows (the gates sweep's one false alarm: worst row 0.9972 on a faithful fp16 SST-2 artifact whose
        # max-abs passed and no decision changed); max_abs still bounds every single logit.
        vs_ref = {"max_abs": p.fp16_max_abs, "min_logit_cosine": p.fp16_min_cosine, "min_top1": p.fp16_min_top1}
    else:
        # Whole-matrix cosine: a row's own cosine is meaningless on near-tied rows (runtime_py.parity.compare).
        vs_ref = {"min_logit_cosine": p.int8_min_cosine, "min_top1": p.int8_min_top1}
    ties = {"max_tie_scale": p.tie_scale, "max_tie_floor": p.tie_floor}
    vs_ref.update(ties)
    if precision != "fp32":  # fp32 has no top-1 gate: its max-abs/cosine gates judge every row
        vs_ref["min_decisive"] = p.min_decisive
        vs_ref["decisive_waiver_cosine"] = p.decisive_waiver_cosine
    return {"vs_reference": vs_ref,
            "vs_original": {"min_top1": p.min_top1_vs_original, "max_accuracy_drop": p.max_accuracy_drop,
                            "accuracy_alpha": p.accuracy_alpha}}


def check_artifact(backend, sets, source_logits: list, original_logits: list, gate: dict) -> dict:
    """Run one artifact over the parity batches; metrics against its source and the original, plus a verdict."""
    outs = [backend.run(arrays) for _, arrays, _ in sets]
    by_len = {}
    for (tag, _, _), o, r in zip(sets, outs, source_logits):
        by_len.setdefault(tag, []).append((o, r))
    ties = gate["vs_reference"]
    all_o = np.concatenate(outs)
    all_r = np.concatenate(source_logits)
    vs_ref = metrics.compare(all_o, all_r, tie=ties)
    # One near-tie margin for the whole run (the error scale of all rows), reused per length and vs the original.
    tol = vs_ref["tie_tolerance"]
    per_len = {tag: metrics.compare(np.concatenate([o for o, _ in v]), np.concatenate([r for _, r in v]), tolerance=tol)
               for tag, v in by_len.items()}
    nat = [i for i, (tag, _, _) in enumerate(sets) if tag == "natural"]
    labels = np.concatenate([sets[i][2] for i in nat])
    art_nat = np.concatenate([outs[i] for i in nat])
    orig_nat = np.concatenate([original_logits[i] for i in nat])
    acc = metrics.accuracy(art_nat, labels)
    orig_acc = metrics.accuracy(orig_nat, labels)
    # Flips vs the original are near-ties when within this artifact's export noise (its error vs its source).
    vs_orig = metrics.compare(art_nat, orig_nat, tolerance=tol)
    vs_orig.update(metrics.paired_accuracy(art_nat, orig_nat, labels))
    reasons = [f"vs its PyTorch source: {r}" for r in metrics.check(vs_ref, gate["vs_reference"])]
    reasons += [f"vs the original: {r}" for r in metrics.check(vs_orig, gate["vs_original"])]
    return {
        "passed": not reasons, "reasons": reasons, "examples": int(len(labels)),
        "batches": len(sets), "seq_lens": sorted(by_len),
        "vs_reference": vs_ref, "vs_original": vs_orig, "per_length": per_len,
        "accuracy": acc, "original_accuracy": orig_acc, "gate": gate,
    }
