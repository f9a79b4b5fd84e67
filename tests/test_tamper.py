"""Tampering: a bundle changed after the build must fail `toolformer verify` (exit 1), and nothing in a
bundle, archive or checkpoint may make the runtime run code.

Every tampering below also rewrites the manifest's checksums so that they match again: the
checksum check passes and the cross-checks (artifacts vs golden outputs, tokenizer vs golden ids,
label order, golden outputs vs one another) have to catch it on their own.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import run_cli

ONNX = "model-onnx-fp32.onnx"
PTE = "model-executorch-fp32.pte"


def rechecksum(bundle: Path) -> None:
    """What a careful tamperer does: make manifest.json's sha256 and sizes match the files again."""
    from runtime_py.bundle import sha256_file

    m = json.loads((bundle / "manifest.json").read_text())
    m["files"] = {name: sha256_file(bundle / name) for name in m["files"]}
    for a in m["artifacts"]:
        a["sha256"], a["bytes"] = m["files"][a["file"]], (bundle / a["file"]).stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def verify(bundle: Path):
    """`toolformer verify BUNDLE` through click (in-process): (exit code, output)."""
    from toolchain.cli import main

    res = CliRunner().invoke(main, ["verify", str(bundle)])
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


# --- the tamperings ------------------------------------------------------------------------------

def perturb_onnx(b: Path, ctx) -> None:
    """Add 0.01 to every value of one weight matrix of the ONNX graph."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(b / ONNX))
    inits = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2]
    target = next((i for i in inits if "classifier" in i.name), max(inits, key=lambda i: np.prod(i.dims)))
    arr = numpy_helper.to_array(target) + np.float32(0.01)
    target.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), target.name))
    onnx.save(m, str(b / ONNX))


def perturb_pte(b: Path, ctx) -> None:
    """Find the student's classifier weights in the .pte's constant data and add 0.01 to them."""
    from safetensors.numpy import load_file

    w = load_file(str(ctx["build"] / "student" / "model.safetensors"))
    data = bytearray((b / PTE).read_bytes())
    for name in ("classifier.weight", *sorted(k for k in w if k.endswith("dense.weight"))):
        raw = np.ascontiguousarray(w[name], dtype=np.float32).tobytes()
        at = data.find(raw)
        if at >= 0:
            data[at:at + len(raw)] = (np.frombuffer(raw, np.float32) + np.float32(0.01)).tobytes()
            (b / PTE).write_bytes(bytes(data))
            return
    raise AssertionError("no weight tensor of the student found verbatim in the .pte")


def swap_onnx(b: Path, ctx) -> None:
    """Replace the ONNX artifact with the one of another build (other seed, same architecture)."""
    shutil.copyfile(ctx["other"] / "bundle" / ONNX, b / ONNX)


def tokenizer_of_another_model(b: Path, ctx) -> None:
    from toolchain.model import default_model_dir

    shutil.copyfile(default_model_dir() / "tokenizer.json", b / "tokenizer.json")


def tokenizer_not_lowercasing(b: Path, ctx) -> None:
    def fn(t):
        norm = t["normalizer"]
        for n in norm.get("normalizers", [norm]):
            if "lowercase" in n:
                n["lowercase"] = False
    edit_json(b / "tokenizer.json", fn)


def tokenizer_two_ids_swapped(b: Path, ctx) -> None:
    """Swap the ids of two word pieces that occur in the golden texts."""
    golden = json.loads((b / "golden.json").read_text())
    ids = [i for row in golden["inputs"]["input_ids"] for i in row if i > 4]
    a, c = ids[0], next(i for i in ids if i != ids[0])

    def fn(t):
        vocab = t["model"]["vocab"]
        inv = {v: k for k, v in vocab.items()}
        vocab[inv[a]], vocab[inv[c]] = c, a
    edit_json(b / "tokenizer.json", fn)


def labels_reordered(b: Path, ctx) -> None:
    """Rotate the label order in the manifest and labels.json alike."""
    edit_json(b / "manifest.json", lambda m: m.__setitem__("labels", m["labels"][1:] + m["labels"][:1]))
    (b / "labels.json").write_text(json.dumps(json.loads((b / "manifest.json").read_text())["labels"]))


def labels_json_reordered(b: Path, ctx) -> None:
    labels = json.loads((b / "labels.json").read_text())
    (b / "labels.json").write_text(json.dumps(labels[::-1]))


def golden_reference_edited(b: Path, ctx) -> None:
    edit_json(b / "golden.json", lambda g: g["reference_logits"].__setitem__(
        "student", (np.asarray(g["reference_logits"]["student"]) + 1e-3).tolist()))


def golden_artifact_outputs_edited(b: Path, ctx) -> None:
    edit_json(b / "golden.json", lambda g: g["artifact_logits"].__setitem__(
        ONNX, (np.asarray(g["artifact_logits"][ONNX]) * 1.01).tolist()))


def golden_original_edited(b: Path, ctx) -> None:
    def fn(g):
        g["original_logits"][0][0] += 1e-3
    edit_json(b / "golden.json", fn)


def golden_input_ids_edited(b: Path, ctx) -> None:
    def fn(g):
        g["inputs"]["input_ids"][0][1] = 5 if g["inputs"]["input_ids"][0][1] != 5 else 6
    edit_json(b / "golden.json", fn)


def golden_text_edited(b: Path, ctx) -> None:
    def fn(g):
        g["texts"][0] = "an entirely different sentence"
    edit_json(b / "golden.json", fn)


def labels_unpredicted_swapped(b: Path, ctx) -> None:
    """Swap two labels that no golden prediction uses: the predictions alone cannot reveal it."""
    golden = json.loads((b / "golden.json").read_text())
    labels = json.loads((b / "manifest.json").read_text())["labels"]
    unused = [i for i, x in enumerate(labels) if x not in golden["original_predictions"]]
    i, j = (unused + [0, 1])[:2] if len(unused) < 2 else unused[:2]
    labels[i], labels[j] = labels[j], labels[i]
    edit_json(b / "manifest.json", lambda m: m.__setitem__("labels", labels))
    (b / "labels.json").write_text(json.dumps(labels))


def golden_predictions_edited(b: Path, ctx) -> None:
    labels = json.loads((b / "manifest.json").read_text())["labels"]

    def fn(g):
        g["original_predictions"][0] = next(x for x in labels if x != g["original_predictions"][0])
    edit_json(b / "golden.json", fn)


def gate_loosened_and_onnx_perturbed(b: Path, ctx) -> None:
    """Perturb the weights and widen the manifest's gates so that the perturbation would fit."""
    perturb_onnx(b, ctx)

    def fn(m):
        for a in m["artifacts"]:
            a["gate"]["vs_reference"] = {"max_abs": 1e9, "min_cosine": -1.0}
    edit_json(b / "manifest.json", fn)


def precision_relabelled_and_onnx_perturbed(b: Path, ctx) -> None:
    """Perturb the weights and call the artifact int8, whose gates are cosine/top-1 only."""
    perturb_onnx(b, ctx)

    def fn(m):
        for a in m["artifacts"]:
            if a["file"] == ONNX:
                a["precision"] = "int8"
    edit_json(b / "manifest.json", fn)


def source_relabelled(b: Path, ctx) -> None:
    """Claim the student's artifacts were exported from the original."""
    def fn(m):
        for a in m["artifacts"]:
            a["source"] = "original"
    edit_json(b / "manifest.json", fn)


TAMPERINGS = [
    ("onnx-weights-perturbed", perturb_onnx, "max-abs"),
    ("pte-weights-perturbed", perturb_pte, "max-abs"),
    ("onnx-swapped-for-other-bundles", swap_onnx, "max-abs"),
    ("tokenizer-of-another-model", tokenizer_of_another_model, "tokenizer"),
    ("tokenizer-not-lowercasing", tokenizer_not_lowercasing, "tokenizer"),
    ("tokenizer-two-ids-swapped", tokenizer_two_ids_swapped, "tokenizer"),
    ("labels-reordered", labels_reordered, "label order"),
    ("labels-swapped-that-no-prediction-uses", labels_unpredicted_swapped, "label order"),
    ("labels-json-reordered", labels_json_reordered, "labels.json"),
    ("golden-reference-logits-edited", golden_reference_edited, "max-abs"),
    ("golden-artifact-logits-edited", golden_artifact_outputs_edited, "build-time"),
    ("golden-original-logits-edited", golden_original_edited, "original_logits"),
    ("golden-input-ids-edited", golden_input_ids_edited, "tokenizer"),
    ("golden-text-edited", golden_text_edited, "tokenizer"),
    ("golden-predictions-edited", golden_predictions_edited, "golden predictions"),
    ("gate-loosened-and-weights-perturbed", gate_loosened_and_onnx_perturbed, "max-abs"),
    ("precision-relabelled-and-weights-perturbed", precision_relabelled_and_onnx_perturbed, "FAIL"),
    ("source-relabelled", source_relabelled, "max-abs"),
]


def test_untampered_bundle_passes(bundle_copy):
    code, out = verify(bundle_copy)
    assert code == 0, out


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_tampered_bundle_fails_verify(tamper, bundle_copy, tiny_build, tiny_onnx_build):
    name, fn, expect = tamper
    fn(bundle_copy, {"build": tiny_build, "other": tiny_onnx_build})
    rechecksum(bundle_copy)
    from runtime_py.bundle import verify_checksums

    verify_checksums(bundle_copy)  # the checksums match: only the cross-checks can catch it
    code, out = verify(bundle_copy)
    print(f"\ntamper: {name:<44} verify exit {code}: {next((l for l in out.splitlines() if 'FAIL' in l), '')[:150]}")
    assert code == 1, out
    assert expect in out, out


def test_checksum_mismatch_fails_verify_and_load(bundle_copy):
    """Without re-checksumming: verify fails (exit 1) before running anything, and load refuses."""
    import runtime_py

    data = bytearray((bundle_copy / ONNX).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / ONNX).write_bytes(bytes(data))
    code, out = verify(bundle_copy)
    assert code == 1 and "checksum mismatch" in out, out
    with pytest.raises(runtime_py.BundleError, match="checksum mismatch"):
        runtime_py.load(bundle_copy, artifact="onnx-fp32")
    print("\ntamper: one byte flipped, manifest untouched            verify exit 1, runtime_py.load refuses")


def test_verify_subprocess_exit_codes(bundle_copy):
    """The real processes: `toolformer verify` and `python -m runtime_py verify` exit 1 on a tampered bundle."""
    import subprocess
    import sys

    labels_reordered(bundle_copy, None)
    rechecksum(bundle_copy)
    r1 = run_cli("verify", bundle_copy, timeout=300)
    # The ONNX artifact alone: runtime_py then never imports torch (what an app team's CI runs).
    r2 = subprocess.run([sys.executable, "-m", "runtime_py", "verify", str(bundle_copy), "--only", "onnx-fp32"],
                        capture_output=True, text=True, timeout=300)
    assert r1.returncode == 1 and "label order" in r1.stdout, r1.stdout + r1.stderr
    assert r2.returncode == 1 and "label order" in r2.stdout, r2.stdout + r2.stderr
    assert "Traceback" not in r1.stderr + r2.stderr


# --- no code from files ---------------------------------------------------------------------------

def _tar(path: Path, members) -> Path:
    """A .tar.gz with hand-made members: (TarInfo, bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str):
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


EVIL_ARCHIVES = [
    ("absolute-path", lambda d: [_file("manifest.json", b"{}"), _file(str(d / "escaped-abs.txt"))], "absolute path"),
    ("dot-dot", lambda d: [_file("manifest.json", b"{}"), _file("../escaped-dotdot.txt")], "escapes"),
    ("nested-dot-dot", lambda d: [_file("a/../../escaped-nested.txt")], "escapes"),
    ("symlink-out", lambda d: [_link("tokenizer.json", "/etc/passwd")], "link"),
    ("symlink-dir-then-write", lambda d: [_link("sub", str(d)), _file("sub/escaped-through-link.txt")], "link"),
    ("hardlink", lambda d: [_link("model.onnx", "/etc/passwd", tarfile.LNKTYPE)], "link"),
    ("device-file", lambda d: [_device("null-device")], "not a regular file"),
]


@pytest.mark.parametrize("case", EVIL_ARCHIVES, ids=[c[0] for c in EVIL_ARCHIVES])
def test_archive_refuses_escaping_members(case, tmp_path, monkeypatch):
    import runtime_py
    from runtime_py.archive import unpack

    name, members, expect = case
    outside = tmp_path / "outside"
    outside.mkdir()
    arc = _tar(tmp_path / "evil.tar.gz", members(outside))
    with pytest.raises(runtime_py.BundleError, match=expect):
        unpack(arc, tmp_path / "dest")
    monkeypatch.setenv("TOOLFORMER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(runtime_py.BundleError, match=expect):
        runtime_py.load(arc)
    assert not (tmp_path / "dest").exists()
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped-dotdot.txt").exists()
    assert not any(p.name.startswith("escaped") for p in tmp_path.rglob("*"))
    print(f"\narchive: {name:<24} refused ({expect})")


def test_archive_of_a_real_bundle_round_trips(bundle_copy, tmp_path, monkeypatch):
    """The safe path still works: pack → load through the archive → same predictions."""
    import runtime_py
    from runtime_py.archive import pack

    monkeypatch.setenv("TOOLFORMER_CACHE", str(tmp_path / "cache"))
    arc = pack(bundle_copy, tmp_path / "b.tar.gz")
    a = runtime_py.load(arc, artifact="onnx-fp32").predict(["where is my parcel"])
    b = runtime_py.load(bundle_copy, artifact="onnx-fp32").predict(["where is my parcel"])
    assert a == b


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_PICKLE_RAN",))


def test_resume_checkpoint_never_unpickles_code(tmp_path, tiny_model_dir, monkeypatch):
    """A training checkpoint whose state file is a code-running pickle is refused, not executed."""
    import pickle

    import torch

    from toolchain import model as model_mod
    from toolchain.checkpoint import EpochCheckpoint
    from toolchain.finetune import TrainConfig, TrainResult, TrainState

    monkeypatch.chdir(tmp_path)
    model = model_mod.load_classifier(str(tiny_model_dir), ["a", "b"])
    cfg = TrainConfig(epochs=2)
    ck = EpochCheckpoint(tmp_path / "run", cfg, model, 10, 4, "original")
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    st, res = TrainState(epoch=1, step=3, seen=30), TrainResult(best_accuracy=0.5, best_epoch=1.0)
    ck.save(model, opt, sched, st, res, {k: v.clone() for k, v in model.state_dict().items()})
    (ck.dir / "training_state.pt").write_bytes(pickle.dumps({"optimizer": _Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        ck.restore(model, opt, sched, TrainState(), TrainResult(best_accuracy=-1.0, best_epoch=0.0))
    assert not (tmp_path / "EVIL_PICKLE_RAN").exists()


def test_pickle_only_model_dir_is_refused(tiny_model_dir, tmp_path):
    """Weights come from safetensors only: a directory with only a pickle is refused before loading."""
    from toolchain.errors import UsageError
    from toolchain.model import check_dir

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(UsageError, match="pickle"):
        check_dir(d)
