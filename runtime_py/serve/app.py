"""The FastAPI app: Open Inference Protocol (KServe V2) REST routes, /v1/predict, /metrics, keys and limits.

The protocol layer knows a model only as a `ServedModel` (a runtime_py Model plus its batcher), as in
KServe's own model server; nothing here imports the toolchain or torch (an ExecuTorch artifact brings torch
in through runtime_py's backend, an ONNX one does not).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import protocol
from .auth import KeyChecker
from .batching import Batcher, QueueFull, RequestTimeout, ShuttingDown
from .config import ServeConfig
from .errors import ApiError
from .masking import mask
from .metrics import CONTENT_TYPE_LATEST, Metrics

log = logging.getLogger("toolformer.serve")
SERVER_NAME = "toolformer"


class ServedModel:
    """One served bundle artifact: the runtime_py Model, its batcher and what the protocol says about it."""

    def __init__(self, name: str, model, cfg: ServeConfig, metrics: Metrics):
        self.name = name
        self.model = model
        self.labels = list(model.labels)
        self.max_seq_len = int(model.max_seq_len)
        self.pair = bool((model.manifest.get("task") or {}).get("text_pair", False))
        self.version = model.name  # the artifact key, e.g. onnx-int8
        # A token-classification bundle answers entities (and per-piece logits); the batcher then carries
        # one (entities, logits (pieces, tags)) pair per text instead of one logits row.
        self.token = getattr(model, "task", "") == protocol.TOKEN_TASK
        self.platform = {"onnx": "onnxruntime_onnx", "executorch": "executorch_pte"}.get(model.artifact["format"], model.artifact["format"])
        size = cfg.max_batch_size
        # Dynamic int8 (ONNX Runtime's quantize_dynamic) scales activations over the whole input tensor, so a
        # text's logits depend on the other texts in its run (measured: 0.04 max-abs, 9% of labels flipped on
        # SST-2 between alone and in a batch of 32). Batching across requests would let one caller's texts
        # change another's answer: such artifacts run one request per run (a request's own texts still run
        # together, in chunks of max_batch_size, as runtime_py's Model.predict does).
        self.batch_dependent = batch_dependent(model)
        gather = 1 if self.batch_dependent else size

        def on_run(n: int, seconds: float) -> None:
            metrics.batch_size.labels(name).observe(n)
            metrics.inference_seconds.labels(name).observe(seconds)

        run = (lambda texts: model_analyse(model, texts, size)) if self.token else (lambda texts: model.logits(texts, batch_size=size))
        self.batcher = Batcher(run, max_batch_size=gather,
                               max_queue_delay_us=cfg.max_queue_delay_us, max_queue_size=cfg.max_queue_size,
                               timeout_s=cfg.request_timeout_s, name=name, on_run=on_run,
                               wait_when_alone=cfg.queue_delay_policy == "always")
        art = model.artifact
        metrics.model_info.labels(name, self.version, art["format"], art["precision"], art.get("sha256", "")[:16],
                                  str(self.max_seq_len), str(len(self.labels)), str(self.pair).lower(),
                                  str(not self.batch_dependent).lower()).set(1)

    def metadata(self) -> dict:
        inputs = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in protocol.input_names(self.pair)]
        return {"name": self.name, "versions": [self.version], "platform": self.platform, "inputs": inputs,
                "outputs": protocol.output_specs(self.token, len(self.labels)),
                "parameters": {"labels": self.labels, "max_seq_len": self.max_seq_len,
                               "task": (self.model.manifest.get("task") or {}).get("type", "sequence-classification"),
                               "artifact": self.model.artifact["file"], "sha256": self.model.artifact.get("sha256"),
                               "cross_request_batching": not self.batch_dependent}}

    def count_truncated(self, texts: list) -> int:
        """Texts the tokenizer will cut at max_seq_len. Only texts long enough to possibly exceed it are tokenized:
        a token covers at least one UTF-8 byte, plus at most 6 special/prefix tokens for a pair."""
        def nbytes(t):
            return sum(len(s.encode("utf-8")) for s in (t if isinstance(t, tuple) else (t,)))
        long = [t for t in texts if nbytes(t) + 6 > self.max_seq_len]
        return self.model.encoder.count_truncated(long) if long else 0


def model_analyse(model, texts: list, batch_size: int) -> list:
    """A token bundle's (entities, logits (pieces, tags)) per text (runtime_py.token.analyse)."""
    from runtime_py.token import analyse

    return analyse(model, texts, batch_size=batch_size)


def batch_dependent(model, n: int = 8, atol: float = 1e-4) -> bool:
    """Whether the artifact's logits for a text change with its batch company: the bundle's golden texts
    run one by one and together (padding alone moves fp32 logits by ~1e-6, far below atol)."""
    token = getattr(model, "task", "") == protocol.TOKEN_TASK
    try:
        golden = json.loads((model.bundle / model.manifest["golden"]["file"]).read_text(encoding="utf-8"))
        if token:  # golden sentences are word lists; the server sees raw text
            texts = [" ".join(t) for t in golden["texts"]][:n]
        else:
            texts = [tuple(t) if isinstance(t, list) else t for t in golden["texts"]][:n]
    except (KeyError, OSError, ValueError, TypeError):
        texts = []
    if len(texts) < 2:
        return model.artifact.get("precision") == "int8"  # nothing to probe with: assume the worst for int8
    if token:  # each text's own pieces, alone and in company (their widths differ, so text by text)
        alone = [lg for t in texts for _, lg in model_analyse(model, [t], 1)]
        together = [lg for _, lg in model_analyse(model, texts, len(texts))]
        return bool(max(float(np.max(np.abs(a - b))) for a, b in zip(alone, together)) > atol)
    alone = np.concatenate([model.logits([t]) for t in texts])
    return bool(np.max(np.abs(alone - model.logits(texts))) > atol)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Observe:
    """Pure ASGI middleware: in-flight gauge, latency histogram, request counter and one JSON log line per request."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            model, endpoint = state.get("model", ""), state.get("endpoint", "other")
            self.metrics.request_seconds.labels(model, endpoint).observe(seconds)
            self.metrics.requests.labels(model, endpoint, str(status["code"])).inc()
            line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
                    "event": "request", "method": scope.get("method"), "path": scope.get("path"), "status": status["code"],
                    "latency_ms": round(seconds * 1000, 3)}
            for key in ("model", "request_id", "texts", "truncated", "queue_ms", "batch_size", "error", "inputs"):
                if key in state:
                    line[key] = state[key]
            log.info(json.dumps(line, ensure_ascii=False))


class Service:
    """What the routes share: the served models, the config, the key checker and the metrics."""

    def __init__(self, models: dict, cfg: ServeConfig, keys: list[str]):
        self.cfg = cfg
        self.metrics = Metrics()
        self.checker = KeyChecker(keys)
        self.served = {name: ServedModel(name, m, cfg, self.metrics) for name, m in models.items()}
        self.default = next(iter(self.served)) if len(self.served) == 1 else None

    def authorise(self, request: Request) -> None:
        self.checker.check(request.headers.get("authorization"))

    def lookup(self, request: Request, name: str, version: str | None = None) -> ServedModel:
        s = self.served.get(name)
        if s is None:
            raise ApiError(404, f"no model {name!r}; this server has: {', '.join(self.served)}")
        request.state.model = name
        if version is not None and version != s.version:
            raise ApiError(404, f"model {name!r} has no version {version!r}; it has {s.version!r}")
        return s

    async def read_body(self, request: Request) -> bytes:
        limit = self.cfg.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "Content-Length is not a number")
            if int(length) > limit:
                raise ApiError(413, f"request body of {int(length)} bytes exceeds the limit of {limit}")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def check_texts(self, request: Request, texts: list) -> None:
        """Count and bound the texts of one request (413 past the limits), noting masked inputs when asked."""
        cfg = self.cfg
        request.state.texts = len(texts)
        if not texts:
            raise ApiError(400, "no texts to classify")
        if len(texts) > cfg.max_texts:
            raise ApiError(413, f"{len(texts)} texts in one request; the limit is {cfg.max_texts}")
        for i, t in enumerate(texts):
            n = sum(map(len, t)) if isinstance(t, tuple) else len(t)
            if n > cfg.max_text_chars:
                raise ApiError(413, f"text {i} has {n} characters; the limit is {cfg.max_text_chars}")
        if cfg.log_inputs:
            request.state.inputs = [[mask(x) for x in t] if isinstance(t, tuple) else mask(t) for t in texts]

    async def classify(self, request: Request, s: ServedModel, texts: list, arrived: float) -> tuple[np.ndarray, int]:
        """Logits for `texts` through the model's batcher, with the batcher's refusals as HTTP errors
        (a token model's: one (entities, logits) pair per text)."""
        self.check_texts(request, texts)
        st, cfg, metrics = request.state, self.cfg, self.metrics
        truncated = s.count_truncated(texts)
        st.truncated = truncated
        try:
            res = await s.batcher.submit(texts, arrived=arrived)
        except QueueFull:
            metrics.rejected.labels(s.name).inc()
            raise ApiError(503, f"model {s.name!r} is busy: the queue holds {cfg.max_queue_size} requests; retry shortly",
                           {"Retry-After": "1"}) from None
        except RequestTimeout:
            raise ApiError(504, f"no answer within {cfg.request_timeout_s:g} s") from None
        except ShuttingDown:
            raise ApiError(503, "the server is shutting down", {"Retry-After": "1"}) from None
        except Exception as e:
            raise ApiError(500, f"inference failed: {type(e).__name__}: {e}") from None
        st.queue_ms, st.batch_size = round(res.queue_s * 1000, 3), res.batch_size
        metrics.queue_seconds.labels(s.name).observe(res.queue_s)
        metrics.texts.labels(s.name).inc(len(texts))
        if truncated:
            metrics.truncated.labels(s.name).inc(truncated)
        return res.logits, truncated

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """Start every batcher, mark the app ready, and on shutdown drain them."""
        for s in self.served.values():
            s.batcher.start()
        app.state.ready = True
        log.info(json.dumps({"event": "ready", "models": {n: s.version for n, s in self.served.items()},
                             "cross_request_batching": {n: not s.batch_dependent for n, s in self.served.items()},
                             "auth": self.checker.enabled, "max_batch_size": self.cfg.max_batch_size,
                             "max_queue_delay_us": self.cfg.max_queue_delay_us,
                             "queue_delay_policy": self.cfg.queue_delay_policy}))
        try:
            yield
        finally:
            app.state.ready = False
            for s in self.served.values():
                await s.batcher.stop()
            log.info(json.dumps({"event": "stopped"}))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        request.state.error = e.message
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        msg = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed on {request.url.path}"}
        return _error(e.status_code, msg.get(e.status_code, str(e.detail)), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        log.error(json.dumps({"event": "internal_error", "path": request.url.path, "error": f"{type(e).__name__}: {e}"}))
        return _error(500, "internal server error")


def _add_health_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/v2/health/live")
    async def live(request: Request):
        request.state.endpoint = "health_live"
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(request: Request):
        request.state.endpoint = "health_ready"
        ok = bool(app.state.ready)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata(request: Request):
        request.state.endpoint = "server_metadata"
        from importlib import metadata as md
        try:
            version = md.version("toolformer")
        except md.PackageNotFoundError:
            version = "unknown"
        return {"name": SERVER_NAME, "version": version, "extensions": []}

    @app.get("/metrics")
    async def prometheus(request: Request):
        request.state.endpoint = "metrics"
        for n, s in svc.served.items():
            svc.metrics.queue_depth.labels(n).set(s.batcher.depth)
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_model_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(request: Request, name: str, version: str | None = None):
        request.state.endpoint = "model_metadata"
        svc.authorise(request)
        return svc.lookup(request, name, version).metadata()

    @app.get("/v2/models/{name}/ready")
    async def model_ready(request: Request, name: str):
        request.state.endpoint = "model_ready"
        svc.authorise(request)
        svc.lookup(request, name)
        ok = bool(app.state.ready)
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None):
        arrived = time.perf_counter()
        request.state.endpoint = "infer"
        svc.authorise(request)
        s = svc.lookup(request, name, version)
        if request.headers.get("inference-header-content-length") is not None:
            raise ApiError(400, "the binary tensor extension is not supported; send JSON")
        texts, wanted, rid = protocol.parse_infer(protocol.parse_json(await svc.read_body(request)), s.pair, s.token)
        if rid is not None:
            request.state.request_id = rid[:128]
        logits, truncated = await svc.classify(request, s, texts, arrived)
        if s.token:
            return JSONResponse(protocol.token_infer_response(s.name, s.version, rid, logits, len(s.labels), wanted, truncated))
        return JSONResponse(protocol.infer_response(s.name, s.version, rid, logits, s.labels, wanted, truncated))

    @app.post("/v1/predict")
    async def predict(request: Request):
        arrived = time.perf_counter()
        request.state.endpoint = "predict"
        svc.authorise(request)
        obj = protocol.parse_json(await svc.read_body(request))
        name = obj.get("model") if isinstance(obj, dict) else None
        if name is None:
            if svc.default is None:
                raise ApiError(400, f"this server has several models ({', '.join(svc.served)}): say which with \"model\"")
            name = svc.default
        if not isinstance(name, str):
            raise ApiError(400, "'model' must be a string")
        s = svc.lookup(request, name)
        texts, _ = protocol.parse_predict(obj, s.pair)
        logits, truncated = await svc.classify(request, s, texts, arrived)
        if s.token:
            return JSONResponse(protocol.entities_response(s.name, logits, truncated))
        return JSONResponse(protocol.predict_response(s.name, logits, s.labels, truncated))


def create_app(models: dict, cfg: ServeConfig, keys: list[str]) -> FastAPI:
    """The app serving `models` ({name: runtime_py.Model}) under `cfg`; `keys` empty = no authentication."""
    svc = Service(models, cfg, keys)
    app = FastAPI(title="Toolformer model server", lifespan=svc.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ready = False
    _add_error_handlers(app)
    _add_health_routes(app, svc)
    _add_model_routes(app, svc)
    app.add_middleware(Observe, metrics=svc.metrics)
    app.state.served = svc.served
    app.state.metrics = svc.metrics
    return app
