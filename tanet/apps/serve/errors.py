"""The one error type of the server's routes: an answer other than 200, as ``{"error": "..."}``
(the shape ``/v1`` and the Open Inference Protocol share)."""
from __future__ import annotations

from fastapi.responses import JSONResponse

__all__ = ["ApiError", "error_response"]


class ApiError(Exception):
    """An answer other than 200: ``{"error": message}`` with ``status`` and ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
