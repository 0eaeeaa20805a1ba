"""``tanet serve``'s own API, ``/v1``: a multipart upload in, ``tanet predict --json``'s answer out.

* ``POST /v1/predict``: multipart field ``file``; query ``model``, ``views``, ``topk``,
  ``window``, ``stride``, ``thumbnails``, and for a timeline the segments rule (``min_score``,
  ``min_duration``, ``max_gap``) and ``format`` (``json``; ``vtt``, ``srt``, ``csv``: the
  segments as that file). The body is ``tanet predict --json``'s object for that file (``path``
  is the uploaded file's name), or with ``window`` the sliding-window timeline and its
  ``segments``; both with ``video`` (duration, fps, frame count, ...) and the frames the model
  sampled (as pictures with ``thumbnails``; :mod:`tanet.apps.serve.frames`).
* ``POST /v1/visualize``: ``tanet visualize``'s pictures of the upload as PNG data URLs.
* ``GET /v1/model`` (a model's card and the limits; ``?model=``), ``GET /v1/models`` (all).
"""
from __future__ import annotations

import base64
import copy
import logging
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from tanet.apps.predict import Prediction, Predictor, WindowPrediction, failure_message
from tanet.apps.segments import (Segment, SegmentRule, segments_csv, segments_of, segments_srt,
                                 segments_vtt)
from tanet.apps.serve.batching import JobCancelled
from tanet.apps.serve.errors import ApiError
from tanet.apps.serve.frames import sampled_json, video_facts, window_thumbnails
from tanet.apps.serve.models import ServedModel
from tanet.apps.serve.service import Service, Spool
from tanet.apps.serve.uploads import receive_upload
from tanet.data.decode import VideoDecodeError

__all__ = ["add_v1_routes", "timeline_json", "segment_rule"]

log = logging.getLogger("tanet.serve")
_FILES = {"vtt": ("text/vtt", segments_vtt), "srt": ("application/x-subrip", segments_srt),
          "csv": ("text/csv", segments_csv)}


def _renamed(obj: Any, old: str, new: str) -> Any:
    """``obj`` (JSON) with the server's temporary path replaced by the client's file name."""
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, list):
        return [_renamed(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {k: _renamed(v, old, new) for k, v in obj.items()}
    return obj


def segment_rule(min_score: float | None, min_duration: float | None,
                 max_gap: float | None) -> SegmentRule:
    """The segments rule of a request's parameters, or 400 naming the bad one."""
    try:
        return SegmentRule(0.0 if min_score is None else min_score, min_duration, max_gap)
    except ValueError as e:
        raise ApiError(400, str(e)) from None


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


def predict_job(predictor: Predictor, window: float | None, stride: float | None,
                rule: SegmentRule, thumbnails: bool, path: Path, name: str) -> tuple[int, dict]:
    """Pool thread: ``tanet predict``'s answer for one upload (or its timeline and segments),
    with the video's facts and the frames the model sampled (pictures with ``thumbnails``)."""
    try:
        if window:
            res = predictor.predict_windows(path, window, stride=stride)
            body = {"window": window, "stride": stride or window / 2,
                    **timeline_json(res, predictor.topk),
                    "segments": [s.to_json() for s in segments_of(res, rule)],
                    "rule": rule.to_json(window), "video": video_facts(path)}
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


def visualize_job(model: ServedModel, topk: int, path: Path, name: str) -> tuple[int, dict]:
    """Pool thread: ``tanet visualize``'s PNGs, on a copy of the model (the batcher's thread
    owns the original: TAM capture puts hooks on the model it runs)."""
    from tanet.apps.visualize import write_pictures

    predictor = model.predictor.with_options(views="1x1", topk=topk)
    locked = False
    try:
        with model.pool.waiting():  # queue for the copy without holding a decode slot
            locked = model.vis_lock.acquire()
        if model.vis_model is None:
            model.vis_model = copy.deepcopy(model.predictor.model).eval()
        with tempfile.TemporaryDirectory(dir=path.parent) as out:
            files = write_pictures(model.vis_model, predictor, path, out, topk=topk, name=name)
            images = {f.stem: "data:image/png;base64," + base64.b64encode(f.read_bytes())
                      .decode() for f in files}
    except VideoDecodeError as e:
        err = Prediction(str(path), error=failure_message(path, e)).to_json()
        return 422, _renamed(err, str(path), name)
    finally:
        if locked:
            model.vis_lock.release()
    return 200, {"path": name, "images": images}


def _segments_file(body: dict, fmt: str) -> Response:
    """A timeline answer's segments as a .vtt, .srt or .csv download."""
    media, write = _FILES[fmt]
    segs = [Segment(**s) for s in body["segments"]]
    stem = Path(body["path"]).stem or "segments"
    return Response(write(segs), media_type=f"{media}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{stem}.{fmt}"'})


async def _upload_once(svc: Service, model: ServedModel, request: Request, job) -> tuple[int, dict]:
    """Receive the multipart upload into the request's spool and run ``job(path, name)``."""
    async def receive(spool: Spool):
        up = await receive_upload(request, spool.directory,
                                  max_bytes=svc.settings.max_upload_bytes)
        spool.add(up.path)
        return up

    (result,) = await svc.run(model, receive, lambda up: [(job, (up.path, up.filename))])
    return result


def add_v1_routes(app: FastAPI, svc: Service) -> None:
    @app.post("/v1/predict")
    async def predict(request: Request, model: str | None = None, views: str | None = None,
                      topk: int | None = Query(None, ge=1, le=1000),
                      window: float | None = Query(None, gt=0, le=3600),
                      stride: float | None = Query(None, gt=0, le=3600),
                      thumbnails: bool = False, min_score: float | None = None,
                      min_duration: float | None = None, max_gap: float | None = None,
                      format: str = Query("json", pattern="^(json|vtt|srt|csv)$")) -> Response:
        """Top-k of the uploaded video (``tanet predict --json``'s object), or with ``window``
        (seconds) the sliding-window timeline and its segments; ``thumbnails``: with the sampled
        frames' pictures (JPEG data URLs); ``format`` vtt/srt/csv: the segments as that file."""
        m = svc.model(model)
        predictor = m.predictor_for(views, topk)
        rule = segment_rule(min_score, min_duration, max_gap)
        if stride and not window:
            raise ApiError(400, "stride needs window (seconds)")
        if window and (stride or window / 2) < window / 100:
            raise ApiError(400, "stride is under 1/100 of the window: too many windows")
        if format != "json" and not window:
            raise ApiError(400, f"format={format} writes segments: it needs window (seconds)")
        status, body = await _upload_once(svc, m, request, lambda path, name: predict_job(
            predictor, window, stride, rule, thumbnails, path, name))
        if format != "json" and status == 200:
            return _segments_file(body, format)
        return JSONResponse(body, status_code=status)

    @app.post("/v1/visualize")
    async def visualize(request: Request, model: str | None = None,
                        topk: int | None = Query(None, ge=1, le=100)) -> JSONResponse:
        """``tanet visualize``'s pictures of the upload (frames, TAM kernels, evidence) as PNG
        data URLs; PyTorch checkpoints only."""
        m = svc.model(model)
        if m.predictor.model is None:
            raise ApiError(409, "visualize needs a PyTorch checkpoint; this model is an ONNX "
                                "export (serve it with --checkpoint MODEL.safetensors)")
        k = m.predictor_for(None, topk).topk
        status, body = await _upload_once(svc, m, request,
                                          lambda path, name: visualize_job(m, k, path, name))
        return JSONResponse(body, status_code=status)

    @app.get("/v1/model")
    async def model_card(model: str | None = None) -> dict[str, Any]:
        """A model's card (name, classes, frames, size, ...) and the server's limits."""
        return svc.model(model).card_json()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """Every model this server runs (the default first) with its card."""
        return {"default": svc.default, "models": [m.card_json() for m in svc.models.values()]}
