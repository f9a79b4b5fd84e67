"""Data augmentation for the distillation transfer set (compress.augment): more text for the teacher to label.

A small student learns what the original knows from the original's soft targets; on the training texts
alone those targets are close to the labels. Perturbed copies of each training text (each word, with
probability `prob`, deleted, swapped with its neighbour, replaced by the tokenizer's mask token, or replaced
by a word drawn from the training corpus by frequency) are texts the original has an opinion on that no
label covers: the same recipe as EDA (Wei & Zou, 2019) and TinyBERT's augmented transfer set, without
downloads (no GloVe, no masked-LM sampling). The teacher labels each copy once (the Distiller caches its
logits per text); the task term uses the source row's label (alpha = 1 trains the copies on the teacher alone).
"""
from __future__ import annotations

import random
from collections import Counter

from ..errors import CompressError

OPS = ("delete", "swap", "mask", "replace")
MASK_TOKENS = ("[MASK]", "<mask>")


def mask_token(tokenizer_json) -> str | None:
    """The tokenizer's mask token ([MASK] for WordPiece families, <mask> for BPE/Unigram ones), if it has one."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    return next((m for m in MASK_TOKENS if m in added), None)


class Augmenter:
    """Seeded word-level perturbations of texts (str or (text, pair) tuples)."""

    def __init__(self, corpus: list, prob: float, seed: int, mask: str | None):
        if not 0.0 < prob < 1.0:
            raise CompressError(f"augmentation probability must be in (0, 1), got {prob}")
        counts = Counter(w for t in corpus for side in (t if isinstance(t, tuple) else (t,)) for w in side.split())
        self.words, self.weights = list(counts), list(counts.values())
        self.prob, self.mask = prob, mask
        self.ops = [op for op in OPS if op != "mask" or mask]
        self.rng = random.Random(seed)

    def _side(self, text: str) -> str:
        words = text.split()
        if len(words) < 2:  # nothing to perturb without emptying the text
            return text
        out, i = [], 0
        while i < len(words):
            w = words[i]
            if self.rng.random() >= self.prob:
                out.append(w)
                i += 1
                continue
            op = self.rng.choice(self.ops)
            if op == "delete":
                pass
            elif op == "swap" and i + 1 < len(words):
                out += [words[i + 1], w]
                i += 1
            elif op == "mask":
                out.append(self.mask)
            elif op == "replace":
                out.append(self.rng.choices(self.words, self.weights)[0])
            else:  # swap at the last word: keep it
                out.append(w)
            i += 1
        return " ".join(out) if out else text

    def __call__(self, text):
        return tuple(self._side(s) for s in text) if isinstance(text, tuple) else self._side(text)


def augment(split, copies: int, prob: float, seed: int, mask: str | None):
    """`split` followed by up to `copies` perturbed copies of each row (same label); a copy equal to its
    source or to a text already present is dropped, so no text appears twice. Returns (split, added)."""
    if copies <= 0:
        return split, 0
    aug = Augmenter(split.texts, prob, seed, mask)
    seen = set(split.texts)
    texts, labels = list(split.texts), list(split.labels)
    for _ in range(copies):
        for t, y in zip(split.texts, split.labels):
            a = aug(t)
            if a not in seen:
                seen.add(a)
                texts.append(a)
                labels.append(y)
    added = len(texts) - len(split)
    return type(split)(split.name, texts, labels, f"{split.source} (+{added} augmented copies)"), added
