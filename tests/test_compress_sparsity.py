"""Unstructured magnitude sparsity: the target is reached, zeros survive training, and end up as plain weights."""
from __future__ import annotations

import pytest
import torch


def _model():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=64, max_position_embeddings=32))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_sparsity_target_kept_through_training_and_made_permanent(scope):
    from toolchain.compress import sparsity

    m = _model()
    sparsity.apply(m, sparsity.SparsityConfig(0.6, scope))
    assert abs(sparsity.stats(m)["linear_sparsity"] - 0.6) < 0.01
    if scope == "layer":
        for lin in sparsity.target_linears(m):
            assert abs(float((lin.weight == 0).float().mean()) - 0.6) < 0.01
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    ids = torch.randint(1, 50, (4, 9))
    for _ in range(3):  # training moves weight_orig, the mask keeps the product at zero
        loss = m(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(sparsity.stats(m)["linear_sparsity"] - 0.6) < 0.01
    sparsity.make_permanent(m)
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.endswith("_orig") for n in names)
    assert abs(sparsity.stats(m)["linear_sparsity"] - 0.6) < 0.01
    assert m.classifier.weight.ne(0).all()  # the task head stays dense


def test_sparsity_rejects_out_of_range():
    from toolchain.compress.sparsity import SparsityConfig
    from toolchain.errors import UsageError

    with pytest.raises(UsageError):
        SparsityConfig(1.0)
    with pytest.raises(UsageError):
        SparsityConfig(0.5, "row")
