"""Toolformer's thin runtime: load a bundle, tokenize, run an artifact, compare.

App teams get this package alone: it never imports `toolchain` or `targets`, and
loading an ONNX artifact does not import torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .backends import open_backend
from .bundle import BundleError, artifact_key, find_artifact, read_manifest, verify_checksums
from .tokenize import TextEncoder, manifest_input_names

__all__ = ["load", "Model", "BundleError", "TextEncoder"]


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


class Model:
    """One artifact of a bundle with its tokenizer and labels."""

    def __init__(self, bundle: Path, manifest: dict, artifact: dict, threads: int | None = None):
        self.bundle = bundle
        self.manifest = manifest
        self.artifact = artifact
        self.labels = list(manifest["labels"])
        self.max_seq_len = int(manifest["max_seq_len"])
        tok = manifest["tokenizer"]
        self.input_names = manifest_input_names(manifest)
        self.encoder = TextEncoder(bundle / tok["file"], self.max_seq_len, pad_token=tok.get("pad_token"),
                                   input_names=self.input_names)
        self.backend = open_backend(bundle / artifact["file"], artifact["format"], threads=threads,
                                    input_names=self.input_names)

    @property
    def name(self) -> str:
        return artifact_key(self.artifact)

    def encode(self, texts) -> dict:
        """Token arrays for texts (strings or (text, pair) tuples), padded to the batch's longest."""
        return self.encoder.encode(texts)

    def run(self, arrays: dict) -> np.ndarray:
        """Raw logits for pre-tokenized int64 arrays named as the manifest's inputs (`self.input_names`)."""
        return self.backend.run(arrays)

    def logits(self, texts, batch_size: int = 32) -> np.ndarray:
        """Logits `(n, num_labels)` for texts, run in batches."""
        texts = self.encoder._normalise(texts)
        outs = [self.run(self.encode(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        if not outs:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(outs, axis=0)

    @property
    def task(self) -> str:
        """'sequence-classification' or 'token-classification' (from the manifest)."""
        return (self.manifest.get("task") or {}).get("type", "sequence-classification")

    def entities(self, texts, batch_size: int = 32) -> list[list[dict]]:
        """Token bundles: entity spans per raw text, [{"type", "text", "start", "end", "score"}] (runtime_py.token)."""
        from . import token

        return token.entities(self, texts, batch_size=batch_size)

    def tags(self, words, batch_size: int = 32, scores: bool = False) -> list:
        """Token bundles: one tag per word for pre-split sentences (a list of lists of words)."""
        from . import token

        return token.tags(self, words, batch_size=batch_size, scores=scores)

    def predict(self, texts, batch_size: int = 32) -> list[dict]:
        """[{"label": name, "score": softmax probability}] per text."""
        if self.task == "token-classification":
            raise TypeError(f"{self.bundle}: a token-classification bundle tags words; use entities(texts) or tags(words)")
        probs = _softmax(self.logits(texts, batch_size=batch_size).astype(np.float64))
        return [{"label": self.labels[int(p.argmax())], "score": float(p.max())} for p in probs]


def resolve_bundle(path: str | Path) -> Path:
    """A bundle directory, or a compressed bundle archive unpacked to a cache directory."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.zst", ".tar.gz", ".tgz")):
        from .archive import unpack_cached

        return unpack_cached(path)
    return path


def load(bundle: str | Path, artifact: str | None = None, threads: int | None = None,
         check: bool = True) -> Model:
    """Open `bundle` (a directory) and one of its artifacts (file name or 'onnx-fp32'-style key).

    With `check` (the default) every file's sha256 is verified against the manifest first,
    so a tampered bundle is refused before anything runs.
    """
    bundle = resolve_bundle(bundle)
    manifest = read_manifest(bundle)
    if check:
        verify_checksums(bundle, manifest)
    art = find_artifact(manifest, artifact)
    return Model(bundle, manifest, art, threads=threads)
