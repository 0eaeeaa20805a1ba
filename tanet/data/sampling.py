"""Frame-index sampling: pure functions returning 0-based int64 index arrays.

The formulas are those of the authors' ``ops/dataset.py`` (TSN segment sampling, ``uniform-N``
multi-clip test sampling, I3D-style dense sampling), index for index, with one difference of
convention: their frame folders are numbered from 1, so their functions return ``offsets + 1``;
here indices are 0-based (``FrameFolder`` adds the 1 back when it names the file). Random draws
use a ``numpy.random.Generator`` in the same order and with the same bounds as their
``np.random.randint`` calls (``new_length`` is 1, RGB).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tanet.geometry import SAMPLINGS, Geometry

__all__ = ["segment_indices", "uniform_clips_indices", "dense_indices", "default_dense_stride",
           "clip_indices", "WindowPlan"]


def _check(num_frames: int, num_segments: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")


def default_dense_stride(num_segments: int) -> int:
    """The authors' dense stride: 64 // T (8 for T=8), so a clip spans 64 frames."""
    return max(1, 64 // num_segments)


def segment_indices(num_frames: int, num_segments: int, *, train: bool,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """TSN segment sampling: one frame per each of T equal segments, shape (T,).

    Train (their ``_sample_indices``): ``average_duration = N // T``; if > 0, segment starts
    plus ``randint(average_duration)`` each; elif N > T, sorted ``randint(N)``; else (a video
    of at most T frames) all zeros. Val (``_get_val_indices``): segment centres
    ``int(tick / 2 + tick * i)`` with ``tick = N / T`` when N > T, else zeros.
    """
    _check(num_frames, num_segments)
    n, t = num_frames, num_segments
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        average_duration = n // t
        if average_duration > 0:
            offsets = np.arange(t) * average_duration + rng.integers(average_duration, size=t)
        elif n > t:  # unreachable for new_length=1 (N > T implies N // T > 0); kept as theirs
            offsets = np.sort(rng.integers(n, size=t))
        else:
            offsets = np.zeros(t, dtype=np.int64)
    else:
        if n > t:
            tick = n / float(t)
            offsets = np.array([int(tick / 2.0 + tick * x) for x in range(t)])
        else:
            offsets = np.zeros(t, dtype=np.int64)
    return offsets.astype(np.int64)


def uniform_clips_indices(num_frames: int, num_segments: int, num_clips: int) -> np.ndarray:
    """Multi-clip test sampling (``uniform-N``), shape (num_clips, T).

    One clip: segment centres (as val). N clips: clip starts ``linspace(0, tick - 1, N)``
    truncated to int, frames ``int(start + tick * i) % num_frames``, ``tick = num_frames / T``.
    """
    _check(num_frames, num_segments)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    n, t = num_frames, num_segments
    tick = n / float(t)
    if num_clips == 1:
        return np.array([[int(tick / 2.0 + tick * x) for x in range(t)]], dtype=np.int64)
    starts = np.linspace(0, tick - 1, num=num_clips, dtype=int).tolist()
    return np.array([[int(s + tick * x) % n for x in range(t)] for s in starts], dtype=np.int64)


def dense_indices(num_frames: int, num_segments: int, *, train: bool, stride: int | None = None,
                  num_clips: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """Dense sampling: T frames ``stride`` apart (default 64 // T), wrapping modulo num_frames.

    ``sample_pos = max(1, 1 + N - stride * T)``. Train: start ``randint(0, sample_pos - 1)``
    (0 when sample_pos == 1; the exclusive bound is theirs). Test: one clip starts at
    ``sample_pos // 2``; N clips at ``linspace(0, sample_pos - 1, N)``. Returns (T,) when
    ``train`` or ``num_clips == 1``, else (num_clips, T).
    """
    _check(num_frames, num_segments)
    n, t = num_frames, num_segments
    stride = default_dense_stride(t) if stride is None else stride
    if stride < 1:
        raise ValueError(f"dense stride must be >= 1, got {stride}")
    sample_pos = max(1, 1 + n - stride * t)
    steps = np.arange(t) * stride
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        start = 0 if sample_pos == 1 else int(rng.integers(0, sample_pos - 1))
        return ((steps + start) % n).astype(np.int64)
    if num_clips == 1:
        return ((steps + sample_pos // 2) % n).astype(np.int64)
    starts = np.linspace(0, sample_pos - 1, num=num_clips, dtype=int)
    return ((steps[None, :] + starts[:, None]) % n).astype(np.int64)  # (num_clips, T)


def clip_indices(num_frames: int, num_segments: int, *, sampling: str = "segment",
                 train: bool = False, clips: int = 1, dense_stride: int | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices of ``clips`` clips of a video, shape (clips, T): the one choice between the
    samplers above, for training (random offsets, one draw per clip) and testing (segment
    centres for one clip, ``uniform-N`` starts for several; or dense clips)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    t = num_segments
    if train:
        if sampling == "dense":
            rows = [dense_indices(num_frames, t, train=True, stride=dense_stride, rng=rng)
                    for _ in range(clips)]
        else:
            rows = [segment_indices(num_frames, t, train=True, rng=rng) for _ in range(clips)]
        return np.stack(rows)  # (clips, T)
    if sampling == "dense":
        idx = dense_indices(num_frames, t, train=False, stride=dense_stride, num_clips=clips)
        return idx.reshape(clips, t)
    if clips == 1:
        return segment_indices(num_frames, t, train=False)[None]  # (1, T)
    return uniform_clips_indices(num_frames, t, clips)  # (clips, T)


@dataclass(frozen=True)
class WindowPlan:
    """Sliding windows counted in frames, for a file (``Predictor.predict_windows``, the server's
    timeline) and a live stream (:mod:`tanet.apps.live`) alike: ``length`` frames starting every
    ``step`` frames. A window is sampled exactly as a test clip of the same span: the model's
    ``sampling`` (segment centres, or ``dense`` frames ``dense_stride`` apart) through
    :func:`clip_indices`, offset by the window's start (:meth:`sample`)."""

    length: int
    step: int
    num_segments: int  # T
    sampling: str = "segment"
    dense_stride: int | None = None

    @classmethod
    def from_seconds(cls, window: float, stride: float, fps: float,
                     geometry: Geometry) -> "WindowPlan":
        """``round(window * fps)`` frames (at least T) every ``round(stride * fps)`` frames,
        sampled as ``geometry`` (a card or a :class:`~tanet.geometry.Geometry`) samples a clip."""
        if window <= 0 or stride <= 0:
            raise ValueError(f"window and stride must be > 0 seconds, got {window}, {stride}")
        t = geometry.num_segments
        return cls(length=max(t, int(round(window * fps))), step=max(1, int(round(stride * fps))),
                   num_segments=t, sampling=geometry.sampling, dense_stride=geometry.dense_stride)

    def start(self, k: int) -> int:
        return k * self.step

    def last(self, k: int) -> int:
        """Index of window ``k``'s last frame: it is complete once that frame has arrived."""
        return k * self.step + self.length - 1

    def sample(self, start: int, length: int) -> list[int]:
        """The T frames of window [start, start + length): those :func:`clip_indices` gives a
        ``length``-frame video at test time (one clip), plus ``start``."""
        idx = clip_indices(length, self.num_segments, sampling=self.sampling,
                           dense_stride=self.dense_stride)[0]  # (T,)
        return [start + int(i) for i in idx]

    def spans(self, n: int) -> list[tuple[int, int]]:
        """(start, length) of every window of a complete ``n``-frame video: the regular windows,
        then the :meth:`tail`."""
        spans = [(s, self.length) for s in range(0, n - self.length + 1, self.step)]
        tail = self.tail(n)
        return spans + [tail] if tail is not None else spans

    def tail(self, n: int) -> tuple[int, int] | None:
        """(start, length) of the window after the regular ones of an ``n``-frame stream: the
        whole stream when it is shorter than a window, the last ``length`` frames when the
        regular windows stop short of the end, else None."""
        if n < 1:
            return None
        if n < self.length:
            return 0, n
        last = (n - self.length) // self.step * self.step
        return (n - self.length, self.length) if last + self.length < n else None
