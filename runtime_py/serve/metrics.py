"""Prometheus metrics of the server (prometheus_client), one registry per app; multiprocess-aware for --workers."""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the /metrics route)

# Latency buckets from 1 ms (a tiny int8 model) to 10 s (a queue backed up behind a large one).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Request latency, queue time, batch size, requests by model/endpoint/code, in-flight, model info, truncations."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram("toolformer_request_duration_seconds", "Time from request arrival to response, seconds.",
                                         ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("toolformer_queue_duration_seconds", "Time a request waited in the batch queue, seconds.",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("toolformer_inference_duration_seconds", "Time of one model run (tokenize + run), seconds.",
                                           ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("toolformer_batch_size", "Texts per model run.", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.requests = Counter("toolformer_requests", "HTTP requests by model, endpoint and status code.",
                                ["model", "endpoint", "code"], registry=r)
        self.texts = Counter("toolformer_texts", "Texts classified.", ["model"], registry=r)
        self.truncated = Counter("toolformer_truncated_texts", "Texts longer than the bundle's max_seq_len tokens (cut as in training).",
                                 ["model"], registry=r)
        self.rejected = Counter("toolformer_queue_rejections", "Requests refused with 503 because the queue was full.",
                                ["model"], registry=r)
        self.in_flight = Gauge("toolformer_requests_in_flight", "Requests being handled now.", registry=r,
                               multiprocess_mode="livesum")
        self.queue_depth = Gauge("toolformer_queue_depth", "Requests waiting in the batch queue.", ["model"], registry=r,
                                 multiprocess_mode="livesum")
        # An info-style gauge (value 1): prometheus_client's Info type has no multiprocess mode.
        self.model_info = Gauge("toolformer_model_info", "The served model: bundle artifact, format, precision, checksum.",
                                ["model", "artifact", "format", "precision", "sha256", "max_seq_len", "num_labels", "text_pair",
                                 "cross_request_batching"],
                                registry=r, multiprocess_mode="max")

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's with --workers."""
        if multiprocess_dir():
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg)
        return generate_latest(self.registry)
