"""A whole compressed build on a tiny model: pruned heads/FFN, sparsity, vocabulary pruning,
distillation, fp16 weights and a compressed archive; exported to both targets, parity passed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import run_cli, tiny_recipe_dict

COMPRESS = {"prune_heads": 0.5, "prune_ffn": 0.5, "prune_steps": 2, "recovery_epochs": 1.0, "sparsity": 0.3,
            "prune_vocab": True, "prune_positions": True, "archive": "zst", "hidden_weight": 1.0, "attention_weight": 1.0,
            "augment": 1, "augment_prob": 0.3}


@pytest.fixture(scope="module")
def compressed(tiny_model_dir, tmp_path_factory):
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    out = tmp_path_factory.mktemp("compressed") / "out"
    r = recipe_mod.build(tiny_recipe_dict(tiny_model_dir, out, compress=COMPRESS,
                                          export={"precisions": ["fp32", "fp16"], "max_batch": 16}))
    return out, build(r)


def test_stages_recorded_and_shrinking(compressed):
    out, summary = compressed
    rows = summary["compression"]["stages"]
    assert [r["stage"] for r in rows] == ["original", "truncate", "prune", "sparsity", "distil", "vocab", "positions"]
    assert rows[2]["heads"] == [2] and rows[2]["ffn"] == [32] and rows[2]["steps"] == 2  # one student layer
    assert (out / "recovery-1" / "train_result.json").is_file()  # iterative: recovery between the two steps
    params = [r["params"] for r in rows]
    assert params[1] < params[0] and params[2] < params[1] and params[5] < params[4]
    assert params[6] == params[5] - (128 - 32) * 32  # position rows past max_seq_len (32) dropped
    flops = [r["flops"] for r in rows]
    assert flops[0] > flops[1] > flops[2] > 0
    assert rows[4]["sparsity"]["linear_sparsity"] == pytest.approx(0.3, abs=0.01)
    assert rows[4]["zstd_bytes"] < rows[2]["zstd_bytes"]  # real zeros compress
    assert all(isinstance(r["val_accuracy"], float) for r in rows)
    assert summary["shipped"]["params"] == rows[-1]["params"]
    # compress.augment = 1: the student trained on the 160 training rows plus a perturbed copy of (nearly) each.
    aug = summary["compression"]["facts"]["augment"]
    assert aug["train_rows"] == 160 and 160 < aug["transfer_rows"] <= 320


def test_pruned_student_exports_to_both_targets_and_passes_parity(compressed):
    out, summary = compressed
    arts = {a["artifact"]: a for a in summary["artifacts"]}
    assert set(arts) == {"executorch-fp32", "onnx-fp32", "onnx-fp16"}  # ExecuTorch fp16 is skipped, see targets/fp16.py
    assert all(a["passed"] for a in arts.values())
    assert arts["onnx-fp32"]["vs_reference"]["max_abs"] < 1e-4
    assert arts["onnx-fp16"]["gate"]["vs_reference"]["max_abs"] == 2e-2
    import onnx

    def weight_bytes(name, dtype):
        m = onnx.load(str(out / "bundle" / name))
        return sum(len(i.raw_data) for i in m.graph.initializer if len(i.dims) >= 2 and i.data_type == dtype)

    fp32 = weight_bytes("model-onnx-fp32.onnx", onnx.TensorProto.FLOAT)
    assert weight_bytes("model-onnx-fp16.onnx", onnx.TensorProto.FLOAT16) == fp32 // 2
    assert weight_bytes("model-onnx-fp16.onnx", onnx.TensorProto.FLOAT) == 0


def test_bundle_ships_pruned_tokenizer_report_and_archive(compressed):
    import runtime_py
    from runtime_py.verify import verify_bundle

    out, summary = compressed
    b = out / "bundle"
    for name in ("compression.md", "compression.json", "compression.png"):
        assert (b / name).stat().st_size > 0
    assert (b / "compression.png").read_bytes()[:4] == b"\x89PNG"
    assert "| vocab |" in (b / "compression.md").read_text()
    vocab = json.loads((b / "tokenizer.json").read_text())["model"]["vocab"]
    new_vocab = summary["compression"]["facts"]["vocab"]["new_vocab"]
    assert len(vocab) == new_vocab == summary["compression"]["stages"][-1]["vocab"]
    assert rows_of(summary)[-1]["val_accuracy"] == rows_of(summary)[-2]["val_accuracy"]  # positions: same function
    archive = out / "bundle.tar.zst"
    assert summary["archive"]["bytes"] == archive.stat().st_size < summary["archive"]["bundle_bytes"]
    assert verify_bundle(archive)["passed"]
    m = runtime_py.load(archive, artifact="onnx-fp32")
    logits = m.logits(["where is my parcel", "qwxz unheard-of words"])
    assert logits.shape == (2, len(summary["labels"])) and np.isfinite(logits).all()


def rows_of(summary):
    return summary["compression"]["stages"]


def test_student_checkpoint_reloads_as_shipped(compressed):
    import torch

    from toolchain import model as model_mod

    out, summary = compressed
    golden = json.loads((out / "bundle" / "golden.json").read_text())
    m = model_mod.load_classifier(str(out / "student"), summary["labels"])
    with torch.no_grad():
        logits = m(**{k: torch.tensor(v) for k, v in golden["inputs"].items()}).logits.numpy()
    np.testing.assert_allclose(logits, np.asarray(golden["reference_logits"]["student"]), atol=1e-5)
    assert not any(k.endswith(("_orig", "_mask")) for k in m.state_dict())


def test_compress_command_on_a_fine_tuned_checkpoint(tiny_build, tmp_path):
    out = tmp_path / "c"
    res = run_cli("compress", tiny_build / "original", "--num-layers", "1", "--prune-heads", "1", "--prune-importance",
                  "magnitude", "--no-distill", "--prune-vocab", "--epochs", "1", "--out", out,
                  "--set", 'export.targets=["onnx"]')
    assert res.returncode == 0, res.stderr[-2000:]
    assert "vocab" in res.stdout and "PASS" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["original"]["train"] is None  # the checkpoint is the teacher, not retrained
    assert summary["compression"]["stages"][1]["layers"] == 1 and summary["compression"]["facts"]["distill"] is None
    assert summary["compression"]["stages"][-1]["heads"] == [3]
    assert (out / "bundle" / "compression.png").is_file()


def test_compress_command_rejects_bad_flags(tiny_build, tmp_path):
    res = run_cli("compress", tiny_build / "original", "--sparsity", "1.5", "--out", tmp_path / "x")
    assert res.returncode == 2 and "compress.sparsity" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()
    res = run_cli("compress", tmp_path / "missing", "--out", tmp_path / "y")
    assert res.returncode == 2 and "no such checkpoint" in res.stderr


def test_build_and_compress_share_the_compression_flags():
    from toolchain.compress.command import apply_flags

    over = apply_flags({}, {"prune_heads": 0.25, "prune_ffn": None, "sparsity": 0.5, "prune_vocab": False, "distill": None})
    assert over == {"compress": {"prune_heads": 0.25, "sparsity": 0.5, "prune_vocab": False}}
    for cmd in ("build", "compress"):
        res = run_cli(cmd, "--help")
        assert res.returncode == 0
        for flag in ("--num-layers", "--prune-heads", "--prune-ffn", "--sparsity", "--prune-vocab", "--no-prune-vocab",
                     "--distill", "--no-distill"):
            assert flag in res.stdout, (cmd, flag)
