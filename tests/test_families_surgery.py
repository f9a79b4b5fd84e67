"""Model surgery through each family adapter, fast and without export: the export wrapper's forward equals
the Hugging Face model's, truncation, head/FFN slicing (eager and SDPA), position pruning (RoBERTa-style
positions from padding_idx + 1), distillation taps, and pruned checkpoints reloading; plus the families
that are refused at the door with one line naming the stage that cannot handle them."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from families_fixtures import FAMILIES, make_family_dir

TEXTS = ["where is my parcel", "hi", "the app crashes when i upload a photo", "refund my order please now"]
PAIRS = [("refund my order please", "where is my parcel"), ("hi", "my card was billed twice")]


@pytest.fixture(scope="module", params=FAMILIES)
def fam_model(request, tmp_path_factory):
    from toolchain import model as model_mod

    fam = request.param
    d = make_family_dir(fam, tmp_path_factory.mktemp(f"surgery-{fam}") / "model", layers=3)
    torch.manual_seed(0)
    m = model_mod.load_classifier(str(d), ["a", "b", "c"]).eval()
    tok = model_mod.save_tokenizer_json(str(d), d.parent / "tok" / "tokenizer.json")
    return {"family": fam, "dir": d, "model": m, "tok": tok}


def _arrays(f, texts, pad_to=None):
    from runtime_py.tokenize import TextEncoder
    from toolchain.families import of

    enc = TextEncoder(f["tok"], pad_to or 32, input_names=of(f["model"]).inputs)
    a = enc.encode(texts, pad_to=pad_to)
    return {k: torch.from_numpy(v) for k, v in a.items()}


def _logits(m, a):
    with torch.no_grad():
        return m(**a).logits


def test_adapter_declares_the_family_inputs(fam_model):
    from toolchain.families import of

    names = of(fam_model["model"]).inputs
    no_types = fam_model["family"] in ("distilbert", "roberta", "xlm-roberta")
    assert names == (("input_ids", "attention_mask") if no_types else ("input_ids", "attention_mask", "token_type_ids"))
    assert set(_arrays(fam_model, TEXTS)) == set(names)


def test_export_wrapper_forward_equals_the_model(fam_model):
    from targets.wrapper import EdgeClassifier

    m = copy.deepcopy(fam_model["model"])
    w = EdgeClassifier(m).eval()
    for texts in (TEXTS, PAIRS):
        a = _arrays(fam_model, texts)
        with torch.no_grad():
            got = w(*(a[n] for n in w.input_names))
        torch.testing.assert_close(got, _logits(m, a), atol=1e-5, rtol=0)


def test_truncate_prune_and_reload(fam_model, tmp_path):
    from toolchain import model as model_mod
    from toolchain.compress import prune
    from toolchain.compress.truncate import truncate
    from toolchain.families import of

    m = fam_model["model"]
    s = truncate(m, [0, 2])
    assert len(of(s).layers(s)) == 2 and s.config.num_hidden_layers == 2
    a = _arrays(fam_model, TEXTS)
    labels = torch.tensor([0, 1, 2, 0])
    prune.prune(s, prune.PruneConfig(heads=0.25, ffn=0.25, importance="gradient"), batches=[(a, labels)])
    assert prune.count_heads(s) == [3, 3] and prune.count_ffn(s) == [48, 48]
    for impl in ("eager", "sdpa"):  # slicing works for both attention paths (they reshape with -1 heads)
        s.set_attn_implementation(impl)
        out = _logits(s, a)
        assert out.shape == (4, 3) and torch.isfinite(out).all()
    s.set_attn_implementation("eager")
    ref = _logits(s, a)
    prune.prune(s, prune.PruneConfig(heads=1, importance="magnitude"))
    assert prune.count_heads(s) == [2, 2]
    ref = _logits(s, a)
    s.save_pretrained(tmp_path)
    back = model_mod.load_classifier(str(tmp_path), ["a", "b", "c"]).eval()
    torch.testing.assert_close(_logits(back, a), ref, atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == m.config.model_type


def test_position_pruning_keeps_logits_and_respects_padding_offset(fam_model, tmp_path):
    from toolchain import model as model_mod
    from toolchain.compress import vocab
    from toolchain.families import of

    m = copy.deepcopy(fam_model["model"])
    a = _arrays(fam_model, TEXTS + ["where is my parcel " * 12], pad_to=16)
    before = _logits(m, a)
    vocab.prune_positions(m, 16)
    rows = of(m).get(m, of(m).position_embeddings).num_embeddings
    offset = m.config.pad_token_id + 1 if fam_model["family"] in ("roberta", "xlm-roberta") else 0
    assert rows == 16 + offset == m.config.max_position_embeddings
    torch.testing.assert_close(_logits(m, a), before, atol=0, rtol=0)
    m.save_pretrained(tmp_path)
    back = model_mod.load_classifier(str(tmp_path), ["a", "b", "c"]).eval()
    torch.testing.assert_close(_logits(back, a), before, atol=0, rtol=0)


def test_distillation_taps_hidden_states_and_attention_maps(fam_model):
    from toolchain.compress.distill import DistillConfig, Distiller
    from toolchain.compress.truncate import truncate

    teacher = copy.deepcopy(fam_model["model"])
    student = truncate(teacher, [0, 2])
    d = Distiller(teacher, student, DistillConfig(hidden_weight=1.0, attention_weight=1.0))
    a = _arrays(fam_model, TEXTS)
    labels = torch.tensor([0, 1, 2, 0])
    with d:
        out = student(**a)
        loss = d(student, a, labels, out)
    loss.backward()
    h = d.history[-1]
    assert h["hidden"] > 0 and h["attention"] >= 0 and torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_electra_projects_its_embeddings(fam_model):
    from toolchain.families import of

    if fam_model["family"] != "electra":
        pytest.skip("ELECTRA only")
    m = fam_model["model"]
    assert m.config.embedding_size != m.config.hidden_size  # the fixture takes the embeddings_project path
    a = _arrays(fam_model, TEXTS)
    with torch.no_grad():
        raw = m.electra.embeddings(input_ids=a["input_ids"], token_type_ids=a["token_type_ids"])
        hidden = of(m).embed(m, a)
    assert raw.shape[-1] == m.config.embedding_size and hidden.shape[-1] == m.config.hidden_size


@pytest.mark.parametrize("mtype,stage", [("albert", "truncate"), ("deberta-v2", "export"), ("mobilebert", "prune FFN")])
def test_other_families_are_refused_naming_the_stage(tmp_path, mtype, stage):
    from helpers import run_cli

    d = tmp_path / mtype
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": mtype}))
    res = run_cli("build", "--model", d, "--out", tmp_path / "out", timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert mtype in line and f"the {stage} stage cannot handle it" in line
    assert not (tmp_path / "out").exists()


def test_camembert_goes_through_the_roberta_adapter(tmp_path):
    """CamemBERT is RoBERTa's layout with a SentencePiece vocabulary: same adapter, same forward."""
    from transformers import CamembertConfig, CamembertForSequenceClassification

    from targets.wrapper import EdgeClassifier
    from toolchain.families import get, of

    cfg = CamembertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          max_position_embeddings=40, pad_token_id=1, num_labels=2)
    torch.manual_seed(0)
    m = CamembertForSequenceClassification(cfg).eval()
    assert of(m) is get("roberta")
    ids = torch.randint(5, 60, (2, 9))
    am = torch.ones_like(ids)
    ids[1, 6:], am[1, 6:] = 1, 0
    w = EdgeClassifier(m).eval()
    with torch.no_grad():
        torch.testing.assert_close(w(ids, am), m(input_ids=ids, attention_mask=am).logits, atol=1e-5, rtol=0)
