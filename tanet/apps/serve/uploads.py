"""Receiving an upload: a multipart/form-data body streamed into a temporary file, with limits.

The body is parsed as it arrives (python-multipart's streaming parser), the ``file`` field goes
chunk by chunk into a file the server names itself (``tanet-upload-*`` in its temporary
directory; the client's file name is only echoed back, never used as a path), and the upload
stops with 413 as soon as it passes the size limit. Every failure deletes the file; on success
the caller owns it and must delete it.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

__all__ = ["Upload", "UploadError", "receive_upload", "client_name"]

_FIELD_SLACK = 64 * 1024  # room for the multipart headers and small fields beside the file


class UploadError(Exception):
    """A request whose upload cannot be used: ``status`` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    path: Path  # the server's temporary file
    filename: str  # the client's name for it (a base name), for the answer only
    size: int  # bytes


def client_name(raw: str | None) -> str:
    """The base name of a client's file name (no directories, printable, at most 200 chars)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:200].strip()
    return name or "upload"


class _Receiver:
    """python-multipart callbacks writing the ``field`` part into ``fd``."""

    def __init__(self, fd: int, field: str, max_bytes: int) -> None:
        self.fd, self.field, self.max_bytes = fd, field, max_bytes
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.disposition = b""
        self.in_file = self.file_done = self.ended = False
        self.filename: str | None = None
        self.size = 0

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value_part, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self.disposition = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_part(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        if bytes(self.header_name).lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        _, opts = parse_options_header(self.disposition)
        if opts.get(b"name", b"").decode("latin-1") == self.field and not self.file_done:
            self.in_file = True
            self.filename = client_name(opts.get(b"filename", b"").decode("utf-8", "replace"))

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file:
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise UploadError(413, f"upload too large: over the server's limit of "
                                   f"{_mb(self.max_bytes)} (--max-upload-mb)")
        os.write(self.fd, data[start:end])

    def part_end(self) -> None:
        if self.in_file:
            self.in_file, self.file_done = False, True

    def end(self) -> None:
        self.ended = True


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


def _boundary(request: Request) -> bytes:
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not opts.get(b"boundary"):
        raise UploadError(415, "send the video as multipart/form-data in the field 'file' "
                               "(curl -F file=@clip.mp4 ...)")
    return opts[b"boundary"]


async def receive_upload(request: Request, directory: str | os.PathLike, *, max_bytes: int,
                         field: str = "file") -> Upload:
    """Stream the request's multipart body; the ``field`` part lands in a new temporary file in
    ``directory``. Raises :class:`UploadError` (400, 413, 415) and leaves no file behind."""
    boundary = _boundary(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + _FIELD_SLACK:
        raise UploadError(413, f"upload too large: {_mb(int(length))} is over the server's limit "
                               f"of {_mb(max_bytes)} (--max-upload-mb)")
    fd, name = tempfile.mkstemp(prefix="tanet-upload-", suffix=".bin", dir=directory)
    path = Path(name)
    ok = False
    try:
        recv = _Receiver(fd, field, max_bytes)
        parser = MultipartParser(boundary, recv.callbacks())
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes + _FIELD_SLACK:
                    raise UploadError(413, f"upload too large: over the server's limit of "
                                           f"{_mb(max_bytes)} (--max-upload-mb)")
                parser.write(chunk)
        except ClientDisconnect:
            raise UploadError(400, "upload interrupted: the client closed the connection") from None
        except FormParserError as e:
            raise UploadError(400, f"malformed multipart body: {e}") from None
        if recv.filename is None:
            raise UploadError(400, f"no '{field}' field in the form: send the video as "
                                   f"-F {field}=@clip.mp4")
        if not recv.file_done or not recv.ended:
            raise UploadError(400, "truncated upload: the multipart body ended before its closing "
                                   "boundary")
        if recv.size == 0:
            raise UploadError(400, f"empty upload: the '{field}' field has 0 bytes")
        ok = True
        return Upload(path, recv.filename, recv.size)
    finally:
        os.close(fd)
        if not ok:
            path.unlink(missing_ok=True)
