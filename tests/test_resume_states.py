"""Idempotent stage commits: every on-disk state a kill can leave, built directly, then resumed.

No timing: each test starts from the staging directory of a build stopped just before its commit
(every stage recorded, a complete `bundle/` inside — what a kill between the bundle's rename and
the commit leaves), puts it into one state (a stage's files gone or changed, a stage renamed but
not recorded, a half-written artifact, a leftover `.bundle.partial`, records gone...), resumes
in-process and checks: no exception, OUT verifies, the stages that could be reused were and the
rest were redone, and the result equals an uninterrupted build of the same recipe.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest

from helpers import assert_same_build, onnx_recipe_dict, tree, verified

EXPORT = "export model-onnx-fp32.onnx"
ART = Path("artifacts") / "model-onnx-fp32.onnx"


class Killed(BaseException):
    """Stands for a SIGKILL at the commit (the build keeps its staging dir, as for Ctrl-C)."""


@pytest.fixture(scope="module")
def states(tiny_model_dir, tiny_onnx_stopped, tmp_path_factory):
    """(recipe, out, pristine): the kill recipe writing to a private OUT, and its build stopped just
    before the commit (tiny_onnx_build's staging dir; the resume key does not depend on OUT)."""
    from toolchain import recipe as recipe_mod

    out = tmp_path_factory.mktemp("resume-states") / "runs" / "out"
    return recipe_mod.build(onnx_recipe_dict(tiny_model_dir, out)), out, tiny_onnx_stopped


@pytest.fixture
def state(states):
    """A fresh copy of the stopped build in `.out.partial` (OUT absent) for one test to put into a state."""
    from toolchain.staging import staging_dir

    r, out, pristine = states
    st = staging_dir(out)
    for d in (out, st, *out.parent.glob(".out.old-*")):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(pristine, st)
    return r, out, st


def stages_of(st: Path) -> dict:
    return json.loads((st / "progress.json").read_text())["stages"]


def resume(r, out: Path, force: bool = False) -> dict:
    from toolchain.pipeline import build

    summary = build(r, force=force, resume=True)
    assert verified(out / "bundle")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no staging, no old build left
    assert not (out / "progress.json").exists()
    return summary


def resumed(summary: dict) -> list:
    return [s["stage"] for s in summary["stages"] if s.get("resumed")]


def test_every_stage_records_its_files(state):
    """The records list each stage's files with size and sha256 (what a resume verifies)."""
    _, _, st = state
    rec = stages_of(st)
    assert list(rec) == ["original", "student", EXPORT]
    assert str(ART) in rec[EXPORT]["files"]
    assert "original/model.safetensors" in rec["original"]["files"]
    assert "student/model.safetensors" in rec["student"]["files"]
    for stage in rec.values():
        for rel, (size, sha) in stage["files"].items():
            assert (st / rel).stat().st_size == size and len(sha) == 64


def test_bundle_renamed_but_unrecorded_is_replaced(state, tiny_onnx_build, capsys):
    """Issue 20's traceback: a `bundle/` (and a `.bundle.partial`) left in the staging dir by a run
    killed after the bundle's rename; the resume reuses every recorded stage and packages again."""
    r, out, st = state
    assert (st / "bundle" / "manifest.json").is_file()
    (st / ".bundle.partial").mkdir()
    (st / ".bundle.partial" / "model-onnx-fp32.onnx").write_bytes(b"half")
    (st / "bundle" / "stale-from-another-run.txt").write_text("x")
    summary = resume(r, out)
    assert resumed(summary) == ["fine-tune original", "student", "export onnx fp32"]
    assert not (out / "bundle" / "stale-from-another-run.txt").exists()  # the bundle is this run's only
    assert not (out / ".bundle.partial").exists()
    assert "continuing" in capsys.readouterr().out
    assert_same_build(out, tiny_onnx_build)


@pytest.mark.parametrize("damage", ["gone", "changed"])
def test_recorded_export_whose_file_is_gone_or_changed_is_exported_again(state, tiny_onnx_build, damage, capsys):
    r, out, st = state
    art = st / ART
    if damage == "gone":
        art.unlink()
    else:  # same size, one byte flipped
        b = bytearray(art.read_bytes())
        b[len(b) // 2] ^= 0xFF
        art.write_bytes(bytes(b))
    summary = resume(r, out)
    assert resumed(summary) == ["fine-tune original", "student"]
    assert "export model-onnx-fp32.onnx: recorded, but its files are missing or changed" in capsys.readouterr().out
    assert_same_build(out, tiny_onnx_build)


def test_exported_but_unrecorded_artifact_is_exported_again(state, tiny_onnx_build):
    """Killed after the artifact was written (or half-written), before its record."""
    from toolchain.staging import Progress

    r, out, st = state
    prog = Progress(st, json.loads((st / "progress.json").read_text())["recipe_sha256"])
    del prog.stages[EXPORT]
    prog.save()
    (st / ART).write_bytes(b"\x08\x07half-written")
    summary = resume(r, out)
    assert resumed(summary) == ["fine-tune original", "student"]
    assert_same_build(out, tiny_onnx_build)


def test_recorded_student_whose_weights_changed_is_redone_with_everything_after(state, tiny_onnx_build, capsys):
    """A stage redone invalidates the stages built from it: the export is redone too."""
    r, out, st = state
    w = st / "student" / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-5] ^= 0x01
    w.write_bytes(bytes(b))
    summary = resume(r, out)
    assert resumed(summary) == ["fine-tune original"]
    assert "student: recorded, but its files are missing or changed" in capsys.readouterr().out
    assert_same_build(out, tiny_onnx_build)


def test_killed_after_an_epoch_checkpoint_resumes_after_that_epoch(states, tiny_onnx_build, capsys):
    """Killed right after the original's epoch-1 checkpoint (nothing recorded yet): the resume
    continues training after epoch 1 and equals an uninterrupted build."""
    from toolchain.checkpoint import EpochCheckpoint
    from toolchain.pipeline import build
    from toolchain.staging import staging_dir

    r, out, _ = states
    st = staging_dir(out)
    for d in (out, st):
        shutil.rmtree(d, ignore_errors=True)
    save = EpochCheckpoint.save

    def save_then_die(self, *a, **k):
        save(self, *a, **k)
        raise KeyboardInterrupt  # like Ctrl-C: the build keeps its staging dir

    with mock.patch.object(EpochCheckpoint, "save", save_then_die):
        with pytest.raises(KeyboardInterrupt):
            build(r)
    assert (st / "original" / "checkpoint" / "state.json").is_file() and stages_of(st) == {}
    capsys.readouterr()
    summary = resume(r, out)
    assert "resuming original fine-tuning after epoch 1" in capsys.readouterr().out
    assert resumed(summary) == []
    assert_same_build(out, tiny_onnx_build)


def test_recorded_original_whose_files_are_gone_is_redone_with_everything_after(state, capsys):
    """The first stage's files gone: its record and every later one are dropped and their files
    deleted (so the redo never mixes with them); a resume then runs the whole build, as a fresh one."""
    from toolchain.staging import Progress

    _, _, st = state
    key = json.loads((st / "progress.json").read_text())["recipe_sha256"]
    (st / "original" / "config.json").unlink()
    prog = Progress(st, key)
    assert prog.get("original") is None
    assert "original: recorded, but its files are missing or changed" in capsys.readouterr().out
    assert stages_of(st) == {} and Progress(st, key).get("student") is None
    assert not (st / "original" / "model.safetensors").exists() and not (st / "student" / "model.safetensors").exists()
    assert not (st / ART).exists()


@pytest.mark.parametrize("records", ["dropped", "corrupt", "foreign-format"])
def test_records_dropped_or_unreadable_start_afresh(state, records, capsys):
    """Killed inside the commit after the records were dropped, a torn record file, or records
    without file lists (an older version): nothing is reused without a verifiable record."""
    from toolchain.staging import Progress, prepare

    _, out, st = state
    key = json.loads((st / "progress.json").read_text())["recipe_sha256"]
    if records == "dropped":
        (st / "progress.json").unlink()
    elif records == "corrupt":
        (st / "progress.json").write_text('{"recipe_sha256": "ab')
    else:
        prog = json.loads((st / "progress.json").read_text())
        for rec in prog["stages"].values():
            rec.pop("files")
        (st / "progress.json").write_text(json.dumps(prog))
    staging, resumed_ = prepare(out, key, resume=True)
    assert staging == st
    if records == "foreign-format":
        assert resumed_ and Progress(st, key).get("original") is None and stages_of(st) == {}
    else:
        assert not resumed_ and "starting afresh" in capsys.readouterr().out
        assert sorted(p.name for p in st.iterdir()) == ["progress.json"] and stages_of(st) == {}


def test_killed_after_the_commit_resume_has_nothing_to_do(state, tiny_onnx_build, capsys):
    """OUT is already this build (the kill came after the rename): `--resume` exits 0 and leaves it."""
    r, out, st = state
    first = resume(r, out)
    before = tree(out)
    again = resume(r, out)
    assert tree(out) == before and again["build_key"] == first["build_key"]
    assert "already the complete build of this recipe; nothing to do" in capsys.readouterr().out


def test_killed_during_the_swap_over_a_previous_build(state, tiny_onnx_build, capsys):
    """`--force` over a previous build, killed after the swap, before the old build was renamed
    aside: OUT is the new build without records; `.out.partial` holds the previous build without
    records, which a resume never continues (it starts afresh) and the next commit replaces."""
    from toolchain import staging

    r, out, st = state
    shutil.copytree(tiny_onnx_build, out)
    previous = tree(out)
    key = json.loads((st / "progress.json").read_text())["recipe_sha256"]
    with mock.patch.object(Path, "rename", side_effect=Killed):
        with pytest.raises(Killed):
            staging.commit(st, out)
    assert tree(st) == previous  # the swap happened: the old build sits in the staging path
    assert verified(out / "bundle") and not (out / "progress.json").exists()
    assert json.loads((out / "summary.json").read_text())["build_key"] == key
    _, resumed_ = staging.prepare(out, key, resume=True)
    assert not resumed_ and "starting afresh" in capsys.readouterr().out


def test_compress_resume_reuses_the_student(tiny_onnx_build, tmp_path):
    """`toolformer compress --resume` (same pipeline): stopped before its commit with a vocabulary-
    pruned student (its own tokenizer, recorded with it); the resume reuses every stage and OUT verifies."""
    from click.testing import CliRunner

    from toolchain.cli import main
    from toolchain.staging import staging_dir

    out = tmp_path / "c"
    args = ["compress", str(tiny_onnx_build / "original"), "--out", str(out), "--prune-vocab", "--resume"]
    with mock.patch("toolchain.staging.commit", side_effect=KeyboardInterrupt):
        res = CliRunner().invoke(main, args)
    assert res.exit_code == 130 and not out.exists(), res.output
    st = staging_dir(out)
    rec = stages_of(st)
    assert list(rec) == ["original", "student", EXPORT] and "student-tokenizer/tokenizer.json" in rec["student"]["files"]
    res = CliRunner().invoke(main, args)  # every stage verifies: reused
    assert res.exit_code == 0, res.output
    assert "reused from the interrupted build" in res.output and verified(out / "bundle")
    summary = json.loads((out / "summary.json").read_text())
    assert resumed(summary) == ["fine-tune original", "student", "export onnx fp32"]


def test_finetune_resume_commits_a_finished_checkpoint_without_training(tiny_model_dir, tmp_path, capsys):
    """`toolformer finetune` killed after training, before its commit: `--resume` verifies the
    recorded checkpoint and commits it; one changed byte and it trains again instead."""
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import finetune as finetune_original
    from toolchain.staging import staging_dir

    out = tmp_path / "ckpt"
    r = recipe_mod.build(onnx_recipe_dict(tiny_model_dir, out, train={"epochs": 1.0}))
    with mock.patch("toolchain.staging.commit", side_effect=KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            finetune_original(r, out)
    st = staging_dir(out)
    rec = stages_of(st)["original"]
    assert "model.safetensors" in rec["files"] and not out.exists()
    pristine = tmp_path / "pristine"
    shutil.copytree(st, pristine)
    capsys.readouterr()
    res = finetune_original(r, out, resume=True)
    assert "reused from the interrupted run" in capsys.readouterr().out
    assert res.best_accuracy == rec["train"]["best_accuracy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "pristine"] and not (out / "progress.json").exists()
    committed = tree(out)
    # The same stopped run, one weight byte changed: not reused; trained again to the same checkpoint.
    shutil.rmtree(out)
    shutil.copytree(pristine, st)
    w = st / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-3] ^= 0x01
    w.write_bytes(bytes(b))
    res = finetune_original(r, out, resume=True)
    text = capsys.readouterr().out
    assert "recorded, but its files are missing or changed" in text and "reused" not in text
    assert res.best_accuracy == rec["train"]["best_accuracy"] and set(tree(out)) == set(committed)


def test_export_clears_what_a_killed_export_left(tiny_onnx_build, tmp_path):
    """`toolformer export` killed mid-way leaves only its hidden scratch dir; the rerun removes it
    and writes the artifact whole."""
    from toolchain import recipe as recipe_mod
    from toolchain.export import export_checkpoint

    out = tmp_path / "model.onnx"
    scratch = tmp_path / ".model.onnx.k1ll3d"
    scratch.mkdir()
    (scratch / "model.onnx").write_bytes(b"half")
    r = recipe_mod.load(str(tiny_onnx_build / "recipe.toml"), {})
    res = export_checkpoint(tiny_onnx_build / "student", "onnx", "fp32", out, r)
    assert res["parity"]["passed"] and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
