"""Spreading a list of videos over the processes of a ``torchrun`` job.

Without torchrun (``world_size == 1``) everything here is the plain loop. Under torchrun every
process takes its share and the main process (rank 0) gets the results back in input order, so
``tanet predict`` and ``tanet extract`` print or write one output, the same as a single process
would, whatever the number of processes or machines (gloo on CPU, nccl on GPUs).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch.distributed as dist

from tanet.engine.distributed import DistInfo, all_gather

__all__ = ["ordered_map", "owned", "collect_files", "joined", "from_main", "DIST_TIMEOUT_S"]

# a collective waits this long for the other processes: shares of a long job may end far apart
DIST_TIMEOUT_S = 12 * 3600.0


@contextlib.contextmanager
def joined(device: str | None = None) -> Iterator[DistInfo]:
    """This process's place in the torchrun job (joined for the duration, and left after,
    unless the caller had already joined it: then it stays for the caller's next steps)."""
    from tanet.engine.distributed import finish_distributed, init_distributed

    owner = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device, timeout=DIST_TIMEOUT_S)
    try:
        yield info
    finally:
        if owner:
            finish_distributed()


def from_main(fn: Callable[[], Any], info: DistInfo) -> Any:
    """``fn()`` computed by the main process alone and sent to every process, so that all work
    on one answer (the videos of a source: a list on standard input is read once). When it
    fails, the main process raises the error and the others a ``RuntimeError`` quoting it."""
    if not info.distributed:
        return fn()
    box: list[Any] = [None]
    if info.main:
        try:
            box = [(fn(), None)]
        except Exception as e:
            box = [(None, f"{type(e).__name__}: {e}")]
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    value, error = box[0]
    if error is not None:
        raise RuntimeError(f"rank 0 could not read the input: {error}")
    return value


def owned(n: int, info: DistInfo) -> list[int]:
    """The items ``0..n-1`` this process takes: ``rank, rank + W, ...``."""
    return list(range(info.rank, n, info.world_size))


def ordered_map(fn: Callable[[list[Any]], Iterable[Any]], items: Sequence[Any], info: DistInfo,
                *, chunk: int = 32, progress: Callable[[int], None] | None = None
                ) -> Iterator[Any]:
    """``fn`` over ``items``, ``chunk`` items per process at a time; yields the results in input
    order on the main process (nothing elsewhere). ``fn`` maps a list to its results (a
    generator streams them one by one in a single process); ``progress(k)`` is called on the
    main process after every ``k`` items."""
    if not info.distributed:
        for result in fn(list(items)):
            if progress is not None:
                progress(1)
            yield result
        return
    w = info.world_size
    for start in range(0, len(items), chunk * w):
        block = items[start:start + chunk * w]
        results = all_gather(info, list(fn(block[info.rank::w])))  # per rank, in rank order
        if not info.main:
            continue
        merged: list[Any] = [None] * len(block)
        for r, res in enumerate(results):
            merged[r::w] = res
        if progress is not None:
            progress(len(block))
        yield from merged


def collect_files(paths: Sequence[Path], owner: Callable[[int], int], info: DistInfo) -> None:
    """Make every file of ``paths`` exist for the main process: a file it cannot see (the
    processes do not share a file system) is sent to it by its owner rank ``owner(k)`` and
    written atomically. Collective: every rank calls it, after writing its own files."""
    if not info.distributed:
        return
    from tanet.io import atomic_path

    dist.barrier()  # every rank has written its files
    missing = [k for k, p in enumerate(paths) if not p.is_file()] if info.main else None
    box = [missing]
    dist.broadcast_object_list(box, src=0)
    for k in box[0]:
        src = owner(k)
        if src == 0:
            raise FileNotFoundError(f"{paths[k]}: missing after this process wrote it")
        if info.rank == src:
            dist.send_object_list([paths[k].read_bytes()], dst=0)
        elif info.main:
            data: list[Any] = [None]
            dist.recv_object_list(data, src=src)
            with atomic_path(paths[k]) as tmp:
                tmp.write_bytes(data[0])
