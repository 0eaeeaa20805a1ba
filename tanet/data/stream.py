"""Live sources: a network stream, a pipe or a capture device, decoded frame by frame as it comes.

Like the other readers of :mod:`tanet.data`, built on PyAV.
A SOURCE is

* a URL that FFmpeg reads (``rtsp://``, ``http(s)://``, ``udp://``, ``srt://``, ...),
* ``-``: standard input (a pipe from a camera tool or ``ffmpeg ... -f mpegts -``); a pipe cannot
  seek, so the container must be streamable (MPEG-TS, Matroska, fragmented MP4, raw H.264 with
  ``format="h264"``),
* a capture device through FFmpeg's input devices: ``/dev/video0`` (``v4l2``, Linux; the default
  for ``/dev/video*``), ``format="avfoundation"`` with ``"0"`` (macOS) or ``format="dshow"`` with
  ``"video=Camera name"`` (Windows), or any other input format of the FFmpeg build (``lavfi``),
* a regular file, played at its own frame rate as if it came from a camera.

:class:`LiveStream` yields :class:`LiveFrame` records: the frame's position in the stream, its
time on the stream's clock (seconds since the first frame, from the timestamps), when it was
decoded, and the RGB pixels converted exactly as :class:`~tanet.data.decode.VideoReader` converts
a file's frames (bilinear resize to ``short_side``, display rotation), so a window of a live
stream and the same frames read from a file give the same clip. Demuxing, decoding and colour
conversion run in FFmpeg with the GIL released, so a reader thread decodes while the model runs.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import av
import numpy as np

from tanet.data.decode import _why, to_rgb
from tanet.data.frame_index import frame_rotation

__all__ = ["StreamError", "StreamInfo", "LiveFrame", "LiveStream", "resolve_source"]

# FFmpeg's input devices per platform (the --format a camera needs).
DEVICE_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}


class StreamError(RuntimeError):
    """A live source could not be opened or read; the message starts with the source."""


@dataclass(frozen=True)
class StreamInfo:
    """What the source says about its video: size (after rotation, before resizing), nominal
    frame rate (``fps_known`` False when the source gave none and 25 is assumed), codec."""

    source: str
    kind: str  # url | stdin | device | file
    format: str
    codec: str
    width: int
    height: int
    fps: float
    fps_known: bool


@dataclass
class LiveFrame:
    """One decoded frame: ``index`` 0, 1, 2 ... in presentation order; ``time`` seconds on the
    stream's clock since the first frame; ``arrival`` ``time.monotonic()`` when it was ready."""

    index: int
    time: float
    arrival: float
    rgb: np.ndarray  # (H, W, 3) uint8


def _format_names() -> set[str]:
    """Input format names of this FFmpeg build, aliases split (``video4linux2,v4l2``)."""
    return {n for f in av.formats_available for n in f.split(",")}


def resolve_source(source: str, format: str | None = None) -> tuple[str, str | None, str]:
    """``(url, format, kind)`` for FFmpeg, kind one of stdin, url, file, device: ``-`` is
    ``pipe:0``; an existing file is a file; any other name is a device of input format
    ``format`` (which must be in this FFmpeg build), by default v4l2 for ``/dev/video*`` and
    dshow for ``video=...``."""
    if format is not None and format not in _format_names():
        devices = sorted(n for n in ("v4l2", "avfoundation", "dshow", "lavfi", "x11grab")
                         if n in _format_names())
        raise StreamError(f"{source}: input format {format!r} is not in this FFmpeg build "
                          f"(PyAV {av.__version__}); its capture formats: "
                          f"{', '.join(devices) or 'none'}")
    if source == "-":
        return "pipe:0", format, "stdin"
    if "://" in source:
        return source, format, "url"
    if Path(source).is_file():
        return source, format, "file"
    if format is None and source.startswith("/dev/video"):
        format = "v4l2"
    elif format is None and source.startswith("video="):
        format = "dshow"
    if format is not None:
        return source, format, "device"
    here = DEVICE_FORMATS.get(sys.platform, "v4l2")
    raise StreamError(f"{source}: no such file; a live SOURCE is a URL (rtsp://, http://, ...), "
                      f"- for standard input, or a capture device (/dev/video0, or a device name "
                      f"with --format {here})")


class LiveStream:
    """An open live source; iterate it (once) for :class:`LiveFrame` records until the stream
    ends. A read error ends the iteration by raising :class:`StreamError`; corrupt packets are
    skipped. ``timeout``: seconds to wait for the source to open and for each read (network
    sources). ``options``: FFmpeg options (``rtsp_transport=tcp``, ``framerate=30``,
    ``video_size=640x480``, ...). ``realtime`` (default: for regular files only) delivers
    frames no faster than their timestamps."""

    def __init__(self, source: str, *, short_side: int | None = None, format: str | None = None,
                 options: Mapping[str, str] | None = None, timeout: float = 30.0,
                 realtime: bool | None = None) -> None:
        url, fmt, kind = resolve_source(source, format)
        if kind == "stdin" and sys.stdin is not None and sys.stdin.isatty():
            raise StreamError("-: standard input is a terminal; pipe a stream in, e.g. "
                              "`ffmpeg -i CAMERA -f mpegts - | tanet predict - --live ...`")
        opts = dict(options or {})
        if url.startswith("rtsp") and "rtsp_transport" not in opts:
            opts["rtsp_transport"] = "tcp"  # no lost packets, hence no broken frames
        self.source, self.short_side = source, short_side
        self.realtime = kind == "file" if realtime is None else realtime
        try:
            self._container = av.open(url, format=fmt, options=opts, timeout=(timeout, timeout))
        except av.FFmpegError as e:
            raise StreamError(f"{source}: cannot open ({_why(e)}); check the address, that the "
                              "stream or device is up, and --format") from None
        try:
            if not self._container.streams.video:
                raise StreamError(f"{source}: no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "SLICE"  # frame threads would hold frames back
            self.info = self._make_info(kind)
        except BaseException:
            self._container.close()
            raise

    def _make_info(self, kind: str) -> StreamInfo:
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate and 0 < float(rate) < 1000 else 0.0
        cc = s.codec_context
        return StreamInfo(source=self.source, kind=kind, format=self._container.format.name,
                          codec=cc.name if cc is not None else "", width=cc.width,
                          height=cc.height, fps=fps or 25.0, fps_known=bool(fps))

    def _frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order; a corrupt packet is dropped."""
        dec = self._stream.codec_context
        try:
            for packet in self._container.demux(self._stream):
                try:
                    yield from dec.decode(packet)
                except av.FFmpegError:  # a corrupt packet: the next keyframe recovers
                    continue
        except av.FFmpegError as e:
            raise StreamError(f"{self.source}: reading failed ({_why(e)})") from None

    def __iter__(self) -> Iterator[LiveFrame]:
        t0 = None  # timestamp of the first frame (a stream rarely starts at 0)
        wall0 = time.monotonic()
        coded, rotation = None, 0  # of the first frame, as a file's index keeps them
        for i, frame in enumerate(self._frames()):
            if coded is None:
                coded, rotation = (frame.width, frame.height), frame_rotation(frame)
            t = frame.time
            if t is None:
                t = i / self.info.fps
            if t0 is None:
                t0 = t
            if self.realtime:
                delay = wall0 + (t - t0) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            rgb = to_rgb(frame, coded, rotation, self.short_side)  # (H, W, 3)
            yield LiveFrame(index=i, time=t - t0, arrival=time.monotonic(), rgb=rgb)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "LiveStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

