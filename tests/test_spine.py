"""The spine end to end on a tiny random BERT: build → bundle → verify → predict, and its contracts."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import runtime_py
from toolchain.cli import main

from helpers import ROOT, run_cli


def test_build_writes_every_output(tiny_build):
    out = tiny_build
    for name in ("recipe.toml", "parity.json", "summary.json", "report.md", "original/model.safetensors",
                 "student/model.safetensors", "student/config.json", "bundle/manifest.json"):
        assert (out / name).is_file(), name
    assert not (out.parent / f".{out.name}.partial").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shipped"]["layers"] == 1 and summary["original"]["layers"] == 4
    assert summary["original"]["train"]["device"] == "cpu"


def test_manifest_contract(tiny_build):
    m = json.loads((tiny_build / "bundle" / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["max_seq_len"] == 32
    assert m["labels"] == ["account", "billing", "refund", "shipping", "technical"]
    assert m["tokenizer"]["file"] == "tokenizer.json"
    assert {(a["format"], a["precision"]) for a in m["artifacts"]} >= {("executorch", "fp32"), ("onnx", "fp32")}
    for a in m["artifacts"]:
        assert a["bytes"] == (tiny_build / "bundle" / a["file"]).stat().st_size
        assert len(a["sha256"]) == 64 and a["parity"]["passed"] is True
        assert a["export"] and a["gate"]["vs_reference"]
    assert set(m["files"]) >= {"golden.json", "tokenizer.json", "labels.json", *(a["file"] for a in m["artifacts"])}
    assert m["versions"]["torch"].startswith("2.13") and len(m["recipe_sha256"]) == 64


def test_parity_covers_lengths_other_than_the_export_example(tiny_build):
    p = json.loads((tiny_build / "parity.json").read_text())
    assert p["passed"]
    for art in p["artifacts"]:
        assert {"natural", "len5", "len19", "len31"} <= set(art["per_length"])
        for tag, met in art["per_length"].items():
            assert met["max_abs"] < 1e-4, (art["artifact"], tag)
        assert art["examples"] == 48


def test_executorch_graph_was_delegated(tiny_build):
    m = json.loads((tiny_build / "bundle" / "manifest.json").read_text())
    et = next(a for a in m["artifacts"] if a["format"] == "executorch")
    assert et["export"]["delegate_calls"] > 0
    assert not any(k.startswith(("aten.linear", "aten.mm", "aten.addmm", "aten.bmm")) for k in et["export"]["ops_outside_delegate"])


def test_verify_and_predict_cli(tiny_build):
    r = run_cli("verify", tiny_build / "bundle")
    assert r.returncode == 0, r.stderr
    assert "verdict: PASS" in r.stdout
    r = run_cli("predict", tiny_build / "bundle", "where is my parcel", "refund please", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in r.stdout.strip().splitlines()]
    assert len(rows) == 2 and all(row["label"] in ("account", "billing", "refund", "shipping", "technical") for row in rows)
    assert all(0.0 < row["score"] <= 1.0 for row in rows)


def test_runtime_api_matches_pytorch(tiny_build):
    import torch
    from transformers import AutoModelForSequenceClassification

    texts = ["where is my parcel", ("billing", "question about my invoice"), "x " * 100]
    ref_model = AutoModelForSequenceClassification.from_pretrained(tiny_build / "student").eval()
    for key in ("onnx-fp32", "executorch-fp32"):
        m = runtime_py.load(tiny_build / "bundle", artifact=key)
        arrays = m.encode(texts)
        assert arrays["input_ids"].shape[1] == 32  # the long text is truncated to max_seq_len
        with torch.no_grad():
            ref = ref_model(**{k: torch.from_numpy(v) for k, v in arrays.items()}).logits.numpy()
        assert np.abs(m.logits(texts) - ref).max() < 1e-4
        assert np.allclose(m.run(arrays), m.logits(texts), atol=1e-6)
        preds = m.predict(texts)
        assert [p["label"] for p in preds] == [m.labels[i] for i in ref.argmax(1)]


def test_onnx_runtime_never_imports_torch_or_toolchain(tiny_build):
    code = ("import sys, runtime_py; m = runtime_py.load(sys.argv[1], artifact='onnx-fp32'); m.predict(['hi']); "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('torch', 'toolchain', 'targets')]; "
            "assert not bad, bad; print('ok')")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_build / "bundle")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_executorch_runtime_skips_the_compiler_and_matches_the_public_runtime(tiny_build):
    """runtime_py loads a .pte through the extension module, without executorch.exir (seconds per process); its
    outputs equal those of ExecuTorch's public `executorch.runtime` on the same program."""
    code = ("import sys, json, numpy as np, runtime_py; m = runtime_py.load(sys.argv[1], artifact='executorch-fp32'); "
            "a = m.encode(['where is my parcel', 'hi']); ours = m.run(a); "
            "exir = 'executorch.exir' in sys.modules; "
            "import torch; from executorch.runtime import Runtime; "
            "meth = Runtime.get().load_program(sys.argv[1] + '/model-executorch-fp32.pte').load_method('forward'); "
            "ref = meth.execute([torch.from_numpy(a[k]) for k in m.input_names])[0].numpy(); "
            "print(json.dumps({'exir': exir, 'equal': bool(np.array_equal(ours, ref))}))")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_build / "bundle")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"exir": False, "equal": True}


def test_runtime_py_sources_do_not_import_the_toolchain():
    for f in (ROOT / "runtime_py").glob("*.py"):
        src = f.read_text()
        assert "import toolchain" not in src and "from toolchain" not in src and "from targets" not in src, f


def test_every_command_has_fast_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    for name in main.commands:
        res = runner.invoke(main, [name, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, name
    r = subprocess.run([sys.executable, "-c", "import toolchain.cli, sys; print([m for m in ('torch', 'transformers', 'executorch') if m in sys.modules])"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_gate_failure_exits_1_without_bundle(tiny_model_dir, tmp_path):
    from helpers import tiny_recipe_dict
    from toolchain import recipe as R

    d = tiny_recipe_dict(tiny_model_dir, tmp_path / "out", export={"targets": ["onnx"]},
                         parity={"fp32_max_abs": 0.0, "fp32_min_cosine": 1.5})
    f = tmp_path / "r.toml"
    import tomli_w
    f.write_text(tomli_w.dumps(d))
    r = run_cli("build", f)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "parity gate failed" in r.stderr
    assert (tmp_path / "out" / "parity.json").is_file() and not (tmp_path / "out" / "bundle").exists()


def test_build_never_ships_a_bundle_its_own_verify_fails(tiny_model_dir, tmp_path):
    """Parity judges many validation rows; `verify` re-judges the few golden rows in the bundle. The build runs that
    verify on its staged bundle: one that fails it is not shipped. Here golden.json is written with build-time
    outputs of the artifact that are off by 0.5 on one row (checksums intact), as a mismatch between what parity
    judged and what the bundle carries would be."""
    from unittest import mock

    import tomli_w
    from helpers import onnx_recipe_dict
    from toolchain import package

    # data.test_fraction too: the summary of a failed build still scores both models on the held-out rows.
    d = onnx_recipe_dict(tiny_model_dir, tmp_path / "out", export={"precisions": ["fp32"]}, train={"epochs": 1.0},
                         data={"test_fraction": 0.1})
    f = tmp_path / "r.toml"
    f.write_text(tomli_w.dumps(d))
    real = package.write_bundle

    def off_golden(dest, **kw):
        art = kw["golden"]["artifact_logits"]["model-onnx-fp32.onnx"]
        art[0] = [x + 0.5 for x in art[0]]
        return real(dest, **kw)

    with mock.patch.object(package, "write_bundle", off_golden):
        r = run_cli("build", f)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "parity gate failed, no bundle written" in err, err
    assert "onnx-fp32: verify on the 8 golden rows (parity.golden_size): vs its build-time outputs: max-abs error 0.5" in err, err
    out = tmp_path / "out"
    assert not (out / "bundle").exists() and not list(out.glob(".bundle*"))
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] is False and not parity["artifacts"][0]["passed"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False and summary["data"]["test"] > 0
    assert all(0.0 <= summary[m]["test_accuracy"] <= 1.0 for m in ("original", "shipped"))
    report = (out / "report.md").read_text()
    assert "Verdict: **FAIL**" in report and "Test accuracy of the shipped model (PyTorch): " in report and ", of the original: " in report
