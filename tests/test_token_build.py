"""Token classification through every stage on a tiny random BERT: build (original, distilled + pruned
student, ExecuTorch and ONNX fp32/int8), parity, bundle, verify, predict, runtime_py entities/tags, bench."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from helpers import make_tiny_model_dir, run_cli, tiny_recipe_dict

ROOT = Path(__file__).resolve().parent.parent
NER = ROOT / "samples" / "ner_tiny"


def ner_recipe(model_dir: Path, out: Path, **sections) -> dict:
    d = tiny_recipe_dict(model_dir, out, data={"task": "token-classification", "train": str(NER / "train.conll"),
                                               "validation": str(NER / "dev.jsonl"), "max_train_samples": 0},
                         train={"epochs": 2.0, "learning_rate": 3e-3})
    for sec, vals in sections.items():
        d.setdefault(sec, {}).update(vals)
    return d


@pytest.fixture(scope="module")
def ner_model_dir(tmp_path_factory) -> Path:
    from toolchain.tasks.token import read_conll

    corpus = [" ".join(w) for w, _, _ in read_conll(NER / "train.conll")]
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-ner") / "model", layers=3, corpus=corpus)


@pytest.fixture(scope="module")
def ner_build(ner_model_dir, tmp_path_factory) -> Path:
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    out = tmp_path_factory.mktemp("ner-build") / "out"
    r = ner_recipe(ner_model_dir, out, export={"precisions": ["fp32", "fp16", "int8"]},
                   student={"num_layers": 1}, compress={"prune_ffn": 0.25, "prune_importance": "gradient", "importance_batches": 2})
    build(recipe_mod.build(r))
    return out


def test_build_writes_a_token_bundle(ner_build):
    summary = json.loads((ner_build / "summary.json").read_text())
    assert summary["passed"] and summary["task"] == "token-classification" and summary["metric"] == "entity_f1"
    assert summary["labels"][0] == "O" and "B-PER" in summary["labels"]
    ents = summary["shipped"]["validation_entities"]
    assert ents["entities"] > 40 and set(ents) >= {"f1", "precision", "recall", "token_accuracy", "per_type"}
    stages = [s["stage"] for s in summary["stages"]]
    assert "student: prune" in stages and "student: distil" in stages
    keys = {a["artifact"] for a in summary["artifacts"]}
    assert keys == {"executorch-fp32", "executorch-int8", "onnx-fp32", "onnx-fp16", "onnx-int8"}
    for a in summary["artifacts"]:
        assert a["metric"] == "entity_f1" and a["vs_reference"]["positions"] > 0
        assert a["vs_original"]["entities"] == ents["entities"]
        if a["artifact"].endswith("fp32"):
            assert a["vs_reference"]["max_abs"] < 1e-4
    man = json.loads((ner_build / "bundle" / "manifest.json").read_text())
    assert man["task"]["type"] == "token-classification"
    assert man["outputs"][0]["shape"] == ["batch", "sequence", len(summary["labels"])]


def test_artifacts_give_batch_seq_tags_at_other_shapes(ner_build):
    import runtime_py
    from runtime_py.token import encode_words

    sents = [["Angela", "Merkel", "visited", "Siemens", "in", "Erlangen", "."], ["Prices", "were", "unchanged", "."],
             ["Omar"]]
    for key in ("onnx-fp32", "executorch-fp32", "onnx-fp16", "onnx-int8", "executorch-int8"):
        m = runtime_py.load(ner_build / "bundle", artifact=key)
        for n in (1, 3):
            arrays, _, _ = encode_words(m.encoder, sents[:n])
            assert m.run(arrays).shape == (n, arrays["input_ids"].shape[1], len(m.labels))
        arrays, _, _ = encode_words(m.encoder, sents, pad_to=29)
        assert m.run(arrays).shape == (3, 29, len(m.labels))


def test_verify_predict_and_runtime(ner_build, tmp_path):
    import runtime_py

    p = run_cli("verify", ner_build / "bundle")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("PASS") >= 5
    m = runtime_py.load(ner_build / "bundle")
    text = "Angela Merkel visited the Siemens plant in Erlangen."
    [ents] = m.entities([text])
    for e in ents:
        assert text[e["start"]:e["end"]] == e["text"] and e["type"] in ("PER", "ORG", "LOC", "MISC") and 0 < e["score"] <= 1
    tags = m.tags([["Angela", "Merkel", "visited"], ["Berlin"]])
    assert [len(t) for t in tags] == [3, 1] and all(t in m.labels for row in tags for t in row)
    with pytest.raises(TypeError, match="entities"):
        m.predict([text])
    p = run_cli("predict", ner_build / "bundle", text, "--json")
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout.splitlines()[0])
    assert row["text"] == text and row["entities"] == ents
    p = run_cli("predict", ner_build / "bundle", text)
    assert p.returncode == 0 and p.stdout.startswith(text)


def test_verify_catches_a_tampered_token_artifact(ner_build, tmp_path):
    """Swapping in the int8 artifact under the fp32 name (checksums recomputed) must fail verify."""
    from runtime_py.bundle import sha256_file

    b = tmp_path / "bundle"
    shutil.copytree(ner_build / "bundle", b)
    man = json.loads((b / "manifest.json").read_text())
    f32 = next(a for a in man["artifacts"] if (a["format"], a["precision"]) == ("onnx", "fp32"))
    i8 = next(a for a in man["artifacts"] if (a["format"], a["precision"]) == ("onnx", "int8"))
    shutil.copy(b / i8["file"], b / f32["file"])
    f32["sha256"] = man["files"][f32["file"]] = sha256_file(b / f32["file"])
    (b / "manifest.json").write_text(json.dumps(man))
    p = run_cli("verify", b)
    assert p.returncode == 1 and "onnx-fp32" in p.stdout and "FAIL" in p.stdout


def test_bench_runs_on_a_token_bundle(ner_build):
    # The original and one artifact per runtime (each subject is a process of its own).
    p = run_cli("bench", ner_build / "bundle", "--batch-sizes", "1", "--seq-lens", "16", "--iters", "3", "--warmup", "1",
                "--no-progress", "--only", "original", "--only", "executorch-int8", "--only", "onnx-int8")
    assert p.returncode == 0, p.stderr
    assert all(s in p.stdout for s in ("original", "executorch-int8", "onnx-int8")) and "onnx-fp16" not in p.stdout


def test_cli_refuses_bad_token_data_with_one_line(tmp_path):
    """Through the CLI: exit 2, one line on stderr, nothing written."""
    tr = tmp_path / "tr.jsonl"
    tr.write_text('{"words": ["a", "b"], "tags": ["O"]}\n', encoding="utf-8")
    out = tmp_path / "out"
    p = run_cli("build", "--task", "token-classification", "--train", tr, "--out", out)
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "2 words but 1 tags" in lines[0]
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


# --- debug, export and serve on token-classification checkpoints and bundles ------------------------------

PERTURBED = "bert.encoder.layer.0.intermediate.dense.weight"


def _cli(*args):
    """`toolformer ARGS` in this process (click's CliRunner): exit code and everything it printed."""
    from click.testing import CliRunner

    from toolchain.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def test_debug_judges_token_artifacts_at_word_positions(ner_build, tmp_path):
    """`debug` on a token ONNX artifact: clean vs its student it shows export noise only; vs a copy of the
    student whose (only) layer's FFN carries strong noise it names that layer and module (golden inputs, then --texts raw text)."""
    import torch
    from safetensors.torch import load_file, save_file

    art = ner_build / "bundle" / "model-onnx-fp32.onnx"
    code, text = _cli("debug", art, "--reference", ner_build / "student", "--json", tmp_path / "clean.json")
    assert code == 0, text
    clean = json.loads((tmp_path / "clean.json").read_text())
    assert clean["task"] == "token-classification" and clean["positions"] > 0 and "word positions" in text
    assert clean["logits"]["max_abs"] < 1e-4 and clean["logits"]["positions"] == clean["positions"]
    bad = tmp_path / "perturbed"
    shutil.copytree(ner_build / "student", bad)
    sd = load_file(bad / "model.safetensors")
    w = sd[PERTURBED]
    sd[PERTURBED] = w + torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 3 * w.std()
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "t.txt").write_text("Angela Merkel visited the Siemens plant in Erlangen.\nPrices were unchanged, said Omar.\n")
    for extra in ((), ("--texts", tmp_path / "t.txt")):
        code, text = _cli("debug", art, "--reference", bad, "--json", tmp_path / "bad.json", *extra)
        assert code == 0, text
        rep = json.loads((tmp_path / "bad.json").read_text())
        assert rep["grows_most"] == "bert.encoder.layer.0", text
        assert rep["worst"][0]["module"] == PERTURBED.rsplit(".", 1)[0], text
        assert max(r["growth"] for r in clean["modules"]) < rep["worst"][0]["growth"] / 5
    assert rep["examples"] == 2 and rep["positions"] == 16  # 9 + 7 words, as entities() splits them


def test_export_token_checkpoint_is_gated(ner_build, tmp_path):
    """`export` of a token checkpoint: int8 ONNX judged at word positions with entity F1; a failed gate writes nothing."""
    out = tmp_path / "ner-int8.onnx"
    code, text = _cli("export", ner_build / "student", "--target", "onnx", "--precision", "int8", "--out", out)
    assert code == 0, text
    assert "onnx-int8: entity F1" in text and "PASS" in text and out.is_file()
    import runtime_py.backends as backends
    from runtime_py.token import encode_words
    from runtime_py.tokenize import TextEncoder

    enc = TextEncoder(ner_build / "bundle" / "tokenizer.json", 32)
    arrays, _, _ = encode_words(enc, [["Angela", "Merkel", "visited", "Erlangen"], ["Omar"]])
    assert backends.open_backend(out, "onnx").run(arrays).shape == (2, arrays["input_ids"].shape[1], 9)
    failed = tmp_path / "never.onnx"
    code, text = _cli("export", ner_build / "student", "--target", "onnx", "--out", failed, "--set", "parity.fp32_max_abs=0.0")
    assert code == 1 and "parity gate failed" in text and "max" in text, text
    assert not failed.exists() and not list(tmp_path.glob(".never.onnx.*"))


@contextmanager
def _server(bundle: Path, log: Path, *args):
    """`toolformer serve BUNDLE ARGS` in a subprocess on a free 127.0.0.1 port, no API key; yields its URL once ready."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "TOOLFORMER_API_KEY"}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "serve", str(bundle), "--name", "ner", *map(str, args),
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited {proc.returncode}: {log.read_text()[-2000:]}"
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _relabelled(bundle: Path, dest: Path) -> Path:
    """A copy of `bundle` whose tags 'O' and 'B-PER' trade names (checksums recomputed). The tiny random model
    tags every word 'O' (entity F1 0), so the copy tags most words as one-word PER entities: spans to check."""
    from runtime_py.bundle import sha256_file

    shutil.copytree(bundle, dest)
    man = json.loads((dest / "manifest.json").read_text())
    i, j = man["labels"].index("O"), man["labels"].index("B-PER")
    man["labels"][i], man["labels"][j] = "B-PER", "O"
    (dest / "labels.json").write_text(json.dumps(man["labels"]))
    man["files"]["labels.json"] = sha256_file(dest / "labels.json")
    (dest / "manifest.json").write_text(json.dumps(man))
    return dest


def test_serve_token_bundle(ner_build, tmp_path):
    """`serve` on a token bundle: /v1/predict gives entities with character offsets, V2 metadata declares logits
    (-1, -1, tags) and entities, V2 infer gives each text's per-piece logits (zeros past its own length)."""
    import httpx

    import runtime_py
    from runtime_py.token import analyse

    from toolchain.tasks.token import read_conll

    # Sentences with punctuation glued on as users type it ("Jensen (Toyota", "title.").
    texts = [" ".join(w).replace(" .", ".").replace(" ,", ",").replace("( ", "(") for w, _, _ in read_conll(NER / "train.conll")[:6]]
    bundle = _relabelled(ner_build / "bundle", tmp_path / "bundle")
    m = runtime_py.load(bundle, artifact="onnx-fp32")
    expected = analyse(m, texts)
    assert sum(len(ents) for ents, _ in expected) >= 10
    n_tags = len(m.labels)
    with _server(bundle, tmp_path / "server.log", "--artifact", "onnx-fp32", "--max-batch-size", 4) as url:
        meta = httpx.get(url + "/v2/models/ner").json()
        assert meta["parameters"]["task"] == "token-classification"
        assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, -1, n_tags]},
                                   {"name": "entities", "datatype": "BYTES", "shape": [-1]}]
        r = httpx.post(url + "/v1/predict", json={"texts": texts}, timeout=60)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["entities"] for p in preds] == [ents for ents, _ in expected]
        for t, p in zip(texts, preds):
            for e in p["entities"]:
                assert t[e["start"]:e["end"]] == e["text"] and e["type"] in ("PER", "ORG", "LOC", "MISC")
        body = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts[:3]}]}
        r = httpx.post(url + "/v2/models/ner/infer", json=body, timeout=60)
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}
        lengths = r.json()["parameters"]["sequence_lengths"]
        assert lengths == [lg.shape[0] for _, lg in expected[:3]]
        assert out["logits"]["shape"] == [3, max(lengths), n_tags]
        got = np.asarray(out["logits"]["data"], dtype=np.float32).reshape(out["logits"]["shape"])
        for i, (_, lg) in enumerate(expected[:3]):
            np.testing.assert_allclose(got[i, :lengths[i]], lg, atol=1e-5)
            assert not got[i, lengths[i]:].any()
        assert [json.loads(x) for x in out["entities"]["data"]] == [ents for ents, _ in expected[:3]]
        r = httpx.post(url + "/v2/models/ner/infer", json={**body, "outputs": [{"name": "label"}]})
        assert r.status_code == 400 and r.json() == {"error": "unknown output 'label'; this model gives logits, entities"}
