"""compress.augment: perturbed copies of the training texts for the teacher to label (EDA-style, no downloads)."""
from __future__ import annotations

import pytest

from toolchain.compress.augment import Augmenter, augment, mask_token
from toolchain.splits import Split

TEXTS = ["the film is a quiet triumph of craft", "a dull and lifeless script", "great", "i loved every minute of it",
         "not worth the ticket price at all"]


def test_copies_are_seeded_perturbations_with_the_source_label():
    split = Split("train", TEXTS, [1, 0, 1, 1, 0], "train.csv")
    a, n = augment(split, 2, 0.3, seed=7, mask="[MASK]")
    b, _ = augment(split, 2, 0.3, seed=7, mask="[MASK]")
    c, _ = augment(split, 2, 0.3, seed=8, mask="[MASK]")
    assert a.texts == b.texts and a.texts != c.texts  # seeded
    assert a.texts[:5] == TEXTS and len(a) == 5 + n and 0 < n <= 10
    assert len(set(a.texts)) == len(a.texts)  # no copy equals its source or another text
    assert "great" not in a.texts[5:]  # a one-word text has nothing to perturb: its copies are dropped
    src = {t: y for t, y in zip(TEXTS, [1, 0, 1, 1, 0])}
    vocab = {w for t in TEXTS for w in t.split()} | {"[MASK]"}
    for t, y in zip(a.texts[5:], a.labels[5:]):
        assert set(t.split()) <= vocab  # deleted, swapped, masked or replaced by a corpus word: nothing new
        # the label is its source's: the source is the original text sharing most words with it
        best = max(TEXTS, key=lambda s: len(set(s.split()) & set(t.split())))
        assert y == src[best]
    assert "augmented" in a.source


def test_every_operation_occurs_and_pairs_perturb_both_sides():
    aug = Augmenter(TEXTS, 0.5, seed=0, mask="<mask>")
    outs = [aug(t) for t in TEXTS * 20]
    joined = " ".join(outs)
    assert "<mask>" in joined
    assert any(len(o.split()) < len(t.split()) for o, t in zip(outs, TEXTS * 20))  # deletions
    assert any(sorted(o.split()) == sorted(t.split()) and o != t for o, t in zip(outs, TEXTS * 20))  # a pure swap
    pair = Augmenter([(t, t) for t in TEXTS], 0.5, seed=1, mask=None)
    p = [pair((t, u)) for t, u in zip(TEXTS, reversed(TEXTS))]
    assert all(isinstance(x, tuple) and len(x) == 2 for x in p)
    assert any(x[0] != t for x, t in zip(p, TEXTS)) and any(x[1] != u for x, u in zip(p, reversed(TEXTS)))
    assert "None" not in " ".join(" ".join(x) for x in p)  # no mask token: the mask operation is not drawn


def test_mask_token_of_the_tokenizer(tiny_model_dir, tmp_path):
    from toolchain.model import save_tokenizer_json

    tok = save_tokenizer_json(str(tiny_model_dir), tmp_path / "tokenizer.json")
    assert mask_token(tok) == "[MASK]"


@pytest.mark.parametrize("compress,msg", [
    ({"augment": 1, "distill": False}, "compress.augment needs compress.distill = true"),
    ({"augment": -1}, "compress.augment must be a whole number"),
    ({"augment": 1, "augment_prob": 1.0}, "compress.augment_prob must be in (0, 1)"),
])
def test_recipe_refuses_bad_augmentation(tiny_model_dir, tmp_path, compress, msg):
    from helpers import tiny_recipe_dict
    from toolchain import recipe as recipe_mod
    from toolchain.errors import RecipeError

    with pytest.raises(RecipeError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        recipe_mod.build(tiny_recipe_dict(tiny_model_dir, tmp_path / "out", compress=compress))
