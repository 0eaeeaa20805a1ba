"""The models one ``tanet serve`` runs: each is a :class:`ServedModel` with its own ``Predictor``,
dynamic batcher (its model thread), worker pool and start-up batch calibration, served under a
name (``/v1/...?model=NAME``, ``/v2/models/NAME``). Its card, the protocol's metadata and the
per-request predictor (views, top-k) come from here."""
from __future__ import annotations

import logging
import threading
from typing import Any

import torch

from tanet.apps.predict import Predictor
from tanet.apps.serve.batching import (BatchedBackend, Batcher, BatchTuner, WorkerPool,
                                       calibrate_batch)
from tanet.apps.serve.errors import ApiError
from tanet.apps.serve.metrics import ServeMetrics
from tanet.apps.serve.settings import ServeSettings

__all__ = ["ServedModel", "BACKENDS", "VERSION"]

BACKENDS = {"torch": "pytorch", "onnx": "onnxruntime"}  # Predictor.kind -> what runs it
VERSION = "1"  # a served model has one version (the protocol's URLs may name it)
_log = logging.getLogger("uvicorn.error")  # beside uvicorn's start-up lines (--quiet: off)


class ServedModel:
    """One model of the server: ``name``, ``predictor`` (its backend: the batcher), ``batcher``,
    ``pool`` and ``calibration`` (ms per view by batch size, after :meth:`start`)."""

    def __init__(self, name: str, checkpoint: str, settings: ServeSettings,
                 metrics: ServeMetrics) -> None:
        s = self.settings = settings
        self.name, self.checkpoint = name, checkpoint
        loaded = Predictor(checkpoint, views=s.views, topk=s.topk, labels=s.labels,
                           device=s.device, amp=s.amp)
        self.precision = loaded.precision  # None for ONNX Runtime (the file decides)
        max_batch = 1 if s.sequential else s.max_batch
        slots = 1 if s.sequential else s.decode_workers

        def on_batch(views: int, requests: int, seconds: float) -> None:
            metrics.observe_batch(name, views, requests, seconds)

        # the loaded backend: only the batcher's thread calls it
        self.batcher = Batcher(loaded.backend, max_batch=max_batch,
                               max_wait_ms=0 if s.sequential else s.max_wait_ms,
                               on_batch=on_batch)
        self.pool = WorkerPool(1 if s.sequential else max_batch + slots, slots)
        self.predictor = loaded.with_backend(BatchedBackend(self.batcher, self.pool))
        self.calibration: dict[int, float] | None = None
        self.vis_lock = threading.Lock()  # the visualize copy of the model, made once
        self.vis_model: Any = None

    @property
    def backend_name(self) -> str:
        """``pytorch`` or ``onnxruntime`` (what ``/v1/model`` calls the backend)."""
        return BACKENDS.get(self.predictor.kind, self.predictor.kind)

    @property
    def platform(self) -> str:
        """The protocol's ``platform``: ``tanet_pytorch`` or ``tanet_onnxruntime`` (Triton's own
        strings, such as ``pytorch_libtorch``, name its backends, which this is not)."""
        return f"tanet_{self.backend_name}"

    def start(self) -> None:
        s = self.settings
        if self.precision is not None:
            _log.info("%s: %s", self.name, self.precision.describe("--amp"))
        if s.calibrate and not s.sequential and self.batcher.max_batch > 1:
            c = self.predictor.card
            size, per_view = calibrate_batch(
                self.batcher.backend, lambda n: torch.randn(n, c.num_segments, *c.input_size),
                self.batcher.max_batch)
            self.calibration = {n: round(1000 * t, 2) for n, t in per_view.items()}
            _log.info("%s: batch calibration, ms per view by batch size: %s -> max batch %d",
                      self.name, self.calibration, size)
            self.batcher.max_batch = size
            self.batcher.tuner = BatchTuner(size, s.max_batch, on_change=self._log_cap)
        self.batcher.start()

    def _log_cap(self, old: int, new: int, ratio: float) -> None:
        _log.info("%s: batching: max batch %d -> %d (per view, %d views take %.2fx the time of "
                  "%d)", self.name, old, new, min(old, new), ratio if new < old else 1 / ratio,
                  max(old, new))

    def stop(self) -> None:
        self.batcher.close()
        self.pool.close()

    def predictor_for(self, views: str | None, topk: int | None, videos: int = 1) -> Predictor:
        """The predictor of one request (views, top-k), refused with 400 when ``videos`` videos
        of those views pass ``--max-views``."""
        try:
            p = self.predictor.with_options(views=views, topk=topk)
        except ValueError as e:
            raise ApiError(400, str(e).replace("--views", "views")) from None
        n = p.clips * p.crops * videos
        if n > self.settings.max_views:
            what = f"{videos} videos x {p.clips}x{p.crops} views" if videos > 1 else (
                f"views {p.clips}x{p.crops}")
            raise ApiError(400, f"{what} is {n} views; this server allows at most "
                                f"{self.settings.max_views} per request (--max-views)")
        return p

    def card_json(self) -> dict[str, Any]:
        s, p, c = self.settings, self.predictor, self.predictor.card
        return {"model": self.name, "name": c.name, "num_classes": c.num_classes,
                "classes": p.class_names, "frames": c.num_segments, "size": list(c.input_size[1:]),
                "short_side": p.short_side, "sampling": p.sampling, "mean": list(c.mean),
                "std": list(c.std), "kind": p.kind, "backend": self.backend_name,
                "precision": self.precision.name if self.precision is not None else None,
                "platform": self.platform, "views": f"{p.clips}x{p.crops}", "topk": p.topk,
                "visualize": p.model is not None, "card": c.to_dict(),
                "limits": {"max_upload_bytes": s.max_upload_bytes, "max_queue": s.max_queue,
                           "max_views": s.max_views, "timeout_s": s.timeout_s},
                "batching": {"max_batch": self.batcher.max_batch, "max_wait_ms": s.max_wait_ms,
                             "decode_workers": s.decode_workers, "sequential": s.sequential,
                             "ms_per_view_by_batch": self.calibration,
                             "changes": [] if self.batcher.tuner is None else [
                                 {"from": a, "to": b, "ratio": r}
                                 for a, b, r in self.batcher.tuner.changes]}}

    def clip_shape(self) -> list[int]:
        """[T, 3, H, W] of one preprocessed clip (the protocol's ``clips`` input after N)."""
        c = self.predictor.card
        return [c.num_segments, *c.input_size]
