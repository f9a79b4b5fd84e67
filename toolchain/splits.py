"""The split and dataset types every task shares (a module of its own so task readers need not import data.py)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import DataError


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
        return self.take(sorted(random.Random(seed).sample(range(len(self)), n)))

    def take(self, idx, name: str | None = None, source: str | None = None) -> "Split":
        """The rows at `idx`, in that order, as a split of this one's type (its name and source unless given)."""
        return type(self)(name or self.name, [self.texts[i] for i in idx], [self.labels[i] for i in idx],
                          self.source if source is None else source)


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


def carve_validation(train: Split, fraction: float, seed: int, path, unit: str = "rows") -> tuple[Split, Split, str]:
    """(train, validation, note): a seeded validation split carved from `train`, both of train's own type."""
    idx = list(range(len(train)))
    random.Random(seed).shuffle(idx)
    n_val = max(1, int(round(len(idx) * fraction)))
    if len(idx) - n_val < 2:
        raise DataError(f"{path}: too few {unit} ({len(idx)}) to carve a validation split; give --validation")
    validation = train.take(sorted(idx[:n_val]), "validation", f"{path} (carved {n_val} {unit}, seed {seed})")
    rest = train.take(sorted(idx[n_val:]), "train", str(path))
    return rest, validation, f"validation carved from train: {n_val} {unit} (fraction {fraction}, seed {seed})"


def carve_test(train: Split, cfg, seed: int, path, notes: list, unit: str = "rows") -> tuple[Split, Split | None]:
    """(train, held-out test or None) under data.test_fraction. Carved before validation, so the held-out rows are
    the same whether validation is carved or given, and by distinct text: every copy of a text goes to the same
    side (SST-2's train file repeats some phrases), so no held-out text was trained on."""
    fraction = cfg.test_fraction
    if not fraction:
        return train, None
    rows: dict = {}
    for i, t in enumerate(train.texts):
        rows.setdefault(tuple(t) if isinstance(t, list) else t, []).append(i)
    keys = list(rows)
    random.Random(seed + 1).shuffle(keys)  # another seed than validation's carve
    want, held = max(1, int(round(len(train) * fraction))), []
    for k in keys:
        if len(held) >= want:
            break
        held += rows[k]
    if len(train) - len(held) < 2:
        raise DataError(f"{path}: too few {unit} ({len(train)}) to carve a test split; lower data.test_fraction")
    hs = set(held)
    test = train.take(sorted(hs), "test", f"{path} (held out {len(hs)} {unit}, seed {seed + 1})")
    rest = train.take([i for i in range(len(train)) if i not in hs], "train", str(path))
    notes.append(f"test held out from train: {len(hs)} {unit}, no text also left in train (fraction {fraction}, seed {seed + 1})")
    return rest, test


def limit_samples(train: Split, validation: Split, test: Split | None, cfg, seed: int, notes: list,
                  unit: str = "rows") -> tuple[Split, Split, Split | None]:
    """Seeded subsets under data.max_train_samples / max_eval_samples; a cut training split is noted."""
    if cfg.max_train_samples:
        n0 = len(train)
        train = train.subset(cfg.max_train_samples, seed)
        if len(train) < n0:
            notes.append(f"train subset: {len(train)} of {n0} {unit} (seed {seed})")
    if cfg.max_eval_samples:
        validation = validation.subset(cfg.max_eval_samples, seed)
        test = test.subset(cfg.max_eval_samples, seed) if test else None
    return train, validation, test
