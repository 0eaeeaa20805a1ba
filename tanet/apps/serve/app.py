"""``tanet serve``'s FastAPI application.

``create_app(ServeSettings(checkpoint=...))`` loads the model once (a ``Predictor``), puts the
dynamic batcher (:mod:`tanet.apps.serve.batching`) in front of its backend
(``Predictor.with_backend``) and serves:

* ``POST /v1/predict``: multipart field ``file``; query ``views``, ``topk``, ``window``,
  ``stride``, ``thumbnails``. The body is ``tanet predict --json``'s object for that file
  (``path`` is the uploaded file's name), or with ``window`` the sliding-window timeline; both
  with ``video`` (duration, fps, frame count, ...) and the frames the model sampled (as
  pictures with ``thumbnails``; :mod:`tanet.apps.serve.frames`).
* ``POST /v1/visualize``: ``tanet visualize``'s pictures of the upload as PNG data URLs.
* ``GET /v1/model`` (the card and the limits), ``GET /healthz``, ``GET /metrics`` (Prometheus),
  ``GET /`` (the page) and ``/static/*``.

Every error is JSON ``{"error": "..."}`` (a video that cannot be decoded: ``tanet predict``'s
error object) with a 4xx/5xx status; the limits are in :class:`ServeSettings`.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import logging
import shutil
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from tanet.apps.predict import Prediction, Predictor, WindowPrediction, failure_message
from tanet.apps.serve.batching import (BatchedBackend, Batcher, BatchTuner, JobCancelled,
                                       WorkerPool, calibrate_batch, keep_freed_memory)
from tanet.apps.serve.frames import sampled_json, video_facts, window_thumbnails
from tanet.apps.serve.guard import GuardMiddleware
from tanet.apps.serve.metrics import CONTENT_TYPE_LATEST, Admission, ServeMetrics
from tanet.apps.serve.uploads import UploadError, receive_upload
from tanet.data.decode import VideoDecodeError

__all__ = ["ServeSettings", "create_app", "timeline_json", "STATIC_DIR"]

STATIC_DIR = Path(__file__).with_name("static")
log = logging.getLogger("tanet.serve")


def _log_cap(old: int, new: int, ratio: float) -> None:
    logging.getLogger("uvicorn.error").info(  # beside the start-up calibration's line
        "batching: max batch %d -> %d (per view, %d views take %.2fx the time of %d)",
        old, new, min(old, new), ratio if new < old else 1 / ratio, max(old, new))


@dataclass
class ServeSettings:
    """What ``tanet serve`` is started with (its options, one to one)."""

    checkpoint: str  # a checkpoint path, a registry name or URL, or an .onnx
    views: str = "1x1"  # default CLIPSxCROPS
    topk: int = 5
    labels: str | None = None
    device: str = "cpu"
    amp: str = "auto"  # precision (tanet.precision): bf16 where the hardware has it, else fp32
    max_batch: int = 16  # views per model call at most; 1 turns batching off
    calibrate: bool = True  # lower max_batch to the size that is still faster per view here
    max_wait_ms: float = 5.0
    decode_workers: int = 2
    sequential: bool = False  # one request at a time (decode, then model): the baseline
    max_queue: int = 64  # requests in progress; more get 503
    max_upload_mb: float = 200.0
    max_views: int = 30  # clips x crops per request
    timeout_s: float = 120.0  # per-request deadline (upload, queue, decode, model)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    tmp_dir: str | None = None  # where uploads are spooled (default: a new temporary folder)
    keep_memory: bool = True  # glibc keeps freed memory for the next batch (keep_freed_memory)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class ApiError(Exception):
    """An answer other than 200: ``{"error": message}`` with ``status`` and ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _renamed(obj: Any, old: str, new: str) -> Any:
    """``obj`` (JSON) with the server's temporary path replaced by the client's file name."""
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, list):
        return [_renamed(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {k: _renamed(v, old, new) for k, v in obj.items()}
    return obj


def timeline_json(res: WindowPrediction, topk: int) -> dict[str, Any]:
    """Sliding-window result as JSON: per window its span, top-k and sampled frame indices, and
    the score series of the ``topk`` classes that peak highest (the lines of ``tanet predict
    --window``'s PNG)."""
    names = res.class_names
    windows = []
    for k, (s, e, p) in enumerate(zip(res.starts, res.ends, res.probs)):  # p: (K,)
        order = p.argsort()[::-1][:topk]
        top = [{"label": names[i], "score": round(float(p[i]), 6)} for i in order]
        windows.append({"start": round(float(s), 4), "end": round(float(e), 4), "top": top,
                        "frames": [int(i) for i in res.indices[k]]})  # the frames it sampled
    peaks = res.probs.max(0).argsort()[::-1][:topk]  # (topk,)
    series = [{"label": names[c], "scores": [round(float(v), 6) for v in res.probs[:, c]]}
              for c in peaks]
    return {"path": res.path, "windows": windows, "series": series}


class _Service:
    """The model, the batcher, the worker pool, the limits and the metrics of one app."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = s = settings
        if s.keep_memory:
            keep_freed_memory()
        self.metrics = ServeMetrics()
        loaded = Predictor(s.checkpoint, views=s.views, topk=s.topk, labels=s.labels,
                           device=s.device, amp=s.amp)
        self.precision = loaded.precision  # None for ONNX Runtime (the file decides)
        max_batch = 1 if s.sequential else s.max_batch
        slots = 1 if s.sequential else s.decode_workers
        # the loaded backend: only the batcher's thread calls it
        self.batcher = Batcher(loaded.backend, max_batch=max_batch,
                               max_wait_ms=0 if s.sequential else s.max_wait_ms,
                               on_batch=self.metrics.observe_batch)
        self.pool = WorkerPool(1 if s.sequential else max_batch + slots, slots)
        self.predictor = loaded.with_backend(BatchedBackend(self.batcher, self.pool))
        self.admission = Admission(s.max_queue, self.metrics.queue_depth)
        self._own_tmp = s.tmp_dir is None
        self.tmp = Path(s.tmp_dir or tempfile.mkdtemp(prefix="tanet-serve-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._vis_lock = threading.Lock()
        self._vis_model: Any = None
        self.calibration: dict[int, float] | None = None

    def start(self) -> None:
        s = self.settings
        if self.precision is not None:
            logging.getLogger("uvicorn.error").info("%s", self.precision.describe("--amp"))
        if s.calibrate and not s.sequential and self.batcher.max_batch > 1:
            c = self.predictor.card
            size, per_view = calibrate_batch(
                self.batcher.backend, lambda n: torch.randn(n, c.num_segments, *c.input_size),
                self.batcher.max_batch)
            self.calibration = {n: round(1000 * t, 2) for n, t in per_view.items()}
            logging.getLogger("uvicorn.error").info(  # uvicorn's start-up lines (--quiet: off)
                "batch calibration, ms per view by batch size: %s -> max batch %d",
                self.calibration, size)
            self.batcher.max_batch = size
            self.batcher.tuner = BatchTuner(size, s.max_batch, on_change=_log_cap)  # follows load
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.close()
        self.pool.close()
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def predictor_for(self, views: str | None, topk: int | None) -> Predictor:
        try:
            p = self.predictor.with_options(views=views, topk=topk)
        except ValueError as e:
            raise ApiError(400, str(e).replace("--views", "views")) from None
        if p.clips * p.crops > self.settings.max_views:
            raise ApiError(400, f"views {p.clips}x{p.crops} is {p.clips * p.crops} views; this "
                                f"server allows at most {self.settings.max_views} per request")
        return p

    def card_json(self) -> dict[str, Any]:
        s, p, c = self.settings, self.predictor, self.predictor.card
        return {"name": c.name, "num_classes": c.num_classes, "classes": p.class_names,
                "frames": c.num_segments, "size": list(c.input_size[1:]),
                "short_side": p.short_side, "sampling": p.sampling, "mean": list(c.mean),
                "std": list(c.std), "kind": p.kind,
                "precision": self.precision.name if self.precision is not None else None,
                "backend": {"torch": "pytorch", "onnx": "onnxruntime"}.get(p.kind, p.kind),
                "views": f"{p.clips}x{p.crops}", "topk": p.topk,
                "visualize": p.model is not None, "card": c.to_dict(),
                "limits": {"max_upload_bytes": s.max_upload_bytes, "max_queue": s.max_queue,
                           "max_views": s.max_views, "timeout_s": s.timeout_s},
                "batching": {"max_batch": self.batcher.max_batch, "max_wait_ms": s.max_wait_ms,
                             "decode_workers": s.decode_workers, "sequential": s.sequential,
                             "ms_per_view_by_batch": self.calibration,
                             "changes": [] if self.batcher.tuner is None else [
                                 {"from": a, "to": b, "ratio": r}
                                 for a, b, r in self.batcher.tuner.changes]}}

    async def run_upload(self, request: Request, job: Callable[[Path, str], tuple[int, dict]]
                         ) -> JSONResponse:
        """Admit, receive the upload, run ``job(path, name)`` on the pool within the deadline;
        the temporary file is deleted and the queue slot freed when the job has ended."""
        if not self.admission.enter():
            wait = self.admission.retry_after()
            raise ApiError(503, f"server busy: {self.admission.limit} requests in progress "
                                f"(--max-queue); retry in {wait} s", {"Retry-After": str(wait)})
        t0 = time.monotonic()
        timeout = self.settings.timeout_s
        submitted = False
        try:
            try:
                up = await asyncio.wait_for(receive_upload(
                    request, self.tmp, max_bytes=self.settings.max_upload_bytes), timeout)
            except UploadError as e:
                raise ApiError(e.status, e.message) from None
            except asyncio.TimeoutError:
                raise ApiError(408, f"upload not complete within the {timeout:g} s deadline "
                                    "(--timeout)") from None
            handle = self.pool.submit(job, up.path, up.filename)

            def done(_: Any, path: Path = up.path) -> None:
                path.unlink(missing_ok=True)
                self.admission.leave(time.monotonic() - t0)

            handle.future.add_done_callback(done)
            submitted = True
            try:
                status, body = await asyncio.wait_for(asyncio.wrap_future(handle.future),
                                                      max(0.0, t0 + timeout - time.monotonic()))
            except (asyncio.TimeoutError, asyncio.CancelledError) as e:
                handle.cancel()
                if isinstance(e, asyncio.CancelledError):
                    raise
                raise ApiError(504, f"no result within the {timeout:g} s deadline (--timeout): "
                                    "the server is overloaded or the video is long") from None
            except JobCancelled as e:
                raise ApiError(503, f"not run: {e}", {"Retry-After": "5"}) from None
            return JSONResponse(body, status_code=status)
        finally:
            if not submitted:
                self.admission.leave()

    # ---------------------------------------------------------------------------- jobs
    def predict_job(self, predictor: Predictor, window: float | None, stride: float | None,
                    thumbnails: bool, path: Path, name: str) -> tuple[int, dict]:
        """Pool thread: ``tanet predict``'s answer for one upload (or its timeline), with the
        video's facts and the frames the model sampled (pictures with ``thumbnails``)."""
        try:
            if window:
                res = predictor.predict_windows(path, window, stride=stride)
                body = {"window": window, "stride": stride or window / 2,
                        **timeline_json(res, predictor.topk), "video": video_facts(path)}
                if thumbnails:
                    body["thumbnails"] = window_thumbnails(path, res.indices, body["video"])
            else:
                pred = predictor.predict(path, keep_frames=thumbnails)
                facts = video_facts(path)
                body = {**pred.to_json(), "video": facts,
                        "sampled": sampled_json(pred, facts["fps"], thumbnails)}
            status = 200
        except (JobCancelled, MemoryError):
            raise
        except VideoDecodeError as e:
            status, body = 422, Prediction(str(path), error=failure_message(path, e)).to_json()
        except Exception as e:
            log.exception("prediction failed on %s (%s)", name, path)
            status, body = 500, Prediction(str(path), error=failure_message(path, e)).to_json()
        return status, _renamed(body, str(path), name)

    def visualize_job(self, topk: int, path: Path, name: str) -> tuple[int, dict]:
        """Pool thread: ``tanet visualize``'s PNGs, on a copy of the model (the batcher's
        thread owns the original: TAM capture puts hooks on the model it runs)."""
        from tanet.apps.visualize import write_pictures

        predictor = self.predictor.with_options(views="1x1", topk=topk)
        locked = False
        try:
            with self.pool.waiting():  # queue for the copy without holding a decode slot
                locked = self._vis_lock.acquire()
            if self._vis_model is None:
                self._vis_model = copy.deepcopy(self.predictor.model).eval()
            with tempfile.TemporaryDirectory(dir=self.tmp) as out:
                files = write_pictures(self._vis_model, predictor, path, out, topk=topk, name=name)
                images = {f.stem: "data:image/png;base64," + base64.b64encode(f.read_bytes())
                          .decode() for f in files}
        except VideoDecodeError as e:
            err = Prediction(str(path), error=failure_message(path, e)).to_json()
            return 422, _renamed(err, str(path), name)
        finally:
            if locked:
                self._vis_lock.release()
        return 200, {"path": name, "images": images}


def _error_response(status: int, message: str, headers: dict[str, str] | None = None
                    ) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body"))
        parts.append(f"parameter '{where}': {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _routes(app: FastAPI, svc: _Service) -> None:
    @app.post("/v1/predict")
    async def predict(request: Request, views: str | None = None,
                      topk: int | None = Query(None, ge=1, le=1000),
                      window: float | None = Query(None, gt=0, le=3600),
                      stride: float | None = Query(None, gt=0, le=3600),
                      thumbnails: bool = False) -> JSONResponse:
        """Top-k of the uploaded video (``tanet predict --json``'s object), or with ``window``
        (seconds) the sliding-window timeline; ``thumbnails``: with the sampled frames'
        pictures (JPEG data URLs)."""
        predictor = svc.predictor_for(views, topk)
        if stride and not window:
            raise ApiError(400, "stride needs window (seconds)")
        if window and (stride or window / 2) < window / 100:
            raise ApiError(400, "stride is under 1/100 of the window: too many windows")
        return await svc.run_upload(
            request, lambda path, name: svc.predict_job(predictor, window, stride, thumbnails,
                                                        path, name))

    @app.post("/v1/visualize")
    async def visualize(request: Request, topk: int | None = Query(None, ge=1, le=100)
                        ) -> JSONResponse:
        """``tanet visualize``'s pictures of the upload (frames, TAM kernels, evidence) as PNG
        data URLs; PyTorch checkpoints only."""
        if svc.predictor.model is None:
            raise ApiError(409, "visualize needs a PyTorch checkpoint; this server runs an ONNX "
                                "export (start it with --checkpoint MODEL.safetensors)")
        k = svc.predictor_for(None, topk).topk
        return await svc.run_upload(request, lambda path, name: svc.visualize_job(k, path, name))

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The model card (name, classes, frames, size, ...) and the server's limits."""
        return svc.card_json()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "queue_depth": svc.admission.depth}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for ``settings``; loads the model now (errors surface before the port opens)."""
    svc = _Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.start()
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(title="tanet serve", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None)  # their pages load scripts from a CDN; /openapi.json stays
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, _validation_message(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return _error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    _routes(app, svc)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, metrics=svc.metrics)
    return app
