"""`toolformer verify --arm64`: the emulated arm64 userland, drift tolerances in the manifest, CLI errors.

Tests marked `arm64` build (first run, minutes) or reuse the cached userland under
~/.cache/toolformer/arm64 (or $TOOLFORMER_ARM64_CACHE) and run the tiny bundle's ONNX artifact under
qemu-aarch64-static; they skip, saying why, where qemu-user-static/debootstrap are missing.
"""
from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import version

import pytest

from helpers import run_cli
from toolchain import arm64
from toolchain import recipe as recipe_mod
from toolchain.errors import UsageError


def test_cpuinfo_describes_an_aarch64_neoverse_n1():
    text = arm64.cpuinfo_text(cpus=3)
    entries = [e for e in text.split("\n\n") if e.strip()]
    assert len(entries) == 3
    fields = dict(line.split(":", 1) for line in entries[0].splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert (fields["CPU implementer"], fields["CPU part"], fields["CPU architecture"]) == ("0x41", "0xd0c", "8")
    assert {"asimd", "asimddp", "fphp"} <= set(fields["Features"].split())
    assert "model name" not in fields and "flags" not in fields  # nothing of an x86 cpuinfo


def test_wheel_pins_follow_the_host_and_cover_bookworm_glibc():
    pins = arm64.pins(["onnxruntime", "torch", "surely-not-installed-pkg"])
    assert pins[0] == f"onnxruntime=={version('onnxruntime')}"
    assert pins[1] == f"torch=={version('torch').split('+')[0]}" and "+" not in pins[1]
    assert pins[2] == "surely-not-installed-pkg"
    args = arm64._platform_args()
    plats = {args[i + 1] for i, a in enumerate(args) if a == "--platform"}
    assert {"manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "manylinux_2_36_aarch64"} <= plats
    assert not any("x86" in p or "2_37" in p for p in plats)


def _manifest_and_report(drift_max_abs: float, gate: dict | None):
    art = {"file": "model-onnx-fp32.onnx", "format": "onnx", "precision": "fp32",
           "gate": {"vs_reference": {}, **({"arm64": gate} if gate else {})}}
    drift = {"max_abs": drift_max_abs, "mean_abs": drift_max_abs / 3, "min_cosine": 1.0, "mean_cosine": 1.0, "top1_agreement": 1.0}
    row = {"artifact": "onnx-fp32", "file": art["file"], "reasons": [], "passed": True,
           "vs_reference": {"max_abs": 0.0}, "vs_build_time": drift}
    return {"artifacts": [art]}, {"passed": True, "artifacts": [row], "problems": []}


def test_drift_gate_from_the_manifest_fails_the_artifact_by_name():
    manifest, report = _manifest_and_report(3e-3, {"max_abs": 1e-3, "min_cosine": 0.999})
    arm64.apply_drift_gates(report, manifest)
    row = report["artifacts"][0]
    assert not report["passed"] and not row["passed"] and row["arm64_gate_source"] == "manifest"
    assert row["reasons"] == ["arm64 drift vs build machine: max-abs error 0.003 > 0.001"]
    manifest, report = _manifest_and_report(5e-4, {"max_abs": 1e-3, "min_cosine": 0.999})
    assert arm64.apply_drift_gates(report, manifest)["passed"]


def test_bundle_without_arm64_tolerances_uses_recipe_defaults():
    manifest, report = _manifest_and_report(5e-4, None)
    arm64.apply_drift_gates(report, manifest)
    row = report["artifacts"][0]
    assert row["arm64_gate"] == arm64.gate_for("fp32", recipe_mod.ParitySection())
    assert row["arm64_gate_source"].startswith("recipe defaults")
    assert not row["passed"] and "max-abs error 0.0005 > 0.0001" in row["reasons"][0]


def test_recipe_arm64_keys_and_the_manifest_records_them(tiny_build):
    r = recipe_mod.build({"parity": {"arm64_fp32_max_abs": 1e-3, "arm64_lowp_min_top1": 1}})
    assert r.parity.arm64_fp32_max_abs == 1e-3 and arm64.gate_for("int8", r.parity) == {"min_cosine": 0.99, "min_top1": 1.0}
    with pytest.raises(UsageError, match="parity.arm64_fp32_max_abs"):
        recipe_mod.build({"parity": {"arm64_fp32_max_abs": "tight"}})
    manifest = json.loads((tiny_build / "bundle" / "manifest.json").read_text())
    built = recipe_mod.load(tiny_build / "recipe.toml")
    assert manifest["versions"]["machine"] == platform.machine()
    for art in manifest["artifacts"]:
        assert art["gate"]["arm64"] == arm64.gate_for(art["precision"], built.parity)


def test_cli_arm64_errors_are_one_line(tiny_build, tmp_path):
    bundle = tiny_build / "bundle"
    cases = [
        (["verify", "--arm64", bundle, "--only", "executorch-fp32"], "--arm64-executorch"),
        (["verify", "--arm64", bundle, "--only", "onnx-int4"], "no artifact 'onnx-int4'"),
        (["verify", bundle, "--arm64-cache", tmp_path], "--arm64-cache needs --arm64"),
    ]
    for args, needle in cases:
        res = run_cli(*args)
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    res = run_cli("verify", "--arm64", bundle, "--arm64-cache", not_dir)
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_cli_arm64_without_qemu_says_what_to_install(tiny_build, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    # run_cli starts the venv's python by absolute path, so an empty PATH hides only the host tools.
    res = run_cli("verify", "--arm64", tiny_build / "bundle", env={"PATH": str(empty)})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "qemu-aarch64-static" in res.stderr and "apt-get install qemu-user-static debootstrap" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# -- under emulation ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def userland():
    """The cached userland with the ONNX venv (built on first use); skips where arm64 cannot be emulated.

    Session scope, and first in each test's arguments, so a skip comes before the tiny build is made.
    """
    ul = arm64.Userland(log=lambda msg: print(msg, flush=True))
    try:
        ul.ensure("onnx")
    except arm64.Arm64Unavailable as e:
        pytest.skip(f"arm64 emulation unavailable, ONNX arm64 verification NOT run: {e}")
    return ul


@pytest.mark.arm64
def test_arm64_verify_tiny_bundle_passes_with_small_drift(userland, tiny_build, tmp_path):
    out = tmp_path / "arm64.json"
    res = run_cli("verify", "--arm64", tiny_build / "bundle", "--json", out, "--arm64-cache", userland.cache)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verdict: PASS" in res.stdout and f"arm64 (neoverse-n1, emulated) vs build machine ({platform.machine()})" in res.stdout
    report = json.loads(out.read_text())
    assert report["passed"] and report["arm64"]["userland"]["machine"] == "aarch64"
    assert report["arm64"]["events"] == ["rootfs reused", "venv-onnx reused"]  # built by the fixture, reused here
    rows = report["artifacts"]
    assert [r["artifact"] for r in rows] == ["onnx-fp32"]  # .pte files need --arm64-executorch
    drift = rows[0]["vs_build_time"]
    assert drift["max_abs"] <= rows[0]["arm64_gate"]["max_abs"] and drift["top1_agreement"] == 1.0
    assert rows[0]["arm64_gate_source"] == "manifest"


@pytest.mark.arm64
def test_arm64_drift_beyond_tolerance_exits_1_naming_the_artifact(userland, bundle_copy):
    # Stand in for an arm64 kernel that disagrees with x86: shift the build machine's recorded
    # logits (and re-sign golden.json in the manifest, so the bundle itself still loads).
    golden_file = bundle_copy / "golden.json"
    golden = json.loads(golden_file.read_text())
    name = "model-onnx-fp32.onnx"
    golden["artifact_logits"][name][0][0] += 0.01
    golden_file.write_text(json.dumps(golden))
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["golden.json"] = hashlib.sha256(golden_file.read_bytes()).hexdigest()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli("verify", "--arm64", bundle_copy, "--arm64-cache", userland.cache)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "onnx-fp32" in res.stderr and "arm64 drift vs build machine: max-abs error" in res.stderr
    assert "verdict: FAIL" in res.stdout and "Traceback" not in res.stderr
