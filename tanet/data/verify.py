"""Reads checked against the ground truth: frame ``i`` is the ``i``-th frame that a plain
sequential decode emits (:mod:`.frame_index`).

* :func:`seek_points`: the seek points of an exact index, verified. After a seek, a decoder
  does not always emit what the sequential decode emits under the same timestamps: the
  B-frames of an open GOP refer to the GOP before the keyframe, DivX packed B-frames travel one
  packet late (and a decoder restarted inside such a run emits other pictures under the
  timestamps of the next frames), and a keyframe flag may sit on a frame that is none. So each
  keyframe is tried once, when the exact index is built: decoded from there, the frames must
  equal (position and pixel digest) those of the sequential decode; the seek point is moved to
  the first frame from which they do, or dropped.
* :func:`reference_frames`: frames at some indices from one plain sequential decode of the
  whole file, converted as the reader converts them (``tanet check`` compares the reads that
  training makes with them).
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Iterable

import av
import numpy as np

from tanet.data.convert import digest, to_rgb
from tanet.data.frame_index import FrameIndex, decode_frames, frame_rotation
from tanet.data.inputs import media_for

__all__ = ["seek_points", "reference_frames"]

_RUN = 4  # frames in a row equal to the sequential decode's: the decoder has caught up
_HORIZON = 64  # frames a probe decodes at most past the next keyframe


def _first_right(container, stream, index: FrameIndex, k: int, pos: dict) -> int | None:
    """Seek to keyframe slot ``k``, decode (nothing skipped): the first frame from which the
    decoder emits the sequential decode's frames, in order, for :data:`_RUN` frames (or to the
    end); None if it does not within the probe's horizon."""
    n, kf = index.num_frames, int(index.keyframes[k])
    nxt = int(index.keyframes[k + 1]) if k + 1 < len(index.keyframes) else n
    horizon = nxt - kf + _HORIZON
    container.seek(int(index.seek_ts[k]), stream=stream, backward=True, any_frame=False)
    stream.codec_context.flush_buffers()
    start, expect, run = None, -1, 0
    for count, f in enumerate(decode_frames(container, stream)):
        i = pos.get(f.pts)
        if i is not None and i >= kf:  # (earlier frames and unknown timestamps: the reader
            right = digest(f) == int(index.digests[i])  # drops them)
            if right and i == expect:
                run, expect = run + 1, expect + 1
            elif right:
                start, expect, run = i, i + 1, 1
            else:
                start, expect, run = None, -1, 0
            if run >= _RUN:
                return start
        if count >= horizon:
            return None
    return start if start is not None and expect == n else None


def _remap_damage(index: FrameIndex, keys: np.ndarray) -> tuple[int, ...]:
    """The damaged GOPs of ``index`` as slots of the new keyframes ``keys``."""
    old = np.append(index.keyframes, index.num_frames)
    bounds = np.append(keys, index.num_frames)
    out = set()
    for g in index.damaged_gops:
        lo, hi = old[g], old[g + 1]
        out.update(j for j in range(len(keys)) if bounds[j] < hi and bounds[j + 1] > lo)
    return tuple(sorted(out))


def seek_points(container, stream, index: FrameIndex) -> FrameIndex:
    """``index`` (exact, told apart by timestamps) with each keyframe moved to the first frame
    that a decode started there emits right, and the keyframes where none does dropped (see
    the module docstring). Other indices are returned as they are. Moves the demuxer."""
    if (not index.exact or not index.seekable or len(index.keyframes) < 2
            or len(index.digests) != index.num_frames):
        return index
    pos = {int(t): i for i, t in enumerate(index.pts)}
    found = []
    for k in range(1, len(index.keyframes)):
        try:
            first = _first_right(container, stream, index, k, pos)
        except av.FFmpegError:  # cannot seek there
            first = None
        if first is not None:
            found.append((first, int(index.seek_ts[k])))
    kept, bound = [], index.num_frames
    for first, ts in reversed(found):  # a later seek point must serve later frames
        if 0 < first < bound:
            kept.append((first, ts))
            bound = first
    keys = np.asarray([0] + [f for f, _ in reversed(kept)], np.int64)
    seeks = np.asarray([index.seek_ts[0]] + [t for _, t in reversed(kept)], np.int64)
    if np.array_equal(keys, index.keyframes) and np.array_equal(seeks, index.seek_ts):
        return index
    return replace(index, keyframes=keys, seek_ts=seeks, damaged_gops=_remap_damage(index, keys))


def reference_frames(path: str | os.PathLike, indices: Iterable[int], *,
                     short_side: int | None = None) -> tuple[dict[int, np.ndarray], int]:
    """The frames at ``indices`` as one plain sequential decode of the whole file emits them,
    RGB (H, W, 3) converted as :class:`~tanet.data.decode.VideoReader` converts them, and the
    number of frames that decode emits. Raises ``av.FFmpegError`` if the file cannot be
    opened."""
    wanted = {int(i) for i in indices}
    out: dict[int, np.ndarray] = {}
    n, coded, rotation = 0, (0, 0), 0
    with media_for(path) as media, av.open(media.open(), metadata_errors="ignore") as c:
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.codec_context.thread_count = 1
        for f in decode_frames(c, s):
            if n == 0:
                coded, rotation = (f.width, f.height), frame_rotation(f)
            if n in wanted:
                out[n] = to_rgb(f, coded, rotation, short_side)  # (H, W, 3)
            n += 1
    return out, n
