"""`toolformer serve`: the real server in a subprocess on a free 127.0.0.1 port, spoken to over HTTP with httpx.

The bundle is `tiny_onnx_build` (ONNX only, max_seq_len 16 so longer texts get cut); expected outputs come
from runtime_py on the same texts.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers import ROOT

KEY = "test-key-0123456789abcdef"
KEY2 = "second-key-fedcba9876543210"
TEXTS = ["where is my parcel", "I want a refund for the broken kettle", "how do I reset my password",
         "cancel my order please", "the delivery was late again", "can I change the address on my account"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def log_lines(self) -> list[dict]:
        return [json.loads(ln) for ln in self.log.read_text().splitlines() if ln.startswith("{")]


@contextmanager
def server(tmp_path: Path, *args, key: str | None = KEY, ready_timeout: float = 120):
    """`python -m toolchain.cli serve ARGS --port FREE`; yields once /v2/health/ready answers 200."""
    port = free_port()
    env = dict(os.environ)
    env.pop("TOOLFORMER_API_KEY", None)
    if key:
        env["TOOLFORMER_API_KEY"] = key
    log = tmp_path / f"server-{port}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "serve", *map(str, args), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after {ready_timeout} s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Server(proc, url, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def infer_body(texts, **extra) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}], **extra}


@pytest.fixture(scope="module")
def bundle(tiny_onnx_build) -> Path:
    return tiny_onnx_build / "bundle"


@pytest.fixture(scope="module")
def reference(bundle):
    import runtime_py

    return runtime_py.load(bundle)


@pytest.fixture(scope="module")
def srv(bundle, tmp_path_factory):
    """The shared server: two names for the bundle, small limits so that tests can reach them."""
    tmp = tmp_path_factory.mktemp("serve")
    keyfile = tmp / "keys.txt"
    keyfile.write_text(f"# team keys\n{KEY2}\n\n")
    with server(tmp, bundle, "--name", "tiny", "--bundle", f"twin={bundle}", "--api-key-file", keyfile,
                "--max-batch-size", 8, "--max-queue-delay-us", 3000, "--max-body-bytes", 65536, "--max-texts", 16,
                "--max-text-chars", 2000) as s:
        yield s


def assert_one_line_error(r: httpx.Response, status: int, contains: str = "") -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and "\n" not in body["error"], body
    assert contains.lower() in body["error"].lower(), body
    return body["error"]


# --- protocol shapes ----------------------------------------------------------------------------

def test_health_and_metadata_shapes(srv, reference):
    assert httpx.get(srv.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(srv.url + "/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(srv.url + "/v2/models/tiny", headers=auth()).json()
    n = len(reference.labels)
    assert meta["name"] == "tiny" and meta["versions"] == ["onnx-fp32"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, n]},
                               {"name": "label", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["labels"] == reference.labels and meta["parameters"]["max_seq_len"] == 16
    assert httpx.get(srv.url + "/v2/models/twin/ready", headers=auth()).json() == {"name": "twin", "ready": True}
    assert httpx.get(srv.url + "/v2").json()["name"] == "toolformer"


def test_infer_and_predict_match_runtime(srv, reference):
    texts = TEXTS[:3]
    r = httpx.post(srv.url + "/v2/models/tiny/infer", headers=auth(), json=infer_body(texts, id="req-1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "tiny" and body["model_version"] == "onnx-fp32" and body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    n = len(reference.labels)
    assert out["logits"]["datatype"] == "FP32" and out["logits"]["shape"] == [3, n]
    assert out["label"]["datatype"] == "BYTES" and out["label"]["shape"] == [3]
    want = reference.logits(texts)
    got = np.asarray(out["logits"]["data"], dtype=np.float32).reshape(3, n)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert out["label"]["data"] == [p["label"] for p in reference.predict(texts)]
    # Only the outputs asked for; [n, 1] shapes and nested data are the protocol's too.
    body = infer_body([[t] for t in texts], outputs=[{"name": "label"}])
    body["inputs"][0]["shape"] = [3, 1]
    r = httpx.post(srv.url + "/v2/models/twin/infer", headers=auth(KEY2), json=body)
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]
    # /v1/predict: labels and scores as runtime_py's Model.predict gives them.
    r = httpx.post(srv.url + "/v1/predict", headers=auth(), json={"texts": texts, "model": "tiny"})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    for p, q in zip(preds, reference.predict(texts)):
        assert p["label"] == q["label"] and abs(p["score"] - q["score"]) < 1e-6


# --- protection ---------------------------------------------------------------------------------

def test_api_keys(srv):
    url = srv.url + "/v2/models/tiny/infer"
    r = httpx.post(url, json=infer_body(["hi"]))
    assert_one_line_error(r, 401, "missing API key")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_one_line_error(httpx.post(url, json=infer_body(["hi"]), headers={"Authorization": "Basic abc"}), 401, "malformed")
    assert_one_line_error(httpx.post(url, json=infer_body(["hi"]), headers=auth("wrong-key-0123456789")), 403, "invalid")
    assert_one_line_error(httpx.get(srv.url + "/v2/models/tiny"), 401)
    assert_one_line_error(httpx.post(srv.url + "/v1/predict", json={"texts": ["hi"]}), 401)
    # Unknown models are not revealed to a caller without a key.
    assert_one_line_error(httpx.get(srv.url + "/v2/models/nope"), 401)
    for key in (KEY, KEY2):  # the environment's key and the key file's
        assert httpx.post(url, json=infer_body(["hi"]), headers=auth(key)).status_code == 200
    for open_path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert httpx.get(srv.url + open_path).status_code == 200


BAD = [
    ("not-json", b"{inputs:", 400, "not valid JSON"),
    ("not-an-object", b"[1, 2]", 400, "JSON object"),
    ("no-inputs", {"inputs": []}, 400, "non-empty"),
    ("wrong-datatype", {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, 400, "BYTES"),
    ("shape-mismatch", {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}]}, 400, "shape"),
    ("bad-shape", {"inputs": [{"name": "text", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}, 400, "shape"),
    ("non-string-data", {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 3]}]}, 400, "string"),
    ("unknown-input", {"inputs": [{"name": "sentence", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, 400, "unknown input"),
    ("pair-to-single", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                                   {"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": ["b"]}]}, 400, "unknown input"),
    ("twice", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}] * 2}, 400, "twice"),
    ("unknown-output", infer_body(["a"], outputs=[{"name": "embedding"}]), 400, "unknown output"),
    ("zero-texts", {"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}, 400, "no texts"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_infer_requests(srv, case):
    _, body, status, contains = case
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    assert_one_line_error(httpx.post(srv.url + "/v2/models/tiny/infer", headers=auth(), **kw), status, contains)


def test_bad_routes_and_predict_bodies(srv):
    assert_one_line_error(httpx.post(srv.url + "/v2/models/nope/infer", headers=auth(), json=infer_body(["a"])), 404, "no model 'nope'")
    assert_one_line_error(httpx.get(srv.url + "/v2/models/nope", headers=auth()), 404, "tiny, twin")
    assert_one_line_error(httpx.get(srv.url + "/v3/anything"), 404, "no route")
    assert_one_line_error(httpx.get(srv.url + "/v2/models/tiny/infer", headers=auth()), 405)
    assert_one_line_error(httpx.post(srv.url + "/v2/models/tiny/versions/onnx-int8/infer", headers=auth(), json=infer_body(["a"])), 404, "version")
    p = srv.url + "/v1/predict"
    assert_one_line_error(httpx.post(p, headers=auth(), json={"texts": ["a"]}), 400, "several models")
    assert_one_line_error(httpx.post(p, headers=auth(), json={"texts": "a", "model": "tiny"}), 400, "list of strings")
    assert_one_line_error(httpx.post(p, headers=auth(), json={"text": ["a"], "model": "tiny"}), 400, "unknown field")
    assert_one_line_error(httpx.post(p, headers=auth(), json={"texts": ["a"], "text_pairs": ["b"], "model": "tiny"}), 400, "single texts")


def test_limits_and_truncation(srv, reference):
    url = srv.url + "/v2/models/tiny/infer"
    big = infer_body(["word " * 3000] * 5)  # > 64 KiB body
    assert_one_line_error(httpx.post(url, headers=auth(), json=big), 413, "limit of 65536")
    assert_one_line_error(httpx.post(url, headers=auth(), json=infer_body(["a"] * 17)), 413, "17 texts")
    assert_one_line_error(httpx.post(url, headers=auth(), json=infer_body(["a" * 2001])), 413, "2001 characters")
    # A text longer than the bundle's 16 tokens is cut as in training (the same logits as runtime_py), and counted.
    long = "my parcel was sent to the wrong address and nobody answers the phone when I call about the refund"
    assert reference.encoder.count_truncated([long]) == 1
    before = metric_value(srv, "toolformer_truncated_texts_total", model="tiny")
    r = httpx.post(url, headers=auth(), json=infer_body([long, "hi"]))
    assert r.status_code == 200 and r.json()["parameters"]["truncated_texts"] == 1, r.text
    got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
    np.testing.assert_allclose(got, reference.logits([long, "hi"]), rtol=0, atol=1e-5)
    assert metric_value(srv, "toolformer_truncated_texts_total", model="tiny") == before + 1


# --- concurrency and batching -------------------------------------------------------------------

async def _fire(url: str, bodies: list, headers: dict, concurrency: int) -> list:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(body):
            async with sem:
                return await client.post(url, json=body, headers=headers)
        return await asyncio.gather(*(one(b) for b in bodies), return_exceptions=True)


def test_concurrent_requests_get_exact_outputs(srv, reference):
    rng = np.random.default_rng(0)
    words = " ".join(TEXTS).split()
    requests = [[" ".join(rng.choice(words, size=rng.integers(1, 20))) for _ in range(rng.integers(1, 4))] for _ in range(96)]
    runs_before = metric_value(srv, "toolformer_batch_size_count", model="tiny")
    rs = asyncio.run(_fire(srv.url + "/v2/models/tiny/infer", [infer_body(t) for t in requests], auth(), 32))
    for texts, r in zip(requests, rs):
        assert not isinstance(r, Exception), r
        assert r.status_code == 200, r.text
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        want = reference.logits(texts)  # padded to this request's own longest text: other batch company than the server's
        np.testing.assert_allclose(np.asarray(out["logits"], np.float32).reshape(want.shape), want, rtol=0, atol=1e-5)
        assert out["label"] == [p["label"] for p in reference.predict(texts)]
    runs = metric_value(srv, "toolformer_batch_size_count", model="tiny") - runs_before
    assert 0 < runs < len(requests), f"{runs} model runs for {len(requests)} concurrent requests: no batching happened"


def metric_value(srv, name: str, **labels) -> float:
    """One sample of /metrics (0 when the labelled series does not exist yet)."""
    text = httpx.get(srv.url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in series for k, v in labels.items()) or not want:
                return float(value)
    return 0.0


def test_metrics_present(srv):
    httpx.post(srv.url + "/v2/models/tiny/infer", headers=auth(), json=infer_body(["hi"]))
    text = httpx.get(srv.url + "/metrics").text
    for name in ("toolformer_request_duration_seconds_bucket", "toolformer_queue_duration_seconds_bucket",
                 "toolformer_batch_size_bucket", "toolformer_requests_total", "toolformer_requests_in_flight",
                 "toolformer_model_info", "toolformer_truncated_texts_total", "toolformer_inference_duration_seconds_bucket"):
        assert name in text, name
    assert re.search(r'toolformer_requests_total\{code="200",endpoint="infer",model="tiny"\} [1-9]', text), text[:3000]
    assert 'toolformer_model_info{artifact="onnx-fp32"' in text


def test_request_log_has_no_inputs(srv):
    secret = "my email is jane.secret@example.com"
    assert httpx.post(srv.url + "/v1/predict", headers=auth(), json={"texts": [secret], "model": "tiny"}).status_code == 200
    time.sleep(0.2)
    log = srv.log.read_text()
    assert "jane.secret" not in log and "my email" not in log
    line = [d for d in srv.log_lines() if d.get("path") == "/v1/predict" and d.get("status") == 200][-1]
    assert line["model"] == "tiny" and line["texts"] == 1 and "latency_ms" in line and "inputs" not in line


# --- queue limits, timeouts, shutdown (servers of their own) --------------------------------------

def test_full_queue_answers_503_with_retry_after(bundle, reference, tmp_path):
    texts = [f"{t} number {i}" for i in range(200) for t in TEXTS[:1]]
    name = "m"
    with server(tmp_path, bundle, "--name", name, "--max-batch-size", 1, "--max-queue-size", 1, "--max-texts", 256) as s:
        rs = asyncio.run(_fire(s.url + f"/v2/models/{name}/infer", [infer_body(texts)] * 48, auth(), 48))
        codes = [r.status_code for r in rs]
        busy = [r for r in rs if r.status_code == 503]
        assert set(codes) <= {200, 503} and busy, codes
        for r in busy:
            assert r.headers["retry-after"] == "1"
            assert_one_line_error(r, 503, "busy")
        want = reference.logits(texts)
        for r in rs:
            if r.status_code == 200:
                np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(want.shape), want, atol=1e-5, rtol=0)
        assert metric_value(s, "toolformer_queue_rejections_total", model=name) == len(busy)
    print(f"\nqueue of 1, 48 concurrent requests: {codes.count(200)} answered, {len(busy)} refused with 503")


def test_request_timeout_and_masked_input_log(bundle, tmp_path):
    with server(tmp_path, bundle, "--name", "m", "--max-queue-delay-us", 2_000_000, "--queue-delay-policy", "always",
                "--request-timeout-s", 0.2, "--log-inputs") as s:
        t0 = time.monotonic()
        r = httpx.post(s.url + "/v1/predict", headers=auth(), json={"texts": ["mail bob@example.org or call +1 555 123 4567"]})
        assert_one_line_error(r, 504, "within 0.2 s")
        assert time.monotonic() - t0 < 1.5
        time.sleep(0.2)
        line = [d for d in s.log_lines() if d.get("path") == "/v1/predict"][-1]
        assert line["status"] == 504 and line["inputs"] == ["mail <email> or call <phone>"], line
        assert "bob@example.org" not in s.log.read_text()


def test_sigterm_finishes_in_flight_refuses_new_exits_0(bundle, reference, tmp_path):
    """Requests held in the batch queue (0.5 s gathering delay) when SIGTERM comes all get full answers."""
    with server(tmp_path, bundle, "--name", "m", "--max-batch-size", 64, "--max-queue-delay-us", 500_000,
                "--queue-delay-policy", "always") as s:
        async def scenario():
            async with httpx.AsyncClient(timeout=30) as client:
                tasks = [asyncio.create_task(client.post(s.url + "/v2/models/m/infer", headers=auth(), json=infer_body([t])))
                         for t in TEXTS * 2]
                await asyncio.sleep(0.2)  # all sent, none answered: they wait for the batch to fill
                assert not any(t.done() for t in tasks)
                s.proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks, return_exceptions=True)
        rs = asyncio.run(scenario())
        assert s.proc.wait(30) == 0, s.log.read_text()[-2000:]
        for t, r in zip(TEXTS * 2, rs):
            assert not isinstance(r, Exception) and r.status_code == 200, r
            np.testing.assert_allclose(r.json()["outputs"][0]["data"], reference.logits([t])[0], atol=1e-5, rtol=0)
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/v2/health/live", timeout=2)
        assert "Traceback" not in s.log.read_text()
        assert any(d.get("event") == "stopped" for d in s.log_lines())


def test_sigterm_under_load_loses_nothing(bundle, reference, tmp_path):
    """Eight clients in a loop; SIGTERM mid-way: every answer that came is complete and right; the rest were refused."""
    with server(tmp_path, bundle, "--name", "m") as s:
        stats = {"ok": 0, "refused": 0}

        async def client_loop(client, i):
            for j in range(400):  # bounded
                text = TEXTS[(i + j) % len(TEXTS)]
                try:
                    r = await client.post(s.url + "/v2/models/m/infer", headers=auth(), json=infer_body([text]))
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                    stats["refused"] += 1
                    return
                assert r.status_code == 200, r.text
                np.testing.assert_allclose(r.json()["outputs"][0]["data"], reference.logits([text])[0], atol=1e-5, rtol=0)
                stats["ok"] += 1

        async def scenario():
            async with httpx.AsyncClient(timeout=30) as client:
                tasks = [asyncio.create_task(client_loop(client, i)) for i in range(8)]
                await asyncio.sleep(1.0)
                s.proc.send_signal(signal.SIGTERM)
                await asyncio.gather(*tasks)
        asyncio.run(scenario())
        assert s.proc.wait(30) == 0
        assert stats["ok"] > 0 and stats["refused"] == 8, stats
    print(f"\nSIGTERM under load: {stats['ok']} complete answers, then all 8 clients refused; exit 0")


# --- start-up refusals and torch-freedom ----------------------------------------------------------

def _serve_cli(*args, env=None):
    e = {k: v for k, v in os.environ.items() if k != "TOOLFORMER_API_KEY"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "toolchain.cli", "serve", *map(str, args), "--port", str(free_port())],
                          cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)


def test_tampered_bundle_is_refused_at_start(bundle, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(bundle, b)
    onnx = next(b.glob("*.onnx"))
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    r = _serve_cli(b)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve") and "checksum mismatch" in lines[0], r.stderr


@pytest.mark.parametrize("args, env, expect", [
    (["--bundle", "noequals"], None, "expected NAME=DIR"),
    (["/nonexistent/bundle"], None, "not a bundle directory"),
    (["BUNDLE", "--host", "0.0.0.0"], None, "without an API key"),
    (["BUNDLE"], {"TOOLFORMER_API_KEY": "short"}, "shorter than 16"),
    (["BUNDLE", "--bundle", "bad name=BUNDLE"], None, "model name"),
    (["BUNDLE", "--name", "x", "--bundle", "x=BUNDLE"], None, "given twice"),
], ids=["bundle-syntax", "missing-bundle", "public-host-without-key", "short-key", "bad-name", "duplicate-name"])
def test_start_errors_are_one_line_exit_2(bundle, args, env, expect):
    r = _serve_cli(*[a.replace("BUNDLE", str(bundle)) for a in args], env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_onnx_bundle_serves_without_torch(bundle):
    """The whole serving stack (runtime_py.serve, FastAPI, uvicorn, prometheus_client) on an ONNX bundle imports no torch."""
    code = f"""
import sys, json
import uvicorn  # noqa: F401  (the server process imports it too)
from starlette.testclient import TestClient
from runtime_py.serve.config import ServeConfig
from runtime_py.serve.server import load_models
from runtime_py.serve.app import create_app
cfg = ServeConfig(bundles=(("m", {str(bundle)!r}),))
with TestClient(create_app(load_models(cfg), cfg, [])) as c:
    r = c.post("/v1/predict", json={{"texts": ["where is my parcel"]}})
    assert r.status_code == 200, r.text
print(json.dumps({{"torch": "torch" in sys.modules, "toolchain": any(m.split(".")[0] in ("toolchain", "targets") for m in sys.modules)}}))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"torch": False, "toolchain": False}


def test_two_workers_answer_and_share_metrics(bundle, reference, tmp_path):
    """--workers 2: uvicorn processes behind one port; /metrics sums all of them (prometheus multiprocess mode)."""
    with server(tmp_path, bundle, "--name", "m", "--workers", 2) as s:
        rs = asyncio.run(_fire(s.url + "/v2/models/m/infer", [infer_body([t]) for t in TEXTS * 4], auth(), 8))
        for t, r in zip(TEXTS * 4, rs):
            assert r.status_code == 200, r
            np.testing.assert_allclose(r.json()["outputs"][0]["data"], reference.logits([t])[0], atol=1e-5, rtol=0)
        assert metric_value(s, "toolformer_texts_total", model="m") == len(TEXTS) * 4
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0


def test_deploy_files_match_the_server():
    """The Kubernetes/KServe manifests probe routes the app has, on the port the image serves, with its entry point."""
    import yaml

    from runtime_py.serve.__main__ import build_parser

    deploy = ROOT / "docs" / "deploy"
    docker = (deploy / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "runtime_py.serve"]' in docker and "EXPOSE 8080" in docker
    assert "COPY runtime_py/" in docker and "torch" not in docker.split("FROM", 1)[1].split("COPY")[0]
    docs = {}
    for f in sorted((deploy / "kubernetes").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            docs[d["kind"]] = d
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"} <= set(docs)
    containers = [docs["Deployment"]["spec"]["template"]["spec"]["containers"][0], docs["InferenceService"]["spec"]["predictor"]["containers"][0]]
    for c in containers:
        args = build_parser().parse_args(c["args"])  # the server accepts the manifest's arguments
        assert args.port == 8080 and args.host == "0.0.0.0"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["env"][0]["name"] == "TOOLFORMER_API_KEY"
    svc = docs["Service"]["spec"]
    assert svc["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    grace = docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > build_parser().parse_args(["x"]).graceful_timeout_s


@pytest.fixture(scope="module")
def pair_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny sentence-pair (RTE) bundle, ONNX only."""
    from helpers import SHARED_DATA, onnx_recipe_dict
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    rte = SHARED_DATA / "rte"
    if not (rte / "train.tsv").is_file():
        pytest.skip("no RTE data at ../shared/data/rte")
    out = tmp_path_factory.mktemp("tiny-pair-build") / "out"
    build(recipe_mod.build(onnx_recipe_dict(tiny_model_dir, out, data={
        "train": str(rte / "train.tsv"), "validation": str(rte / "dev.tsv"), "text_column": "sentence1",
        "text_pair_column": "sentence2", "label_column": "label", "max_train_samples": 48, "max_eval_samples": 24})))
    return out / "bundle"


def test_pair_task_takes_text_pair(pair_bundle, tmp_path):
    import runtime_py

    ref = runtime_py.load(pair_bundle)
    firsts, seconds = ["the cat sat on the mat", "a man is walking"], ["a cat is sitting", "nobody walks"]
    with server(tmp_path, pair_bundle, "--name", "rte") as s:
        meta = httpx.get(s.url + "/v2/models/rte", headers=auth()).json()
        assert [i["name"] for i in meta["inputs"]] == ["text", "text_pair"]
        body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": firsts},
                           {"name": "text_pair", "shape": [2], "datatype": "BYTES", "data": seconds}]}
        r = httpx.post(s.url + "/v2/models/rte/infer", headers=auth(), json=body)
        assert r.status_code == 200, r.text
        want = ref.logits(list(zip(firsts, seconds)))
        np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(want.shape), want, atol=1e-5, rtol=0)
        r = httpx.post(s.url + "/v1/predict", headers=auth(), json={"texts": firsts, "text_pairs": seconds})
        assert [p["label"] for p in r.json()["predictions"]] == [p["label"] for p in ref.predict(list(zip(firsts, seconds)))]
        assert_one_line_error(httpx.post(s.url + "/v1/predict", headers=auth(), json={"texts": firsts}), 400, "text_pairs")
        body["inputs"] = body["inputs"][:1]
        assert_one_line_error(httpx.post(s.url + "/v2/models/rte/infer", headers=auth(), json=body), 400, "missing input 'text_pair'")


def test_batcher_gathers_bounds_and_times_out():
    """The batcher alone, with a run that blocks until released: batches fill up to max_batch_size without
    splitting a request, the queue bound raises QueueFull, and a timed-out request is skipped, not run."""
    import threading

    from runtime_py.serve.batching import Batcher, QueueFull, RequestTimeout

    release, runs = threading.Event(), []

    def run(texts):
        runs.append(list(texts))
        release.wait(10)
        return np.asarray([[float(len(t))] for t in texts], dtype=np.float32)

    async def scenario():
        b = Batcher(run, max_batch_size=4, max_queue_delay_us=50_000, max_queue_size=2, timeout_s=5, name="t")
        b.start()
        first = asyncio.create_task(b.submit(["a"]))
        await asyncio.sleep(0.1)                      # 'a' ran at once (no company before it) and is blocked
        late = asyncio.create_task(b.submit(["bb", "ccc"]))
        also = asyncio.create_task(b.submit(["dddd", "e", "ff"]))  # 2 + 3 > 4: runs after, not split
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit(["x"])
        release.set()
        results = [await first, await late, await also]
        release.clear()
        blocker = asyncio.create_task(b.submit(["blocks"]))
        await asyncio.sleep(0.1)
        b.timeout_s = 0.05
        with pytest.raises(RequestTimeout):
            await b.submit(["timed-out"])
        release.set()
        await blocker
        await b.stop()
        return results

    results = asyncio.run(scenario())
    assert [r.logits[:, 0].tolist() for r in results] == [[1.0], [2.0, 3.0], [4.0, 1.0, 2.0]]
    assert runs[:3] == [["a"], ["bb", "ccc"], ["dddd", "e", "ff"]] and ["timed-out"] not in runs, runs
    assert [r.batch_size for r in results] == [1, 2, 3]


def test_batcher_waits_for_company_only_after_requests_came_together():
    """A lone caller's requests run at once, whatever the delay; once a run has held several requests, the next
    one waits up to the delay for company (queue times from the batcher itself, not wall-clock asserts)."""
    from runtime_py.serve.batching import Batcher

    def run(texts):
        return np.zeros((len(texts), 1), dtype=np.float32)

    async def scenario():
        b = Batcher(run, max_batch_size=8, max_queue_delay_us=400_000, max_queue_size=8, timeout_s=10, name="t")
        b.start()
        lone = [await b.submit([f"t{i}"]) for i in range(3)]          # one after another: no company ever
        together = await asyncio.gather(*(b.submit([f"g{i}"]) for i in range(3)))
        after = await b.submit(["late"])                               # the run before held several requests
        await b.stop()
        return lone, together, after

    lone, together, after = asyncio.run(scenario())
    assert all(r.batch_size == 1 and r.queue_s < 0.2 for r in lone), [(r.batch_size, r.queue_s) for r in lone]
    assert max(r.batch_size for r in together) > 1
    assert after.batch_size == 1 and after.queue_s >= 0.3, after.queue_s  # waited (up to 0.4 s) for company


def test_serve_help_lists_the_knobs():
    from click.testing import CliRunner

    from toolchain.cli import main

    res = CliRunner().invoke(main, ["serve", "--help"])
    assert res.exit_code == 0, res.output
    for opt in ("--bundle", "--name", "--host", "--port", "--workers", "--api-key-file", "--max-batch-size",
                "--max-queue-delay-us", "--queue-delay-policy", "--log-inputs"):
        assert opt in res.output


@pytest.fixture(scope="module")
def int8_bundle(tiny_int8_build) -> Path:
    """The shared tiny int8 bundle; its ONNX dynamic-int8 artifact: ONNX Runtime scales activations per tensor, over
    the whole batch."""
    return tiny_int8_build / "bundle"


def test_batch_dependent_int8_answers_do_not_depend_on_other_callers(int8_bundle, tmp_path):
    """Where an artifact's logits move with batch company, requests are not batched together: every answer
    equals runtime_py on that request's texts alone, however many callers there are."""
    import runtime_py
    from runtime_py.serve.app import batch_dependent

    ref = runtime_py.load(int8_bundle, artifact="onnx-int8")
    dependent = batch_dependent(ref)
    with server(tmp_path, int8_bundle, "--name", "q", "--artifact", "onnx-int8") as s:
        meta = httpx.get(s.url + "/v2/models/q", headers=auth()).json()
        assert meta["parameters"]["cross_request_batching"] is (not dependent)
        texts = [f"{t} {w}" for t in TEXTS for w in ("now", "please", "today", "again")]
        rs = asyncio.run(_fire(s.url + "/v2/models/q/infer", [infer_body([t]) for t in texts], auth(), 16))
        for t, r in zip(texts, rs):
            assert r.status_code == 200, r
            np.testing.assert_allclose(r.json()["outputs"][0]["data"], ref.logits([t])[0], atol=1e-5, rtol=0)
    print(f"\nonnx-int8 tiny bundle: batch-dependent {dependent}; 24 concurrent answers equal runtime_py alone")
