"""The spine on real weights: the embedded all-MiniLM-L6-v2 on the sample data, built, verified, predicted."""
import json

import pytest

from helpers import SAMPLES, run_cli


@pytest.mark.slow
def test_minilm_build_verify_predict(tmp_path):
    out = tmp_path / "out"
    r = run_cli("build", "--train", SAMPLES / "train.csv", "--validation", SAMPLES / "dev.csv",
                "--num-layers", "2", "--epochs", "2", "--max-seq-len", "48", "--out", out,
                "--set", "export.precisions=[\"fp32\"]", "--set", "train.learning_rate=1e-4",
                "--set", "student.learning_rate=2e-4", "--set", "data.max_train_samples=200",
                "--set", "parity.num_examples=48")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["original"]["layers"] == 6 and summary["shipped"]["layers"] == 2
    assert summary["original"]["val_accuracy"] > 0.5  # five intents: chance is 0.2
    for art in summary["artifacts"]:
        assert art["passed"] and art["vs_reference"]["max_abs"] < 1e-4
        assert {"len8", "len33"} <= set(art["per_length"])  # lengths other than the export example (16)
    v = run_cli("verify", out / "bundle")
    assert v.returncode == 0 and "verdict: PASS" in v.stdout, v.stdout + v.stderr
    p = run_cli("predict", out / "bundle", "my parcel has not arrived yet", "--json")
    assert p.returncode == 0 and json.loads(p.stdout.strip().splitlines()[-1])["label"] in summary["labels"]
