"""Re-check a bundle with the runtime alone: checksums, tokenizer, and every artifact on the golden inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import parity
from .backends import open_backend
from .bundle import BundleError, artifact_key, read_manifest, verify_checksums
from .tokenize import TextEncoder, manifest_input_names


def _golden_texts(golden: dict) -> list:
    return [tuple(t) if isinstance(t, list) else t for t in golden["texts"]]


def verify_bundle(bundle: str | Path, only: list[str] | None = None, threads: int | None = None) -> dict:
    """Verify a bundle; returns {"passed": bool, "artifacts": [...], "problems": [...]}.

    A checksum mismatch is a failed check (passed False, nothing run); BundleError means the bundle
    is unreadable. Besides checksums, every file must agree with the others, so a tampered file
    whose checksum was recomputed still fails: artifacts against the golden outputs (within gates
    no looser than parity.GATE_LIMITS), the tokenizer against the golden ids, the label order
    against golden.json and labels.json, and the golden outputs against one another.
    """
    from . import resolve_bundle

    bundle = resolve_bundle(bundle)
    manifest = read_manifest(bundle)
    try:
        verify_checksums(bundle, manifest)
    except BundleError as e:
        return {"bundle": str(bundle), "passed": False, "artifacts": [], "problems": [f"checksums: {e}"]}
    golden_file = manifest.get("golden", {}).get("file")
    if not golden_file:
        raise BundleError(f"{bundle}: manifest names no golden file")
    try:
        golden = json.loads((bundle / golden_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{bundle}/{golden_file}: unreadable golden file ({e})") from None

    labels = list(manifest["labels"])
    problems: list[str] = []
    tok = manifest["tokenizer"]
    try:  # the arrays the bundle's model takes (no token_type_ids for DistilBERT/RoBERTa/XLM-R)
        names = manifest_input_names(manifest)
    except ValueError as e:
        raise BundleError(f"{bundle}: {e}") from None
    encoder = TextEncoder(bundle / tok["file"], manifest["max_seq_len"], pad_token=tok.get("pad_token"), input_names=names)
    token = None
    if (manifest.get("task") or {}).get("type") == "token-classification":
        # Golden sentences are word lists; logits (n, seq, tags) are judged at first sub-tokens only.
        from .token import encode_words

        texts = [list(w) for w in golden["texts"]]
        arrays, firsts, _ = encode_words(encoder, texts)
        token = _TokenView(firsts, arrays["input_ids"].shape, labels)
    else:
        texts = _golden_texts(golden)
        arrays = encoder.encode(texts)
    if sorted(golden.get("inputs", {})) != sorted(names):
        problems.append(f"golden: inputs {sorted(golden.get('inputs', {}))} differ from the manifest's {list(names)}")
    for name in names:
        expected = np.asarray(golden["inputs"].get(name, []), dtype=np.int64)
        if expected.shape != arrays[name].shape or not np.array_equal(expected, arrays[name]):
            problems.append(f"tokenizer: {name} of the golden texts differ from those recorded at build time")
    original = np.asarray(golden["original_logits"], dtype=np.float32)
    if token is not None:
        # The original's own first pieces are not in the bundle (a pruned vocabulary splits words otherwise):
        # its logits must have the head's width and its per-word predictions name known tags.
        ok = original.ndim == 3 and original.shape[-1] == len(labels) and \
            all(t in labels for row in golden["original_predictions"] for t in row)
    else:
        ok = [labels[i] for i in original.argmax(1)] == golden["original_predictions"]
    if not ok:
        problems.append("labels: the manifest's label order does not match the golden predictions")
    problems += _consistency(bundle, manifest, golden, labels, original)

    golden_inputs = {k: np.asarray(golden["inputs"].get(k, []), dtype=np.int64) for k in arrays}
    results = []
    for art in manifest["artifacts"]:
        if only and artifact_key(art) not in only and art["file"] not in only:
            continue
        row = _check_artifact(bundle, art, golden, golden_inputs, len(texts), labels, original, threads, names, token)
        if "passed" not in row:  # it ran: the bundle's own problems fail every artifact too
            row["reasons"] += problems
            row["passed"] = not row["reasons"]
        results.append(row)
    if only and not results:
        raise BundleError(f"no artifact matches {only}; the bundle has {[artifact_key(a) for a in manifest['artifacts']]}")
    passed = bool(results) and all(r["passed"] for r in results) and not problems
    return {"bundle": str(bundle), "passed": passed, "artifacts": results, "problems": problems}


class _TokenView:
    """How a token bundle's logits (n, seq, tags) are judged: at each golden word's first sub-token only."""

    def __init__(self, firsts, shape, labels):
        from .token import real_positions

        self.firsts, self.labels, self.seq = firsts, labels, shape[1]
        self.mask = real_positions(firsts, shape)

    def compare(self, logits, reference) -> dict:
        from .token import compare_positions

        return compare_positions(logits, reference, self.mask, parity.compare)

    def words(self, logits) -> list:
        from .token import word_predictions

        return [t for row in word_predictions(logits, self.firsts, self.labels) for t, _ in row]


def _check_artifact(bundle: Path, art: dict, golden: dict, inputs: dict, n: int, labels: list, original: np.ndarray,
                    threads, input_names=None, token: "_TokenView | None" = None) -> dict:
    """One artifact on the golden inputs: vs its reference, vs the original, vs its build-time outputs
    (a row with "passed" already set when the artifact cannot even run)."""
    original_pred = golden["original_predictions"]
    if token is not None:
        original_pred = [t for row in original_pred for t in row]
    compare = token.compare if token is not None else parity.compare
    row = {"artifact": artifact_key(art), "file": art["file"], "reasons": []}
    try:
        backend = open_backend(bundle / art["file"], art["format"], threads=threads, input_names=input_names)
        logits = backend.run(inputs)
    except Exception as e:  # a corrupt artifact must fail its row, not the whole report
        row["reasons"].append(f"cannot run: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        row["passed"] = False
        return row
    expect = (n, token.seq, len(labels)) if token is not None else (n, len(labels))
    if logits.shape != expect:
        row["reasons"].append(f"output shape {logits.shape} != {expect}")
    else:
        gate = art.get("gate") or {}
        ref_gate = parity.bounded_gate(art.get("precision", ""), gate.get("vs_reference"))
        reference = golden.get("reference_logits", {}).get(art.get("source"))
        if reference is None or np.asarray(reference).shape != logits.shape:
            row["reasons"].append(f"golden.json has no reference logits of shape {logits.shape} for source {art.get('source')!r}")
            reference = np.full_like(logits, np.nan)
        if token is not None:
            vs_ref = compare(logits, np.asarray(reference, dtype=np.float32))
            pred = token.words(logits)
            # A token bundle's original may read other pieces (pruned vocabulary): it is judged by per-word tags only.
            vs_orig = {"top1_agreement": float(np.mean([p == o for p, o in zip(pred, original_pred)]))}
        else:
            vs_ref = parity.compare(logits, np.asarray(reference, dtype=np.float32), tie=ref_gate)
            # Flips vs the original count only where they exceed this artifact's error scale (vs its source).
            vs_orig = parity.compare(logits, original, tolerance=vs_ref["tie_tolerance"])
            pred = [labels[i] for i in logits.argmax(1)]
        agree = float(np.mean([p == o for p, o in zip(pred, original_pred)]))
        row.update({"vs_reference": vs_ref, "vs_original": vs_orig, "label_agreement_vs_original": agree,
                    "gate_cosine": parity.gate_cosine(vs_ref, ref_gate)})
        row["reasons"] += parity.check(vs_ref, ref_gate)
        orig_top1 = {"min_top1": (gate.get("vs_original") or {}).get("min_top1", 0.0)}
        row["reasons"] += [f"vs the original: {r}" for r in parity.check(vs_orig, orig_top1)]
        built = golden.get("artifact_logits", {}).get(art["file"])
        if built is not None:  # drift from the build machine (another CPU, another runtime build)
            drift_gate = parity.bounded_gate(art.get("precision", ""), gate.get("arm64") or gate.get("vs_reference"))
            built = np.asarray(built, dtype=np.float32)
            if token is not None:
                if built.shape != logits.shape:
                    row["reasons"].append(f"golden.json's build-time outputs have shape {built.shape}, the artifact gives {logits.shape}")
                    built = np.full_like(logits, np.nan)
                row["vs_build_time"] = compare(logits, built)
            else:
                row["vs_build_time"] = parity.compare(logits, built, tie=drift_gate)
            # The same artifact on another machine drifts less than the manifest's cross-machine
            # tolerance (gate.arm64, else its source gate); further off, the artifact or golden.json changed.
            row["reasons"] += [f"vs its build-time outputs: {r}" for r in parity.check(row["vs_build_time"], drift_gate)]
        else:
            row["reasons"].append("golden.json has no build-time outputs of this artifact")
    return row


def _consistency(bundle: Path, manifest: dict, golden: dict, labels: list, original: np.ndarray) -> list[str]:
    """Cross-checks between files that are each checksummed but written from the same build."""
    problems = []
    order = golden.get("label_order")
    if order is not None and [str(x) for x in order] != [str(x) for x in labels]:
        problems.append(f"labels: the manifest's label order {labels} differs from the one the golden outputs were made with {order}")
    lab_file = bundle / "labels.json"
    if lab_file.is_file():
        try:
            on_disk = json.loads(lab_file.read_text(encoding="utf-8"))
        except ValueError:
            on_disk = None
        if on_disk != labels:
            problems.append("labels: labels.json differs from the manifest's labels")
    ref_orig = golden.get("reference_logits", {}).get("original")
    if ref_orig is not None and not np.array_equal(np.asarray(ref_orig, dtype=np.float32), original):
        problems.append("golden: original_logits differ from reference_logits['original'] (written from the same model)")
    n = len(golden.get("texts", []))
    if any(len(golden.get(k, [])) != n for k in ("labels", "original_predictions", "original_logits")):
        problems.append("golden: texts, labels and original outputs have different lengths")
    return problems


def format_table(report: dict) -> str:
    """A plain-text verdict table for the terminal."""
    lines = [f"{'artifact':<18} {'max-abs vs ref':>14} {'cos vs ref':>10} {'top1 vs orig':>12}  verdict"]
    for r in report["artifacts"]:
        ref = r.get("vs_reference", {})
        lines.append(
            f"{r['artifact']:<18} {ref.get('max_abs', float('nan')):>14.3g} {r.get('gate_cosine', float('nan')):>10.6f} "
            f"{r.get('label_agreement_vs_original', float('nan')):>12.3f}  {'PASS' if r['passed'] else 'FAIL: ' + '; '.join(r['reasons'])}"
        )
    for p in report["problems"]:
        lines.append(f"bundle problem: {p}")
    lines.append("verdict: " + ("PASS" if report["passed"] else "FAIL"))
    return "\n".join(lines)
