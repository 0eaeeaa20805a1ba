"""The Open Inference Protocol (KServe v2) over HTTP/REST, beside ``/v1``: what KServe, Triton,
OpenVINO Model Server and Seldon's clients speak (``tritonclient.http`` works unchanged).

``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``, and per model (also
under ``/v2/models/NAME/versions/1/...``): ``GET /v2/models/NAME`` (metadata),
``.../ready``, ``.../config`` (Triton's model configuration) and ``POST .../infer``.

A model takes one of two inputs: ``video`` (``BYTES`` [N], each element an encoded video file
in any container tanet reads; base64 text in a JSON body) or ``clips`` (``FP32``
[N, T, 3, H, W], already preprocessed as the model's card says: one view per clip). Its outputs:
``probabilities`` (``FP32`` [N, K]; with the classification extension's ``classification: k``,
``BYTES`` [N, k] of ``"score:index:label"``), ``labels`` (``BYTES`` [N, k], the top-k class
names, ``k`` the ``topk`` parameter) and, with the ``window`` parameter, ``segments`` (``BYTES``
[N], each the JSON list of one video's segments, :mod:`tanet.apps.segments`). Request
parameters: ``topk``, ``views``, ``window``, ``stride``, ``min_score``, ``min_duration``,
``max_gap``, ``binary_data_output``, Triton's ``timeout`` (microseconds; a deadline shorter than
``--timeout``) and ``priority`` (accepted, not used). Requests go through the same admission
queue, batcher, limits and metrics as ``/v1`` (:meth:`~tanet.apps.serve.service.Service.run`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

import tanet
from tanet.apps.predict import Predictor, failure_message
from tanet.apps.segments import SegmentRule, segments_of
from tanet.apps.serve.batching import JobCancelled
from tanet.apps.serve.errors import ApiError
from tanet.apps.serve.models import VERSION, ServedModel
from tanet.apps.serve.protocol import (InferRequest, OutputTensor, RequestedOutput,
                                       encode_response, receive_infer)
from tanet.apps.serve.service import Service, Spool
from tanet.data.decode import VideoDecodeError

__all__ = ["add_v2_routes", "metadata", "EXTENSIONS"]

log = logging.getLogger("tanet.serve")
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration"]
OUTPUTS = ("probabilities", "labels", "segments")
_NUMBERS = {"window": (0, 3600), "stride": (0, 3600), "min_score": (0, 1),
            "min_duration": (0, 86400), "max_gap": (0, 86400)}
_IGNORED = {"priority", "content_type", "headers"}  # accepted, not used


def metadata(m: ServedModel) -> dict[str, Any]:
    """The protocol's model metadata: inputs and outputs with datatypes and shapes (-1: any)."""
    k = m.predictor.card.num_classes
    return {"name": m.name, "versions": [VERSION], "platform": m.platform,
            "inputs": [{"name": "video", "datatype": "BYTES", "shape": [-1]},
                       {"name": "clips", "datatype": "FP32", "shape": [-1, *m.clip_shape()]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
                        {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
                        {"name": "segments", "datatype": "BYTES", "shape": [-1]}]}


def model_config(m: ServedModel) -> dict[str, Any]:
    """Triton's model configuration (its JSON form), for tools that read it (perf_analyzer)."""
    meta = metadata(m)
    kind = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}
    tensor = lambda t, **kw: {"name": t["name"], "data_type": kind[t["datatype"]],  # noqa: E731
                              "dims": t["shape"], **kw}
    return {"name": m.name, "platform": m.platform, "backend": "tanet", "max_batch_size": 0,
            "input": [tensor(t, optional=True) for t in meta["inputs"]],
            "output": [tensor(t) for t in meta["outputs"]],
            "version_policy": {"latest": {"num_versions": 1}},
            "dynamic_batching": {"max_queue_delay_microseconds":
                                 int(1000 * m.settings.max_wait_ms)},
            "parameters": {"class_names": {"string_value": json.dumps(m.predictor.class_names)}}}


@dataclass
class Plan:
    """What one inference request asks of its model, checked before its tensor data is read."""

    model: ServedModel
    predictor: Predictor
    outputs: list[RequestedOutput]
    window: float | None
    stride: float | None
    rule: SegmentRule
    timeout: float | None  # seconds

    @property
    def whole(self) -> bool:  # a whole-video prediction is needed
        return any(o.name != "segments" for o in self.outputs)


def _number(params: dict[str, Any], name: str, integer: bool = False) -> Any:
    v = params.get(name)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool):
        raise ApiError(400, f"parameter {name!r} must be {'an integer' if integer else 'a number'}"
                            f", got {json.dumps(v)}")
    return v


def _check_parameters(p: dict[str, Any]) -> None:
    known = {"topk", "views", "binary_data_output", "timeout", *_NUMBERS, *_IGNORED}
    if p.get("sequence_id") not in (None, 0, ""):
        raise ApiError(400, "sequences (sequence_id) are not supported: each request stands alone")
    extra = sorted(set(p) - known - {"sequence_id", "sequence_start", "sequence_end"})
    if extra:
        raise ApiError(400, f"unknown parameter {extra[0]!r} (known: {', '.join(sorted(known))})")
    for name, (lo, hi) in _NUMBERS.items():
        v = _number(p, name)
        if v is not None and not lo <= v <= hi or (name in ("window", "stride") and v == 0):
            raise ApiError(400, f"parameter {name!r} must be within {lo}..{hi}"
                                + (" and > 0" if name in ("window", "stride") else ""))
    if not isinstance(p.get("binary_data_output", False), bool):
        raise ApiError(400, "parameter 'binary_data_output' must be true or false")
    if p.get("views") is not None and not isinstance(p["views"], str):
        raise ApiError(400, "parameter 'views' must be a string such as \"1x1\" or \"2x3\"")


def _check_inputs(m: ServedModel, req: InferRequest) -> tuple[str, int]:
    """(the input given, N)."""
    extra = sorted(set(req.inputs) - {"video", "clips"})
    if extra or len(req.inputs) != 1:
        raise ApiError(400, (f"unknown input {extra[0]!r}: " if extra else "")
                       + f"model {m.name!r} takes one input, 'video' (BYTES [N]: encoded video "
                         f"files) or 'clips' (FP32 {[-1, *m.clip_shape()]}: preprocessed)")
    (name, t), = req.inputs.items()
    want = "BYTES" if name == "video" else "FP32"
    if t.datatype != want:
        raise ApiError(400, f"input {name!r}: datatype {t.datatype}, expected {want}")
    if name == "video" and len(t.shape) != 1:
        raise ApiError(400, f"input 'video': shape {t.shape}, expected [N] (one encoded video "
                            "file per element)")
    if name == "clips" and t.shape[1:] != m.clip_shape():
        raise ApiError(400, f"input 'clips': shape {t.shape}, expected [N, "
                            f"{', '.join(map(str, m.clip_shape()))}] (N clips of T frames, "
                            f"RGB, {m.clip_shape()[2]}x{m.clip_shape()[3]} px, normalised as the "
                            "model card says)")
    if not t.shape or t.shape[0] < 1:
        raise ApiError(400, f"input {name!r}: shape {t.shape} has no elements")
    return name, t.shape[0]


def make_plan(m: ServedModel, req: InferRequest) -> Plan:
    """Check a request's header against ``m`` (inputs, parameters, outputs); 400 otherwise."""
    p = req.parameters
    _check_parameters(p)
    given, n = _check_inputs(m, req)
    window, stride = _number(p, "window"), _number(p, "stride")
    if given == "clips" and window:
        raise ApiError(400, "parameter 'window' is for 'video' inputs (clips are one window each)")
    if stride and not window:
        raise ApiError(400, "parameter 'stride' needs 'window' (seconds)")
    if window and (stride or window / 2) < window / 100:
        raise ApiError(400, "parameter 'stride' is under 1/100 of the window: too many windows")
    topk = _number(p, "topk", integer=True)
    if topk is not None and not 1 <= topk <= 1000:
        raise ApiError(400, "parameter 'topk' must be within 1..1000")
    predictor = m.predictor_for(p.get("views"), topk, videos=n if given == "video" else 1)
    if given == "clips" and n > m.settings.max_views:
        raise ApiError(400, f"{n} clips; this server allows at most {m.settings.max_views} views "
                            "per request (--max-views)")
    outputs = req.outputs if req.outputs is not None else [
        RequestedOutput(o, None, 0) for o in OUTPUTS if o != "segments" or window]
    for o in outputs:
        if o.name not in OUTPUTS:
            raise ApiError(400, f"unknown output {o.name!r} (this model's: {', '.join(OUTPUTS)})")
        if o.classification and o.name != "probabilities":
            raise ApiError(400, f"output {o.name!r}: classification applies to 'probabilities'")
        if o.name == "segments" and not window:
            raise ApiError(400, "output 'segments' needs the parameter 'window' (seconds)")
    timeout = _number(p, "timeout", integer=True)
    rule = SegmentRule(_number(p, "min_score") or 0.0, _number(p, "min_duration"),
                       _number(p, "max_gap"))
    return Plan(m, predictor, outputs, window, stride, rule,
                timeout / 1e6 if timeout and timeout > 0 else None)


# -------------------------------------------------------------------------------- jobs
def video_job(plan: Plan, path: Path, k: int, n: int) -> dict[str, Any]:
    """Pool thread: one video's probabilities (K,) and/or segments; 400 if it cannot be read."""
    where = f"input 'video' element {k} (of {n})"
    try:
        out: dict[str, Any] = {}
        if plan.whole:
            out["probs"] = plan.predictor.predict(path).probs  # (K,)
        if plan.window:
            res = plan.predictor.predict_windows(path, plan.window, stride=plan.stride)
            out["segments"] = segments_of(res, plan.rule)
        return out
    except (JobCancelled, MemoryError):
        raise
    except VideoDecodeError as e:
        raise ApiError(400, failure_message(path, e).replace(str(path), where)) from None
    except Exception as e:
        log.exception("inference failed on %s (%s)", where, path)
        raise ApiError(500, failure_message(path, e).replace(str(path), where)) from None


def clips_job(plan: Plan, clips: np.ndarray) -> np.ndarray:
    """Pool thread: per-clip probabilities (N, K) of preprocessed clips (N, T, 3, H, W)."""
    logits = plan.predictor.backend(torch.from_numpy(clips))  # (N, K)
    return torch.from_numpy(logits).float().softmax(-1).numpy()  # (N, K)


def _work(plan: Plan, req: InferRequest) -> list:
    (name, t), = req.inputs.items()
    if name == "clips":
        if not np.isfinite(t.array).all():
            raise ApiError(400, "input 'clips' has NaN or infinite values")
        return [(clips_job, (plan, t.array.astype(np.float32, copy=False)))]
    for k, f in enumerate(t.files):
        if f.stat().st_size == 0:
            raise ApiError(400, f"input 'video' element {k} is empty (0 bytes)")
    return [(video_job, (plan, f, k, len(t.files))) for k, f in enumerate(t.files)]


def _outputs(plan: Plan, req: InferRequest, results: list) -> list[OutputTensor]:
    names = plan.predictor.class_names
    if "clips" in req.inputs:
        probs = results[0]  # (N, K)
        segments = None
    else:
        probs = np.stack([r["probs"] for r in results]) if plan.whole else None  # (N, K)
        segments = [json.dumps([s.to_json() for s in r["segments"]]) for r in results
                    ] if plan.window else None
    out = []
    for o in plan.outputs:
        binary = req.binary_output if o.binary is None else o.binary
        if o.name == "segments":
            out.append(OutputTensor(o.name, "BYTES", [len(segments)], segments, binary))
            continue
        k = o.classification or plan.predictor.topk
        order = np.argsort(-probs, axis=1)[:, :k]  # (N, k), as Predictor._top orders
        if o.name == "probabilities" and not o.classification:
            out.append(OutputTensor(o.name, "FP32", list(probs.shape),
                                    probs.astype(np.float32), binary))
        elif o.name == "probabilities":
            data = [f"{probs[r, i]:.6f}:{i}:{names[i]}" for r, row in enumerate(order) for i in row]
            out.append(OutputTensor(o.name, "BYTES", list(order.shape), data, binary))
        else:
            out.append(OutputTensor(o.name, "BYTES", list(order.shape),
                                    [names[i] for row in order for i in row], binary))
    return out


# ------------------------------------------------------------------------------ routes
def _version(version: str | None) -> None:
    if version is not None and version != VERSION:
        raise ApiError(404, f"unknown version {version!r}: this server has version {VERSION} of "
                            "each model")


async def _infer(svc: Service, request: Request, name: str, version: str | None) -> Response:
    m = svc.model(name)
    _version(version)
    plans: list[Plan] = []  # the header's, checked before the tensor data is read
    reqs: list[InferRequest] = []

    async def receive(spool: Spool) -> InferRequest:
        reqs.append(await receive_infer(request, spool.new,
                                        max_bytes=svc.settings.max_upload_bytes,
                                        check=lambda req: plans.append(make_plan(m, req))))
        return reqs[0]

    results = await svc.run(m, receive, lambda req: _work(plans[0], req),
                            timeout_of=lambda _: plans[0].timeout)
    body, headers = encode_response(m.name, VERSION, reqs[0].id,
                                    _outputs(plans[0], reqs[0], results))
    return Response(body, headers=headers)


def _ready(svc: Service) -> Response:
    if not svc.ready:
        raise ApiError(503, "not ready: the server is starting or stopping")
    return Response(status_code=200)


def add_v2_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "tanet", "version": tanet.__version__, "extensions": EXTENSIONS}

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _ready(svc)

    async def model_meta(request: Request, name: str, version: str | None) -> Response:
        _version(version)
        return JSONResponse(metadata(svc.model(name)))

    async def model_ready(request: Request, name: str, version: str | None) -> Response:
        svc.model(name)
        _version(version)
        return _ready(svc)

    async def config(request: Request, name: str, version: str | None) -> Response:
        _version(version)
        return JSONResponse(model_config(svc.model(name)))

    async def infer(request: Request, name: str, version: str | None) -> Response:
        return await _infer(svc, request, name, version)

    for suffix, handler, method in (("", model_meta, "GET"), ("/ready", model_ready, "GET"),
                                    ("/config", config, "GET"), ("/infer", infer, "POST")):
        _model_routes(app, suffix, handler, method)


def _model_routes(app: FastAPI, suffix: str, handler, method: str) -> None:
    """``/v2/models/{name}SUFFIX`` and ``/v2/models/{name}/versions/{version}SUFFIX``."""
    async def plain(request: Request, name: str) -> Response:
        return await handler(request, name, None)

    async def versioned(request: Request, name: str, version: str) -> Response:
        return await handler(request, name, version)

    app.add_api_route(f"/v2/models/{{name}}{suffix}", plain, methods=[method])
    app.add_api_route(f"/v2/models/{{name}}/versions/{{version}}{suffix}", versioned,
                      methods=[method])
