"""Decoded frames to arrays: RGB at a short side, upright (``to_rgb``), and a content digest.

Files (:class:`~tanet.data.decode.VideoReader`) and live streams (:mod:`tanet.data.stream`)
convert their frames with :func:`to_rgb`; :func:`digest` names a decoded frame by its pixels, so
that a frame reached after a seek can be checked against the one a sequential decode emits
(:mod:`tanet.data.verify`).
"""
from __future__ import annotations

import os
import threading
import zlib

import av
import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = ["to_rgb", "resized", "digest"]

_LOCAL = threading.local()


def _reformatter() -> VideoReformatter:
    """This thread's colour converter: it keeps its swscale context between frames and videos
    (``VideoFrame.to_ndarray(format=...)`` builds a new one per frame, ~1 ms each). Single
    threaded: loader workers already fill the cores, and swscale's threads do not survive fork."""
    pid, ref = getattr(_LOCAL, "reformatter", (None, None))
    if pid != os.getpid():  # a forked child must not reuse the parent's context
        ref = VideoReformatter()
        _LOCAL.reformatter = (os.getpid(), ref)
    return ref


def resized(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    """Output (w, h) with the short side scaled to ``short_side`` (aspect kept, rounded)."""
    if not short_side or min(w, h) == short_side:
        return w, h
    if w <= h:
        return short_side, max(1, round(h * short_side / w))
    return max(1, round(w * short_side / h)), short_side


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation (multiple of 90) to (H, W, 3)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def to_rgb(frame: av.VideoFrame, coded_size: tuple[int, int], rotation: int,
           short_side: int | None) -> np.ndarray:
    """RGB (H, W, 3) uint8, upright: ``frame`` scaled (bilinear) to the size that ``coded_size``
    (w, h before rotation) has with its short side at ``short_side``, then rotated
    counter-clockwise by ``rotation`` degrees."""
    w, h = coded_size
    if rotation % 180:
        oh, ow = resized(h, w, short_side)
    else:
        ow, oh = resized(w, h, short_side)
    ref = _reformatter()
    if (ow, oh) != (frame.width, frame.height):
        rgb = ref.reformat(frame, format="rgb24", width=ow, height=oh,
                           interpolation="BILINEAR", threads=1)
    else:
        rgb = ref.reformat(frame, format="rgb24", threads=1)
    return _rotate(rgb.to_ndarray(), rotation)  # (H, W, 3)


def digest(frame: av.VideoFrame) -> int:
    """A CRC-32 of a decoded frame's pixels in its own format (row padding left out) and of
    its size: equal for the same picture however it was reached; another picture passes for it
    with a chance of 2**-32."""
    per_pixel: dict[int, int] = {}
    for c in frame.format.components:
        per_pixel[c.plane] = per_pixel.get(c.plane, 0) + (c.bits + 7) // 8
    crc = zlib.crc32(f"{frame.format.name} {frame.width}x{frame.height}".encode())
    for k, plane in enumerate(frame.planes):
        data = np.frombuffer(plane, np.uint8)
        size, row = plane.height * plane.line_size, plane.width * per_pixel.get(k, 1)
        if not 0 < row <= plane.line_size or data.size < size:  # (a palette, say) as it is
            crc = zlib.crc32(data, crc)
            continue
        crc = zlib.crc32(np.ascontiguousarray(data[:size].reshape(-1, plane.line_size)[:, :row]),
                         crc)
    return crc
