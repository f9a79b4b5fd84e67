"""Each build writes report.md with latency and size per artifact and an accuracy-versus-latency PNG,
into OUT and into the bundle (checksummed like every other file)."""
from __future__ import annotations

import json

from toolchain import report


def test_build_writes_report_and_plot(tiny_build):
    md = (tiny_build / "report.md").read_text()
    assert "## Latency and size" in md and "![accuracy versus latency](accuracy_latency.png)" in md
    for name in ("| original | pytorch | fp32 |", "| executorch-fp32 | executorch |", "| onnx-fp32 | onnx |"):
        assert name in md
    for d in (tiny_build, tiny_build / "bundle"):
        png = d / "accuracy_latency.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (d / "report.md").stat().st_size > 500
    manifest = json.loads((tiny_build / "bundle" / "manifest.json").read_text())
    assert "accuracy_latency.png" in manifest["files"] and "report.md" in manifest["files"]
    summary = json.loads((tiny_build / "summary.json").read_text())
    # How each model was trained: full fine-tuning of the original trains every weight.
    t = summary["training"]["original"]
    assert t["method"] == "full" and t["trainable_fraction"] == 1.0 and t["trainable_params"] == summary["original"]["params"]
    assert t["step_seconds"] > 0 and t["peak_memory_mb"] > 0 and manifest["training"]["original"]["method"] == "full"
    assert "## Training" in md and "| original | full |" in md and "| student | full |" in md
    rows = {r["name"]: r for r in summary["latency"]}
    arts = {f"{a['format']}-{a['precision']}" for a in manifest["artifacts"]}
    assert set(rows) == {"original"} | arts and {"executorch-fp32", "onnx-fp32"} <= arts
    for r in rows.values():
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["bytes"] > 0 and r["batch"] == 1


def test_plot_and_section_skip_cleanly_without_latency(tmp_path):
    summary = {"artifacts": [], "original": {"val_accuracy": 0.5}}
    assert report.write_accuracy_latency_plot(summary, tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()
    assert report.latency_lines(summary) == []
