"""What the page needs to show a video that the browser cannot play (an AVI with MPEG-4 Part 2,
the format of UCF101 and HMDB51; Chromium's and Firefox's ``<video>`` play neither): the video's
facts (duration, fps, frame count, size), which the browser cannot read either, and the frames
the model sampled as small JPEG data URLs: those of the answer (``sampled``) and, for a
timeline, those of every window (``thumbnails``, by frame index).
"""
from __future__ import annotations

import base64
import io
import os
from typing import Any

import numpy as np

from tanet.apps.predict import Prediction

__all__ = ["THUMB_SIDE", "MAX_THUMBNAILS", "video_facts", "jpeg_url", "sampled_json",
           "window_thumbnails"]

# px: the pictures' short side at most (smaller frames keep their size): UCF101's and HMDB51's
# 240-line videos are shown as they are, where the page puts a picture in the player's place
THUMB_SIDE = 240
MAX_THUMBNAILS = 256  # per answer; a longer timeline gets this many, spread over the video


def video_facts(path: str | os.PathLike) -> dict[str, Any]:
    """Duration (s), fps, frame count, size (after rotation), codec and container of a video
    (the frame index is cached: the prediction that read it before paid for it)."""
    from tanet.data.decode import open_video

    with open_video(path) as reader:
        i = reader.info
    return {"duration": round(i.duration, 4), "fps": round(i.fps, 4), "frames": i.num_frames,
            "width": i.width, "height": i.height, "codec": i.codec, "container": i.container}


def jpeg_url(frame: np.ndarray, side: int | None = None, quality: int = 75) -> str:
    """One frame (H, W, 3) uint8 as a ``data:image/jpeg;base64,...`` URL, its short side
    brought down to ``side`` (default :data:`THUMB_SIDE`; never up)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(frame))
    scale = (side or THUMB_SIDE) / min(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def sampled_json(pred: Prediction, fps: float, images: bool) -> list[dict[str, Any]]:
    """The frames the model sampled for ``pred``, clip by clip: clip, frame index, time (s), and
    with ``images`` the picture (``pred`` from ``predict(..., keep_frames=True)``)."""
    if pred.times is None:
        return []
    if images and pred.frames is None:
        raise ValueError("sampled_json(images=True) needs predict(..., keep_frames=True)")
    fps = fps or 25.0  # as Predictor.load_views counts
    out = []
    for c, row in enumerate(pred.times):  # row: (T,) seconds
        for j, t in enumerate(row):
            item: dict[str, Any] = {"clip": c, "index": int(round(float(t) * fps)),
                                    "time": round(float(t), 4)}
            if images:
                item["image"] = jpeg_url(pred.frames[c, j])  # type: ignore[index]
            out.append(item)
    return out


def window_thumbnails(path: str | os.PathLike, indices: np.ndarray, facts: dict[str, Any],
                      limit: int = MAX_THUMBNAILS) -> dict[str, str]:
    """Pictures of the frames the windows sampled (``indices`` (W, T)), by frame index (a JSON
    key: a string); over ``limit`` distinct frames, ``limit`` of them spread evenly. ``facts``:
    :func:`video_facts` of the video (its size: frames are decoded small)."""
    from tanet.data.decode import open_video

    wanted = np.unique(np.asarray(indices, dtype=np.int64))  # (N,) sorted
    if len(wanted) > limit:
        wanted = np.unique(wanted[np.linspace(0, len(wanted) - 1, limit).round().astype(int)])
    if not len(wanted):
        return {}
    short = min(THUMB_SIDE, facts["width"], facts["height"])
    with open_video(path, short_side=short) as reader:
        frames = reader.get_frames(wanted)  # (N, h, w, 3)
    return {str(int(i)): jpeg_url(f) for i, f in zip(wanted, frames)}
