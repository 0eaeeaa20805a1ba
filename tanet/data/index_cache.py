"""Frame indices (:mod:`.frame_index`) cached in memory and on disk.

On disk: one small JSON file per video under ``$TANET_CACHE_DIR/video-index`` (default
``~/.cache/tanet``), named by a hash of the video's absolute path, size and modification time
(plus the index format and the PyAV version), so a changed or replaced file is indexed again
and the exact index of a file (one full decode) is paid once per dataset, across processes and
runs. Indices quicker to build than to store stay in memory only. Writes are atomic renames;
an unreadable entry is rebuilt.
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

__all__ = ["get_index", "rebuild", "store", "cache_dir", "clear_memory_cache"]

INDEX_VERSION = 3
_STORE_AFTER_S = 0.01  # indices that took longer to build are also cached on disk
_MEMORY: OrderedDict[tuple, FrameIndex] = OrderedDict()
_MEMORY_SIZE = 4096
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """``$TANET_CACHE_DIR`` (default ``~/.cache/tanet``)."""
    return Path(os.environ.get("TANET_CACHE_DIR") or Path.home() / ".cache" / "tanet")


def _key(path: str, st: os.stat_result) -> tuple:
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _disk_path(key: tuple) -> Path:
    tag = f"{key[0]}\0{key[1]}\0{key[2]}\0{INDEX_VERSION}\0{av.__version__}"
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


def _to_json(key: tuple, index: FrameIndex) -> str:
    d = asdict(index)
    for name in _ARRAYS:
        d[name] = _enc(getattr(index, name))
    d["key"] = list(key)
    return json.dumps(d)


def _from_json(key: tuple, text: str) -> FrameIndex | None:
    d = json.loads(text)
    if d.pop("key", None) != list(key):
        return None
    for name in _ARRAYS:
        d[name] = _dec(d[name])
    for name in ("coded_size", "warnings", "damaged_gops"):
        d[name] = tuple(d[name])
    return FrameIndex(**d)


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


def store(path: str, st: os.stat_result, index: FrameIndex, *, disk: bool = True) -> None:
    """Remember ``index`` of the file ``path`` (``st``: its stat) in memory and (``disk``) on
    disk; best effort: a read-only or full disk is no error."""
    key = _key(path, st)
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


def get_index(container, stream, path: str, st: os.stat_result, *,
              exact: bool = False) -> tuple[FrameIndex, bool]:
    """The index of an open file: cached (memory, then disk) or built now and cached.
    ``exact``: a decoded-route index is wanted. Returns (index, built): ``built`` means the
    demuxer moved (it is still at the start otherwise)."""
    index = _load(_key(path, st))
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
    store(path, st, index, disk=slow or (index.exact and index.num_frames > fi.SMALL))
    return index, True


def rebuild(container, stream, path: str, st: os.stat_result, *, start_ts: int,
            reason: str) -> FrameIndex:
    """The exact index of an open file whose first packet has timestamp ``start_ts`` (a
    reader's switch after a surprise), its seek points verified, cached. Moves the demuxer."""
    index = seek_points(container, stream,
                        fi.rebuild_exact(container, stream, start_ts=start_ts, reason=reason))
    store(path, st, index)
    return index
