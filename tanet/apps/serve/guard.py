"""The outermost layer of the app (plain ASGI): the API key check and the request metrics.

With an API key, ``/v1/*`` and ``/metrics`` answer 401 unless the request carries it as
``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (compared in constant time); the page, its
static files, ``/healthz`` and CORS preflights (``OPTIONS``, which browsers send without it) stay
open. Every HTTP request is counted by endpoint (the route's
path; ``other`` for unknown paths, so random URLs cannot blow up the label set) and status.
"""
from __future__ import annotations

import hmac
import json
import time
from typing import Any, Awaitable, Callable

from tanet.apps.serve.metrics import ServeMetrics

__all__ = ["GuardMiddleware", "ENDPOINTS"]

ENDPOINTS = ("/v1/predict", "/v1/visualize", "/v1/model", "/healthz", "/metrics", "/",
             "/openapi.json")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def _endpoint(path: str) -> str:
    if path in ENDPOINTS:
        return path
    return "/static" if path.startswith("/static/") else "other"


def _protected(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


def _given_key(scope: Scope) -> str | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


class GuardMiddleware:
    def __init__(self, app: Callable, *, api_key: str | None, metrics: ServeMetrics) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # unless a response starts
        path = scope.get("path", "")

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if (self.api_key and _protected(path) and scope.get("method") != "OPTIONS"
                    and not self._authorised(scope)):  # CORS preflights carry no key
                await self._unauthorised(send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(_endpoint(path), status, time.perf_counter() - t0)

    def _authorised(self, scope: Scope) -> bool:
        given = _given_key(scope)
        return given is not None and hmac.compare_digest(given.encode(), self.api_key or b"")

    @staticmethod
    async def _unauthorised(send: Send) -> None:
        body = json.dumps({"error": "missing or wrong API key: send it as 'X-API-Key: KEY' or "
                                    "'Authorization: Bearer KEY'"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
