"""Model-family adapters (toolchain/families): every registered family is tested at every stage that
reaches model parts through it, on a tiny random model of that family.

A new family adds a `_tiny_<name>` builder and a row to FAMILY_STAGES; the completeness test fails
until both exist.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from helpers import ROOT

# The stages that reach model parts through the adapter; each has a test below.
STAGES = ("truncate", "prune", "vocab", "positions", "sparsity", "distill", "export", "debug")
# family → the stages tested for it (explicit, so a family is never silently untested).
FAMILY_STAGES = {"bert": set(STAGES)}


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                     max_position_embeddings=40, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


BUILDERS = {"bert": _tiny_bert}


def _inputs(model, seq=12, batch=3):
    from toolchain import families

    fam = families.of(model)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, model.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, seq - 4:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in fam.inputs:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_every_registered_family_is_tested_at_every_stage():
    from toolchain import families

    registered = {families.get(t).name for t in families.supported()}
    assert registered == set(FAMILY_STAGES), "add the family to FAMILY_STAGES (and a builder to BUILDERS)"
    assert registered <= set(BUILDERS)
    for name, tested in FAMILY_STAGES.items():
        assert tested == set(STAGES), f"{name}: untested stages {set(STAGES) - tested}"


def test_unknown_model_type_is_a_family_error_naming_the_supported_ones():
    from toolchain import families
    from toolchain.errors import FamilyError, UsageError

    with pytest.raises(FamilyError, match=r"'gpt2' is not supported.*supported: bert") as e:
        families.get("gpt2")
    assert isinstance(e.value, UsageError) and e.value.exit_code == 2


def test_no_family_layout_outside_the_adapters():
    """Model parts are named only in toolchain/families: no `.bert.` or `encoder.layer` elsewhere."""
    bad = []
    for pkg in ("toolchain", "targets", "runtime_py"):
        for f in (ROOT / pkg).rglob("*.py"):
            if "families" in f.parts:
                continue
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#")[0]
                if re.search(r"\.bert\b|encoder\.layer|model_type=\"bert\"", code):
                    bad.append(f"{Path(f).relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def _tested(stage):
    return pytest.mark.parametrize("family", sorted(f for f, s in FAMILY_STAGES.items() if stage in s))


@_tested("truncate")
def test_truncate(family):
    from toolchain import families
    from toolchain.compress.truncate import truncate

    model = BUILDERS[family]()
    student = truncate(model, [0, 2])
    fam = families.of(student)
    assert len(fam.layers(student)) == 2 and student.config.num_hidden_layers == 2
    assert fam.layers(student)[1] is not fam.layers(model)[2]  # a copy, the original untouched
    assert _logits(student, _inputs(student)).shape == (3, 3)


@_tested("prune")
def test_prune(family):
    from toolchain.compress import prune

    model = BUILDERS[family]()
    prune.prune(model, prune.PruneConfig(heads=1, ffn=0.5, importance="magnitude", steps=2))
    assert prune.count_heads(model) == [3, 3, 3] and prune.count_ffn(model) == [24, 24, 24]
    assert _logits(model, _inputs(model)).shape == (3, 3)


@_tested("vocab")
def test_vocab(family):
    import numpy as np

    from toolchain import families
    from toolchain.compress.vocab import prune_embeddings

    model = BUILDERS[family]()
    fam = families.of(model)
    keep = np.arange(0, 40)
    inputs = {k: v.clamp(max=39) if k == "input_ids" else v for k, v in _inputs(model).items()}
    before = _logits(model, inputs)
    prune_embeddings(model, keep)
    assert fam.get(model, fam.word_embeddings).num_embeddings == 40 and model.config.vocab_size == 40
    assert torch.allclose(_logits(model, inputs), before, atol=1e-6)  # kept ids unchanged


@_tested("positions")
def test_positions(family):
    from toolchain import families
    from toolchain.compress.vocab import prune_positions

    model = BUILDERS[family]()
    fam = families.of(model)
    inputs = _inputs(model, seq=12)
    before = _logits(model, inputs)
    prune_positions(model, 16)
    assert fam.get(model, fam.position_embeddings).num_embeddings == fam.position_offset + 16
    assert torch.allclose(_logits(model, inputs), before, atol=1e-6)


@_tested("sparsity")
def test_sparsity(family):
    from toolchain import families
    from toolchain.compress import sparsity

    model = BUILDERS[family]()
    fam = families.of(model)
    linears = sparsity.target_linears(model)
    layer_linears = [m for m in fam.layers(model).modules() if isinstance(m, torch.nn.Linear)]
    assert set(map(id, layer_linears)) <= set(map(id, linears))
    assert fam.get(model, fam.classifier) not in linears  # the task head stays dense


@_tested("distill")
def test_distill(family):
    from toolchain.compress.distill import DistillConfig, Distiller
    from toolchain.compress.truncate import truncate

    teacher = BUILDERS[family]()
    student = truncate(teacher, [0, 2])
    d = Distiller(teacher, student, DistillConfig(hidden_weight=1.0, attention_weight=1.0))
    inputs = _inputs(student)
    labels = torch.tensor([0, 1, 2])
    with d:
        out = student(**inputs)
        loss = d(student, inputs, labels, out)
        assert set(d._rec_s.hidden) == {-1, 0, 1} and set(d._rec_s.attn) == {0, 1}  # embeddings + each layer tapped
    assert torch.isfinite(loss) and loss.requires_grad


@_tested("export")
def test_export_wrapper(family):
    from targets.wrapper import EdgeClassifier

    model = BUILDERS[family]()
    inputs = _inputs(model)
    wrapper = EdgeClassifier(model)
    args = [inputs.get(k, torch.zeros_like(inputs["input_ids"])) for k in ("input_ids", "attention_mask", "token_type_ids")]
    with torch.no_grad():
        got = wrapper(*args)
    assert torch.allclose(got, _logits(model, inputs), atol=1e-5)


@_tested("debug")
def test_debug_taps(family):
    from toolchain import families

    model = BUILDERS[family]()
    fam = families.of(model)
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))]
    blocks = {fam.block_of(n) for n in names}
    layers = {f"{fam.layer_list}.{i}" for i in range(len(fam.layers(model)))}
    assert layers <= blocks and fam.embeddings in blocks and fam.classifier in blocks
    assert blocks <= layers | {fam.embeddings, fam.pooler, fam.classifier}
    trunk = [n for n in names if fam.is_trunk(n)]
    assert fam.classifier in trunk and sum(n.endswith("LayerNorm") for n in trunk) == 1 + 2 * len(layers)
