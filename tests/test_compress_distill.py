"""Distillation: the loss falls while a student learns from its teacher; teacher logits are cached;
layers and heads are mapped as configured."""
from __future__ import annotations

import pytest
import torch


def _teacher(layers=4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 80, (8, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}, torch.randint(0, 2, (8,), generator=g)


@pytest.mark.parametrize("hidden,attention", [(0.0, 0.0), (1.0, 1.0)])
def test_distillation_loss_decreases(hidden, attention):
    from toolchain.compress import prune
    from toolchain.compress.distill import DistillConfig, Distiller
    from toolchain.compress.truncate import truncate

    teacher = _teacher()
    with torch.no_grad():
        torch.nn.init.normal_(teacher.classifier.weight, std=20.0)  # confident teacher: soft targets far from uniform
    student = truncate(teacher, [0, 2])
    torch.manual_seed(1)
    student.classifier.reset_parameters()  # a student that starts away from its teacher
    with torch.no_grad():
        for p in student.bert.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    prune.prune_structure(student, [[0, 2, 3], [1, 2]], None)  # attention maps matched on the kept heads
    batches = [_batch(s) for s in range(3)]
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    student.eval()  # no dropout: the fall of the loss is then the optimisation alone
    with Distiller(teacher, student, DistillConfig(temperature=2.0, alpha=0.9, hidden_weight=hidden, attention_weight=attention)) as d:
        for epoch in range(10):
            for x, y in batches:
                loss = d(student, x, y, student(**x))
                opt.zero_grad()
                loss.backward()
                opt.step()
    first = sum(h["loss"] for h in d.history[:3]) / 3
    last = sum(h["loss"] for h in d.history[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    soft_first = sum(h["soft"] for h in d.history[:3]) / 3
    soft_last = sum(h["soft"] for h in d.history[-3:]) / 3
    assert soft_last < 0.5 * soft_first, (soft_first, soft_last)
    if hidden:
        for part in ("hidden", "attention"):
            assert sum(h[part] for h in d.history[-3:]) < sum(h[part] for h in d.history[:3]), part
    # Hooks are gone after the context: the student runs plainly again.
    assert not student.bert.encoder.layer[0]._forward_hooks


def test_teacher_runs_once_per_example_when_only_logits_are_matched():
    from toolchain.compress.distill import DistillConfig, Distiller
    from toolchain.compress.truncate import truncate

    teacher = _teacher()
    student = truncate(teacher, [0])
    calls = []
    teacher.register_forward_hook(lambda m, a, o: calls.append(1))
    x, y = _batch(0)
    d = Distiller(teacher, student, DistillConfig())
    first = d.teacher_logits(x)
    # The same texts padded to another length (as another batch would) hit the cache.
    x2 = {k: torch.cat([v, torch.zeros(8, 4, dtype=v.dtype)], 1) for k, v in x.items()}
    again = d.teacher_logits(x2)
    assert len(calls) == 1 and len(d.cache) == len({bytes(r) for r in d._keys(x)})
    torch.testing.assert_close(first, again)
    with torch.no_grad():
        torch.testing.assert_close(first, teacher(**x).logits)


def test_layer_maps():
    from toolchain.compress.distill import map_layers
    from toolchain.compress.truncate import truncate

    teacher = _teacher(layers=6)
    student = truncate(teacher, [0, 1])
    assert map_layers(student, teacher, "uniform") == [2, 5]
    assert map_layers(student, teacher, "kept") == [0, 1]
    assert map_layers(truncate(teacher, [0, 2, 5]), teacher, "uniform") == [1, 3, 5]
