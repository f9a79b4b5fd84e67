"""Every registered family through every stage, on a tiny random checkpoint with its own tokenizer kind.

One CLI build per family (`build --model DIR --prune-vocab --prune-heads 0.25 --num-layers N`, defaults
otherwise: both targets, fp32 + int8, plus FFN/position pruning, hidden + attention distillation, ONNX fp16
and, for DistilBERT, the ExecuTorch debug twin; SKIP below leaves out the ExecuTorch artifacts another build lowers
already), on JSONL data with string labels; then verify, predict, debug and bench
on its bundle, and the artifacts at sequence lengths other than the export example (16).

Gates that judge training quality (top-1 vs the original, accuracy drop) are off: one epoch of a random
tiny model learns little, so those numbers say nothing about the family. Numeric parity gates stay on.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import run_cli
from families_fixtures import TOKENIZER_KIND, make_family_dir, write_jsonl_task

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra")
NO_TOKEN_TYPES = {"distilbert", "roberta", "xlm-roberta"}

# Each stage of toolchain.families.support.STAGES → the test below that exercises it (for every family).
STAGE_TESTS = {
    "fine-tune": "test_build_passes_its_gates",
    "truncate": "test_build_passes_its_gates",
    "prune heads": "test_build_passes_its_gates",
    "prune FFN": "test_build_passes_its_gates",
    "prune vocab": "test_build_passes_its_gates",
    "prune positions": "test_build_passes_its_gates",
    "distil logits": "test_build_passes_its_gates",
    "distil hidden": "test_build_passes_its_gates",
    "distil attention": "test_build_passes_its_gates",
    "ExecuTorch fp32": "test_artifacts_at_other_lengths_match_the_student",
    "ExecuTorch int8": "test_artifacts_at_other_lengths_match_the_student",
    "ONNX fp32": "test_artifacts_at_other_lengths_match_the_student",
    "ONNX fp16": "test_artifacts_at_other_lengths_match_the_student",
    "ONNX int8": "test_artifacts_at_other_lengths_match_the_student",
    "parity": "test_build_passes_its_gates",
    "verify": "test_verify_and_predict",
    "verify --arm64": "test_verify_arm64",
    "predict": "test_verify_and_predict",
    "debug": "test_debug",
    "bench": "test_bench",
}

BUILD_SETS = [
    "compress.prune_ffn=0.25", "compress.prune_positions=true", "compress.hidden_weight=1.0",
    "compress.attention_weight=1.0", 'export.precisions=["fp32","fp16","int8"]',
    # golden_size = num_examples: verify then judges the very rows the build's gate passed. With 8 golden rows, a
    # random model's near-tied logits left verify a noisier cosine than the build's 40 rows: DistilBERT's onnx-int8
    # passed the build at logit cosine 0.9985 (the decisive-row waiver is 0.998) and failed verify at 0.9978 on its
    # 8 golden rows, once in 7 runs (under load, 2026-12-01). The golden rows run as one batch: max_batch covers them.
    "export.max_batch=40", "parity.num_examples=40", "parity.golden_size=40", "parity.seq_lens=[5,19,31]",
    "parity.min_top1_vs_original=0.0", "parity.max_accuracy_drop=1.0", "student.batch_size=16", "train.batch_size=16",
]


# The ExecuTorch debug twin (a second int8 lowering, ~1/4 of a family build) for DistilBERT's TransformerBlock, the
# layer layout the BERT twin of tests/test_debug.py (BertLayer, which RoBERTa, XLM-R and ELECTRA reuse) does not
# cover. `debug` on ONNX int8 (no twin needed) runs for every family.
ET_DEBUG = {"distilbert"}
# Families whose bench times one artifact per runtime besides the original: one per input layout (ELECTRA with
# token_type_ids, DistilBERT without).
BENCH_ALL = {"electra", "distilbert"}
# Artifacts each family's build leaves out (export.skip): ExecuTorch lowering is most of a family build's time, and
# these lower no graph the suite does not lower elsewhere (toolchain/families/support.py TESTED_ELSEWHERE says where;
# docs/families.md marks them †). Every family keeps ONNX fp32/fp16/int8; DistilBERT, RoBERTa and ELECTRA keep
# ExecuTorch int8, whose lowering takes the same wrapper graph as fp32 with quantized linears.
SKIP = {"bert": ["executorch-fp32", "executorch-int8"], "distilbert": ["executorch-fp32"], "roberta": ["executorch-fp32"],
        "electra": ["executorch-fp32"],
        "xlm-roberta": ["executorch-fp32", "executorch-int8"]}
ALL_ARTIFACTS = {"executorch-fp32", "executorch-int8", "onnx-fp32", "onnx-fp16", "onnx-int8"}
# Student layers: BERT keeps 2 of its 3 (a layer map with a gap to distil through); the others keep 1. ExecuTorch
# lowering costs about 4.6 s per encoder layer on this machine, and a second layer of the same family's block tests
# nothing the first does not.
STUDENT_LAYERS = {"bert": 2}


def _build(fam: str, root):
    model = make_family_dir(fam, root / "model", layers=3)
    train, dev = write_jsonl_task(root / "data", n_train=96, n_dev=40)
    out = root / "out"
    args = ["build", "--model", model, "--train", train, "--validation", dev, "--prune-vocab", "--prune-heads", "0.25",
            "--num-layers", str(STUDENT_LAYERS.get(fam, 1)), "--epochs", "1", "--max-seq-len", "32", "--out", out]
    sets = BUILD_SETS + (["quant.debug_twins=true"] if fam in ET_DEBUG else []) + [f"export.skip={json.dumps(SKIP.get(fam, []))}"]
    for s in sets:
        args += ["--set", s]
    return {"family": fam, "out": out, "model": model, "dev": dev, "res": run_cli(*args)}


def _ok(res):
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def _manifest(b):
    return json.loads((b["out"] / "bundle" / "manifest.json").read_text())


class FamilyStages:
    """Every stage on one family's build; a subclass per family (below) names it. A class is one scope for
    `pytest -n --dist loadscope`, so each family's build is made once, on one worker, beside the others'."""

    family: str = ""

    @pytest.fixture(scope="class")
    def family_build(self, tmp_path_factory):
        return _build(self.family, tmp_path_factory.mktemp(f"fam-{self.family}"))

    def test_build_passes_its_gates(self, family_build):
        b = family_build
        _ok(b["res"])
        m = _manifest(b)
        names = [i["name"] for i in m["inputs"]]
        assert names == (["input_ids", "attention_mask"] if b["family"] in NO_TOKEN_TYPES
                         else ["input_ids", "attention_mask", "token_type_ids"])
        golden = json.loads((b["out"] / "bundle" / "golden.json").read_text())
        assert sorted(golden["inputs"]) == sorted(names)
        keys = {f'{a["format"]}-{a["precision"]}' for a in m["artifacts"]}
        assert keys == ALL_ARTIFACTS - set(SKIP.get(b["family"], []))
        assert "skipped (export.skip)" in b["res"].stdout or not SKIP.get(b["family"])
        assert all(a["parity"]["passed"] if "passed" in a.get("parity", {}) else True for a in m["artifacts"])
        tj = json.loads((b["out"] / "bundle" / "tokenizer.json").read_text())
        assert tj["model"]["type"] == TOKENIZER_KIND[b["family"]]
        orig = json.loads((b["model"] / "tokenizer.json").read_text())
        n_old = len(orig["model"]["vocab"])
        assert len(tj["model"]["vocab"]) < n_old  # vocabulary pruned
        # The student checkpoint: its layers, a quarter of the heads and FFN neurons gone, positions cut to 32.
        cfg = json.loads((b["out"] / "student" / "config.json").read_text())
        assert cfg["model_type"] == json.loads((b["model"] / "config.json").read_text())["model_type"]
        st = cfg["toolformer_structure"]
        assert len(st["layers"]) == STUDENT_LAYERS.get(b["family"], 1) and all(len(h) == 3 for h in st["heads"]) and all(i == 48 for i in st["intermediate"])
        offset = cfg["pad_token_id"] + 1 if b["family"] in ("roberta", "xlm-roberta") else 0
        assert cfg["max_position_embeddings"] == 32 + offset
        assert cfg["vocab_size"] == len(tj["model"]["vocab"])

    def test_verify_and_predict(self, family_build):
        b = family_build
        _ok(b["res"])
        _ok(run_cli("verify", b["out"] / "bundle"))
        m = _manifest(b)
        for art in sorted({"onnx-fp32", "executorch-int8"} - set(SKIP.get(b["family"], []))):
            res = run_cli("predict", b["out"] / "bundle", "where is my parcel", "my card was billed twice", "--artifact", art, "--json")
            _ok(res)
            rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
            assert len(rows) == 2 and all(r["label"] in m["labels"] for r in rows)

    def test_artifacts_at_other_lengths_match_the_student(self, family_build):
        """Every artifact against the student checkpoint in PyTorch, at lengths other than the export example's 16."""
        import torch
        from transformers import AutoModelForSequenceClassification

        import runtime_py
        from runtime_py import parity
        from runtime_py.tokenize import TextEncoder
        from toolchain import model as model_mod

        b = family_build
        _ok(b["res"])
        bundle = b["out"] / "bundle"
        m = _manifest(b)
        labels = m["labels"]
        student = model_mod.load_classifier(str(b["out"] / "student"), labels).eval()
        texts = [json.loads(line)["text"] for line in b["dev"].read_text().splitlines()[:12]]
        for art in m["artifacts"]:
            rt = runtime_py.load(bundle, art["file"])
            for L in (7, 23, 32):
                # Cut and padded to exactly L tokens, through the bundle's tokenizer and input names.
                arrays = TextEncoder(bundle / "tokenizer.json", L, input_names=rt.input_names).encode(texts, pad_to=L)
                assert arrays["input_ids"].shape == (12, L)
                got = rt.run(arrays)
                with torch.no_grad():
                    ref = student(**{k: torch.from_numpy(v) for k, v in arrays.items()}).logits.numpy()
                if art["precision"] == "fp32":
                    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
                else:  # fp16 weights / int8: close, same predictions on the rows that are not near-ties
                    # (a random tiny model's logits are near-tied: raw argmax agreement measured 0.67 at max-abs 2.3e-4)
                    m = parity.compare(got, ref)
                    assert m["max_abs"] < 0.5 and m["decisive_top1"] >= 0.75, m
        assert type(student) is AutoModelForSequenceClassification._model_mapping[type(student.config)]

    def test_debug(self, family_build, tmp_path):
        b = family_build
        _ok(b["res"])
        # The debug twins stay in OUT/artifacts (a bundle ships without them): put them beside a copy of the
        # bundle's artifacts so debug reads the bundle's golden inputs (the family's own input names).
        bundle = tmp_path / "bundle"
        shutil.copytree(b["out"] / "bundle", bundle)
        for twin in (b["out"] / "artifacts").glob("*.debug.*"):
            shutil.copy2(twin, bundle / twin.name)
        for art in ("model-executorch-int8.pte", "model-onnx-int8.onnx") if b["family"] in ET_DEBUG else ("model-onnx-int8.onnx",):
            out = tmp_path / f"{art}.json"
            res = run_cli("debug", bundle / art, "--reference", b["out"] / "student", "--json", out, timeout=600)
            _ok(res)
            rep = json.loads(out.read_text())
            assert rep["modules"], rep

    def test_bench(self, family_build, tmp_path):
        """The original in eager PyTorch (and, for one family per input layout, one artifact per runtime), each in its
        own process (every artifact of a bundle is benched in tests/test_bench.py; what differs by family is the
        model class and its input names)."""
        b = family_build
        _ok(b["res"])
        out = tmp_path / "bench.json"
        # One subject per runtime for one family per input layout (with and without token_type_ids); the other
        # families bench their original, the one subject loaded through the family's own model class.
        subjects = ("original", "executorch-int8", "onnx-int8") if b["family"] in BENCH_ALL else ("original",)
        res = run_cli("bench", b["out"] / "bundle", "--iters", "2", "--warmup", "0", "--batch-sizes", "1,2", "--seq-lens", "16",
                      "--threads", "1", "--no-progress", "--json", out, *[a for s in subjects for a in ("--only", s)])
        _ok(res)
        rows = json.loads(out.read_text())
        assert {r["name"] for r in rows} == set(subjects)
        assert {(r["batch"], r["seq_len"]) for r in rows} == {(1, 16), (2, 16)}

    @pytest.mark.arm64
    def test_verify_arm64(self, family_build):
        b = family_build
        _ok(b["res"])
        if not shutil.which("qemu-aarch64-static") or not shutil.which("debootstrap"):
            pytest.skip("verify --arm64 needs qemu-user-static and debootstrap")
        _ok(run_cli("verify", b["out"] / "bundle", "--arm64", timeout=3000))


# Longest builds first: collection order is the order `--dist loadscope` hands the classes to workers.
class TestDistilbert(FamilyStages):
    family = "distilbert"


class TestElectra(FamilyStages):
    family = "electra"


class TestRoberta(FamilyStages):
    family = "roberta"


class TestBert(FamilyStages):
    family = "bert"


class TestXlmRoberta(FamilyStages):
    family = "xlm-roberta"


def test_every_stage_has_a_test_for_every_registered_family():
    """optimum's habit: a registered family without a test for a stage fails here."""
    from toolchain import families
    from toolchain.families.support import STAGES, stages_of

    assert set(STAGE_TESTS) == set(STAGES)
    for name in set(STAGE_TESTS.values()):
        assert callable(getattr(FamilyStages, name, None)), name
    registered = set(families.supported())
    classes = [c for c in globals().values() if isinstance(c, type) and issubclass(c, FamilyStages) and c.__name__.startswith("Test")]
    assert sorted(c.family for c in classes) == sorted(FAMILIES)
    tested = set(FAMILIES) | {"camembert"}  # camembert: the roberta adapter (test_families_surgery.py)
    assert registered <= tested, f"registered without tests: {sorted(registered - tested)}"
    for mt in registered:
        assert set(stages_of(families.get(mt))) <= set(STAGE_TESTS)
    # An artifact a family build skips is tested elsewhere, and the matrix says where.
    from toolchain.families.support import TESTED_ELSEWHERE

    stage = {"executorch-fp32": "ExecuTorch fp32", "executorch-int8": "ExecuTorch int8"}
    assert {(f, stage[a]) for f, arts in SKIP.items() for a in arts} == set(TESTED_ELSEWHERE)


def test_docs_matrix_is_generated_from_the_registry():
    from helpers import ROOT
    from toolchain.families.support import matrix_markdown

    assert (ROOT / "docs" / "families.md").read_text(encoding="utf-8") == matrix_markdown(), \
        "docs/families.md is stale: python -m toolchain.families --matrix --write docs/families.md"
