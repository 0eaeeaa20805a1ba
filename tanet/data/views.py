"""The one clip-views policy: from a video and a model's card to the (V, T, C, H, W) views.

Training, ``tanet test``, ``tanet predict``, the server and the demo all go through here, so a
video gives the same clips wherever it is read:

* :class:`Geometry` is the test-time pipeline of a model (frames T, crop size, short side,
  mean/std, sampling); :func:`test_geometry` is the one rule that turns a model card (plus an
  optional data config) into it.
* :func:`parse_views` reads ``"CLIPSxCROPS"``.
* :func:`read_clips` samples (clips, T) frame indices and decodes them; :func:`to_views` applies
  a transform per clip and stacks the views, clip-major: view ``c * crops + k`` is crop ``k`` of
  clip ``c``.

Cards are duck-typed (``num_segments``, ``input_size``, ``resize``, ``mean``, ``std`` and
optionally ``sampling``, ``dense_stride``): this package never imports ``tanet.models``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from tanet.data.sampling import SAMPLINGS, clip_indices
from tanet.data.transforms import TestTransform, build_test_transform, clip_from_frames

__all__ = ["Geometry", "test_geometry", "parse_views", "test_transform", "read_clips",
           "read_test_clips", "to_views", "CROPS"]

CROPS = (1, 3, 10)


@dataclass(frozen=True)
class Geometry:
    """How a model is fed at test time."""

    frames: int  # T
    size: int  # crop side in pixels
    short_side: int  # frames are resized so that their short side is this, then cropped
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sampling: str = "segment"  # segment | dense
    dense_stride: int | None = None  # dense sampling: None is 64 // T


def test_geometry(card: Any, data: Any = None) -> Geometry:
    """The test pipeline of ``card``; ``data`` (a ``DataConfig``) may override the short side
    (``data.short_side``) and the sampling (``data.sampling``)."""
    sampling = getattr(card, "sampling", None) or "segment"
    short = int(card.resize)
    if data is not None:
        sampling = getattr(data, "sampling", None) or sampling
        short = int(getattr(data, "short_side", None) or short)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return Geometry(frames=int(card.num_segments), size=int(card.input_size[-1]), short_side=short,
                    mean=tuple(card.mean), std=tuple(card.std), sampling=sampling,
                    dense_stride=getattr(card, "dense_stride", None))


def parse_views(views: str | tuple[int, int]) -> tuple[int, int]:
    """``"10x3"`` -> (clips, crops) = (10, 3); clips >= 1, crops 1, 3 or 10."""
    if isinstance(views, tuple):
        clips, crops = views
    else:
        m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(views))
        if not m:
            raise ValueError(f"--views {views!r}: expected CLIPSxCROPS, e.g. 1x1 or 10x3")
        clips, crops = int(m.group(1)), int(m.group(2))
    if clips < 1 or crops not in CROPS:
        raise ValueError(f"--views {clips}x{crops}: need clips >= 1 and crops in 1, 3, 10")
    return clips, crops


def test_transform(geom: Geometry, crops: int = 1) -> TestTransform:
    """Short-side resize, ``crops`` crops, normalisation: the test transform of ``geom``."""
    return build_test_transform(size=geom.size, mean=geom.mean, std=geom.std,
                                short_side=geom.short_side, crops=crops)


def read_clips(reader: Any, num_segments: int, *, sampling: str = "segment",
               dense_stride: int | None = None, clips: int = 1, train: bool = False,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample and decode ``clips`` clips of T frames from an open reader (see
    :func:`~tanet.data.sampling.clip_indices`): frames (clips, T, H, W, 3) uint8 and their
    indices (clips, T). With a :class:`Geometry` ``g``: ``read_clips(r, g.frames,
    sampling=g.sampling, dense_stride=g.dense_stride, ...)`` or :func:`read_test_clips`."""
    idx = clip_indices(reader.info.num_frames, num_segments, sampling=sampling, train=train,
                       clips=clips, dense_stride=dense_stride, rng=rng)  # (clips, T)
    frames = reader.get_frames(idx.reshape(-1))  # (clips*T, H, W, 3)
    return frames.reshape(idx.shape + frames.shape[1:]), idx  # (clips, T, H, W, 3)


def read_test_clips(reader: Any, geom: Geometry, clips: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_clips` at test time with ``geom``'s sampling."""
    return read_clips(reader, geom.frames, sampling=geom.sampling, dense_stride=geom.dense_stride,
                      clips=clips)


def to_views(frames: np.ndarray, transform: Callable | None, label: int = -1
             ) -> tuple[torch.Tensor, int]:
    """Frames (clips, T, H, W, 3) -> views (clips*crops, T, C, s, s), clip-major, and the label
    (a flip may swap it). Without a transform the views are the uint8 clips."""
    views: list[torch.Tensor] = []
    for c in range(frames.shape[0]):
        clip = clip_from_frames(frames[c])  # (T, C, H, W) uint8
        if transform is None:
            out = clip.contiguous()
        else:
            out, label = transform(clip, label)  # (T, C, s, s) or (crops, T, C, s, s)
        views.append(out if out.dim() == 5 else out[None])
    return torch.cat(views), label  # (V, T, C, s, s)
