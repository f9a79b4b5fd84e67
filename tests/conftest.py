"""Shared fixtures: a tiny random BERT with a real WordPiece tokenizer, tiny recipes and one tiny bundle
(built from tests/helpers.py, which the tests import directly).

Everything here is built offline in seconds; real weights (the embedded MiniLM) only appear in
tests marked `slow`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import make_tiny_model_dir, onnx_recipe_dict, tiny_recipe_dict

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Under pytest-xdist the workers share the cores: one intra-op thread each (set before torch is imported; the
# builds' subprocesses inherit it), so N workers do not run N x cores busy threads.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


# Longest scopes first (wall seconds of each module or family class, `--durations=0` summed, on an idle 2-core run
# with 3 workers, 2026-12-01): distilbert 114, token_build 104, electra 74, spine_slow 71, roberta 65, tamper 65, int8 59,
# search 59, resume_states 58, distributed 53, gates 52, kill 48, lora 41, compress_build 38; serve 215 with the tiny
# int8 build it happened to make. `--dist loadscope` hands scopes to workers in collection order once
# `--no-loadscope-reorder` (pyproject.toml) stops xdist from reordering them by test count, which had put
# test_bad_input's 40 short cases first and the long builds last. Longest-first is the classic fix for a long scope
# left alone at the end. The modules that make the shared builds (int8, tamper: tiny_build, serve: tiny_onnx_build)
# start early so that no worker waits on one late. A module not listed runs after these, in the usual order; the list
# only orders, it selects nothing.
LONGEST_FIRST = ("test_families_build.py",  # five family classes, longest first in the file
                 "test_int8.py", "test_token_build.py", "test_serve.py", "test_spine_slow.py", "test_tamper.py",
                 "test_search.py", "test_resume_states.py", "test_distributed.py", "test_gates.py", "test_kill.py",
                 "test_lora.py", "test_compress_build.py", "test_compress_vocab.py", "test_bad_input.py")


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker more than cores (at most 4). Builds wait on subprocesses, servers and file locks part
    of the time; a third worker on 2 cores kept them busy (measured: 95% of 2 cores, 7 min 33 s, against 8 min 17 s
    with two workers)."""
    return min(4, (os.cpu_count() or 1) + 1)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's own order is kept


def shared_once(tmp_path_factory, name: str, make) -> Path:
    """`make(dest)` once per test run, however many xdist workers ask: the first one builds under a file lock
    in the run's common temp dir (the pattern pytest-xdist documents), the others wait and reuse it. Without
    xdist it is simply a build made once per run. `dest` must not exist before; the result is read-only for tests."""
    from filelock import FileLock

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker else base) / "shared-fixtures" / name
    root.mkdir(parents=True, exist_ok=True)
    dest, done = root / "built", root / "DONE"
    with FileLock(str(root / ".lock")):
        if not done.is_file():
            if dest.exists():  # a worker that died mid-build
                shutil.rmtree(dest)
            make(dest)
            done.write_text(worker or "main")
    return dest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return shared_once(tmp_path_factory, "tiny-bert", make_tiny_model_dir)


@pytest.fixture
def tiny_recipe(tiny_model_dir, tmp_path):
    """Factory: tiny_recipe(**overrides) → validated Recipe writing under tmp_path/out."""
    from toolchain import recipe as recipe_mod

    def make(**sections):
        return recipe_mod.build(tiny_recipe_dict(tiny_model_dir, tmp_path / "out", **sections))

    return make


@pytest.fixture(scope="session")
def tiny_build(tiny_model_dir, tmp_path_factory) -> Path:
    """One complete tiny build (ExecuTorch + ONNX fp32), shared read-only by tests; copy before mutating."""
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    return shared_once(tmp_path_factory, "tiny-build", lambda out: build(recipe_mod.build(tiny_recipe_dict(tiny_model_dir, out))))


@pytest.fixture(scope="session")
def tiny_int8_build(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny build with int8 artifacts only (the default [quant] settings, plus the ExecuTorch debug twin); read-only."""
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    return shared_once(tmp_path_factory, "tiny-int8-build", lambda out: build(recipe_mod.build(
        tiny_recipe_dict(tiny_model_dir, out, export={"precisions": ["int8"]}, quant={"debug_twins": True},
                         student={"num_layers": 2}))))  # two layers: `debug` must name the one that was perturbed


@pytest.fixture
def bundle_copy(tiny_build, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may tamper with."""
    dest = tmp_path / "bundle"
    shutil.copytree(tiny_build / "bundle", dest)
    return dest


@pytest.fixture(scope="session")
def tiny_onnx_build(tiny_model_dir, tmp_path_factory) -> Path:
    """A complete build of onnx_recipe_dict: another bundle to swap artifacts from, and a reference for
    determinism and resumed builds. Read-only; copy before mutating."""
    return _tiny_onnx_builds(tiny_model_dir, tmp_path_factory) / "out"


@pytest.fixture(scope="session")
def tiny_onnx_stopped(tiny_model_dir, tmp_path_factory) -> Path:
    """The staging dir of tiny_onnx_build as it was just before its commit (every stage recorded,
    bundle/ inside): what a kill there leaves. Read-only; copy it to `.OUT.partial` of an OUT."""
    return _tiny_onnx_builds(tiny_model_dir, tmp_path_factory) / "stopped-before-commit"


def _tiny_onnx_builds(model_dir: Path, tmp_path_factory) -> Path:
    """One build for both fixtures above: its staging dir is copied aside as the commit starts."""

    def make(base: Path) -> None:
        from unittest import mock

        from toolchain import pipeline, staging
        from toolchain import recipe as recipe_mod

        base.mkdir(parents=True)
        stopped = base / "stopped-before-commit"
        commit = staging.commit

        def copy_then_commit(staging, dest):
            shutil.copytree(staging, stopped)
            commit(staging, dest)

        with mock.patch.object(staging, "commit", copy_then_commit):
            pipeline.build(recipe_mod.build(onnx_recipe_dict(model_dir, base / "out")))

    return shared_once(tmp_path_factory, "tiny-onnx-build", make)
