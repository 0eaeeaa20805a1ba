"""Processes: the torchrun job this process belongs to, collectives, and the samplers that shard
data across processes.

Started by ``torchrun`` (env:// rendezvous; gloo on CPU, nccl on CUDA). Without torchrun every
function here is the single-process identity.
"""
from __future__ import annotations

import datetime
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["DistInfo", "init_distributed", "finish_distributed", "all_sum", "any_rank",
           "all_gather", "TrainSampler", "ShardSampler", "unwrap", "log", "warn"]


@dataclass
class DistInfo:
    """This process's place in the job; ``world_size == 1`` without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None, *, timeout: float | None = None) -> DistInfo:
    """Join the torchrun job described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` if there is one.

    Backend: nccl when CUDA is available (one GPU per local rank), else gloo. ``timeout``:
    seconds a collective waits for the other processes (None: torch's default), e.g. longer
    for jobs whose processes may finish their shares far apart.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        wait = None if timeout is None else datetime.timedelta(seconds=timeout)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                timeout=wait)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def finish_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(info: DistInfo, values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (float64)."""
    t = torch.tensor(list(values), dtype=torch.float64)
    if info.distributed:
        dev = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = t.to(dev)
        dist.all_reduce(t)
    return t.cpu().tolist()


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every process if ``flag`` is true on any."""
    return all_sum(info, [float(flag)])[0] > 0 if info.distributed else flag


def all_gather(info: DistInfo, obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (a one-element list without torchrun)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def log(info: DistInfo, msg: str, quiet: bool = False) -> None:
    """Print ``msg`` to stderr on the main process."""
    if info.main and not quiet:
        print(msg, file=sys.stderr, flush=True)


def warn(info: DistInfo, msg: str) -> None:
    """Print a warning to stderr on the main process (even when quiet)."""
    if info.main:
        print(f"warning: {msg}", file=sys.stderr, flush=True)


class TrainSampler(torch.utils.data.Sampler):
    """This rank's share of one seeded permutation per epoch; yields ``(epoch, index)``.

    The permutation depends only on ``(seed, epoch)``; it is padded by wrapping around to a
    multiple of ``world_size`` and rank ``r`` takes positions ``r, r + W, ...``, so W processes
    with batch B see, step for step, the same clips as one process with batch W*B.
    """

    def __init__(self, n: int, *, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.n, self.world_size, self.rank = n, world_size, rank
        self.seed, self.shuffle, self.epoch, self.start = seed, shuffle, 0, 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch ``epoch``'s permutation from this rank's item ``start`` on (a resume in
        the middle of an epoch)."""
        self.epoch, self.start = epoch, start

    @property
    def plan(self) -> dict[str, Any]:
        """What a resume in the middle of an epoch must find unchanged beyond processes x batch
        x accumulate (checked by the engine): nothing; loader workers do not change the order."""
        return {"data": "files"}

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / max(self.n, 1)))[:total]
        mine = order[self.rank::self.world_size][self.start:]
        return iter([(self.epoch, i) for i in mine])


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation shard ``rank, rank + W, ...`` without padding: no video twice, none dropped."""

    def __init__(self, n: int, *, world_size: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(0, i) for i in self.indices])
