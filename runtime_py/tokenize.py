"""Tokenization exactly as the bundle prescribes, through the `tokenizers` library (no torch)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence, Union

import numpy as np

Text = Union[str, tuple, list]

# Every input an encoder family may take; a bundle's manifest lists the ones its model takes
# (DistilBERT, RoBERTa and XLM-R take no token_type_ids).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def manifest_input_names(manifest: dict) -> tuple:
    """The input names a bundle's artifacts take, in order (bundles before the field existed took all three)."""
    spec = manifest.get("inputs")
    names = tuple(i["name"] for i in spec) if spec else INPUT_NAMES
    unknown = [n for n in names if n not in INPUT_NAMES]
    if unknown:
        raise ValueError(f"manifest lists inputs {unknown} that the runtime cannot produce (known: {', '.join(INPUT_NAMES)})")
    return names


def file_pad_token(tokenizer) -> str | None:
    """The pad token a tokenizer.json records in its padding settings (Toolformer writes it there)."""
    pad = tokenizer.padding
    return pad.get("pad_token") if pad else None


class TextEncoder:
    """Wraps a `tokenizers.Tokenizer` with the bundle's truncation and padding settings.

    Training, export, parity and the runtime all go through this one class, so the ids an
    app team feeds to an artifact are the ids the model was trained and checked on.
    """

    def __init__(self, tokenizer_file: str | Path, max_seq_len: int, pad_token: str | None = None,
                 input_names: Sequence[str] = INPUT_NAMES):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.max_seq_len = int(max_seq_len)
        # [PAD] for BERT-style vocabularies, <pad> for RoBERTa/XLM-R: the file says which.
        pad_token = pad_token or file_pad_token(self.tokenizer) or "[PAD]"
        self.pad_token = pad_token
        self.input_names = tuple(input_names)
        bad = [n for n in self.input_names if n not in INPUT_NAMES]
        if bad:
            raise ValueError(f"unknown input names {bad} (known: {', '.join(INPUT_NAMES)})")
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{tokenizer_file}: tokenizer has no pad token {pad_token!r}")
        self.pad_id = pad_id
        # Pad to the longest sequence of each batch: the artifacts take a dynamic sequence length.
        self.tokenizer.enable_truncation(max_length=self.max_seq_len)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        # `pad_to` switches the shared tokenizer's padding for one call: a lock keeps a concurrent call
        # from seeing that switch, so one Model can be used from several threads.
        self._lock = threading.Lock()

    @staticmethod
    def _normalise(texts: Sequence[Text]) -> list:
        if isinstance(texts, (str, tuple)):
            texts = [texts]
        out = []
        for t in texts:
            if isinstance(t, str):
                out.append(t)
            elif isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(x, str) for x in t):
                out.append((t[0], t[1]))
            else:
                raise TypeError(f"each text must be a string or a (text, text_pair) pair, got {t!r}")
        return out

    def encode(self, texts: Sequence[Text], pad_to: int | None = None) -> dict:
        """Tokenize a batch into int64 arrays named as the artifacts' inputs (only the ones the model takes)."""
        texts = self._normalise(texts)
        if not texts:
            raise ValueError("no texts to encode")
        with self._lock:
            if pad_to is not None:
                self.tokenizer.enable_padding(pad_id=self.pad_id, length=int(pad_to))
            try:
                encs = self.tokenizer.encode_batch(texts)
            finally:
                if pad_to is not None:
                    self.tokenizer.enable_padding(pad_id=self.pad_id)
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        return {n: np.asarray([getattr(e, fields[n]) for e in encs], dtype=np.int64) for n in self.input_names}

    def count_truncated(self, texts: Sequence[Text]) -> int:
        """How many texts are longer than max_seq_len tokens (and so get cut)."""
        texts = self._normalise(texts)
        return sum(1 for e in self.tokenizer.encode_batch(texts) if e.overflowing)
