"""`toolformer compress CHECKPOINT --trials N --min-retention R`: the accuracy-aware search on the tiny model.

One real search (3 seeded trials, seconds of proxy training each) checks the records, the winner rule,
the Pareto front, the plot and the bundle; the gate failure and the sampler's seeding are checked with
a recorded stand-in for the trial's training (the search logic, not training, is under test there).
"""
from __future__ import annotations

import json
import tomllib

import pytest
from click.testing import CliRunner

from helpers import tiny_recipe_dict
from toolchain.cli import main

FIELDS = {"number", "params", "val_accuracy", "latency_ms", "latency_p90_ms", "bytes", "qualified", "pareto", "state",
          "params_count", "flops", "layers_kept", "train_rows"}
# Fast trials: 32 proxy rows, 3 timed calls, 2 importance batches; search.target is `auto`: onnx fp32, the
# only artifact these recipes export (the real search below times eager PyTorch: no export per trial).
FAST = ["--set", "export.targets=['onnx']", "--set", "search.proxy_samples=32",
        "--set", "search.latency_iters=3", "--set", "compress.importance_batches=2", "--set", "search.num_layers=[1, 2]",
        "--set", "parity.num_examples=32"]


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    """A fine-tuned tiny checkpoint with its recipe.toml, as `toolformer finetune` writes it."""
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import finetune

    base = tmp_path_factory.mktemp("search-ckpt")
    finetune(recipe_mod.build(tiny_recipe_dict(tiny_model_dir, base / "unused")), base / "ckpt")
    return base / "ckpt"


@pytest.fixture(scope="module")
def searched(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "out"
    res = CliRunner().invoke(main, ["compress", str(checkpoint), "--out", str(out), "--trials", "3", "--min-retention", "0.9",
                                    "--epochs", "1", "--set", "search.target='pytorch'", *FAST])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_every_trial_recorded_and_the_fastest_qualifying_one_ships(searched):
    out, output = searched
    rep = json.loads((out / "trials.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    trials = rep["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    for t in trials:
        assert FIELDS <= set(t), FIELDS - set(t)
        assert set(t["params"]) == {"num_layers", "layer_selection", "prune_heads", "prune_ffn", "prune_vocab", "distill",
                                    "temperature", "alpha", "int8_mode"}
        assert t["params"]["num_layers"] in (1, 2) and t["state"] == "COMPLETE"
        assert t["latency_ms"] > 0 and t["bytes"] > 0 and 0 <= t["val_accuracy"] <= 1
        assert t["qualified"] == (t["val_accuracy"] >= rep["threshold"])
        assert f"search trial {t['number']}:" in output  # each trial is reported as it finishes
    assert rep["judged_by"]["target"] == "pytorch" and rep["original"]["latency_ms"] > 0
    orig = summary["original"]["val_accuracy"]
    assert rep["threshold"] == pytest.approx(0.9 * orig) and rep["chosen_on"] == "validation"
    ok = [t for t in trials if t["qualified"]]
    assert ok, "the tiny original is at chance level: a 0.9 share must be reachable"
    fastest = min(ok, key=lambda t: (t["latency_ms"], -t["val_accuracy"], t["number"]))
    assert rep["winner"] == fastest["number"] == summary["search"]["winner"]
    # The shipped student has the winner's settings, and its recipe.toml rebuilds it without searching.
    assert summary["shipped"]["layers"] == fastest["params"]["num_layers"]
    rec = tomllib.loads((out / "bundle" / "recipe.toml").read_text())
    assert rec["search"]["trials"] == 0 and rec["student"]["num_layers"] == fastest["params"]["num_layers"]
    assert rec["compress"]["prune_heads"] == fastest["params"]["prune_heads"]
    # tiny_recipe_dict's gates against the original (drop 1.0, top-1 0.0) are looser than the retention's: kept.
    assert rec["parity"]["max_accuracy_drop"] == 1.0 and rec["parity"]["min_top1_vs_original"] == 0.0
    assert "search: " in output and f"shipped trial {fastest['number']}" in output
    assert summary["search"]["shipped_retention"] == pytest.approx(summary["shipped"]["val_accuracy"] / orig)


def test_pareto_front_and_plot_in_run_and_bundle(searched):
    out, _ = searched
    rep = json.loads((out / "trials.json").read_text())
    trials = rep["trials"]

    def beaten(a):
        return any(b["val_accuracy"] >= a["val_accuracy"] and b["latency_ms"] <= a["latency_ms"]
                   and (b["val_accuracy"], b["latency_ms"]) != (a["val_accuracy"], a["latency_ms"]) for b in trials)

    assert rep["pareto"] == [t["number"] for t in trials if not beaten(t)]
    assert all(t["pareto"] == (t["number"] in rep["pareto"]) for t in trials)
    from toolchain.plots import label_overlaps
    from toolchain.search import figure

    fig = figure(rep)  # what pareto.png draws: one label per distinct trial plus the original, none overlapping
    assert len(fig.toolformer_labels) == 1 + len({json.dumps(t["params"], sort_keys=True) for t in trials})
    assert label_overlaps(fig, fig.toolformer_labels) == []
    for d in (out, out / "bundle"):
        assert (d / "pareto.png").read_bytes()[:4] == b"\x89PNG"
        assert json.loads((d / "trials.json").read_text()) == rep


def test_bundle_verifies_with_its_search_files_listed(searched):
    from runtime_py.verify import verify_bundle

    out, _ = searched
    assert verify_bundle(out / "bundle")["passed"]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert {"trials.json", "pareto.png"} <= set(manifest["files"])  # checksummed like every bundle file


def _fake_trial(acc):
    """Stand-in for search._trial: the same record for the same settings, no training."""
    def trial(ws, original, proxy, params, number, root, suffix):
        return {"number": number, "params": params, "val_accuracy": acc, "latency_ms": 1.0 + params["num_layers"],
                "latency_p90_ms": 2.0, "bytes": 1000 * params["num_layers"], "seq_len": 32}
    return trial


@pytest.fixture(scope="module")
def failed(checkpoint, tmp_path_factory):
    """Two identical searches whose trials (a recorded stand-in) all miss the threshold."""
    import unittest.mock

    from toolchain import search

    runs = []
    with unittest.mock.patch.object(search, "_trial", _fake_trial(0.0)):
        for k in range(2):
            out = tmp_path_factory.mktemp(f"search-failed-{k}") / "out"
            res = CliRunner().invoke(main, ["compress", str(checkpoint), "--out", str(out), "--trials", "4",
                                            "--set", "search.num_layers=[1, 2, 3]", *FAST[:-4]])
            runs.append((out, res))
    return runs


def test_no_qualifying_trial_fails_the_gate_without_a_bundle(failed):
    out, res = failed[0]
    assert res.exit_code == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: search gate failed, no bundle written: none of 4 trials"), res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False and summary["search"]["winner"] is None and summary["search"]["qualified"] == 0
    assert (out / "trials.json").is_file() and (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "bundle").exists() and not (out / "student").exists()
    rep = json.loads((out / "trials.json").read_text())
    # search.target auto → the ONNX fp32 artifact: the original was exported and timed as a reference
    assert rep["judged_by"]["target"] == "onnx" and rep["judged_by"]["precision"] == "fp32" and rep["original"]["bytes"] > 0


def test_seeded_sampler_repeats_its_choices(failed):
    params = [[t["params"] for t in json.loads((out / "trials.json").read_text())["trials"]] for out, _ in failed]
    assert params[0] == params[1] and len({json.dumps(p, sort_keys=True) for p in params[0]}) > 1


@pytest.mark.parametrize("args, msg", [
    (["--trials", "0"], "--trials must be >= 1"),
    (["--trials", "2", "--min-retention", "0"], "--min-retention must be in (0, 1]"),
    (["--trials", "2", "--min-retention", "1.5"], "--min-retention must be in (0, 1]"),
    (["--min-retention", "0.9"], "--min-retention needs --trials"),
    (["--trials", "2", "--set", "search.bogus=1"], "unknown key 'search.bogus'"),
    (["--trials", "2", "--set", "search.prune_heads=[1.5]"], "search.prune_heads must be"),
    (["--trials", "2", "--set", "search.num_layers=[9]"], "search.num_layers [9] out of range"),
    (["--trials", "2", "--set", "search.precision='int8'", "--set", "export.precisions=['fp32']"],
     "search.precision 'int8' is not among export.precisions"),
])
def test_bad_search_input_is_one_line_exit_2(checkpoint, tmp_path, args, msg):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["compress", str(checkpoint), "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and msg in err[0], res.stderr
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_resume_reuses_a_finished_search(checkpoint, tmp_path):
    """Killed after the search (here: at the student stage), `--resume` continues without searching again."""
    import unittest.mock

    from toolchain import search, stages

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    def must_not_run(*a, **k):
        raise AssertionError("a finished search ran again on --resume")

    out = tmp_path / "out"
    args = ["compress", str(checkpoint), "--out", str(out), "--trials", "2", *FAST[:-4]]
    with unittest.mock.patch.object(search, "_trial", _fake_trial(1.0)), unittest.mock.patch.object(stages, "make_student", interrupt):
        first = CliRunner().invoke(main, args)
    assert first.exit_code == 130 and (tmp_path / ".out.partial" / "trials.json").is_file()
    trials = (tmp_path / ".out.partial" / "trials.json").read_text()
    with unittest.mock.patch.object(search, "_trial", must_not_run), unittest.mock.patch.object(stages, "make_student", interrupt):
        again = CliRunner().invoke(main, [*args, "--resume"])
    assert again.exit_code == 130, again.output
    assert "search: reused from the interrupted build" in again.output
    assert (tmp_path / ".out.partial" / "trials.json").read_text() == trials and not out.exists()


def test_winner_gates_against_the_original_follow_the_asked_retention():
    from toolchain import recipe as recipe_mod
    from toolchain.search import winner_recipe

    params = {"num_layers": 2, "layer_selection": "top", "prune_heads": 0.25, "prune_ffn": 0.0, "prune_vocab": True,
              "distill": True, "temperature": 4.0, "alpha": 0.9, "int8_mode": "static"}
    r = recipe_mod.build({"search": {"trials": 5, "min_retention": 0.7, "target": "onnx", "precision": "int8"}})
    w = winner_recipe(r, params, original_accuracy=0.9)
    assert w.parity.max_accuracy_drop == pytest.approx(0.27) and w.parity.min_top1_vs_original == 0.7
    assert (w.student.num_layers, w.student.layer_selection, w.student.epochs) == (2, "top", r.student.epochs)
    assert (w.compress.prune_heads, w.compress.prune_vocab, w.compress.temperature, w.compress.alpha) == (0.25, True, 4.0, 0.9)
    assert w.quant.onnx_mode == "static" and w.search.trials == 0
    strict = winner_recipe(recipe_mod.build({"search": {"trials": 5, "min_retention": 0.99}}), params, 0.9)
    assert strict.parity.max_accuracy_drop == 0.08 and strict.parity.min_top1_vs_original == 0.8  # the defaults, stricter
