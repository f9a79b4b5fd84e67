"""Bundle assembly: artifacts, tokenizer, labels, golden I/O and a manifest with checksums.

The bundle is written into a staging directory and renamed into place only when complete.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from runtime_py.bundle import MANIFEST, SCHEMA_VERSION, artifact_key, sha256_file

def input_spec(names) -> list[dict]:
    """The manifest's `inputs`: the arrays the model takes (no token_type_ids for DistilBERT/RoBERTa/XLM-R)."""
    return [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in names]


INPUT_SPEC = input_spec(("input_ids", "attention_mask", "token_type_ids"))


def versions() -> dict:
    """Versions of the libraries that shaped the artifacts (recorded for reproducibility)."""
    from importlib.metadata import PackageNotFoundError, version

    # The build machine's architecture: `verify --arm64` reports drift against this machine's logits.
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("toolformer", "torch", "transformers", "executorch", "onnx", "onnxruntime", "tokenizers", "torchao"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def golden_payload(texts: list, labels: list, arrays: dict, original: np.ndarray, references: dict,
                   artifact_logits: dict, label_names: list) -> dict:
    """The golden inputs and every expected output, as plain JSON for app teams' own tests."""
    return {
        "texts": [list(t) if isinstance(t, tuple) else t for t in texts],
        "labels": [label_names[i] for i in labels],
        # The head's label order the logits below are in: verify refuses a manifest that reorders it.
        "label_order": list(label_names),
        "inputs": {k: v.tolist() for k, v in arrays.items()},
        "original_logits": original.tolist(),
        "original_predictions": [label_names[i] for i in original.argmax(1)],
        "reference_logits": {k: v.tolist() for k, v in references.items()},
        "artifact_logits": {k: v.tolist() for k, v in artifact_logits.items()},
    }


def write_bundle(dest: Path, *, artifacts: list, tokenizer_file: Path, labels: list, max_seq_len: int,
                 pair: bool, golden: dict, extra_files: dict, info: dict, input_names=None,
                 pad_token: str = "[PAD]", task: str = "sequence-classification") -> Path:
    """Assemble a complete bundle at `dest` via a sibling staging dir, renamed into place when complete
    (a `dest` left by an interrupted run is replaced whole).

    `artifacts`: dicts with `path` (a file to copy) plus the manifest fields format, precision,
    source, parity, gate, export. `extra_files`: {name in bundle: source path} (report etc.).
    """
    dest = Path(dest)
    staging = dest.parent / f".{dest.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    entries = []
    for art in artifacts:
        src = Path(art["path"])
        shutil.copy2(src, staging / src.name)
        entry = {k: v for k, v in art.items() if k != "path"}
        entry.update({"file": src.name, "bytes": src.stat().st_size, "sha256": sha256_file(staging / src.name)})
        entries.append(entry)
    shutil.copy2(tokenizer_file, staging / "tokenizer.json")
    (staging / "labels.json").write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (staging / "golden.json").write_text(json.dumps(golden, ensure_ascii=False), encoding="utf-8")
    for name, src in extra_files.items():
        shutil.copy2(src, staging / name)
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
    default = next((e["file"] for e in entries if (e["format"], e["precision"]) == ("onnx", "fp32")), entries[0]["file"] if entries else None)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task": {"type": task, "text_pair": bool(pair),
                 # Token bundles: a word's tag is read at its first sub-token (runtime_py.token).
                 **({"aggregation": "first sub-token per word", "scheme": "IOB2/BIOES, conlleval chunks"}
                    if task == "token-classification" else {})},
        "labels": labels,
        "max_seq_len": int(max_seq_len),
        "tokenizer": {"file": "tokenizer.json", "library": "tokenizers", "pad_token": pad_token,
                      "truncation": "longest_first", "padding": "longest in batch"},
        "inputs": input_spec(input_names) if input_names else INPUT_SPEC,
        "outputs": [{"name": "logits", "dtype": "float32",
                     "shape": ["batch", "sequence", len(labels)] if task == "token-classification" else ["batch", len(labels)]}],
        "default_artifact": default,
        "artifacts": entries,
        "golden": {"file": "golden.json", "examples": len(golden["texts"])},
        "files": files,
        **info,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if dest.exists():
        # Left by a run killed after its rename (packaging is never recorded, so never reused):
        # replaced whole, so the bundle holds this run's files only.
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def artifact_rows(manifest: dict) -> list[dict]:
    """Flat rows (key, size, parity) for reports."""
    return [{"artifact": artifact_key(a), "file": a["file"], "bytes": a["bytes"], **a.get("parity", {})} for a in manifest["artifacts"]]
