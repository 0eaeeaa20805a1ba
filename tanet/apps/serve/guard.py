"""The outermost layer of the app (plain ASGI): the API key check and the request metrics.

With an API key, ``/v1/*``, ``/v2/*`` and ``/metrics`` answer 401 unless the request carries it
as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (compared in constant time); the page, its
static files, ``/healthz``, the protocol's ``/v2/health/live`` and ``/v2/health/ready`` (probes)
and CORS preflights (``OPTIONS``, which browsers send without it) stay open. Every HTTP request is
counted by endpoint (the route's path, ``{name}`` for a model's; ``other`` for unknown paths, so
random URLs cannot blow up the label set), model (a served model's name, ``""`` for none or an
unknown one) and status.
"""
from __future__ import annotations

import hmac
import json
import time
import urllib.parse
from typing import Any, Awaitable, Callable, Sequence

from tanet.apps.serve.metrics import ServeMetrics

__all__ = ["GuardMiddleware", "ENDPOINTS"]

ENDPOINTS = ("/v1/predict", "/v1/visualize", "/v1/model", "/v1/models", "/healthz", "/metrics",
             "/", "/openapi.json", "/v2", "/v2/health/live", "/v2/health/ready")
_V1_MODEL = ("/v1/predict", "/v1/visualize", "/v1/model")  # take ?model= (default: the first)
_OPEN = ("/healthz", "/v2/health/live", "/v2/health/ready")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def _v2_model(path: str) -> tuple[str, str] | None:
    """(endpoint, model name) of ``/v2/models/NAME[/versions/V][/ready|/config|/infer]``."""
    parts = path.split("/")  # ["", "v2", "models", NAME, ...]
    if len(parts) < 4 or parts[1:3] != ["v2", "models"] or not parts[3]:
        return None
    rest = parts[4:]
    if rest[:1] == ["versions"] and len(rest) >= 2:
        rest = rest[2:]
    if rest not in ([], ["ready"], ["config"], ["infer"]):
        return None
    return "/v2/models/{name}" + "".join("/" + r for r in rest), urllib.parse.unquote(parts[3])


def _labels(scope: Scope, models: Sequence[str], default: str) -> tuple[str, str]:
    """(endpoint, model) labels of a request."""
    path = scope.get("path", "")
    if path in _V1_MODEL:
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = query.get("model", [default])[-1] or default
        return path, name if name in models else ""
    if path in ENDPOINTS:
        return path, ""
    if path.startswith("/static/"):
        return "/static", ""
    v2 = _v2_model(path)
    if v2 is not None:
        return v2[0], v2[1] if v2[1] in models else ""
    return "other", ""


def _protected(path: str) -> bool:
    return path not in _OPEN and (path.startswith(("/v1/", "/v2/")) or path in ("/v2",
                                                                                "/metrics"))


def _given_key(scope: Scope) -> str | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


class GuardMiddleware:
    def __init__(self, app: Callable, *, api_key: str | None, metrics: ServeMetrics,
                 models: Sequence[str] = (), default: str = "") -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics
        self.models, self.default = frozenset(models), default

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
            endpoint, model = _labels(scope, self.models, self.default)
            self.metrics.observe_request(endpoint, model, status, time.perf_counter() - t0)

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
