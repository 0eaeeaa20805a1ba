"""What every video reader shares: its error types, the facts it reports (:class:`VideoInfo`)
and the check of the frame indices asked of it. :mod:`.decode` re-exports them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["VideoDecodeError", "FrameIndexError", "VideoInfo", "checked_indices", "why"]


class VideoDecodeError(RuntimeError):
    """A video could not be read; the message starts with the file path and states the cause."""

    def __init__(self, path: str | os.PathLike, cause: str | None = None):
        # one argument: an already formatted message (as DataLoader re-raises worker errors)
        self.path = str(path) if cause is not None else str(path).split(": ", 1)[0]
        self.cause = cause if cause is not None else str(path).split(": ", 1)[-1]
        super().__init__(f"{self.path}: {cause}" if cause is not None else str(path))


class FrameIndexError(VideoDecodeError, IndexError):
    """A frame index outside [0, num_frames): names the file, the index and the true count."""


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a source. ``width``/``height`` are those of the frames ``get_frames`` returns
    without ``short_side`` (i.e. after rotation); ``rotation`` is counter-clockwise degrees;
    ``exact``: the frame index came from a full decode."""

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int = 0
    codec: str = ""
    container: str = ""
    exact: bool = False


def checked_indices(path: str | os.PathLike, indices: Sequence[int], n: int) -> np.ndarray:
    """``indices`` as a flat int64 array, each in [0, n), or a :class:`FrameIndexError` naming
    the file, the index and the count (ValueError for no indices)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{path}: no frame indices requested")
    if idx.max() >= n:
        raise FrameIndexError(path, f"frame index {idx.max()} is past the end: the video has "
                                    f"{n} frames (indices 0..{n - 1})")
    if idx.min() < 0:
        raise FrameIndexError(path, f"frame index {idx.min()} is negative (the video has "
                                    f"{n} frames)")
    return idx


def why(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.split(": '", 1)[0] if isinstance(msg, str) else str(e)
