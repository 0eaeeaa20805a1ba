"""Video decoding: the one module that imports the decoder (PyAV).

Two sources behind one interface (``.info``, ``.get_frames(indices)``, context manager):

* :class:`VideoReader` reads a video file. On open it demuxes the stream once (packets only, no
  decoding) to list every frame's presentation timestamp and the keyframes; frame ``i`` is the
  ``i``-th frame in presentation order, so the count is exact even when the container's header
  is missing or wrong, and variable frame rate or B-frames do not shift indices. The index is
  cached per (path, size, mtime). ``get_frames`` decodes forward while the next wanted frame comes
  before the next keyframe and seeks only when that skips work.
* :class:`FrameFolder` reads pre-extracted frames (``img_00001.jpg`` ...), numbered from 1 as the
  authors' and TSN's extraction tools write them; index ``i`` here is file number ``i + 1``.

Frames come out as uint8 arrays of shape (T, H, W, 3), RGB, upright (rotation metadata applied),
optionally resized so that the short side is ``short_side``.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = ["VideoDecodeError", "VideoInfo", "VideoReader", "FrameFolder", "open_video",
           "read_frames"]

# Read timeout (seconds) handed to FFmpeg's interrupt callback: a stalled read (network or
# FUSE mount) fails instead of blocking. A hang elsewhere is cut by the dataset's decode timeout.
_IO_TIMEOUT = 30.0


class VideoDecodeError(RuntimeError):
    """A video could not be read; the message starts with the file path and states the cause."""

    def __init__(self, path: str | os.PathLike, cause: str | None = None):
        # one argument: an already formatted message (as DataLoader re-raises worker errors)
        self.path = str(path) if cause is not None else str(path).split(": ", 1)[0]
        self.cause = cause if cause is not None else str(path).split(": ", 1)[-1]
        super().__init__(f"{self.path}: {cause}" if cause is not None else str(path))


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a source. ``width``/``height`` are those of the frames ``get_frames`` returns
    without ``short_side`` (i.e. after rotation); ``rotation`` is counter-clockwise degrees."""

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int = 0
    codec: str = ""


@dataclass(frozen=True)
class _Index:
    pts: np.ndarray        # (N,) int64 presentation timestamps, sorted; frame i has pts[i]
    keyframes: np.ndarray  # (K,) int64 frame indices of keyframes, sorted


_INDEX_CACHE: OrderedDict[tuple, _Index] = OrderedDict()
_INDEX_CACHE_SIZE = 4096
_CACHE_LOCK = threading.Lock()


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


def _resized(w: int, h: int, short_side: int | None) -> tuple[int, int]:
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


class VideoReader:
    """Frame-accurate reader of one video file (see module docstring).

    ``threads``: decoder threads (0 = FFmpeg's choice). The default 1 suits data-loader workers,
    which already use every core; raise it for single-video tools.
    """

    def __init__(self, path: str | os.PathLike, *, short_side: int | None = None,
                 threads: int = 1):
        self.path = str(path)
        self.short_side = short_side
        p = Path(self.path)
        if not p.exists():
            raise VideoDecodeError(self.path, "file not found")
        if p.is_dir():
            raise VideoDecodeError(self.path, "is a directory, not a video file "
                                   "(use FrameFolder for extracted frames)")
        st = p.stat()
        if st.st_size == 0 and p.is_file():
            raise VideoDecodeError(self.path, "empty file (0 bytes)")
        try:
            self._container = av.open(self.path, metadata_errors="ignore",
                                      timeout=(_IO_TIMEOUT, _IO_TIMEOUT))
        except av.FFmpegError as e:
            raise VideoDecodeError(self.path, f"cannot open as a video ({_why(e)})") from None
        except OSError as e:
            raise VideoDecodeError(self.path, f"cannot open ({e.strerror or e})") from None
        try:
            if not self._container.streams.video:
                kinds = sorted({s.type for s in self._container.streams}) or ["none"]
                raise VideoDecodeError(self.path, f"no video stream (streams: {', '.join(kinds)})")
            self._stream = self._container.streams.video[0]
            if self._stream.codec_context is None:  # e.g. a damaged sample description
                raise VideoDecodeError(self.path, "video stream has an unknown codec "
                                                  "(no decoder for it)")
            self._stream.thread_type = "AUTO" if threads != 1 else "SLICE"
            self._stream.codec_context.thread_count = threads
            key = (os.path.abspath(self.path), st.st_size, st.st_mtime_ns)
            with _CACHE_LOCK:
                index = _INDEX_CACHE.get(key)
                if index is not None:
                    _INDEX_CACHE.move_to_end(key)
            if index is None:
                index = self._build_index()
                with _CACHE_LOCK:
                    _INDEX_CACHE[key] = index
                    while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
                        _INDEX_CACHE.popitem(last=False)
            self._index = index
            self._pos_of_pts = {int(t): i for i, t in enumerate(index.pts)}
            self._wanted: set[int] = {0}  # frames get_frames needs; others may be skipped
            self.info = self._make_info()
        except av.FFmpegError as e:
            self._container.close()
            raise VideoDecodeError(self.path, f"cannot read the video ({_why(e)})") from None
        except BaseException:
            self._container.close()
            raise

    # ----------------------------------------------------------------------------- setup
    def _build_index(self) -> _Index:
        """Demux every packet once (no decoding): presentation timestamps and keyframes."""
        pts, keys = [], []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None:
                    continue
                pts.append(t)
                keys.append(packet.is_keyframe)
        except av.FFmpegError:
            pass  # truncated tail: keep the packets read so far
        if not pts:
            raise VideoDecodeError(self.path, "no video frames (empty or unreadable stream)")
        pts_arr = np.asarray(pts, dtype=np.int64)
        order = np.argsort(pts_arr, kind="stable")
        pts_sorted = pts_arr[order]
        keep = np.ones(len(pts_sorted), dtype=bool)
        keep[1:] = pts_sorted[1:] != pts_sorted[:-1]  # duplicate timestamps: one frame
        positions = np.cumsum(keep) - 1  # sorted slot -> frame index
        is_key = np.asarray(keys, dtype=bool)[order]
        keyframes = np.unique(positions[is_key])
        if len(keyframes) == 0 or keyframes[0] != 0:
            keyframes = np.concatenate([[0], keyframes]).astype(np.int64)
        return _Index(pts=pts_sorted[keep], keyframes=keyframes.astype(np.int64))

    def _make_info(self) -> VideoInfo:
        s, idx = self._stream, self._index
        n = len(idx.pts)
        tb = float(s.time_base) if s.time_base else 0.0
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 0.0
        if n > 1 and tb:
            span = float(idx.pts[-1] - idx.pts[0]) * tb
            step = span / (n - 1)
            duration = span + step
            if not fps or abs(fps * step - 1) > 0.5:  # header rate absent or far off (VFR)
                fps = (n - 1) / span if span > 0 else fps
        else:
            duration = float(s.duration * tb) if s.duration and tb else (n / fps if fps else 0.0)
        rotation = self._probe_rotation()
        w, h = self._pending[1].width, self._pending[1].height  # of the first decoded frame
        self._coded_size = (w, h)
        if rotation % 180:
            w, h = h, w
        return VideoInfo(num_frames=n, fps=fps, duration=duration, width=w, height=h,
                         rotation=rotation, codec=s.codec_context.name)

    def _probe_rotation(self) -> int:
        """Rotation from the display matrix, read off the first decoded frame (kept for reuse)."""
        self._seek_start()
        item = self._next()
        if item is None:
            raise VideoDecodeError(self.path, "no decodable video frame")
        self._pending = item
        raw = float(getattr(item[1], "rotation", 0) or 0)
        if not -360 <= raw <= 360:  # a degenerate display matrix (NaN read as INT_MIN): ignore
            return 0
        rotation = int(round(raw)) % 360
        return rotation - rotation % 90

    # ----------------------------------------------------------------------------- decode
    def _seek_start(self) -> None:
        self._seek_pts(0)

    def _seek_pts(self, ts: int) -> None:
        self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
        self._stream.codec_context.flush_buffers()
        self._frames = self._decode_iter()
        self._pos, self._pending = -1, None

    def _decode_iter(self):
        """Decoded frames; a corrupt packet is dropped and decoding goes on."""
        dec = self._stream.codec_context
        skipping = False
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError:  # unreadable rest of the file (corrupt index): stream ends
                break
            # A frame nobody wants that no other frame references (a disposable B-frame) need
            # not be decoded at all: outputs of the other frames are unchanged.
            t = packet.pts
            skip = t is not None and self._pos_of_pts.get(t, -1) not in self._wanted
            if skip != skipping:
                dec.skip_frame = "NONREF" if skip else "DEFAULT"
                skipping = skip
            try:
                frames = dec.decode(packet)
            except av.FFmpegError:  # a corrupt packet: drop it, the next keyframe recovers
                continue
            yield from frames
        try:
            yield from dec.decode(None)
        except av.FFmpegError:
            return

    def _next(self):
        """The next decoded frame as (index, av.VideoFrame), or None at the end."""
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        frame = next(self._frames, None)
        if frame is None:
            return None
        t = frame.pts if frame.pts is not None else frame.dts
        i = self._pos_of_pts.get(t) if t is not None else None
        if i is None and t is not None:  # timestamp missing from the index: nearest slot
            i = int(min(np.searchsorted(self._index.pts, t), len(self._index.pts) - 1))
        return (self._pos + 1 if i is None else i), frame

    def _seek_to_keyframe(self, k: int, target: int) -> None:
        """Make keyframe ``k`` (<= target) the next frame; if the demuxer lands past ``target``
        (inexact seek), restart from the beginning."""
        self._seek_pts(int(self._index.pts[k]))
        item = self._next()
        if item is not None and item[0] > target and k > 0:
            self._seek_start()
            return
        self._pending = item

    def _convert(self, frame, rotation: int) -> np.ndarray:
        """RGB (H, W, 3) at the first frame's size: a stream whose resolution changes midway
        (or a corrupt header that claims so) still gives frames of one shape."""
        w, h = self._coded_size
        if rotation % 180:
            oh, ow = _resized(h, w, self.short_side)
        else:
            ow, oh = _resized(w, h, self.short_side)
        ref = _reformatter()
        if (ow, oh) != (frame.width, frame.height):
            rgb = ref.reformat(frame, format="rgb24", width=ow, height=oh,
                               interpolation="BILINEAR", threads=1)
        else:
            rgb = ref.reformat(frame, format="rgb24", threads=1)
        return _rotate(rgb.to_ndarray(), rotation)  # (H, W, 3)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3).

        Indices outside [0, num_frames) raise ``IndexError``. A frame that cannot be decoded
        (corrupt packet, stream cut short) is replaced by the nearest earlier decoded frame,
        else the next one; a video with no decodable frame raises :class:`VideoDecodeError`.
        """
        idx = _checked_indices(self.path, indices, self.info.num_frames)
        n = self.info.num_frames
        keyframes, rot = self._index.keyframes, self.info.rotation
        self._wanted = set(idx.tolist())
        got: dict[int, np.ndarray] = {}
        last = None  # (index, frame or array) of the latest decoded frame, to fill gaps
        try:
            for target in np.unique(idx).tolist():  # sorted
                if target in got:
                    continue
                k = int(keyframes[np.searchsorted(keyframes, target, side="right") - 1])
                upcoming = self._pending[0] if self._pending is not None else self._pos + 1
                if target < upcoming or k > upcoming:  # behind us, or a keyframe skips work
                    self._seek_to_keyframe(k, target)
                while True:
                    item = self._next()
                    if item is None:  # end of stream
                        break
                    i, frame = item
                    self._pos = i
                    if i < target:
                        last = item
                        continue
                    if i == target:
                        got[i] = self._convert(frame, rot)
                        last = (i, got[i])
                    else:  # the target frame never came out of the decoder
                        self._pending, self._pos = item, i - 1
                    break
                if target not in got:
                    src = last if last is not None else self._pending
                    if src is None:
                        raise VideoDecodeError(self.path, f"no decodable frame near index "
                                                          f"{target} of {n}")
                    got[target] = src[1] if isinstance(src[1], np.ndarray) else \
                        self._convert(src[1], rot)
        except av.FFmpegError as e:
            raise VideoDecodeError(self.path, f"decoding failed ({_why(e)})") from None
        return np.stack([got[i] for i in idx.tolist()])  # (T, H, W, 3)

    # ----------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._frames = None
        self._pending = None
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoReader({self.path!r}, {self.info})"


def _checked_indices(path: str | os.PathLike, indices: Sequence[int], n: int) -> np.ndarray:
    """``indices`` as a flat int64 array, each in [0, n), or a ValueError/IndexError naming
    the file."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{path}: no frame indices requested")
    if idx.min() < 0 or idx.max() >= n:
        raise IndexError(f"{path}: frame index out of range [0, {n}): {idx.min()}..{idx.max()}")
    return idx


def _why(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.split(": '", 1)[0] if isinstance(msg, str) else str(e)


class FrameFolder:
    """Reader of a folder of extracted frames, numbered from 1 (``img_00001.jpg``).

    Index ``i`` (0-based, as everywhere in this package) is file ``template.format(i + 1)``.
    ``num_frames`` is the length of the run of consecutive files starting at 1.
    """

    def __init__(self, path: str | os.PathLike, template: str = "img_{:05d}.jpg", *,
                 short_side: int | None = None, fps: float = 30.0):
        self.path = str(path)
        self.template = template
        self.short_side = short_side
        p = Path(self.path)
        if not p.is_dir():
            raise VideoDecodeError(self.path, "frame folder not found")
        names = set(os.listdir(p))
        n = 0
        while template.format(n + 1) in names:
            n += 1
        if n == 0:
            raise VideoDecodeError(self.path, f"no frames named like {template.format(1)!r}")
        first = self._load(0)
        h, w = first.shape[:2]
        self.info = VideoInfo(num_frames=n, fps=fps, duration=n / fps, width=w, height=h,
                              codec="images")

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image

        f = os.path.join(self.path, self.template.format(i + 1))
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if self.short_side:
                    size = _resized(im.width, im.height, self.short_side)
                    if size != im.size:
                        im = im.resize(size, Image.BILINEAR)
                return np.asarray(im)  # (H, W, 3)
        except (OSError, ValueError) as e:
            raise VideoDecodeError(f, f"cannot read image ({e})") from None

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (0-based; any order, repeats allowed) as uint8 (T, H, W, 3)."""
        idx = _checked_indices(self.path, indices, self.info.num_frames)
        cache = {int(i): self._load(int(i)) for i in np.unique(idx)}
        return np.stack([cache[int(i)] for i in idx])  # (T, H, W, 3)

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path: str | os.PathLike, *, short_side: int | None = None,
               template: str = "img_{:05d}.jpg", threads: int = 1):
    """A reader for ``path``: a :class:`FrameFolder` for a directory, else a :class:`VideoReader`."""
    if Path(path).is_dir():
        return FrameFolder(path, template, short_side=short_side)
    return VideoReader(path, short_side=short_side, threads=threads)


def read_frames(path: str | os.PathLike, indices: Sequence[int], *,
                short_side: int | None = None, template: str = "img_{:05d}.jpg") -> np.ndarray:
    """Open, read the frames at ``indices`` as uint8 (T, H, W, 3), close."""
    with open_video(path, short_side=short_side, template=template) as r:
        return r.get_frames(indices)
