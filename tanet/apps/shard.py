"""``tanet shard SOURCE OUT``: the videos of any source the resolver reads as WebDataset shards.

1. **Plan** (deterministic): the source's videos (:func:`~tanet.data.sources.resolve_videos`),
   their sizes, a permutation seeded by ``seed``, cut into shards of about ``shard_size``
   bytes by the videos' sizes, before any is checked, so the plan does not depend on which
   videos turn out broken.
2. **Each shard**: its videos are checked in parallel worker processes, as ``tanet check`` checks
   them (:func:`~tanet.apps.check.check_video`: opened, indexed, the frames training reads
   compared with a sequential decode); a broken one is left out and listed with its cause; the
   others go into the tar as ``KEY.<ext>`` (the original bytes, no re-encode) and ``KEY.json``
   (label, class name, frames, fps, size, codec, the verdict and warnings, and the file's frame
   index: the exact one where the file needs one, so a worker never decodes a file whole to index
   it, nor probes it). Tars are written with fixed metadata, so the same input gives the same
   bytes (the same sha256). Local: a temporary file renamed into place; a URL: written directly
   (S3: a multipart upload, the object appears only when whole).
3. **Resume**: after each shard ``shards.progress.json`` records the plan and the shards done;
   a rerun with the same plan (same videos, sizes, seed, shard size) skips them; another plan
   starts over. At the end ``shards.json`` (:mod:`tanet.data.shards`) replaces it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

import numpy as np

from tanet import remote
from tanet.data.shards import MANIFEST_FORMAT, MANIFEST_NAME
from tanet.data.sources import Source, Video, resolve_videos

__all__ = ["parse_size", "plan_shards", "write_shards", "run_shard", "ShardPlan"]

PROGRESS_NAME = "shards.progress.json"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """``500MB``, ``1GB``, ``1.5GiB``, ``2000000`` -> bytes (MB = 10**6, MiB = 2**20)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 500MB, 1GB or 1.5GiB")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 1:
        raise ValueError(f"{text!r}: a shard size must be at least 1 byte")
    return size


@dataclass
class ShardPlan:
    """Which videos go into which shard, and the digest that identifies the plan."""

    source: Source
    sizes: list[int]
    shards: list[list[int]]  # video indices of each shard, in tar order
    names: list[str]
    digest: str
    seed: int
    shard_size: int
    left_out: list[dict] = field(default_factory=list)


def _size(v: Video) -> int:
    try:
        if remote.is_remote(v.path):
            return remote.stat(v.path).size
        return os.path.getsize(v.path) if os.path.isfile(v.path) else 0
    except (OSError, FileNotFoundError):
        return 0  # missing: the check says so, and it is left out


def plan_shards(source: Source, *, shard_size: int, seed: int = 0,
                prefix: str = "shard") -> ShardPlan:
    """Shards of about ``shard_size`` bytes from a seeded permutation of the videos."""
    if source.multilabel:  # a record holds one label
        raise ValueError(f"{source.name}: a multi-label list (several classes a video); shards "
                         f"hold one label a video, so train from the list itself")
    sizes = [_size(v) for v in source.videos]
    order = np.random.default_rng(seed).permutation(len(sizes)).tolist()
    shards: list[list[int]] = [[]]
    total = 0
    for i in order:
        if shards[-1] and total + sizes[i] > shard_size:
            shards.append([])
            total = 0
        shards[-1].append(i)
        total += sizes[i]
    names = [f"{prefix}-{k:06d}.tar" for k in range(len(shards))]
    ident = json.dumps([[v.path for v in source.videos], sizes, seed, shard_size, names])
    return ShardPlan(source, sizes, shards, names, hashlib.sha256(ident.encode()).hexdigest(),
                     seed, shard_size)


# ------------------------------------------------------------------------------ checking
def _check_job(job: tuple) -> dict:
    """The verdict and facts of one video (in a worker process); never raises for a bad one."""
    from tanet.apps.check import check_video
    from tanet.data.decode import open_video
    from tanet.data.index_cache import index_to_dict

    path, deep = job
    if not remote.is_url(path) and os.path.isdir(path):
        return {"status": "error", "cause": "a frame folder (shards hold video files)"}
    res = check_video(path, deep=deep)
    if res.status == "error":
        return {"status": "error", "cause": res.cause}
    with open_video(path) as r:  # the index check_video built, from this process's cache
        index, info = r.index, r.info
    return {"status": res.status, "warnings": res.cause.split("; ") if res.cause else [],
            "frames": info.num_frames, "fps": info.fps, "duration": info.duration,
            "width": info.width, "height": info.height, "codec": info.codec,
            "container": info.container, "index": index_to_dict(index)}


def _key(i: int, v: Video) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", remote.basename(v.listed).split(".")[0])[:60]
    return f"{i:08d}_{stem}" if stem else f"{i:08d}"


def _ext(v: Video) -> str:
    name = remote.basename(v.path)
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext if re.fullmatch(r"[a-z0-9]{1,8}", ext) and ext != "json" else "video"


def _meta(i: int, v: Video, names: Sequence[str] | None, facts: dict) -> dict:
    label = v.label
    return {"key": _key(i, v), "path": v.listed, "label": label,
            "class_name": names[label] if names and label is not None else None,
            "frames": facts["frames"], "fps": facts["fps"], "duration": facts["duration"],
            "width": facts["width"], "height": facts["height"], "codec": facts["codec"],
            "container": facts["container"],
            "check": {"status": facts["status"], "warnings": facts["warnings"]},
            "index": facts["index"]}


# ------------------------------------------------------------------------------ writing
class _Counting:
    """A write-only stream that counts and hashes what passes through."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.size, self.sha = f, 0, hashlib.sha256()

    def write(self, b) -> int:
        self.f.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)

    def flush(self) -> None:
        self.f.flush()


def _read_video(path: str) -> bytes:
    if remote.is_remote(path):
        return remote.read_bytes(path)
    return Path(remote.local_path(path)).read_bytes()


def _write_tar(out: str, name: str, items: list[tuple[dict, str, bytes]]) -> dict:
    """One shard of ``items`` (meta, ext, bytes) at ``out/name``; its manifest entry."""
    from webdataset import TarWriter

    url = remote.join(out, name)
    offsets: list[int] = []
    if remote.is_remote(url):
        target, tmp = remote.open_url(url, "wb"), None
    else:
        tmp = Path(out) / f".{name}.{os.getpid()}.tmp"
        target = open(tmp, "wb")
    try:
        with remote.remote_errors(url), target:
            stream = _Counting(target)
            with TarWriter(stream, encoder=False, mtime=0.0, user="tanet", group="tanet",
                           mode=0o444) as tw:
                for meta, ext, data in items:
                    offsets.append(tw.tarstream.offset)
                    tw.write({"__key__": meta["key"], "json": json.dumps(meta, sort_keys=True)
                              .encode(), ext: data})
        if tmp is not None:
            os.replace(tmp, Path(out) / name)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return {"name": name, "bytes": stream.size, "sha256": stream.sha.hexdigest(),
            "records": len(items), "offsets": offsets}


def _write_text(url: str, text: str) -> None:
    if remote.is_remote(url):
        remote.write_bytes(url, text.encode())
    else:
        from tanet.io import atomic_write_text

        os.chmod(atomic_write_text(url, text), 0o644)  # a dataset others read


def _read_json(url: str) -> dict | None:
    try:
        data = remote.read_bytes(url) if remote.is_remote(url) else Path(url).read_bytes()
        return json.loads(data)
    except (FileNotFoundError, ValueError):
        return None


def _shard_exists(out: str, entry: dict) -> bool:
    url = remote.join(out, entry["name"])
    try:
        size = remote.stat(url).size if remote.is_remote(url) else os.path.getsize(url)
    except (OSError, FileNotFoundError):
        return False
    return size == entry["bytes"]


def write_shards(plan: ShardPlan, out: str, *, workers: int = 1, deep: bool = False,
                 quiet: bool = False) -> dict:
    """Check and write every shard of ``plan`` not already done (``shards.progress.json``),
    then the manifest; returns the manifest. Videos are checked in ``workers`` processes while
    this one writes each shard, in order, as soon as all its videos are checked."""
    from tqdm import tqdm

    from tanet.apps.check import check_iter

    out = str(out)
    if not remote.is_remote(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    progress_url = remote.join(out, PROGRESS_NAME)
    saved = _read_json(progress_url) or {}
    done: dict[str, dict] = {}
    left: dict[str, list] = {}
    if saved.get("plan") == plan.digest:
        done = {n: e for n, e in saved.get("done", {}).items() if _shard_exists(out, e)}
        left = {n: saved["left_out"].get(n, []) for n in done}
    todo = [k for k, n in enumerate(plan.names) if n not in done]
    members = [i for k in todo for i in plan.shards[k]]
    jobs = [(plan.source.videos[i].path, deep) for i in members]
    facts: dict[int, Any] = {}
    t0, written, nxt = time.perf_counter(), 0, 0
    with tqdm(total=len(jobs), desc="shard", unit="video", disable=quiet,
              dynamic_ncols=True) as bar:
        for j, fact in check_iter(jobs, workers=max(1, min(workers, len(jobs))), fn=_check_job):
            facts[members[j]] = fact
            bar.update(1)
            while nxt < len(todo) and all(i in facts for i in plan.shards[todo[nxt]]):
                name = plan.names[todo[nxt]]
                entry, left[name] = _one_shard(plan, out, name, plan.shards[todo[nxt]], facts)
                if entry is not None:
                    done[name] = entry
                    written += entry["bytes"]
                _write_text(progress_url, json.dumps({"plan": plan.digest, "done": done,
                                                      "left_out": left}))
                nxt += 1
                rate = written / 1e6 / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(shards=f"{len(done)}/{len(plan.names)}", MB_s=f"{rate:.1f}")
    manifest = _manifest(plan, [done[n] for n in plan.names if n in done],
                         [x for n in plan.names for x in left.get(n, [])])
    _write_text(remote.join(out, MANIFEST_NAME), json.dumps(manifest, indent=1) + "\n")
    _remove(progress_url)
    return manifest


def _one_shard(plan: ShardPlan, out: str, name: str, members: list[int],
               facts: dict[int, Any]) -> tuple[dict | None, list[dict]]:
    """Write shard ``name`` of the checked videos ``members``; (its entry, the left out)."""
    src = plan.source
    items, left = [], []
    for i in members:
        v, fact = src.videos[i], facts.pop(i)
        if not isinstance(fact, dict) or fact["status"] == "error":
            cause = fact["cause"] if isinstance(fact, dict) else fact.cause
            left.append({"path": v.listed, "cause": cause})
            continue
        items.append((_meta(i, v, src.class_names, fact), _ext(v), _read_video(v.path)))
    return (_write_tar(out, name, items) if items else None), left


def _manifest(plan: ShardPlan, entries: list[dict], left_out: list[dict]) -> dict[str, Any]:
    from tanet import __version__

    src = plan.source
    return {"format": MANIFEST_FORMAT, "version": 1, "created_by": f"tanet {__version__}",
            "source": src.name, "source_format": src.format,
            "class_names": list(src.class_names or []),
            "num_records": sum(e["records"] for e in entries), "seed": plan.seed,
            "shard_size": plan.shard_size, "shards": entries, "left_out": left_out}


def _remove(url: str) -> None:
    try:
        if remote.is_remote(url):
            remote.filesystem(url).rm_file(remote.filesystem(url)._strip_protocol(url))
        else:
            os.unlink(url)
    except (OSError, FileNotFoundError):
        pass


def run_shard(source: str, out: str, *, shard_size: str | int = "1GB", seed: int = 0,
              workers: int | None = None, prefix: str = "shard", deep: bool = False,
              quiet: bool = False, **resolve: Any) -> tuple[dict, str]:
    """``tanet shard``: resolve, plan, write; returns the manifest and a summary."""
    src = resolve_videos(source, **resolve)
    plan = plan_shards(src, shard_size=parse_size(shard_size), seed=seed, prefix=prefix)
    t0 = time.perf_counter()
    manifest = write_shards(plan, out, workers=workers or os.cpu_count() or 1, deep=deep,
                            quiet=quiet)
    secs = time.perf_counter() - t0
    size = sum(e["bytes"] for e in manifest["shards"])
    text = (f"sharded {manifest['num_records']} of {len(src)} videos into "
            f"{len(manifest['shards'])} shard(s), {size / 1e6:.1f} MB in {secs:.1f} s "
            f"({size / 1e6 / max(secs, 1e-9):.1f} MB/s) -> {remote.join(out, MANIFEST_NAME)}")
    for bad in manifest["left_out"][:10]:
        text += f"\n  left out: {bad['path']}: {bad['cause']}"
    if len(manifest["left_out"]) > 10:
        text += f"\n  ... {len(manifest['left_out']) - 10} more left out (listed in the manifest)"
    return manifest, text
