"""WebDataset shards of videos: the manifest, reading records, and the order of an epoch.

**Layout** (written by ``tanet shard``, :mod:`tanet.apps.shard`): tar files of about one size
(``shard-000000.tar`` ...), each record two members, ``KEY.<ext>`` (the video's original bytes)
and ``KEY.json`` (label, class name, frame count, fps, the checker's verdict and warnings, and
the frame index: the exact one where the file needs one), plus ``shards.json``: shard names, bytes,
sha256, record counts and each record's byte offset in its shard, class names, the source's
format, the videos left out and why. Training knows the epoch's length, and where each record
starts, from the manifest alone: nothing is listed.

**A source names shards** (:func:`is_shards`) when it is a manifest (a name ending in
``shards.json``) or a pattern of ``.tar`` names (``s3://b/k400/train-{000000..000511}.tar``),
local or at any URL :mod:`tanet.remote` reads; a pattern selects shards of the manifest beside
them (the record counts and offsets come from it).

**The order of an epoch** (:class:`StreamPlan`, a pure function of the manifest's record
counts, ``(seed, epoch)``, the number of processes ``W``, loader workers ``Nw`` and the batch
size ``B``; nothing of it depends on the data or on timing):

1. the shards are permuted by ``(seed, epoch)`` and their records laid end to end: a stream of
   ``N`` records (training; evaluation keeps the manifest's order);
2. training pads it by wrapping around to ``P * W`` records, ``P = ceil(N / W)``, and rank ``r``
   takes the contiguous slice ``[r P, (r + 1) P)``; evaluation splits without padding (slices
   of ``N // W`` or one more);
3. the rank's slice is cut into ``ceil(P / B)`` micro-batches; loader worker ``j`` owns batches
   ``j, j + Nw, ...`` (the order in which DataLoader takes batches from its workers) and reads a
   contiguous chunk of the slice holding exactly their records, by range requests from the
   records' offsets;
4. each worker passes its chunk through a shuffle buffer of ``data.shuffle_buffer`` records
   whose draws are seeded by ``(seed, epoch, rank, worker)``, so which record fills which
   place of which batch is known before a byte is read;
5. each record's randomness (sampling offsets, augmentation) is seeded by ``(seed, epoch,
   record id)`` (:mod:`tanet.engine.seeding`), the id being its place in the manifest.

**Guarantees.** Every record is read exactly once per epoch across all ranks and workers when
``W`` divides ``N``; otherwise the first ``P * W - N < W`` records of the epoch's stream are
read once more, at the end of the last rank's slice (twice in all; more only when ``N < W``),
so that every rank takes the same number of steps (as the file sampler pads); nothing is
dropped. Evaluation reads every
record exactly once. A resumed epoch (``set_epoch(epoch, start)``) skips the micro-batches
already taken: each worker replays its buffer's draws and re-reads only records that were in
the buffer, not yet used, at the kill; batch ``m`` onwards come out as in the uninterrupted
epoch, so with the engine's saved RNG states the weights are those of the uninterrupted run,
bit for bit. The plan depends on ``W``, ``Nw``, ``B``, the buffer and the manifest: resuming in
the middle of an epoch with any of them changed is refused (:attr:`ShardStream.plan
<tanet.data.streaming.ShardStream.plan>`, checked by the engine); at an epoch boundary any may
change.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tarfile
from dataclasses import dataclass, field
from typing import IO, Iterator

import numpy as np

from tanet import remote

__all__ = ["MANIFEST_NAME", "MANIFEST_FORMAT", "Shard", "ShardSet", "ShardRecord", "ShardError",
           "is_shards", "open_shards", "read_records", "StreamPlan", "buffer_order"]

MANIFEST_NAME = "shards.json"
MANIFEST_FORMAT = "tanet-shards"


class ShardError(RuntimeError):
    """A manifest or shard that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class Shard:
    """One tar file: where, how big, its sha256, record count and each record's byte offset."""

    url: str
    bytes: int
    sha256: str
    records: int
    offsets: tuple[int, ...] = field(repr=False)


@dataclass
class ShardSet:
    """The shards a source names and what the manifest says of them."""

    source: str
    shards: list[Shard]
    class_names: list[str]
    source_format: str
    digest: str  # identifies the records and their order (resume checks)

    @property
    def counts(self) -> np.ndarray:
        return np.array([s.records for s in self.shards], dtype=np.int64)

    @property
    def first_ids(self) -> np.ndarray:
        """Record id of each shard's first record (ids count through the shards in order)."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.counts.sum())


@dataclass(frozen=True)
class ShardRecord:
    """One record as read: its id, key, metadata (``KEY.json``), the video's bytes and suffix."""

    id: int
    shard: str
    key: str
    meta: dict
    data: bytes = field(repr=False)
    ext: str

    @property
    def name(self) -> str:
        """How messages name it: ``<shard url>#<key>.<ext>``."""
        return f"{self.shard}#{self.key}.{self.ext}"


def is_shards(source: str | os.PathLike) -> bool:
    """A manifest (``...shards.json``) or a pattern of ``.tar`` names."""
    name = remote.basename(str(source))
    return name.endswith(MANIFEST_NAME) or name.endswith(".tar") or ".tar}" in name


def _read(url: str) -> bytes:
    if remote.is_remote(url):
        return remote.read_bytes(url)
    try:
        with open(remote.local_path(url), "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such file") from None


def _manifest(url: str) -> dict:
    try:
        m = json.loads(_read(url))
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"{url}: not a shards manifest (invalid JSON: {e})") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise ShardError(f"{url}: not a shards manifest (write one with `tanet shard`)")
    return m


def open_shards(source: str | os.PathLike) -> ShardSet:
    """The :class:`ShardSet` of a manifest or a ``.tar`` pattern (whose manifest lies beside
    the shards); the manifest is read once, nothing is listed."""
    source = str(source)
    name = remote.basename(source)
    folder = remote.parent(source)
    if name.endswith(MANIFEST_NAME):
        m, wanted = _manifest(source), None
    else:
        m = _manifest(remote.join(folder, MANIFEST_NAME))
        wanted = [remote.basename(n) for n in remote.expand(name)]
    entries = {e["name"]: e for e in m["shards"]}
    if wanted is not None:
        missing = [n for n in wanted if n not in entries]
        if missing:
            where = remote.join(folder, MANIFEST_NAME)
            raise ShardError(f"{source}: {missing[0]} is not in {where} ({len(missing)} of "
                             f"{len(wanted)} names missing)")
    chosen = [entries[n] for n in (wanted if wanted is not None else entries)]
    shards = [Shard(remote.join(folder, e["name"]), int(e["bytes"]), e["sha256"],
                    int(e["records"]), tuple(e["offsets"])) for e in chosen]
    if not shards or not sum(s.records for s in shards):
        raise ShardError(f"{source}: no records in these shards")
    ident = json.dumps([[e["name"], e["sha256"], e["records"]] for e in chosen])
    return ShardSet(source, shards, list(m.get("class_names") or []),
                    m.get("source_format", ""), hashlib.sha256(ident.encode()).hexdigest()[:16])


def _open_stream(url: str, offset: int) -> IO[bytes]:
    if remote.is_remote(url):
        f = remote.open_url(url, block_size=remote.STREAM_BLOCK)
    else:
        f = open(remote.local_path(url), "rb")
    f.seek(offset)
    return f


def read_records(shard: Shard, first_id: int, start: int, count: int) -> Iterator[ShardRecord]:
    """Records ``start .. start + count - 1`` of ``shard`` (``first_id``: id of its record 0),
    read sequentially from the byte offset of record ``start`` (one range request stream)."""
    try:
        from webdataset.tariterators import tar_file_iterator
    except ImportError:
        raise ShardError(f"{shard.url}: reading shards needs webdataset: pip install "
                         f"'tanet[shards]'") from None
    if count <= 0:
        return
    with remote.remote_errors(shard.url), _open_stream(shard.url, shard.offsets[start]) as f:
        members = tar_file_iterator(f, handler=_reraise)
        for k in range(count):
            yield _record(shard, first_id + start + k, members)


def _reraise(exn: Exception) -> bool:
    raise exn


def _record(shard: Shard, rid: int, members: Iterator[dict]) -> ShardRecord:
    """The next two members (``KEY.json``, ``KEY.<ext>``, in either order) as one record."""
    got: dict[str, bytes] = {}
    key = None
    try:
        while len(got) < 2:
            m = next(members)
            base, _, ext = remote.basename(m["fname"]).partition(".")
            if key is not None and base != key:
                lack = "video" if "json" in got else "json"
                raise ShardError(f"{shard.url}: record {key} has no {lack} member (the shard is "
                                 f"damaged; write it again)")
            key, got[ext] = base, m["data"]
    except (StopIteration, tarfile.TarError) as e:
        why = "ends early" if isinstance(e, StopIteration) else f"is damaged ({e})"
        raise ShardError(f"{shard.url}: the shard {why} at record {rid}; write it again with "
                         f"`tanet shard`") from None
    meta = json.loads(got.pop("json"))
    ext, data = got.popitem()
    return ShardRecord(rid, shard.url, key, meta, data, ext)


# ------------------------------------------------------------------------------ the plan
def buffer_order(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The order in which a shuffle buffer of ``size`` emits items ``0 .. count - 1`` fed in
    order: once full, each new item goes in and a uniformly drawn one comes out (WebDataset's
    rule); at the end the rest come out in random order. ``size <= 1``: the input order."""
    if size <= 1:
        return np.arange(count, dtype=np.int64)
    out, buf = [], []
    draws = iter(rng.random(count).tolist())
    for x in range(count):
        buf.append(x)
        if len(buf) >= size:
            k = int(next(draws) * len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            out.append(buf.pop())
    tail = rng.permutation(len(buf))
    out += [buf[k] for k in tail.tolist()]
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class StreamPlan:
    """Which record each rank and worker reads in which order in one epoch (module docstring).
    ``workers``: loader workers (0 counts as 1, the main process); ``train``: shuffle and pad."""

    counts: tuple[int, ...]
    seed: int
    epoch: int
    world_size: int
    rank: int
    workers: int
    batch_size: int
    buffer: int
    train: bool

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    @property
    def slice(self) -> tuple[int, int]:
        """[start, stop) of this rank in the epoch's (padded) stream."""
        n, w, r = self.total, self.world_size, self.rank
        if self.train:
            per = math.ceil(n / w)
            return r * per, (r + 1) * per
        base, extra = divmod(n, w)
        start = r * base + min(r, extra)
        return start, start + base + (r < extra)

    @property
    def length(self) -> int:
        a, b = self.slice
        return b - a

    @property
    def batches(self) -> int:
        return math.ceil(self.length / self.batch_size)

    def shard_order(self) -> np.ndarray:
        if not self.train:
            return np.arange(len(self.counts), dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A4D])
        return rng.permutation(len(self.counts)).astype(np.int64)

    def chunk(self, j: int) -> tuple[int, int]:
        """Worker ``j``'s [start, stop) within the rank's slice: the records of its batches."""
        nw, b, m, n = max(self.workers, 1), self.batch_size, self.batches, self.length
        sizes = [len(range(w, m, nw)) * b for w in range(nw)]
        if m:
            sizes[(m - 1) % nw] -= m * b - n  # the last batch is short
        start = sum(sizes[:j])
        return start, start + sizes[j]

    def order(self, j: int) -> np.ndarray:
        """Worker ``j``'s chunk positions (0-based) in the order its buffer emits them."""
        a, b = self.chunk(j)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, j, 0xB0F])
        return buffer_order(b - a, self.buffer if self.train else 0, rng)

    def locate(self, j: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index in the manifest, record within the shard) of worker ``j``'s chunk
        ``positions``."""
        counts = np.asarray(self.counts, dtype=np.int64)
        perm = self.shard_order()
        ends = np.cumsum(counts[perm])
        g = (self.slice[0] + self.chunk(j)[0] + np.asarray(positions, dtype=np.int64))
        g = g % self.total  # the padding wraps around to the stream's start
        slot = np.searchsorted(ends, g, side="right")
        member = g - (ends[slot] - counts[perm][slot])
        return perm[slot], member

    def skipped(self, j: int, done_batches: int) -> int:
        """Items worker ``j`` has emitted when the rank has taken ``done_batches`` batches."""
        return len(range(j, done_batches, max(self.workers, 1))) * self.batch_size
