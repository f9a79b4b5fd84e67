"""Docs: a short README that links every page, results regenerated from JSON, the site builds."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_short_and_links_every_docs_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    linked = set(re.findall(r"\]\(docs/([\w./-]+\.md)", text))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, f"not linked from README: {sorted(pages - linked)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ". .venv/bin/activate && python -m pytest -q" in readme
    assert re.search(r"^python -m pytest -q\b", ci, flags=re.M)


def test_results_page_is_generated_from_json():
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_results.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert "## Historical (hand-recorded)" in page
    for f in (ROOT / "docs" / "results").glob("*.json"):
        assert f"docs/results/{f.name}" in page


def test_gen_results_files_a_bench_json(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_results
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(gen_results, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(gen_results, "HISTORICAL", tmp_path / "results" / "historical.md")
    src = tmp_path / "bench.json"
    src.write_text('[{"name": "onnx-int8", "format": "onnx", "batch": 1, "seq_len": 64, "p50_ms": 2.5, "p90_ms": 3.0, '
                   '"p99_ms": 4.0, "throughput": 400.0, "load_ms": 80, "peak_rss_mb": 120, "bytes": 9940000}]')
    dest = gen_results.add("bench", src, "toolformer bench b --json bench.json", "tiny", None, None)
    page = gen_results.page()
    assert dest.is_file() and "`toolformer bench b --json bench.json`" in page
    assert "| onnx-int8 | onnx | 1 | 64 | 2.50 | 3.00 | 4.00 | 400.0 | 80 | 120 | 9.94 |" in page


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs not installed")
def test_mkdocs_site_builds_strict(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", **__import__("os").environ})
    assert res.returncode == 0, res.stdout + res.stderr
