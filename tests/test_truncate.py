"""Truncation: layer selection strategies and weights copied from the original."""
import pytest
import torch

from toolchain.compress.truncate import select_layers, truncate
from toolchain.errors import UsageError


@pytest.mark.parametrize("sel,n,expected", [
    ("bottom", 2, [0, 1]), ("top", 2, [4, 5]), ("evenly", 3, [0, 2, 5]), ("evenly", 2, [0, 5]),
    ("evenly", 1, [0]), ("bottom", 6, [0, 1, 2, 3, 4, 5]),
])
def test_select_layers(sel, n, expected):
    got = select_layers(6, n, sel)
    assert len(got) == n and got == sorted(got)
    if sel != "evenly" or n != 3:
        assert got == expected
    else:
        assert got[0] == 0 and got[-1] == 5


def test_explicit_layers_and_range_errors():
    assert select_layers(6, 0, "explicit", [4, 1]) == [1, 4]
    with pytest.raises(UsageError, match="out of range"):
        select_layers(6, 0, "explicit", [7])
    with pytest.raises(UsageError, match="out of range"):
        select_layers(6, 7, "bottom")
    with pytest.raises(UsageError, match="needs student.layers"):
        select_layers(6, 2, "explicit")


def test_truncated_student_copies_the_chosen_layers(tiny_model_dir):
    from toolchain.model import load_classifier

    orig = load_classifier(str(tiny_model_dir), ["a", "b", "c"]).eval()
    student = truncate(orig, [1, 3]).eval()
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    for new, old in ((0, 1), (1, 3)):
        for (n1, p1), (n2, p2) in zip(student.bert.encoder.layer[new].named_parameters(), orig.bert.encoder.layer[old].named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(student.classifier.weight, orig.classifier.weight)
    assert student.bert.encoder.layer[0] is not orig.bert.encoder.layer[1]  # a copy, not shared
    ids = torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        assert student(input_ids=ids).logits.shape == (2, 3)
