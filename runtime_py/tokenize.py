"""Tokenization exactly as the bundle prescribes, through the `tokenizers` library (no torch)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence, Union

import numpy as np

Text = Union[str, tuple, list]

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class TextEncoder:
    """Wraps a `tokenizers.Tokenizer` with the bundle's truncation and padding settings.

    Training, export, parity and the runtime all go through this one class, so the ids an
    app team feeds to an artifact are the ids the model was trained and checked on.
    """

    def __init__(self, tokenizer_file: str | Path, max_seq_len: int, pad_token: str = "[PAD]"):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.max_seq_len = int(max_seq_len)
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
        """Tokenize a batch into int64 arrays named as the artifacts' inputs."""
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
        return {
            "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
        }

    def count_truncated(self, texts: Sequence[Text]) -> int:
        """How many texts are longer than max_seq_len tokens (and so get cut)."""
        texts = self._normalise(texts)
        return sum(1 for e in self.tokenizer.encode_batch(texts) if e.overflowing)
