"""The split and dataset types every task shares (a module of its own so task readers need not import data.py)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Split:
    """One split: texts (str, or (text, pair) tuples) and integer label ids."""

    name: str
    texts: list
    labels: list
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int, seed: int) -> "Split":
        """A seeded random subset of at most n rows (n <= 0 keeps all)."""
        if n <= 0 or n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return Split(self.name, [self.texts[i] for i in idx], [self.labels[i] for i in idx], self.source)


@dataclass
class Dataset:
    train: Split
    validation: Split
    test: Split | None
    labels: list
    pair: bool
    notes: list = field(default_factory=list)
    task: str = "sequence-classification"  # or "token-classification" (toolchain.tasks.token)

    def splits(self):
        return [s for s in (self.train, self.validation, self.test) if s is not None]
