"""Structured pruning on tiny random BERTs: smaller dense tensors, and removing a head or neuron
that was already zero leaves the function unchanged."""
from __future__ import annotations

import pytest
import torch


def _model(layers=2, hidden=32, heads=4, inter=64, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (4, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding exercised
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _logits(m, x):
    with torch.no_grad():
        return m(**x).logits


def _zero_head(layer, h):
    sa = layer.attention.self
    d = sa.attention_head_size
    with torch.no_grad():
        for lin in (sa.query, sa.key, sa.value):
            lin.weight[h * d:(h + 1) * d] = 0
            lin.bias[h * d:(h + 1) * d] = 0
        layer.attention.output.dense.weight[:, h * d:(h + 1) * d] = 0


def _zero_neurons(layer, idx):
    with torch.no_grad():
        layer.intermediate.dense.weight[idx] = 0
        layer.intermediate.dense.bias[idx] = 0
        layer.output.dense.weight[:, idx] = 0


@pytest.mark.parametrize("importance", ["gradient", "magnitude"])
def test_zero_head_is_ranked_last_and_pruning_it_changes_nothing(importance):
    from toolchain.compress import prune

    m = _model()
    _zero_head(m.bert.encoder.layer[0], 2)
    _zero_head(m.bert.encoder.layer[1], 0)
    x = _inputs()
    before = _logits(m, x)
    batches = [(x, torch.tensor([0, 1, 2, 0]))]
    prune.prune(m, prune.PruneConfig(heads=1, importance=importance), batches=batches)
    assert prune.count_heads(m) == [3, 3]
    assert prune.get_structure(m)["heads"] == [[0, 1, 3], [1, 2, 3]]
    sa = m.bert.encoder.layer[0].attention.self
    assert sa.query.weight.shape == (24, 32) and sa.num_attention_heads == 3 and sa.all_head_size == 24
    assert m.bert.encoder.layer[0].attention.output.dense.weight.shape == (32, 24)
    torch.testing.assert_close(_logits(m, x), before, atol=1e-6, rtol=0)


def test_zero_neurons_pruned_change_nothing_and_tensors_shrink():
    from toolchain.compress import prune

    m = _model()
    dead = [3, 10, 11, 40, 63]
    for layer in m.bert.encoder.layer:
        _zero_neurons(layer, dead)
    x = _inputs()
    before = _logits(m, x)
    n0 = sum(p.numel() for p in m.parameters())
    prune.prune(m, prune.PruneConfig(ffn=len(dead), importance="magnitude"))
    assert prune.count_ffn(m) == [59, 59]
    assert sum(p.numel() for p in m.parameters()) == n0 - 2 * len(dead) * (32 + 1 + 32)
    torch.testing.assert_close(_logits(m, x), before, atol=1e-6, rtol=0)


def test_gradient_importance_ranks_dead_neurons_zero():
    from toolchain.compress import prune

    m = _model()
    _zero_neurons(m.bert.encoder.layer[1], [5, 6])
    x = _inputs()
    _, f = prune.gradient_importance(m, [(x, torch.tensor([0, 1, 2, 0]))])
    assert f[1][5] == 0 and f[1][6] == 0 and f[1].max() > 0
    assert m.bert.encoder.layer[1].intermediate.dense.weight.grad is None  # gates only: no weight grads left behind


def test_fraction_keeps_at_least_one_head_and_rejects_bad_specs():
    from toolchain.compress import prune
    from toolchain.errors import UsageError

    m = _model()
    prune.prune(m, prune.PruneConfig(heads=0.99, ffn=0.5, importance="magnitude"))
    assert prune.count_heads(m) == [1, 1] and prune.count_ffn(m) == [32, 32]
    _logits(m, _inputs())  # still runs with a single head per layer
    with pytest.raises(UsageError):
        prune.PruneConfig(heads=1.5)
    with pytest.raises(UsageError):
        prune.PruneConfig(importance="random")


def test_pruned_checkpoint_reloads_with_its_shapes(tmp_path):
    from toolchain import model as model_mod
    from toolchain.compress import prune
    from toolchain.compress.truncate import truncate

    m = _model(layers=3)
    m.config.id2label = {0: "a", 1: "b", 2: "c"}
    m.config.label2id = {"a": 0, "b": 1, "c": 2}
    s = truncate(m, [0, 2])
    prune.prune_structure(s, [[0, 3], [1, 2, 3]], [list(range(0, 64, 2)), list(range(50))])
    x = _inputs()
    s.save_pretrained(tmp_path)
    st = prune.get_structure(s)
    assert st["layers"] == [0, 2] and st["heads"] == [[0, 3], [1, 2, 3]] and st["intermediate"] == [32, 50]
    back = model_mod.load_classifier(str(tmp_path), ["a", "b", "c"])
    assert prune.count_heads(back) == [2, 3] and prune.count_ffn(back) == [32, 50]
    torch.testing.assert_close(_logits(back, x), _logits(s, x), atol=0, rtol=0)
