"""Video decoding: the one module that reads videos (PyAV, with :mod:`.frame_index`).

Two sources behind one interface (``.info``, ``.warnings``, ``.get_frames(indices)``, context
manager):

* :class:`VideoReader` reads a video file, a URL (:mod:`tanet.remote`, range requests) or a
  :class:`MemoryVideo` (a shard's member): :mod:`.inputs`. Frame ``i`` is the ``i``-th frame a
  plain sequential decode emits and ``num_frames`` is how many it emits, for every file: the index
  of :mod:`tanet.data.frame_index` comes from packet timestamps where cheap probes find them
  trustworthy, else from one full decode (:mod:`.index_cache`: paid once per file). ``get_frames``
  decodes forward while the next wanted frame comes before the next keyframe and seeks only when
  that skips work, whatever the order and history of the calls; a surprise on the fast route (a
  decode error, a frame missing where the packets said) switches the file to the exact index. On
  the exact route every frame returned is checked against the sequential decode's (its pixel
  digest); one that differs is decoded again from a fresh seek, then from the start, so a stand-in
  (a neighbouring frame, with a warning) is used only for a frame that the sequential decode
  itself does not reproduce. Truncation and damage are recorded in ``warnings`` (``truncated: 16
  of 795 frames``, ``corrupt data at frame 120``).
* :class:`FrameFolder` reads pre-extracted frames (``img_00001.jpg`` ...), numbered from 1 as the
  authors' and TSN's extraction tools write them; index ``i`` here is file number ``i + 1``.

Frames come out as uint8 arrays of shape (T, H, W, 3), RGB, upright (rotation metadata applied),
optionally resized so that the short side is ``short_side``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from tanet.data.convert import digest, to_rgb
from tanet.data.frame_folder import FrameFolder
from tanet.data.frame_index import FrameIndex, NoFrames, decode_frames
from tanet.data.index_cache import clear_memory_cache, get_index, rebuild
from tanet.data.inputs import MediaError, MemoryVideo, media_for
from tanet.data.video_types import FrameIndexError, VideoDecodeError, VideoInfo, checked_indices
from tanet.data.video_types import why as _why
from tanet.remote import is_url

__all__ = ["VideoDecodeError", "FrameIndexError", "VideoInfo", "VideoReader", "FrameFolder",
           "MemoryVideo", "open_video", "read_frames", "to_rgb", "clear_memory_cache"]

# Read timeout (seconds) handed to FFmpeg's interrupt callback: a stalled read (network or
# FUSE mount) fails instead of blocking. A hang elsewhere is cut by the dataset's decode timeout.
_IO_TIMEOUT = 30.0
_NVOP_SIZE = 19  # MPEG-4 packets up to this size are "not coded" placeholders (FFmpeg's bound)


class _Surprise(Exception):
    """The packets route met something its index did not predict."""


class VideoReader:
    """Frame-exact reader of one video file (see module docstring).

    ``threads``: decoder threads (0 = FFmpeg's choice). The default 1 suits data-loader workers,
    which already use every core; raise it for single-video tools. ``exact``: build the index
    by a full decode even where timestamps look trustworthy (``tanet check --deep``).
    """

    def __init__(self, path: str | os.PathLike | MemoryVideo, *, short_side: int | None = None,
                 threads: int = 1, exact: bool = False):
        self.short_side = short_side
        self.threads = threads
        self.warnings: list[str] = []
        try:
            self._media = media_for(path)  # a file, a URL (range requests) or bytes in memory
        except MediaError as e:
            raise VideoDecodeError(e.name, e.cause) from None
        self.path = self._media.name
        self._open()
        try:
            index, built = get_index(self._container, self._stream, self._media.key,
                                     exact=exact, preset=self._media.preset)
            self._use(index, at_start=not built)
        except NoFrames:
            self._close_files()
            raise VideoDecodeError(self.path, "no decodable video frame") from None
        except av.FFmpegError as e:
            self._close_files()
            raise VideoDecodeError(self.path, f"cannot read the video ({_why(e)})") from None
        except BaseException:
            self._close_files()
            raise

    @property
    def index(self) -> FrameIndex:
        """The frame index this reader reads through (:mod:`.frame_index`)."""
        return self._index

    # ----------------------------------------------------------------------------- setup
    def _open(self) -> None:
        """Open the container and set up the decoder of its first video stream."""
        try:
            self._container = av.open(self._media.open(), metadata_errors="ignore",
                                      timeout=(_IO_TIMEOUT, _IO_TIMEOUT))
        except av.FFmpegError as e:
            self._media.close()
            raise VideoDecodeError(self.path, f"cannot open as a video ({_why(e)}"
                                              f"{self._media.index_hint()})") from None
        except OSError as e:
            self._media.close()
            raise VideoDecodeError(self.path, f"cannot open ({e.strerror or e})") from None
        except BaseException:  # RemoteError: the store, not this video, is at fault
            self._media.close()
            raise
        try:
            if not self._container.streams.video:
                kinds = sorted({s.type for s in self._container.streams}) or ["none"]
                raise VideoDecodeError(self.path, f"no video stream (streams: {', '.join(kinds)})")
            self._stream = self._container.streams.video[0]
            if self._stream.codec_context is None:  # e.g. a damaged sample description
                raise VideoDecodeError(self.path, "video stream has an unknown codec "
                                                  "(no decoder for it)")
            self._stream.thread_type = "AUTO" if self.threads != 1 else "SLICE"
            self._stream.codec_context.thread_count = self.threads
        except BaseException:
            self._close_files()
            raise

    def _close_files(self) -> None:
        self._container.close()
        self._media.close()

    def _use(self, index: FrameIndex, *, at_start: bool) -> None:
        """Read through ``index`` from now on (``at_start``: the demuxer has not moved)."""
        self._index = index
        self._pos_of_pts = ({int(t): i for i, t in enumerate(index.pts)} if index.seekable
                            else {})
        self._no_skip = np.zeros(index.num_frames, dtype=bool)  # frames in damaged GOPs
        bounds = np.append(index.keyframes, index.num_frames)
        for g in index.damaged_gops:
            self._no_skip[bounds[g]:bounds[g + 1]] = True
        w, h = index.coded_size
        if index.rotation % 180:
            w, h = h, w
        self.info = VideoInfo(num_frames=index.num_frames, fps=index.fps,
                              duration=index.duration, width=w, height=h,
                              rotation=index.rotation, codec=index.codec,
                              container=index.container, exact=index.exact)
        self.warnings = list(index.warnings) + [w for w in self.warnings
                                                if w not in index.warnings]
        self._wanted: set[int] = {0}  # frames get_frames needs; others may be skipped
        self._frames = None  # the decoder's frames since the last (re)start; None: not started
        self._at_start = at_start
        self._pending = None  # (index, frame) taken from the decoder but not yet used
        self._pos = -1  # index of the latest frame taken
        self._count = 0  # frames emitted since the start (frames told apart by counting)
        self._errors: list = []
        self._last = None  # (index, frame) of the latest frame before the current target
        self._floor = 0  # frames before this one are dropped (set at each seek)
        self._continued = False  # the latest _find decoded on from earlier frames
        self._careful = False  # skip no frame (set after a frame came out wrong)

    def _switch_to_exact(self, why: str) -> None:
        try:
            index = rebuild(self._container, self._stream, self._media.key,
                            start_ts=self._index.start_ts, reason=why)
        except NoFrames:
            raise VideoDecodeError(self.path, "no decodable video frame") from None
        except av.FFmpegError as e:
            raise VideoDecodeError(self.path, f"cannot read the video ({_why(e)})") from None
        self._use(index, at_start=False)

    # ----------------------------------------------------------------------------- decode
    def _skip(self, packet) -> bool:
        """Whether the frame of ``packet`` (the frame its timestamp names) is wanted by nobody
        (then a disposable frame need not be decoded: the outputs of the others do not change),
        and lies in no damaged GOP (where the sequential decode's damage must be reproduced).
        Packed B-frames: the decoder decodes a B-frame held from an earlier packet, and keeps
        the one in this packet only if that decode is not skipped; so only the B-frame decoded
        at a placeholder (N-VOP) packet, which holds no frame to keep, is skipped."""
        pts = packet.pts
        if pts is None or (self._index.packed and packet.size > _NVOP_SIZE):
            return False
        i = self._pos_of_pts.get(pts, -1)
        if i < 0:  # no frame of its own (a packet the decoder drops)
            return not self._index.damaged_gops
        return i not in self._wanted and not self._no_skip[i]

    def _start_decoder(self) -> None:
        self._errors = []
        plain = self._careful or not self._index.seekable  # after a surprise: skip nothing
        self._frames = decode_frames(self._container, self._stream,
                                     skip=None if plain else self._skip, errors=self._errors)
        self._pending, self._pos, self._count, self._last = None, -1, 0, None

    def _restart(self) -> None:
        """Decode from the first packet again, as the sequential decode does."""
        self._floor = 0
        if not self._at_start:
            if self._index.seekable:
                self._container.seek(self._index.start_ts, stream=self._stream, backward=True,
                                     any_frame=False)
                self._stream.codec_context.flush_buffers()
            else:  # frames are counted from the start: be sure it is the start
                self._reopen()
        self._at_start = False
        self._start_decoder()
        if self._index.seekable:
            item = self._next()
            if item is not None and item[0] != 0 and not self._index.exact:
                raise _Surprise("the decode from the start does not begin with frame 0")
            if item is not None and item[0] != 0:  # the seek missed the first packet
                self._reopen()
                self._at_start = False
                self._start_decoder()
                item = self._next()
            self._pending = item

    def _reopen(self) -> None:
        self._close_files()
        self._open()

    def _next(self):
        """The next decoded frame as (index, av.VideoFrame), or None at the end. Frames before
        the seek point's first right frame (``_floor``) are dropped: after a seek, a decoder may
        emit other pictures under their timestamps."""
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        while True:
            frame = next(self._frames, None)
            if self._errors:
                if not self._index.exact:
                    raise _Surprise("a decode error")
                self._errors.clear()  # known to the exact index already
            if frame is None:
                return None
            if not self._index.seekable:
                self._count += 1
                return self._count - 1, frame
            i = self._pos_of_pts.get(frame.pts)
            if i is not None and i >= self._floor:
                return i, frame
            if i is None and not self._index.exact:
                raise _Surprise(f"a frame with timestamp {frame.pts} that no packet has")
            # (decoded route) a frame the sequential decode does not emit, e.g. after a seek

    def _seek_to_keyframe(self, k: int, target: int) -> None:
        """Make keyframe number ``k`` (frame <= target) the next frame; if the demuxer lands
        past ``target`` (an inexact seek), try the keyframe before, then the beginning."""
        for slot in (k, k - 1):
            if slot <= 0:
                break
            self._container.seek(int(self._index.seek_ts[slot]), stream=self._stream,
                                 backward=True, any_frame=False)
            self._stream.codec_context.flush_buffers()
            self._at_start = False
            self._floor = int(self._index.keyframes[slot])
            self._start_decoder()
            item = self._next()
            if item is not None and item[0] <= target:
                self._pending = item
                return
        self._restart()

    def _find(self, target: int, *, how: str = "quick"):
        """Decode up to frame ``target``; its av.VideoFrame, or None if it did not come out.
        ``how``: ``quick`` (decode on if no keyframe lies between, else seek), ``seek`` (from
        the keyframe before ``target``) or ``start`` (from the first packet)."""
        keyframes = self._index.keyframes
        self._continued = False
        if how == "start":
            self._restart()
        else:
            k = int(np.searchsorted(keyframes, target, side="right") - 1)
            if self._frames is None:
                upcoming = None
            else:
                upcoming = self._pending[0] if self._pending is not None else self._pos + 1
            if (how == "seek" or upcoming is None or target < upcoming
                    or int(keyframes[k]) > upcoming):
                self._seek_to_keyframe(k, target)  # behind us, or a keyframe skips work
            else:
                self._continued = True
        while True:
            item = self._next()
            if item is None:  # end of stream
                return None
            i, frame = item
            if i < target:
                self._pos, self._last = i, item
                continue
            if i == target:
                self._pos = i
                return frame
            self._pending = item  # the target frame never came out of the decoder
            self._pos = target
            return None

    def _right(self, target: int, frame) -> bool:
        """``frame`` came out as frame ``target`` and (exact route) has the pixels that the
        sequential decode's frame ``target`` has."""
        digests = self._index.digests
        return frame is not None and (len(digests) == 0
                                      or digest(frame) == int(digests[target]))

    def _locate(self, target: int):
        """The sequential decode's frame ``target`` (an av.VideoFrame): the quick way; else
        from a fresh seek (when it decoded on from earlier reads); else (exact route) from the
        first packet with nothing skipped; a stand-in only if even that misses it."""
        frame = self._find(target)
        if self._right(target, frame):
            return frame
        if self._continued:
            frame = self._find(target, how="seek")
            if self._right(target, frame):
                return frame
        if not self._index.exact:
            raise _Surprise(f"frame {target} did not come out of the decoder")
        self._careful = True  # this reader now decodes every frame, as the sequential decode
        frame = self._find(target, how="start")
        if frame is not None:
            if not self._right(target, frame):
                self._note(f"frame {target} decodes differently from the first decode")
            return frame
        src = self._last or self._pending  # the nearest earlier frame, else the next one
        if src is None:
            raise VideoDecodeError(self.path, f"no decodable frame near index {target} of "
                                              f"{self.info.num_frames}")
        self._note(f"frame {target} did not decode when read; frame {src[0]} stands in")
        return src[1]

    def _note(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def _convert(self, frame, rotation: int) -> np.ndarray:
        """RGB (H, W, 3) at the first frame's size: a stream whose resolution changes midway
        (or a corrupt header that claims so) still gives frames of one shape."""
        return to_rgb(frame, self._index.coded_size, rotation, self.short_side)  # (H, W, 3)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        rot = self.info.rotation
        self._wanted = set(idx.tolist())
        got = {t: self._convert(self._locate(t), rot) for t in np.unique(idx).tolist()}
        return np.stack([got[i] for i in idx.tolist()])  # (T, H, W, 3)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3).

        An index outside [0, num_frames) raises :class:`FrameIndexError` (an ``IndexError``
        and a :class:`VideoDecodeError`) naming the file, the index and the count.
        """
        idx = checked_indices(self.path, indices, self.info.num_frames)
        try:
            try:
                return self._read(idx)
            except _Surprise as e:
                self._switch_to_exact(str(e))
                idx = checked_indices(self.path, indices, self.info.num_frames)
                return self._read(idx)
        except av.FFmpegError as e:
            raise VideoDecodeError(self.path, f"decoding failed ({_why(e)})") from None

    # ----------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._frames = None
        self._pending = self._last = None
        self._close_files()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoReader({self.path!r}, {self.info})"


def open_video(path: str | os.PathLike | MemoryVideo, *, short_side: int | None = None,
               template: str = "img_{:05d}.jpg", threads: int = 1, exact: bool = False):
    """A reader for ``path``: a :class:`FrameFolder` for a directory, else a :class:`VideoReader`
    of a file, a URL or a :class:`MemoryVideo` (``exact``: see there)."""
    if not isinstance(path, MemoryVideo) and not is_url(path) and Path(path).is_dir():
        return FrameFolder(path, template, short_side=short_side)
    return VideoReader(path, short_side=short_side, threads=threads, exact=exact)


def read_frames(path: str | os.PathLike, indices: Sequence[int], *,
                short_side: int | None = None, template: str = "img_{:05d}.jpg") -> np.ndarray:
    """Open, read the frames at ``indices`` as uint8 (T, H, W, 3), close."""
    with open_video(path, short_side=short_side, template=template) as r:
        return r.get_frames(indices)
