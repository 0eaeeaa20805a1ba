"""The one clip-views policy: from a video and a model's test pipeline to the (V, T, C, H, W)
views.

Training, ``tanet test``, ``tanet predict`` (sliding windows and live streams included), the
server and the demo all go through here, so a video gives the same clips wherever it is read:

* the pipeline is a :class:`~tanet.geometry.Geometry` (frames T, crop size, short side,
  mean/std, sampling): a model card's ``card.geometry``, overridden by a config only through
  :meth:`~tanet.geometry.Geometry.with_overrides`;
* :func:`parse_views` reads ``"CLIPSxCROPS"``;
* :func:`read_clips` samples (clips, T) frame indices (:func:`~tanet.data.sampling.clip_indices`;
  a sliding window is a clip of its span, :class:`~tanet.data.sampling.WindowPlan`) and decodes
  them; :func:`to_views` applies a transform per clip and stacks the views, clip-major: view
  ``c * crops + k`` is crop ``k`` of clip ``c``.

This package never imports ``tanet.models``: it takes a Geometry (a card is one).
"""
from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import torch

from tanet.data.sampling import clip_indices
from tanet.data.transforms import TestTransform, build_test_transform, clip_from_frames
from tanet.geometry import Geometry

__all__ = ["parse_views", "test_transform", "read_clips", "read_test_clips", "to_views", "CROPS"]

CROPS = (1, 3, 10)


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
    return build_test_transform(size=geom.input_size[-1], mean=geom.mean, std=geom.std,
                                short_side=geom.short_side, crops=crops)


def read_clips(reader: Any, num_segments: int, *, sampling: str = "segment",
               dense_stride: int | None = None, clips: int = 1, train: bool = False,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample and decode ``clips`` clips of T frames from an open reader (see
    :func:`~tanet.data.sampling.clip_indices`): frames (clips, T, H, W, 3) uint8 and their
    indices (clips, T). With a :class:`~tanet.geometry.Geometry` ``g``: ``read_clips(r,
    g.num_segments, sampling=g.sampling, dense_stride=g.dense_stride, ...)`` or
    :func:`read_test_clips`."""
    idx = clip_indices(reader.info.num_frames, num_segments, sampling=sampling, train=train,
                       clips=clips, dense_stride=dense_stride, rng=rng)  # (clips, T)
    frames = reader.get_frames(idx.reshape(-1))  # (clips*T, H, W, 3)
    return frames.reshape(idx.shape + frames.shape[1:]), idx  # (clips, T, H, W, 3)


def read_test_clips(reader: Any, geom: Geometry, clips: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_clips` at test time with ``geom``'s sampling."""
    return read_clips(reader, geom.num_segments, sampling=geom.sampling,
                      dense_stride=geom.dense_stride, clips=clips)


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
