"""``tanet serve``'s FastAPI application.

``create_app(ServeSettings(checkpoint=...))`` loads every model once (a
:class:`~tanet.apps.serve.models.ServedModel` each: a ``Predictor`` behind its own dynamic
batcher, :mod:`tanet.apps.serve.batching`) and serves:

* ``/v1/*``: tanet's own API (:mod:`tanet.apps.serve.v1`): multipart uploads, ``tanet predict
  --json``'s answers, timelines and segments, ``tanet visualize``'s pictures, model cards;
* ``/v2/*``: the Open Inference Protocol (KServe v2) with Triton's binary tensor data
  (:mod:`tanet.apps.serve.v2`, wire format in :mod:`tanet.apps.serve.protocol`);
* ``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /`` (the page) and ``/static/*``.

Both APIs go through one :class:`~tanet.apps.serve.service.Service` (admission queue, limits,
spooled uploads, metrics). Every error is JSON ``{"error": "..."}`` with a 4xx/5xx status; the
limits are in :class:`~tanet.apps.serve.settings.ServeSettings`.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from tanet.apps.serve.errors import ApiError, error_response
from tanet.apps.serve.guard import GuardMiddleware
from tanet.apps.serve.metrics import CONTENT_TYPE_LATEST
from tanet.apps.serve.service import Service
from tanet.apps.serve.settings import ServeSettings
from tanet.apps.serve.v1 import add_v1_routes
from tanet.apps.serve.v2 import add_v2_routes

__all__ = ["ServeSettings", "create_app", "STATIC_DIR"]

STATIC_DIR = Path(__file__).with_name("static")
log = logging.getLogger("tanet.serve")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body"))
        parts.append(f"parameter '{where}': {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _routes(app: FastAPI, svc: Service) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "queue_depth": svc.admission.depth, "models": list(svc.models)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for ``settings``; loads the models now (errors surface before the port opens)."""
    svc = Service(settings)

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
    _error_handlers(app)
    add_v1_routes(app, svc)
    add_v2_routes(app, svc)
    _routes(app, svc)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type",
                                          "Inference-Header-Content-Length"],
                           expose_headers=["Inference-Header-Content-Length"])
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, metrics=svc.metrics,
                       models=list(svc.models), default=svc.default)
    return app
