"""Training and evaluation clips streamed from WebDataset shards (:class:`ShardStream`).

The order of an epoch, what each rank and loader worker reads, and the guarantees (every
record once per epoch, exact resume) are :mod:`tanet.data.shards`' :class:`StreamPlan`. Here a
worker reads its chunk of records (range requests from the manifest's offsets), replays its
shuffle buffer's draws, and makes each item exactly as :class:`~tanet.data.dataset.VideoDataset`
does (the same frame-exact reader on the record's bytes, with the frame index the shard
carries; the same clip policy, transforms, errors and warnings), under ``item_context(epoch,
record id)``: the engine's per-item seeding. Memory per worker: at most ``data.shuffle_buffer``
records' bytes, plus the items in flight.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Sequence

import numpy as np
import torch

from tanet.data.dataset import SkippedVideo, VideoDataset
from tanet.data.inputs import MemoryVideo
from tanet.data.shards import ShardRecord, ShardSet, StreamPlan, read_records

__all__ = ["ShardStream"]


class ShardStream(torch.utils.data.IterableDataset):
    """This rank's items of each epoch of ``shards``, made by ``items`` (a :class:`VideoDataset`
    without records: the clip policy, transform and error settings).

    ``workers``: the loader's worker processes (0: the main process reads); ``train``: shuffle
    shards and buffer, pad to equal rank shares (evaluation: manifest order, no padding);
    ``label_map``: the manifest's label -> the run's (class names in another order);
    ``item_context(epoch, id)``: a context manager seeding an item's randomness.
    :meth:`set_epoch` chooses the epoch (and a resume point) before each ``iter(loader)``; it
    reaches persistent workers through shared memory.
    """

    def __init__(self, shards: ShardSet, items: VideoDataset, *, world_size: int = 1,
                 rank: int = 0, workers: int = 0, batch_size: int, seed: int = 0,
                 train: bool = True, buffer: int = 0, label_map: Sequence[int] | None = None,
                 item_context: Callable[[int, int], ContextManager] | None = None) -> None:
        self.shards, self.items = shards, items
        self.world_size, self.rank, self.workers = world_size, rank, workers
        self.batch_size, self.seed, self.train, self.buffer = batch_size, seed, train, buffer
        self.label_map = list(label_map) if label_map is not None else None
        self.item_context = item_context
        self._counts = tuple(int(c) for c in shards.counts)
        self._first = shards.first_ids
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()  # epoch, start item

    # ------------------------------------------------------------------ what the engine sees
    @property
    def n(self) -> int:
        """Records in the shards (one epoch across all ranks, before padding)."""
        return len(self.shards)

    @property
    def plan(self) -> dict[str, Any]:
        """What a resume in the middle of an epoch must find unchanged (the engine compares)."""
        return {"data": "shards", "shards": self.shards.digest,
                "train.workers": max(self.workers, 1), "data.shuffle_buffer": self.buffer}

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch ``epoch`` from this rank's item ``start`` on (a multiple of the batch size)."""
        if start % self.batch_size:
            raise ValueError(f"start {start} is not a multiple of the batch size "
                             f"{self.batch_size}")
        self._state[0], self._state[1] = epoch, start

    def plan_for(self, epoch: int) -> StreamPlan:
        return StreamPlan(self._counts, self.seed, epoch, self.world_size, self.rank,
                          self.workers, self.batch_size, self.buffer, self.train)

    def __len__(self) -> int:
        epoch, start = self._state.tolist()
        return max(self.plan_for(epoch).length - start, 0)

    # ------------------------------------------------------------------ in a worker
    def __iter__(self) -> Iterator[dict | SkippedVideo]:
        epoch, start = (int(x) for x in self._state.tolist())
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if nw != max(self.workers, 1):
            raise RuntimeError(f"ShardStream planned for {self.workers} loader workers, "
                               f"iterated by {nw}")
        done = start // self.batch_size
        plan = self.plan_for(epoch)
        # DataLoader asks its worker 0 first: after `done` batches, batch `done` is owed by
        # the plan's worker done % nw, so the roles rotate
        j = (wid + done) % nw
        yield from self._worker(plan, j, done)

    def _worker(self, plan: StreamPlan, j: int, done: int) -> Iterator[dict | SkippedVideo]:
        order = plan.order(j)
        rest = order[min(plan.skipped(j, done), len(order)):]
        if not len(rest):
            return
        lo = int(rest.min())
        wanted = set(rest.tolist())
        records = self._read_from(plan, j, lo, len(order))
        held: dict[int, ShardRecord] = {}
        for p in rest.tolist():
            while p not in held:
                q, rec = next(records)
                if q in wanted:
                    held[q] = rec
            yield self._item(held.pop(p), plan.epoch)

    def _read_from(self, plan: StreamPlan, j: int, lo: int,
                   hi: int) -> Iterator[tuple[int, ShardRecord]]:
        """(chunk position, record) for positions ``lo .. hi - 1`` of worker ``j``'s chunk, read
        as runs of consecutive records of one shard."""
        pos = np.arange(lo, hi, dtype=np.int64)
        shard, member = plan.locate(j, pos)
        breaks = np.flatnonzero((np.diff(shard) != 0) | (np.diff(member) != 1)) + 1
        for run in np.split(np.arange(len(pos)), breaks):
            if not len(run):
                continue
            s, m0 = int(shard[run[0]]), int(member[run[0]])
            recs = read_records(self.shards.shards[s], int(self._first[s]), m0, len(run))
            for p, rec in zip(pos[run].tolist(), recs):
                yield p, rec

    def _item(self, rec: ShardRecord, epoch: int) -> dict | SkippedVideo:
        label = rec.meta.get("label")
        label = -1 if label is None else int(label)
        if self.label_map is not None and label >= 0:
            label = self.label_map[label]
        video = MemoryVideo(rec.name, rec.data, rec.meta.get("index"))
        scope = (self.item_context(epoch, rec.id) if self.item_context is not None
                 else contextlib.nullcontext())
        with scope:
            return self.items.make_item(rec.id, video, label)

    def __repr__(self) -> str:
        return (f"ShardStream({self.shards.source}: {self.n} records in "
                f"{len(self.shards.shards)} shards, rank {self.rank}/{self.world_size}, "
                f"{self.workers} workers, buffer {self.buffer})")
