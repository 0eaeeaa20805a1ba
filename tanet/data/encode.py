"""Writing videos with PyAV (tests, the synthetic benchmark, benchmarks): ``write_video``."""
from __future__ import annotations

import contextlib
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

__all__ = ["write_video", "available_codecs"]


def available_codecs() -> set[str]:
    """Names of the encoders this PyAV build offers."""
    return set(av.codecs_available)


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: float = 25,
                codec: str = "libx264", gop: int | None = None, bframes: int = 0,
                crf: int | None = None, pts: Sequence[int] | None = None,
                rotation: int = 0, pix_fmt: str | None = None,
                options: dict[str, str] | None = None, keyframes: Sequence[int] = ()) -> Path:
    """Encode uint8 frames (T, H, W, 3) RGB to a video file (container from the suffix),
    atomically (a temporary file renamed over ``path``).

    ``gop``: keyframe interval (None: encoder default, x264: 250 + scene cuts; 10**6 for one
    keyframe). ``pts``: explicit increasing timestamps in 1/90000 s ticks (variable frame
    rate). ``rotation``: display rotation metadata, counter-clockwise degrees. Odd sizes:
    H.264 4:2:0 needs even sizes, so ``libx264`` uses yuv444p for odd sizes unless ``pix_fmt``
    is given. ``crf`` None: near-lossless (crf 1 for
    x264, qscale 2 for mpeg4) so that tests can compare pixels. ``options``: extra encoder
    options (``x264-params`` entries are appended to those set here). ``keyframes``: frame
    numbers encoded as keyframes (I-frames) besides those ``gop`` places.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video: frames must be uint8 (T, H, W, 3), got "
                         f"{frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    if codec not in av.codecs_available:
        raise ValueError(f"write_video: encoder {codec!r} not available in this PyAV build")
    odd = (h % 2) or (w % 2)
    if pix_fmt is None:
        pix_fmt = "yuv444p" if (odd and codec == "libx264") else "yuv420p"
    rate = Fraction(fps).limit_denominator(1001)
    # Encode to a temporary name and rename: a killed or failing writer never leaves a
    # half-written video under ``path``.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{path.suffix}")
    try:
        with av.open(str(tmp), "w") as c:  # container from the suffix
            s = c.add_stream(codec, rate=rate)
            s.width, s.height, s.pix_fmt = w, h, pix_fmt
            cc = s.codec_context
            if pts is not None:
                s.time_base = cc.time_base = Fraction(1, 90000)
            if gop is not None:
                cc.gop_size = gop
            cc.max_b_frames = bframes
            cc.options = _encoder_options(codec, cc, gop, bframes, crf, options)
            if rotation:
                s.set_display_rotation(rotation)
            forced = set(keyframes)
            for i in range(t):
                f = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                if i in forced:
                    f.pict_type = 1  # AV_PICTURE_TYPE_I
                if pts is not None:
                    f.pts = int(pts[i])
                    f.time_base = s.time_base
                for packet in s.encode(f):
                    c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _encoder_options(codec: str, cc, gop: int | None, bframes: int, crf: int | None,
                     options: dict[str, str] | None) -> dict[str, str]:
    """The encoder's private options (and, for mpeg4, its fixed quantiser on ``cc``)."""
    opts = {}
    if codec == "libx264":
        if "qp" not in (options or {}):  # constant QP replaces the rate factor
            opts["crf"] = str(1 if crf is None else crf)
        opts["preset"] = "veryfast"
        if gop is not None:
            opts["x264-params"] = f"keyint={gop}:min-keyint={min(gop, 25)}:scenecut=0"
        if bframes == 0:
            opts["bf"] = "0"
    elif codec == "mpeg4":
        cc.qscale = 2 if crf is None else crf
        cc.flags |= 2  # AV_CODEC_FLAG_QSCALE
    elif codec.startswith("libvpx"):
        opts["crf"] = str(10 if crf is None else crf)
        opts["b"] = "0"
        opts["deadline"] = "realtime"
        opts["cpu-used"] = "8"
    for k, v in (options or {}).items():
        opts[k] = f"{opts[k]}:{v}" if k == "x264-params" and k in opts else str(v)
    return opts
