"""Which frame is frame ``i`` of a video file, and where a decoder can start to reach it.

The ground truth: frame ``i`` is the ``i``-th frame that a plain sequential decode (every packet
in file order, a packet the decoder rejects dropped, then a flush) emits, and the count is how
many it emits. Two routes reach it:

* **packets** (fast): demux only; frame ``i`` has the ``i``-th smallest packet timestamp. Taken
  where timestamps are trustworthy, which cheap probes check at open: the first frames a decode
  emits come out in timestamp order, every frame after the last keyframe decodes, timestamps are
  present and unique, the container does not carry decode-order timestamps (pts = dts + constant)
  for a codec that reorders, no MPEG-4 packet holds two frames (DivX "packed B-frames"), every
  MPEG-4 packet flagged as a keyframe starts with an intra frame, and no packet is cut short or
  flagged corrupt.
* **decoded** (exact): one full decode pass records the timestamp and a digest of the pixels
  (:func:`~tanet.data.convert.digest`) of every frame it emits, in output order; frames are told
  apart after a seek by that timestamp (or, where timestamps are missing or repeated, counted
  from the start). Its seek points are verified (:mod:`.verify`): a decode started at a
  keyframe must emit the sequential decode's frames, and each point is moved to the first frame
  from which it does (or dropped), since after a seek the decoder of an open GOP, of DivX packed
  B-frames or of a keyframe flag on a frame that is none emits other pictures under the same
  timestamps.

A reader that meets a surprise on the packets route (a decode error, a frame that does not come
out where the packets said) switches the file to the decoded route. :mod:`.index_cache` keeps
indices in memory and on disk, so each file pays for its index once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import av
import numpy as np

from tanet.data.convert import digest

__all__ = ["FrameIndex", "NoFrames", "build", "rebuild_exact", "decode_frames", "frame_rotation",
           "NO_PTS", "SMALL"]

_PREFIX = 8  # frames decoded at open to compare output order with timestamp order
SMALL = 32  # files that declare at most this many frames are decoded whole at open
_TAIL_FULL = 6  # last packets of the tail probe decoded even when no other frame needs them
_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 frame (video object plane) start code
_ZEROS = bytes(64)  # no encoder starts a frame with 64 zero bytes: a zero-filled hole
NO_PTS = np.iinfo(np.int64).min


@dataclass(frozen=True)
class FrameIndex:
    """Where every frame of one video is; see the module docstring."""

    pts: np.ndarray  # (N,) int64: timestamp of frame i as the decoder emits it (NO_PTS: none)
    keyframes: np.ndarray  # (K,) int64 sorted frame indices a decode can start from; [0] == 0
    seek_ts: np.ndarray  # (K,) int64 timestamp to seek to for each keyframe ([0]: start_ts)
    start_ts: int  # timestamp of the first packet: seeking there restarts the sequential decode
    exact: bool  # built by a full decode
    seekable: bool  # timestamps tell frames apart after a seek (else count from the start)
    fps: float
    duration: float
    coded_size: tuple[int, int]  # (w, h) of the first frame, before rotation
    rotation: int
    codec: str
    container: str
    warnings: tuple[str, ...] = ()
    reason: str = ""  # why the decoded route was taken
    damaged_gops: tuple[int, ...] = ()  # keyframe slots whose GOP holds damage: there every
    # frame is decoded, as the sequential decode does (skipping unwanted ones would change
    # how the damage spreads)
    packed: bool = False  # MPEG-4 packed B-frames: a skipped B-frame takes the next one along
    digests: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) int64
    # (decoded route) digest of frame i's pixels as the sequential decode emits it

    @property
    def num_frames(self) -> int:
        return len(self.pts)


# ------------------------------------------------------------------------------ decoding
def _demux(container, stream, on_error: Callable[[], None] | None = None) -> Iterator:
    """The packets of ``stream`` in file order; an unreadable rest of the file (truncated or
    damaged beyond this point) ends them, calling ``on_error`` if given."""
    packets = container.demux(stream)
    while True:
        try:
            yield next(packets)
        except StopIteration:
            return
        except av.FFmpegError:
            if on_error is not None:
                on_error()
            return


def decode_frames(container, stream, *, skip=None, errors: list | None = None):
    """Frames of a sequential decode from the demuxer's current position. ``skip(packet)``:
    True for a packet whose frame nobody wants (decoded only if other frames reference it). A packet
    the decoder rejects is dropped, as the ``ffmpeg`` tool does, and its pts appended to
    ``errors``; an unreadable rest of the file ends the stream (``"demux"`` in ``errors``)."""
    dec = stream.codec_context
    dec.skip_frame = "DEFAULT"
    skipping = False
    failed = None if errors is None else lambda: errors.append("demux")
    for packet in _demux(container, stream, failed):
        if packet.size == 0:  # an empty packet would drain the decoder: flush only at the end
            continue
        if skip is not None:
            s = skip(packet)
            if s != skipping:
                dec.skip_frame = "NONREF" if s else "DEFAULT"
                skipping = s
        try:
            frames = dec.decode(packet)
        except av.FFmpegError:
            if errors is not None:
                errors.append(packet.pts)
            continue
        yield from frames
    if skipping:
        dec.skip_frame = "DEFAULT"
    try:
        yield from dec.decode(None)
    except av.FFmpegError:
        return


# ------------------------------------------------------------------------------ the scan
@dataclass
class _Scan:
    """What one demux pass (plus the decode of its first frames) saw."""

    pts: list = field(default_factory=list)  # per packet in file order (empty ones excluded)
    dts: list = field(default_factory=list)
    key: list = field(default_factory=list)
    discard: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)  # numbers of packets flagged corrupt
    all_packets: int = 0  # including empty ones (a container's frame count includes them)
    demux_error: bool = False
    packed: bool = False  # an MPEG-4 packet holding two frames (DivX packed B-frames)
    false_key: bool = False  # an MPEG-4 packet flagged as a keyframe that starts no I-frame
    out: list = field(default_factory=list)  # pts of the frames emitted, in output order
    digests: list = field(default_factory=list)  # digest of each frame emitted
    damage: list = field(default_factory=list)  # (frames emitted before it, pts) per error
    first: object = None  # the first decoded frame (size, rotation)
    complete: bool = False  # ``out`` is the whole sequential decode


def _feed(dec, packet, scan: _Scan) -> None:
    """Decode one packet (None: flush) into ``scan``."""
    try:
        frames = dec.decode(packet)
    except av.FFmpegError:
        scan.damage.append((len(scan.out), packet.pts if packet is not None else None))
        return
    for f in frames:
        if scan.first is None:
            scan.first = f
        if f.is_corrupt:
            scan.damage.append((len(scan.out), f.pts))
        scan.out.append(f.pts)
        scan.digests.append(digest(f))


def _mpeg4_shape(data: bytes, key: bool, scan: _Scan) -> None:
    """Note packed B-frames (two frames in one packet) and keyframe flags on packets whose
    first frame is not intra coded (vop_coding_type 0)."""
    at = data.find(_VOP)
    if key and (at < 0 or at + 4 >= len(data) or data[at + 4] >> 6 != 0):
        scan.false_key = True
    if at >= 0 and data.find(_VOP, at + 4) >= 0:
        scan.packed = True


def _early_reason(scan: _Scan) -> str:
    """A reason to decode the whole file, from what the first frames showed."""
    if scan.packed:
        return "packed B-frames (DivX style)"
    if scan.false_key:
        return "keyframe flags on frames that are not keyframes"
    if scan.damage:
        return "corrupt data"
    out = scan.out
    if any(t is None for t in out):
        return "frames without timestamps"
    if any(b <= a for a, b in zip(out, out[1:])):
        return "frames come out of the decoder in another order than their timestamps"
    return ""


def _scan(container, stream, *, decode_all: bool) -> tuple[_Scan, str]:
    """Demux every packet; decode the first frames (all of them once a reason shows)."""
    scan, dec = _Scan(), stream.codec_context
    dec.skip_frame = "DEFAULT"
    reason = "a full decode was asked for" if decode_all else ""
    if not reason and 0 < (stream.frames or 0) <= SMALL:
        reason = "short enough to decode at open"
    decoding, mpeg4 = True, dec.name == "mpeg4"
    for packet in _demux(container, stream, lambda: setattr(scan, "demux_error", True)):
        if packet.size == 0:
            scan.all_packets += packet.pts is not None or packet.dts is not None
            continue
        scan.all_packets += 1
        scan.pts.append(packet.pts)
        scan.dts.append(packet.dts)
        scan.key.append(packet.is_keyframe)
        scan.discard.append(packet.is_discard)
        if packet.is_corrupt:
            scan.corrupt.append(len(scan.pts) - 1)
        if bytes(memoryview(packet)[:len(_ZEROS)]) == _ZEROS:  # a hole (preallocated download)
            scan.corrupt.append(len(scan.pts) - 1)
        if mpeg4:
            _mpeg4_shape(bytes(packet), packet.is_keyframe, scan)
        if decoding:
            _feed(dec, packet, scan)
            reason = reason or _early_reason(scan)
            if not reason and len(scan.out) >= _PREFIX:
                decoding = False
    if decoding:
        _feed(dec, None, scan)
        scan.complete = True
    return scan, reason


def _late_reason(scan: _Scan, stream, fast_pts: np.ndarray) -> str:
    """A reason to decode the whole file, from the packets and the prefix."""
    if scan.corrupt or scan.demux_error:
        return "damaged or truncated data"
    kept = [t for t, d in zip(scan.pts, scan.discard) if not d]
    if any(t is None for t in kept):
        return "packets without timestamps"
    if len(set(kept)) != len(kept):
        return "repeated timestamps"
    pairs = [(t, d) for t, d in zip(scan.pts, scan.dts) if d is not None]
    if (len(pairs) > 1 and len({t - d for t, d in pairs}) == 1
            and stream.codec_context.has_b_frames):
        return "timestamps in decode order (pts = dts) while the codec reorders frames"
    m = len(scan.out)
    if list(fast_pts[:m]) != scan.out:
        return "the first frames do not come out in timestamp order"
    return ""


# ------------------------------------------------------------------------------ building
def _arrays_fast(scan: _Scan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pts sorted, keyframe frame indices, their seek timestamps) from packet timestamps."""
    pts = np.asarray([t for t, d in zip(scan.pts, scan.discard) if not d and t is not None],
                     dtype=np.int64)
    pts.sort()
    keyts = np.asarray([t for t, k, d in zip(scan.pts, scan.key, scan.discard)
                        if k and not d and t is not None], dtype=np.int64)
    keys = np.unique(np.searchsorted(pts, keyts)) if len(pts) else np.zeros(0, np.int64)
    keys = keys[keys < len(pts)]
    if len(keys) == 0 or keys[0] != 0:
        keys = np.concatenate([[0], keys])
    return pts, keys.astype(np.int64), pts[keys] if len(pts) else keys.astype(np.int64)


def _arrays_exact(scan: _Scan) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(pts in output order, keyframe frame indices, seek timestamps, seekable) from a full
    decode: a keyframe packet whose frame was emitted is a place to start."""
    out = scan.out
    seekable = all(t is not None for t in out) and len(set(out)) == len(out)
    pts = np.asarray([NO_PTS if t is None else t for t in out], dtype=np.int64)
    keys, seeks = [0], [0]
    if seekable:
        pos = {t: i for i, t in enumerate(out)}
        starts = {}
        for t, k in zip(scan.pts, scan.key):
            if k and t in pos and pos[t] > 0:
                starts[pos[t]] = t  # demuxers seek by presentation time (MP4 with ctts too)
        for i in sorted(starts):
            keys.append(i)
            seeks.append(starts[i])
    return pts, np.asarray(keys, np.int64), np.asarray(seeks, np.int64), seekable


def _declared(container, stream, fps: float) -> tuple[int, bool]:
    """Frames the container declares (its count, else its duration x fps) and whether that was
    a count."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), True
    tb = float(stream.time_base) if stream.time_base else 0.0
    dur = stream.duration * tb if stream.duration and tb else 0.0
    if not dur and container.duration:
        dur = container.duration / 1e6
    return (int(round(dur * fps)) if dur > 0 and fps else 0), False


def _damage(scan: _Scan, pts: np.ndarray, declared: tuple[int, bool]
            ) -> tuple[tuple[str, ...], list[int]]:
    """Truncation and damage worded for people (``truncated: 16 of 795 frames``, ``corrupt
    data at frame 120``) and the frames where damage was met (the cut included)."""
    out, n = [], len(pts)
    count, is_count = declared
    last = len(scan.pts) - 1
    short = bool(count) and scan.all_packets < (count if is_count else count - max(2, count // 20))
    cut = short or scan.demux_error or (bool(scan.corrupt) and scan.corrupt[-1] == last)
    if short:
        out.append(f"truncated: {n} of {count} frames")
    elif cut:
        out.append(f"truncated: the data ends inside a frame ({n} frames decoded)")
    cut_pts = scan.pts[last] if cut and scan.pts else object()  # the cut frame: truncation
    damage = {f for f, t in scan.damage if t != cut_pts}
    known = np.sort(pts[pts != NO_PTS])
    for p in scan.corrupt:  # a flagged packet: the frame its timestamp sorts to
        if p != last and scan.pts[p] is not None:
            damage.add(int(np.searchsorted(known, scan.pts[p])))
    damage = sorted({min(f, max(n - 1, 0)) for f in damage})
    if damage:
        shown = ", ".join(str(f) for f in damage[:3])
        more = f" (+{len(damage) - 3} more)" if len(damage) > 3 else ""
        out.append(f"corrupt data at frame{'s' if len(damage) > 1 else ''} {shown}{more}")
    return tuple(out), damage + ([n - 1] if cut or scan.damage else [])


def _gops_of(frames: list[int], keys: np.ndarray, n: int) -> tuple[int, ...]:
    """Keyframe slots whose GOP holds (or borders, within the decoder's reorder delay) one of
    ``frames``."""
    near = {min(max(f + d, 0), max(n - 1, 0)) for f in frames for d in (-4, 0, 4)}
    return tuple(sorted({int(np.searchsorted(keys, f, side="right")) - 1 for f in near}))


def frame_rotation(frame) -> int:
    """A decoded frame's display rotation: counter-clockwise degrees, a multiple of 90."""
    raw = float(getattr(frame, "rotation", 0) or 0)
    if not -360 <= raw <= 360:  # a degenerate display matrix (NaN read as INT_MIN): ignore
        return 0
    rotation = int(round(raw)) % 360
    return rotation - rotation % 90


def _timing(stream, pts: np.ndarray, n: int, seekable: bool) -> tuple[float, float]:
    """(fps, duration s): the header rate, unless the frames' timestamps say otherwise (VFR)."""
    tb = float(stream.time_base) if stream.time_base else 0.0
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if seekable and n > 1 and tb:
        span = float(pts.max() - pts.min()) * tb
        step = span / (n - 1)
        if not fps or abs(fps * step - 1) > 0.5:  # header rate absent or far off
            fps = (n - 1) / span if span > 0 else fps
        return fps, span + step
    if n and stream.duration and tb and not fps:
        return n / (stream.duration * tb), stream.duration * tb
    return fps, (n / fps if fps else 0.0)


def _start_ts(scan: _Scan) -> int:
    ts = [t for t in (scan.dts[:1] + scan.pts[:1]) if t is not None]
    return int(min(ts)) if ts else 0


def _make(container, stream, scan: _Scan, exact: bool, reason: str) -> FrameIndex:
    if scan.first is None:
        raise NoFrames()
    if exact:
        pts, keys, seeks, seekable = _arrays_exact(scan)
    else:
        pts, keys, seeks = _arrays_fast(scan)
        seekable = True
    start = _start_ts(scan)
    seeks = seeks.copy()
    seeks[0] = start
    fps, duration = _timing(stream, pts, len(pts), seekable)
    first = scan.first
    warnings, damage = _damage(scan, pts, _declared(container, stream, fps))
    return FrameIndex(pts=pts, keyframes=keys, seek_ts=seeks, start_ts=start, exact=exact,
                      seekable=seekable, fps=fps, duration=duration,
                      coded_size=(first.width, first.height), rotation=frame_rotation(first),
                      codec=stream.codec_context.name, container=container.format.name,
                      warnings=warnings, reason=reason,
                      damaged_gops=_gops_of(damage, keys, len(pts)), packed=scan.packed,
                      digests=np.asarray(scan.digests if exact else [], dtype=np.int64))


class NoFrames(Exception):
    """The stream emitted no frame at all."""


def _note_errors(scan: _Scan, errors: list) -> None:
    """Move decode errors reported by :func:`decode_frames` into ``scan``."""
    for e in errors:
        if e == "demux":
            scan.demux_error = True
        else:
            scan.damage.append((len(scan.out), e))
    errors.clear()


def _decode_all(container, stream, scan: _Scan) -> None:
    """Replace ``scan``'s outputs with those of a full sequential decode from the start."""
    _restart(container, stream, _start_ts(scan))
    scan.out, scan.damage, scan.first, scan.digests = [], [], None, []
    errors: list = []
    for f in decode_frames(container, stream, errors=errors):
        _note_errors(scan, errors)
        if scan.first is None:
            scan.first = f
        if f.is_corrupt:
            scan.damage.append((len(scan.out), f.pts))
        scan.out.append(f.pts)
        scan.digests.append(digest(f))
    _note_errors(scan, errors)
    scan.complete = True


def _restart(container, stream, start_ts: int) -> None:
    """Put the demuxer on the first packet (timestamp ``start_ts``) and reset the decoder."""
    container.seek(start_ts, stream=stream, backward=True, any_frame=False)
    stream.codec_context.flush_buffers()


def _tail_ok(container, stream, scan: _Scan, pts: np.ndarray, keys: np.ndarray) -> bool:
    """Decode from the last keyframe to the end: the frames of the last packets (and every
    frame the others need) must come out, in timestamp order, without errors."""
    k = int(keys[-1])
    kts = int(pts[k])
    order = {t: j for j, t in enumerate(scan.pts) if t is not None}  # file position
    total = len(scan.pts)
    errors: list = []
    skip = (lambda p: p.pts is not None and total - order.get(p.pts, total) > _TAIL_FULL)
    try:
        container.seek(kts, stream=stream, backward=True, any_frame=False)
        stream.codec_context.flush_buffers()
        got = [f.pts for f in decode_frames(container, stream, skip=skip, errors=errors)]
    except av.FFmpegError:  # cannot seek there: let the full decode decide
        return False
    if errors:
        return False
    got = [t for t in got if t is None or t >= kts]
    if any(t is None for t in got) or any(b <= a for a, b in zip(got, got[1:])):
        return False
    expected = set(pts[k:].tolist())
    last = {t for t, d in zip(scan.pts[-_TAIL_FULL:], scan.discard[-_TAIL_FULL:])
            if t is not None and not d and t >= kts}
    return set(got) <= expected and last <= set(got) and int(pts[-1]) in got


def build(container, stream, *, exact: bool = False) -> FrameIndex:
    """Index ``stream`` (the demuxer at its start): the packets route where the probes pass,
    else (or with ``exact``) the decoded route."""
    scan, reason = _scan(container, stream, decode_all=exact)
    if scan.complete:
        return _make(container, stream, scan, True, reason or "short enough to decode at open")
    pts, keys, _ = _arrays_fast(scan)
    reason = reason or _late_reason(scan, stream, pts)
    if not reason and len(pts):
        count, is_count = _declared(container, stream, 0.0)
        if is_count and scan.all_packets < count:
            reason = "fewer packets than the container declares"
    if not reason and len(pts) and not _tail_ok(container, stream, scan, pts, keys):
        reason = "the last frames do not decode as their packets say"
    if not reason:
        return _make(container, stream, scan, False, "")
    _decode_all(container, stream, scan)
    return _make(container, stream, scan, True, reason)


def rebuild_exact(container, stream, *, start_ts: int, reason: str) -> FrameIndex:
    """The decoded-route index of an open file whose first packet has timestamp ``start_ts``
    (a reader's switch after a surprise, or a full decode asked for later)."""
    _restart(container, stream, start_ts)
    return replace(build(container, stream, exact=True), reason=reason)
