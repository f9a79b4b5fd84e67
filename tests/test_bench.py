"""`toolformer bench` on the tiny bundle: every figure present and sane; bad input exits 2; the peer
comparison's timing helpers (pairwise ratios, alternation, headline pairs)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import ROOT, run_cli
from toolchain.bench import ROW_FIELDS, real_inputs
from toolchain.cli import main

sys.path.insert(0, str(ROOT / "benchmarks"))


def _check_rows(rows, names, batches, seq_lens):
    assert {r["name"] for r in rows} == set(names)
    for r in rows:
        missing = [f for f in ROW_FIELDS if f not in r]
        assert not missing, missing
        assert r["format"] in ("pytorch", "executorch", "onnx")
        assert r["precision"] in ("fp32", "int8", "fp16")
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput"] > 0 and r["load_ms"] > 0 and r["peak_rss_mb"] > 10 and r["bytes"] > 0
    for n in names:
        got = sorted((r["batch"], r["seq_len"]) for r in rows if r["name"] == n)
        assert got == sorted((b, s) for b in batches for s in seq_lens), (n, got)


def test_bench_bundle_every_figure(tiny_build, tmp_path):
    out = tmp_path / "bench.json"
    res = run_cli("bench", tiny_build / "bundle", "--iters", "3", "--warmup", "1", "--batch-sizes", "1,2",
                  "--seq-lens", "8,16", "--threads", "1", "--json", out, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(out.read_text())
    manifest = json.loads((tiny_build / "bundle" / "manifest.json").read_text())
    arts = [f"{a['format']}-{a['precision']}" for a in manifest["artifacts"]]
    assert {"executorch-fp32", "onnx-fp32"} <= set(arts)
    _check_rows(rows, ["original", *arts], [1, 2], [8, 16])
    by = {r["name"]: r for r in rows}
    assert by["original"]["format"] == "pytorch" and by["original"]["precision"] == "fp32"
    assert by["onnx-fp32"]["bytes"] == (tiny_build / "bundle" / "model-onnx-fp32.onnx").stat().st_size
    assert all(r["threads"] == 1 and r["iters"] == 3 for r in rows)
    assert "p50 ms" in res.stdout and "load average" in res.stdout
    assert "bench" in res.stderr  # the progress bar


def test_bench_bare_artifact_uses_the_build_tokenizer(tiny_build, tmp_path):
    out = tmp_path / "one.json"
    res = run_cli("bench", tiny_build / "artifacts" / "model-onnx-fp32.onnx", "--no-original", "--iters", "2",
                  "--warmup", "0", "--batch-sizes", "1", "--seq-lens", "12", "--json", out, "--no-progress", timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(out.read_text())
    _check_rows(rows, ["model-onnx-fp32"], [1], [12])
    assert rows[0]["precision"] == "fp32"


@pytest.mark.parametrize("args, needle", [
    (["--seq-lens", "999"], "max_seq_len"),
    (["--batch-sizes", "64"], "batch limit"),
    (["--batch-sizes", "a,b"], "--batch-sizes"),
    (["--only", "nope"], "not found"),
    (["--threads", "0"], "--threads"),
])
def test_bench_bad_input_exits_2(tiny_build, tmp_path, args, needle):
    out = tmp_path / "x.json"
    res = CliRunner().invoke(main, ["bench", str(tiny_build / "bundle"), "--json", str(out), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_bench_missing_target(tmp_path):
    res = CliRunner().invoke(main, ["bench", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no such bundle or artifact" in res.output


def test_real_inputs_are_full_rows_of_real_tokens(tiny_build):
    bundle = tiny_build / "bundle"
    texts = json.loads((bundle / "golden.json").read_text())["texts"]
    a = real_inputs(bundle / "tokenizer.json", texts, 3, 20)
    assert a["input_ids"].shape == (3, 20) and a["attention_mask"].all()
    unk = 1  # [UNK] in the tiny WordPiece vocabulary
    assert (a["input_ids"] != unk).mean() > 0.5 and len(np.unique(a["input_ids"])) > 10
    assert not (a["input_ids"][0] == a["input_ids"][1]).all()


def test_pairwise_ratio_is_the_median_of_per_round_ratios():
    from alternate import alternate, pairwise_ratio

    a, b = np.array([1.0, 2.0, 30.0]), np.array([2.0, 2.0, 3.0])
    assert pairwise_ratio(a, b) == 1.0  # ratios 0.5, 1, 10
    with pytest.raises(ValueError):
        pairwise_ratio(a, b[:2])
    calls = []
    t = alternate({"x": lambda _: calls.append("x"), "y": lambda _: calls.append("y")}, [None] * 4, warmup_rounds=1)
    assert calls == ["x", "y", "y", "x", "x", "y", "y", "x"]  # rotating order
    assert len(t["x"]) == len(t["y"]) == 3


def test_headline_pairs_prefer_int8_and_fall_back():
    import peers

    names = ["toolformer executorch-fp32", "toolformer onnx-fp32", "optimum-onnx-int8-avx512_vnni",
             "optimum-onnx-int8-arm64", "executorch-plain-fp32"]
    assert peers.headline_pairs(names) == [("toolformer onnx-fp32", "optimum-onnx-int8-avx512_vnni"),
                                           ("toolformer onnx-fp32", "optimum-onnx-int8-arm64"),
                                           ("toolformer executorch-fp32", "executorch-plain-fp32")]
    names += ["toolformer onnx-int8", "toolformer executorch-int8"]
    got = peers.headline_pairs(names)
    assert ("toolformer onnx-int8", "optimum-onnx-int8-avx512_vnni") in got
    assert ("toolformer executorch-int8", "executorch-plain-fp32") in got
    assert ("toolformer executorch-int8", "optimum-onnx-int8-avx512_vnni") in got
    assert not any(a == "toolformer onnx-fp32" for a, _ in got)


def test_int8_benchmark_times_every_artifact_in_each_round():
    """benchmarks/int8.py interleaves: every backend runs the same batch in every round, in a rotating order."""
    import int8

    order = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def run(self, batch):
            order.append((self.name, batch))

    ms = int8.interleaved_ms({"a": Fake("a"), "b": Fake("b")}, batches=[0, 1, 2], iters=10, warmup=3)
    assert set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())
    assert len(order) == 2 * (3 + 10)
    rounds = [order[i:i + 2] for i in range(0, len(order), 2)]
    assert all({n for n, _ in r} == {"a", "b"} and r[0][1] == r[1][1] for r in rounds)  # both, same batch
    assert [r[0][0] for r in rounds[:4]] == ["a", "b", "a", "b"]  # the order rotates
    assert [r[0][1] for r in rounds[3:]] == [i % 3 for i in range(10)]


def test_peers_paired_comparison_counts_discordant_rows():
    """peers.py's paired test: rows only one side gets right, and the exact one-sided McNemar p that Toolformer is worse."""
    import numpy as np
    import peers

    def logits(right, labels):  # two-label logits whose argmax is the label where `right`, the other label elsewhere
        pred = np.where(right, labels, 1 - labels)
        return np.eye(2)[pred]

    y = np.arange(100) % 2
    tf = np.array([True] * 90 + [False] * 10)
    peer = np.array([True] * 80 + [False] * 10 + [True] * 10)  # tf right on 10 rows the peer misses, and vice versa
    p = peers.paired(logits(tf, y), logits(peer, y), y)
    assert p["toolformer_only"] == 10 and p["peer_only"] == 10 and 0.5 < p["p_worse"] < 0.7
    y = np.arange(40) % 2
    p = peers.paired(logits(np.zeros(40, bool), y), logits(np.ones(40, bool), y), y)  # Toolformer wrong wherever the peer is right
    assert p["toolformer_only"] == 0 and p["peer_only"] == 40 and p["p_worse"] < 1e-9
    y = np.arange(5) % 2
    assert peers.paired(logits(np.ones(5, bool), y), logits(np.ones(5, bool), y), y)["p_worse"] == 1.0
