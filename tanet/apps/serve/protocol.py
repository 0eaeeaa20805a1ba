"""The Open Inference Protocol's (KServe v2) HTTP/REST wire format, with Triton's binary tensor
data extension: an inference request's body in, a response's body out; no model knowledge.

A request body is a JSON object, or (the extension, what ``tritonclient.http`` sends by default)
a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw data of every
input whose ``parameters`` carry ``binary_data_size``, in the order of the inputs. Raw tensors
are little-endian, row-major; a ``BYTES`` tensor is its elements one after another, each a 4-byte
little-endian length and that many bytes. Outputs are binary when their requested ``parameters``
say ``binary_data: true`` (or, for outputs not named, the request's ``binary_data_output``);
their data then follows the response's JSON header in the order of the outputs.

:func:`receive_infer` streams the body: the header is parsed and checked (the ``check``
callback: names, types, shapes) before any tensor data is read, ``BYTES`` elements go straight
into temporary files of the request (:class:`~tanet.apps.serve.service.Spool`), and nothing is
kept past the size limit. In a JSON body, ``BYTES`` elements are strings; this server reads them
as base64 (its one ``BYTES`` input is an encoded video file).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from starlette.requests import ClientDisconnect, Request

from tanet.apps.serve.errors import ApiError

__all__ = ["Tensor", "RequestedOutput", "InferRequest", "OutputTensor", "receive_infer",
           "encode_response", "DTYPES", "HEADER_LENGTH"]

HEADER_LENGTH = "Inference-Header-Content-Length"
DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
          "BYTES": None}
_INPUT_PARAMETERS = {"binary_data_size", "content_type"}
_OUTPUT_PARAMETERS = {"binary_data", "classification"}


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


@dataclass
class Tensor:
    """One input: its header fields, then its data: ``files`` (``BYTES``: one temporary file per
    element, in row-major order) or ``array`` (numbers, shaped)."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any]
    json_data: Any = None  # the JSON body's `data`, until decoded
    files: list[Path] = field(default_factory=list)
    array: np.ndarray | None = None

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def binary_size(self) -> int | None:
        return self.parameters.get("binary_data_size")


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request's binary_data_output
    classification: int  # 0: the tensor itself; k: Triton's top-k "score:index:label" strings


@dataclass
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, Tensor]
    outputs: list[RequestedOutput] | None  # None: every output, default settings

    @property
    def binary_output(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


@dataclass
class OutputTensor:
    """One output of a response: ``data`` a numeric array, or for ``BYTES`` a list of
    ``bytes``/``str`` elements in row-major order."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    binary: bool


# ---------------------------------------------------------------------------- the header
def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in value):
        raise _bad(f"{where}: 'shape' must be a list of non-negative integers, got "
                   f"{json.dumps(value)[:80]}")
    return value


def _params(value: Any, where: str, known: set[str] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{where}: 'parameters' must be an object")
    if any(k.startswith("shared_memory") for k in value):
        raise _bad(f"{where}: shared memory is not supported by this server; send the data in "
                   "the request body (JSON or binary)")
    if known is not None and (extra := sorted(set(value) - known)):
        raise _bad(f"{where}: unknown parameter {extra[0]!r} (known: {', '.join(sorted(known))})")
    return value


def _input(obj: Any, k: int) -> Tensor:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise _bad(f"inputs[{k}]: an object with 'name', 'datatype', 'shape' and 'data' (or "
                   "parameters.binary_data_size)")
    name = obj["name"]
    where = f"input {name!r}"
    if obj.get("datatype") not in DTYPES:
        raise _bad(f"{where}: unknown datatype {obj.get('datatype')!r} (the protocol's: "
                   f"{', '.join(DTYPES)})")
    t = Tensor(name, obj["datatype"], _shape(obj.get("shape"), where),
               _params(obj.get("parameters"), where, _INPUT_PARAMETERS), obj.get("data"))
    size = t.binary_size
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"{where}: binary_data_size must be a non-negative integer")
        if t.json_data is not None:
            raise _bad(f"{where}: has both 'data' and binary_data_size; send one")
        width = np.dtype(DTYPES[t.datatype]).itemsize if t.datatype != "BYTES" else None
        if width is not None and size != t.count * width:
            raise _bad(f"{where}: binary_data_size {size} is not {t.count} x {width} bytes "
                       f"(shape {t.shape}, {t.datatype})")
    elif t.json_data is None:
        raise _bad(f"{where}: no 'data' and no parameters.binary_data_size")
    return t


def _output(obj: Any, k: int) -> RequestedOutput:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise _bad(f"outputs[{k}]: an object with 'name' (and optional 'parameters')")
    where = f"output {obj['name']!r}"
    p = _params(obj.get("parameters"), where, _OUTPUT_PARAMETERS)
    binary, cls = p.get("binary_data"), p.get("classification", 0)
    if binary is not None and not isinstance(binary, bool):
        raise _bad(f"{where}: binary_data must be true or false")
    if not isinstance(cls, int) or isinstance(cls, bool) or cls < 0:
        raise _bad(f"{where}: classification must be a non-negative integer")
    return RequestedOutput(obj["name"], binary, cls)


def parse_header(raw: bytes) -> InferRequest:
    """The request's JSON (the header, or the whole body), checked for the protocol's shape."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(f"the request's JSON cannot be parsed: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("inputs"), list) or not obj["inputs"]:
        raise _bad("the request must be a JSON object with a non-empty 'inputs' list")
    inputs: dict[str, Tensor] = {}
    for k, item in enumerate(obj["inputs"]):
        t = _input(item, k)
        if t.name in inputs:
            raise _bad(f"input {t.name!r} is given twice")
        inputs[t.name] = t
    outs = obj.get("outputs")
    if outs is not None and not isinstance(outs, list):
        raise _bad("'outputs' must be a list")
    outputs = None if outs is None else [_output(o, k) for k, o in enumerate(outs)]
    if outputs is not None and len({o.name for o in outputs}) < len(outputs):
        raise _bad("an output is requested twice")
    rid = obj.get("id")
    return InferRequest(None if rid is None else str(rid), _params(obj.get("parameters"),
                        "the request", None), inputs, outputs)


# ------------------------------------------------------------------- the binary section
class _BytesToFiles:
    """A ``BYTES`` tensor's binary data (4-byte length + bytes per element) into one spool file
    per element, as it streams in."""

    def __init__(self, t: Tensor, new_file: Callable[[], tuple[int, Path]]) -> None:
        self.t, self.new_file = t, new_file
        self.left = t.binary_size or 0
        self.head = b""  # a length prefix being read
        self.need = 0  # bytes of the current element still to come
        self.fd: int | None = None

    def write(self, data: memoryview) -> None:
        while len(data):
            if self.need == 0 and self.fd is None:
                take = min(4 - len(self.head), len(data))
                self.head += bytes(data[:take])
                self.left -= take
                data = data[take:]
                if len(self.head) < 4:
                    return
                (self.need,) = struct.unpack("<I", self.head)
                self.head = b""
                if self.need > self.left:
                    raise _bad(f"input {self.t.name!r}: element {len(self.t.files)} says "
                               f"{self.need} bytes, more than the {self.left} left of its "
                               "binary_data_size")
                self.fd, path = self.new_file()
                self.t.files.append(path)
            n = min(self.need, len(data))
            os.write(self.fd, data[:n])
            self.need -= n
            self.left -= n
            data = data[n:]
            if self.need == 0:
                self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def finish(self) -> None:
        self.close()
        if self.head or self.need:
            raise _bad(f"input {self.t.name!r}: its binary data ends inside an element")


class _Numbers:
    def __init__(self, t: Tensor) -> None:
        self.t, self.buf = t, bytearray()

    def write(self, data: memoryview) -> None:
        self.buf += data

    def close(self) -> None:
        pass

    def finish(self) -> None:
        dtype = np.dtype(DTYPES[self.t.datatype])
        wire = np.frombuffer(bytes(self.buf), dtype=dtype.newbyteorder("<"))
        self.t.array = wire.astype(dtype).reshape(self.t.shape)  # native order, writable


class _Binary:
    """Routes the bytes after the header to the binary inputs, in order, each its size."""

    def __init__(self, req: InferRequest, new_file: Callable[[], tuple[int, Path]]) -> None:
        self.sinks = [(_BytesToFiles(t, new_file) if t.datatype == "BYTES" else _Numbers(t),
                       t.binary_size) for t in req.inputs.values() if t.binary_size is not None]
        self.k, self.left = 0, self.sinks[0][1] if self.sinks else 0

    @property
    def expected(self) -> int:
        return sum(size for _, size in self.sinks)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        data = memoryview(chunk)
        while len(data):
            while self.k < len(self.sinks) and self.left == 0:
                self._next()
            if self.k >= len(self.sinks):
                raise _bad(f"the body is longer than the header and the inputs' "
                           f"binary_data_size ({self.expected} bytes of tensor data) say")
            sink = self.sinks[self.k][0]
            n = min(self.left, len(data))
            sink.write(data[:n])
            self.left -= n
            data = data[n:]

    def _next(self) -> None:
        self.sinks[self.k][0].finish()
        self.k += 1
        self.left = self.sinks[self.k][1] if self.k < len(self.sinks) else 0

    def finish(self) -> None:
        while self.k < len(self.sinks) and self.left == 0:
            self._next()
        if self.k < len(self.sinks):
            raise _bad(f"the body ended before the tensor data of input "
                       f"{self.sinks[self.k][0].t.name!r} ({self.expected} bytes of tensor data "
                       "expected)")

    def close(self) -> None:
        for sink, _ in self.sinks:
            sink.close()


# ---------------------------------------------------------------------------- receiving
def _flat(value: Any, where: str) -> list:
    """A JSON tensor's ``data``, flat (row-major) or nested, as a flat list."""
    if not isinstance(value, list):
        raise _bad(f"{where}: 'data' must be a list")
    out: list = []
    stack = [iter(value)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _json_tensor(t: Tensor, new_file: Callable[[], tuple[int, Path]]) -> None:
    """Decode a JSON body's ``data`` into ``t.files`` (BYTES: base64 text) or ``t.array``."""
    where = f"input {t.name!r}"
    values = _flat(t.json_data, where)
    if len(values) != t.count:
        raise _bad(f"{where}: {len(values)} values in 'data' for shape {t.shape} "
                   f"({t.count} elements)")
    t.json_data = None
    if t.datatype != "BYTES":
        if not all(isinstance(v, (int, float)) for v in values):
            raise _bad(f"{where}: 'data' must hold numbers for {t.datatype}")
        t.array = np.asarray(values, dtype=DTYPES[t.datatype]).reshape(t.shape)
        return
    for k, v in enumerate(values):
        try:
            raw = base64.b64decode(v, validate=True) if isinstance(v, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None:
            raise _bad(f"{where}: element {k} is not base64 text (in JSON this server reads "
                       "BYTES elements as base64; or send them binary, with binary_data_size)")
        fd, path = new_file()
        t.files.append(path)
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise _bad(f"{HEADER_LENGTH} must be a byte count, got {value!r}")
    return int(value)


async def receive_infer(request: Request, new_file: Callable[[], tuple[int, Path]], *,
                        max_bytes: int, check: Callable[[InferRequest], None]) -> InferRequest:
    """Stream an inference request's body: the header parsed and ``check``-ed before any tensor
    data is read, BYTES elements into ``new_file()`` files, numbers into arrays. Raises
    :class:`ApiError` (400 malformed, 413 over ``max_bytes``, 415 compressed); the files made
    so far are the caller's to delete (its spool)."""
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        raise ApiError(415, f"Content-Encoding {request.headers['content-encoding']} is not "
                            "supported: send the request uncompressed")
    length = request.headers.get("content-length")
    too_big = f"request too large: over the server's limit of {max_bytes / 2**20:.3g} MB " \
              "(--max-upload-mb)"
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, too_big)
    hlen = _header_length(request)
    head, received = bytearray(), 0
    req: InferRequest | None = None
    binary: _Binary | None = None
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise ApiError(413, too_big)
            if binary is not None:
                binary.feed(chunk)
                continue
            head += chunk
            if hlen is not None and len(head) >= hlen:
                req = parse_header(bytes(head[:hlen]))
                check(req)
                binary = _Binary(req, new_file)
                binary.feed(head[hlen:])
        if req is None:
            if hlen is not None:
                raise _bad(f"the body ({received} bytes) is shorter than its "
                           f"{HEADER_LENGTH} ({hlen})")
            req = parse_header(bytes(head))
            check(req)
            binary = _Binary(req, new_file)
            if binary.expected:
                raise _bad(f"binary_data_size given without the {HEADER_LENGTH} header")
        binary.finish()
    except ClientDisconnect:
        raise _bad("request interrupted: the client closed the connection") from None
    finally:
        if binary is not None:
            binary.close()
    for t in req.inputs.values():
        if t.json_data is not None:
            _json_tensor(t, new_file)
        elif t.datatype == "BYTES" and len(t.files) != t.count:
            raise _bad(f"input {t.name!r}: {len(t.files)} elements in its binary data for shape "
                       f"{t.shape} ({t.count} elements)")
    return req


# ---------------------------------------------------------------------------- responding
def _bytes_section(elements: list) -> bytes:
    parts = []
    for e in elements:
        b = e.encode() if isinstance(e, str) else bytes(e)
        parts += [struct.pack("<I", len(b)), b]
    return b"".join(parts)


def encode_response(model: str, version: str, request_id: str | None,
                    outputs: list[OutputTensor]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of an inference response; binary outputs after the JSON header."""
    items, blobs = [], []
    for o in outputs:
        item: dict[str, Any] = {"name": o.name, "datatype": o.datatype, "shape": o.shape}
        if o.binary:
            blob = (_bytes_section(o.data) if o.datatype == "BYTES" else
                    np.ascontiguousarray(o.data, dtype=np.dtype(DTYPES[o.datatype])
                                         .newbyteorder("<")).tobytes())
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif o.datatype == "BYTES":
            item["data"] = [e.decode() if isinstance(e, bytes) else e for e in o.data]
        else:
            item["data"] = np.asarray(o.data).ravel().tolist()
        items.append(item)
    body: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = items
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                      HEADER_LENGTH: str(len(header))}
