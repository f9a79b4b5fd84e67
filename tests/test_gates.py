"""Parity gates (issue 13): near-ties and small validation sets do not fail faithful artifacts, real
faults still do, and a failure says which metric, its value, the threshold and how many rows.

The full sweep (dozens of faithful builds, every injected fault) is benchmarks/gates.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime_py import parity


def near_tie_case(n=77, ties=4, seed=0):
    """Reference logits of 3 labels with `ties` near-tied rows, and an artifact that flips exactly those."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 2, (n, 3))
    noise = rng.normal(0, 0.004, (n, 3))  # int8-sized error, ~1e-2 on the logit gaps
    art = ref + noise
    for i in range(ties):  # top two within 0.01; the artifact's error swaps them
        top = ref[i].argmax()
        other = (top + 1) % 3
        ref[i, other] = ref[i, top] - 0.01
        art[i] = ref[i]
        art[i, other] = ref[i, top] + 0.005
    return art, ref


def test_near_ties_are_not_judged():
    art, ref = near_tie_case()
    m = parity.compare(art, ref)
    assert m["flips"] == 4 and m["top1_agreement"] < 0.95  # the gate before issue 13 failed this artifact
    assert m["decisive_flips"] == 0 and 60 <= m["decisive_rows"] <= 77 - 4
    assert m["tie_tolerance"] > 0.01
    assert parity.check(m, {"min_top1": 0.95, "min_logit_cosine": 0.99, "min_decisive": 0.5}) == []


def test_decisive_flips_fail_with_counts_in_the_message():
    art, ref = near_tie_case()
    srt = np.sort(ref, axis=1)
    clear = np.argsort(srt[:, -1] - srt[:, -2])[-5:]  # the five rows with the clearest margins, swapped outright
    for i in clear:
        art[i] = np.roll(ref[i], 1)
    m = parity.compare(art, ref)
    reasons = parity.check(m, {"min_top1": 0.95})
    assert len(reasons) == 1
    msg = reasons[0]
    assert msg.startswith("top-1 agreement 0.9") and "< 0.95" in msg
    assert f"on {m['decisive_rows']} of 77 rows with reference margin > " in msg
    assert f"{m['decisive_flips']} flips there" in msg and "more flips on near-ties" in msg
    assert m["decisive_flips"] == 5 and m["flips"] == 9


def test_error_rivalling_the_margins_fails_the_decisive_fraction():
    """A large error cannot excuse its own flips: most rows would be 'near-ties', which is itself a failure."""
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, (64, 2))
    art = ref + rng.normal(0, 0.5, ref.shape)
    m = parity.compare(art, ref)
    reasons = parity.check(m, parity.bounded_gate("int8", {}))
    assert any(r.startswith(f"only {m['decisive_rows']} of 64 rows") and "error scale" in r for r in reasons)


def test_accuracy_drop_is_a_paired_test():
    labels = np.zeros(20, int)
    orig = np.tile([2.0, 0.0], (20, 1))
    art = orig.copy()
    art[:2] = [0.0, 2.0]  # 2 of 20 rows lost: a 0.10 drop, but McNemar p = 0.25
    m = parity.paired_accuracy(art, orig, labels)
    assert m["accuracy_drop"] == pytest.approx(0.10) and m["mcnemar_p"] == pytest.approx(0.25)
    assert parity.check(m, {"max_accuracy_drop": 0.08}) == []
    big = np.tile(orig, (10, 1))
    big_art = big.copy()
    big_art[:20] = [0.0, 2.0]  # the same 0.10 drop on 200 rows: 20 lost, 0 gained
    m = parity.paired_accuracy(big_art, big, np.zeros(200, int))
    (msg,) = parity.check(m, {"max_accuracy_drop": 0.08})
    assert msg.startswith("accuracy drop 0.1000 > 0.08 on 200 rows (20 rows lost vs 0 gained, McNemar exact p=")


def test_mcnemar_exact_values():
    assert parity.mcnemar_worse(0, 0) == 1.0
    assert parity.mcnemar_worse(5, 0) == pytest.approx(1 / 32)
    assert parity.mcnemar_worse(3, 3) == pytest.approx(sum(__import__("math").comb(6, k) for k in range(3, 7)) / 64)


def test_manifest_cannot_widen_the_near_ties():
    g = parity.bounded_gate("int8", {"max_tie_scale": 1e9, "max_tie_floor": 5.0, "min_decisive": 0.0, "min_top1": 0.1})
    lim = parity.GATE_LIMITS["int8"]
    assert g["max_tie_scale"] == lim["max_tie_scale"] and g["max_tie_floor"] == lim["max_tie_floor"]
    assert g["min_decisive"] == lim["min_decisive"] and g["min_top1"] == lim["min_top1"]


def test_recipe_refuses_looser_tie_scale(tmp_path):
    from toolchain import recipe as recipe_mod
    from toolchain.errors import UsageError

    with pytest.raises(UsageError, match="parity.tie_scale"):
        recipe_mod.build({"out": str(tmp_path / "o"), "parity": {"tie_scale": 100.0}})


def test_thresholds_are_in_the_recipe_listing():
    from click.testing import CliRunner

    from toolchain.cli import main

    out = CliRunner().invoke(main, ["recipe"]).output
    for key in ("tie_scale", "tie_floor", "min_decisive", "accuracy_alpha"):
        assert key in out


# --- real exports of a tiny model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def subject(tiny_model_dir, tmp_path_factory):
    """An untrained tiny classifier (its logits are near-tied everywhere), its parity batches and outputs."""
    from toolchain import model as model_mod
    from toolchain import parity as parity_mod
    from toolchain import recipe as recipe_mod
    from toolchain.data import load_dataset
    from conftest import tiny_recipe_dict

    d = tmp_path_factory.mktemp("gates")
    r = recipe_mod.build(tiny_recipe_dict(tiny_model_dir, d / "out", parity={}))  # default [parity] thresholds
    data = load_dataset(r.data, r.train.seed)
    tok = model_mod.save_tokenizer_json(str(tiny_model_dir), d / "tokenizer.json")
    import torch

    torch.manual_seed(3)
    model = model_mod.load_classifier(str(tiny_model_dir), data.labels).eval()
    p = r.parity
    sets = parity_mod.parity_batches(data.validation, tok, r.train.max_seq_len, p.seq_lens, p.batch_size, p.num_examples)
    return {"r": r, "data": data, "tok": tok, "model": model, "sets": sets, "ref": parity_mod.reference_outputs(model, sets), "dir": d}


def judge(subject, precision, model=None, ctx=None):
    import contextlib

    import targets
    from runtime_py.backends import open_backend
    from toolchain import parity as parity_mod
    from toolchain.int8 import export_int8

    r, model = subject["r"], model if model is not None else subject["model"]
    path = subject["dir"] / f"a-{precision}-{np.random.randint(1 << 30)}.onnx"
    with ctx or contextlib.nullcontext():
        if precision == "int8":
            export_int8("onnx", model, path, r, {}, subject["data"].train, subject["tok"])
        else:
            t = targets.get("onnx")
            t.export(model, path, t.config_type(precision=precision, max_batch=16, max_seq_len=r.train.max_seq_len), {})
    gate = parity_mod.gate_for(precision, r.parity)
    return parity_mod.check_artifact(open_backend(path, "onnx"), subject["sets"], subject["ref"], subject["ref"], gate)


def test_faithful_int8_of_a_near_tied_model_passes(subject):
    res = judge(subject, "int8")
    v = res["vs_reference"]
    assert res["passed"], res["reasons"]
    assert v["rows"] == sum(len(a["input_ids"]) for _, a, _ in subject["sets"])
    assert v["decisive_flips"] == 0 and v["decisive_fraction"] >= 0.5


def test_faults_fail_the_build_gate(subject):
    import copy

    import torch

    from benchmarks.gates import MaskDropped

    noisy = copy.deepcopy(subject["model"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p_ in noisy.parameters():
            if p_.dim() >= 2:
                p_.mul_(1 + 0.05 * torch.randn(p_.shape, generator=g))
    res = judge(subject, "fp32", model=noisy)
    assert not res["passed"] and any("max-abs error" in r and f"on {res['vs_reference']['rows']} rows" in r for r in res["reasons"])
    # An untrained encoder's layers are near-identities (zeroing one moves no logit, benchmarks/gates.py
    # zeroes one of trained models), so the int8 fault here is in its head: 50% noise on the classifier.
    head = copy.deepcopy(subject["model"])
    with torch.no_grad():
        head.classifier.weight.mul_(1 + 0.5 * torch.randn(head.classifier.weight.shape, generator=g))
    res = judge(subject, "int8", model=head)
    assert not res["passed"] and any("logit-matrix cosine" in r for r in res["reasons"]), res["vs_reference"]
    res = judge(subject, "fp32", ctx=MaskDropped())
    assert not res["passed"] and any(r.startswith("vs its PyTorch source: max-abs") for r in res["reasons"])
