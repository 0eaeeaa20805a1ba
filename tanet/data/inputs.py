"""What a :class:`~tanet.data.decode.VideoReader` reads, and the key its frame index is cached
under: a local file (key: absolute path, size, modification time), a URL (through
:mod:`tanet.remote`: a seekable file object fetched by range requests, never a whole download;
key: the URL, size and ETag or modification time, so a replaced object is indexed again) or a
video held in memory (:class:`MemoryVideo`, a shard's member; key: a hash of its bytes, and
the frame index the shard carries, so a worker need not decode the file to index it).
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tanet import remote

__all__ = ["MemoryVideo", "Media", "MediaError", "media_for", "mp4_index_hint"]


class MediaError(Exception):
    """A video that cannot be opened at all (missing, a folder, empty); ``name``: the file."""

    def __init__(self, name: str, cause: str):
        self.name, self.cause = name, cause
        super().__init__(f"{name}: {cause}")


@dataclass(frozen=True)
class MemoryVideo:
    """A video file's bytes held in memory. ``name`` names it in messages (a shard's member:
    ``s3://bucket/train-000003.tar#00000042.mp4``); ``index``: its frame index as a shard
    record stores it (:func:`tanet.data.index_cache.index_to_dict`), or None."""

    name: str
    data: bytes = field(repr=False)
    index: dict | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.name


@dataclass
class Media:
    """One opened source: ``name`` for messages, ``size`` in bytes, ``key`` of its cached index,
    ``preset``: a stored index (a shard's), ``target``: what ``av.open`` takes."""

    name: str
    size: int
    key: tuple
    target: Any  # a path str, or a callable returning a fresh binary file object
    preset: dict | None = None
    _files: list = field(default_factory=list)

    def open(self) -> str | IO[bytes]:
        """A path for PyAV, or a fresh file object at offset 0 (closed by :meth:`close`)."""
        if isinstance(self.target, str):
            return self.target
        f = self.target()
        self._files.append(f)
        return f

    @property
    def fetched(self) -> int:
        """Bytes fetched so far by range requests (URLs; 0 for files and memory)."""
        return sum(getattr(getattr(f, "cache", None), "total_requested_bytes", 0)
                   for f in self._files)

    def __enter__(self) -> "Media":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        while self._files:
            try:
                self._files.pop().close()
            except Exception:  # a remote file whose store went away: nothing left to release
                pass

    def index_hint(self) -> str:
        """:func:`mp4_index_hint` of this source (local files and memory only)."""
        if isinstance(self.target, str):
            try:
                with open(self.target, "rb") as f:
                    return mp4_index_hint(f, self.size)
            except OSError:
                return ""
        if self.preset is None and self.key and self.key[0] == "sha1":
            return mp4_index_hint(self.target(), self.size)
        return ""


def media_for(source: str | os.PathLike | MemoryVideo) -> Media:
    """The :class:`Media` of a path, a URL or a :class:`MemoryVideo`; :class:`MediaError` for
    a source that is missing, a folder or empty (a store that cannot be reached, or refuses
    access, is :class:`tanet.remote.RemoteError`)."""
    if isinstance(source, MemoryVideo):
        data = source.data
        if not data:
            raise MediaError(source.name, "empty file (0 bytes)")
        key = ("sha1", hashlib.sha1(data).hexdigest(), len(data))
        return Media(source.name, len(data), key, lambda: io.BytesIO(data), source.index)
    name = str(source)
    if remote.is_remote(name):
        try:
            st = remote.stat(name)
        except FileNotFoundError:
            raise MediaError(name, "file not found (no object at that URL)") from None
        except IsADirectoryError:
            raise MediaError(name, "is a folder, not a video file") from None
        if st.size == 0:
            raise MediaError(name, "empty file (0 bytes)")
        return Media(name, st.size, ("url", name, st.size, st.tag),
                     lambda: remote.open_url(name, block_size=remote.VIDEO_BLOCK))
    local = remote.local_path(name)
    p = Path(local)
    if not p.exists():
        raise MediaError(name, "file not found")
    if p.is_dir():
        raise MediaError(name, "is a directory, not a video file (use FrameFolder for "
                               "extracted frames)")
    st = p.stat()
    if st.st_size == 0 and p.is_file():
        raise MediaError(name, "empty file (0 bytes)")
    return Media(name, st.st_size, (os.path.abspath(local), st.st_size, st.st_mtime_ns), local)


def mp4_index_hint(f: IO[bytes], end: int) -> str:
    """``; ...`` when the file ``f`` (``end`` bytes) is an MP4/MOV without its index (moov box):
    cut short before the end, where most writers put that box."""
    try:
        f.seek(0)
        head = f.read(8)
        if head[4:8] != b"ftyp":
            return ""
        size, at = int.from_bytes(head[:4], "big"), 0
        while size >= 8 and at + size <= end:
            at += size
            f.seek(at)
            box = f.read(8)
            if len(box) < 8:
                break
            if box[4:8] == b"moov":
                return ""
            size = int.from_bytes(box[:4], "big")
            if size == 1:  # 64-bit size
                size = int.from_bytes(f.read(8), "big")
    except OSError:
        return ""
    return "; the MP4 index (moov box) is missing: the file was cut short (interrupted " \
           "download or recording) and cannot be played"
