"""The server's Prometheus metrics (prometheus_client, one registry per app) and its admission
counter: requests by endpoint, model and status, latency, queue depth, and per model batch sizes
and model time. ``model`` is the served model's name ("" where a request names none, or one the
server does not have: the label set stays bounded)."""
from __future__ import annotations

import math
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServeMetrics", "Admission", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """The metrics of one app; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tanet_requests", "HTTP requests by endpoint, model and status",
                                ["endpoint", "model", "status"], registry=r)
        self.latency = Histogram("tanet_request_seconds", "HTTP request latency by endpoint and "
                                 "model", ["endpoint", "model"], buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.queue_depth = Gauge("tanet_queue_depth", "requests admitted and not yet finished "
                                 "(uploading, decoding, waiting for or in the model)", registry=r)
        self.batch_views = Histogram("tanet_batch_views", "views (clips x crops) per model call",
                                     ["model"], buckets=_BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("tanet_batch_requests", "model calls' callers (videos "
                                        "or clip tensors) per model call", ["model"],
                                        buckets=_BATCH_BUCKETS, registry=r)
        self.model_seconds = Histogram("tanet_model_seconds", "seconds per model call",
                                       ["model"], buckets=_LATENCY_BUCKETS, registry=r)

    def observe_request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, model, str(status)).inc()
        self.latency.labels(endpoint, model).observe(seconds)

    def observe_batch(self, model: str, views: int, requests: int, seconds: float) -> None:
        self.batch_views.labels(model).observe(views)
        self.batch_requests.labels(model).observe(requests)
        self.model_seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Admission:
    """The bounded queue: at most ``limit`` requests in progress, from their first byte to the end
    of their job. Thread-safe (jobs finish on worker threads)."""

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self.limit = limit
        self._gauge = gauge
        self._n = 0
        self._seconds = 1.0  # moving average of a request's time in the server
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        return self._n

    def enter(self) -> bool:
        """Admit one more request, or False when the queue is full."""
        with self._lock:
            if self._n >= self.limit:
                return False
            self._n += 1
            self._gauge.set(self._n)
            return True

    def leave(self, seconds: float | None = None) -> None:
        with self._lock:
            self._n -= 1
            self._gauge.set(self._n)
            if seconds is not None:
                self._seconds = 0.8 * self._seconds + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: a request's average time in the server (by then
        the oldest of the full queue has finished)."""
        return max(1, min(120, math.ceil(self._seconds)))
