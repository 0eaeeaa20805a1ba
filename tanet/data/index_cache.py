"""Frame indices (:mod:`.frame_index`) cached in memory and on disk.

On disk: one small JSON file per video under ``$TANET_CACHE_DIR/video-index`` (default
``~/.cache/tanet``), named by a hash of the video's key (:mod:`.inputs`: a local file's absolute
path, size and modification time; a URL's size and ETag; a shard member's content hash) plus
the index format and the PyAV version, so a changed or replaced file is indexed again
and the exact index of a file (one full decode) is paid once per dataset, across processes and
runs. Indices quicker to build than to store stay in memory only. Writes are atomic renames;
an unreadable entry is rebuilt. :func:`index_to_dict` / :func:`index_from_dict` are the same
record inside a shard's ``KEY.json``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import av
import numpy as np

from tanet.data import frame_index as fi
from tanet.data.frame_index import FrameIndex
from tanet.data.verify import seek_points

__all__ = ["get_index", "rebuild", "store", "cache_dir", "clear_memory_cache", "index_to_dict",
           "index_from_dict"]

INDEX_VERSION = 3
_STORE_AFTER_S = 0.01  # indices that took longer to build are also cached on disk
_MEMORY: OrderedDict[tuple, FrameIndex] = OrderedDict()
_MEMORY_SIZE = 4096
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """``$TANET_CACHE_DIR`` (default ``~/.cache/tanet``)."""
    return Path(os.environ.get("TANET_CACHE_DIR") or Path.home() / ".cache" / "tanet")


def _disk_path(key: tuple) -> Path:
    tag = "\0".join(str(k) for k in (*key, INDEX_VERSION, av.__version__))
    h = hashlib.sha1(tag.encode("utf-8", "surrogateescape")).hexdigest()
    return cache_dir() / "video-index" / h[:2] / f"{h}.json"


def _enc(a: np.ndarray) -> dict:
    """An int64 array as JSON: (start, step, n) when evenly spaced, else base64."""
    a = np.asarray(a, dtype=np.int64)
    if len(a) > 2 and np.all(np.diff(a) == a[1] - a[0]):
        return {"start": int(a[0]), "step": int(a[1] - a[0]), "n": len(a)}
    return {"b64": base64.b64encode(a.astype("<i8").tobytes()).decode()}


def _dec(d: dict) -> np.ndarray:
    if "b64" in d:
        return np.frombuffer(base64.b64decode(d["b64"]), dtype="<i8").astype(np.int64)
    return d["start"] + d["step"] * np.arange(d["n"], dtype=np.int64)


_ARRAYS = ("pts", "keyframes", "seek_ts", "digests")


def index_to_dict(index: FrameIndex) -> dict:
    """``index`` as plain JSON types (arrays compact), stamped with the index format and the
    PyAV version it was built with."""
    d = asdict(index)
    for name in _ARRAYS:
        d[name] = _enc(getattr(index, name))
    d["version"] = [INDEX_VERSION, av.__version__]
    return d


def index_from_dict(d: dict) -> FrameIndex | None:
    """The index of :func:`index_to_dict`; None when another index format or PyAV version
    wrote it (another FFmpeg may decode other pixels: the reader indexes the file again)."""
    d = dict(d)
    if d.pop("version", None) != [INDEX_VERSION, av.__version__]:
        return None
    for name in _ARRAYS:
        d[name] = _dec(d[name])
    for name in ("coded_size", "warnings", "damaged_gops"):
        d[name] = tuple(d[name])
    return FrameIndex(**d)


def _to_json(key: tuple, index: FrameIndex) -> str:
    return json.dumps({**index_to_dict(index), "key": list(key)})


def _from_json(key: tuple, text: str) -> FrameIndex | None:
    d = json.loads(text)
    if d.pop("key", None) != list(key):
        return None
    return index_from_dict(d)


def _load(key: tuple) -> FrameIndex | None:
    with _LOCK:
        index = _MEMORY.get(key)
        if index is not None:
            _MEMORY.move_to_end(key)
            return index
    try:
        index = _from_json(key, _disk_path(key).read_text())
    except (OSError, ValueError, KeyError, TypeError):  # absent, torn or from another version
        return None
    if index is not None:
        _remember(key, index)
    return index


def _remember(key: tuple, index: FrameIndex) -> None:
    with _LOCK:
        _MEMORY[key] = index
        _MEMORY.move_to_end(key)
        while len(_MEMORY) > _MEMORY_SIZE:
            _MEMORY.popitem(last=False)


def store(key: tuple, index: FrameIndex, *, disk: bool = True) -> None:
    """Remember ``index`` of the video ``key`` (:attr:`tanet.data.inputs.Media.key`) in memory
    and (``disk``) on disk; best effort: a read-only or full disk is no error."""
    _remember(key, index)
    if not disk:
        return
    target = _disk_path(key)
    # a rename without tanet.io.atomic_path's fsyncs: a cache entry lost in a crash is rebuilt,
    # and a data loader stores thousands of them
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(_to_json(key, index))
        os.replace(tmp, target)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def clear_memory_cache() -> None:
    """Forget the indices held in memory (the disk cache stays)."""
    with _LOCK:
        _MEMORY.clear()


def get_index(container, stream, key: tuple, *, exact: bool = False,
              preset: dict | None = None) -> tuple[FrameIndex, bool]:
    """The index of an open file: ``preset`` (a shard record's), cached (memory, then disk) or
    built now and cached. ``exact``: a decoded-route index is wanted. Returns (index, built):
    ``built`` means the demuxer moved (it is still at the start otherwise)."""
    index = index_from_dict(preset) if preset is not None else None
    if index is not None:
        _remember(key, index)
    else:
        index = _load(key)
    if index is not None and (index.exact or not exact):
        return index, False
    t0 = time.perf_counter()
    if index is not None:  # a packets-route index, and a full decode was asked for
        index = fi.rebuild_exact(container, stream, start_ts=index.start_ts,
                                 reason="a full decode was asked for")
    else:
        index = fi.build(container, stream, exact=exact)
    index = seek_points(container, stream, index)
    slow = time.perf_counter() - t0 >= _STORE_AFTER_S
    store(key, index, disk=slow or (index.exact and index.num_frames > fi.SMALL))
    return index, True


def rebuild(container, stream, key: tuple, *, start_ts: int, reason: str) -> FrameIndex:
    """The exact index of an open file whose first packet has timestamp ``start_ts`` (a
    reader's switch after a surprise), its seek points verified, cached. Moves the demuxer."""
    index = seek_points(container, stream,
                        fi.rebuild_exact(container, stream, start_ts=start_ts, reason=reason))
    store(key, index)
    return index
