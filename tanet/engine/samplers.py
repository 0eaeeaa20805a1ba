"""Which training clips an epoch draws (``data.sampler``): ``uniform`` is
:class:`~tanet.engine.distributed.TrainSampler` (one permutation per epoch); ``balanced`` and
``sqrt`` are :class:`ClassSampler`: clips drawn with replacement so that each class comes up
equally often (``balanced``) or in proportion to the square root of its count (``sqrt``,
between uniform and balanced), an epoch the same number of clips as the list.

A clip's weight is its class's: ``1 / n_c`` (balanced) or ``1 / sqrt(n_c)`` (sqrt), so a class
of ``n_c`` clips is drawn with probability proportional to 1 or ``sqrt(n_c)``. A multi-label clip
takes the largest weight among its classes (the rarest class it shows decides, as in LVIS's
repeat-factor sampling; the class frequencies are then near, not exactly, those targets), and
clips without any class count as one more group.

Exact under resume and across processes like :class:`TrainSampler`: the draw depends only on
``(seed, epoch)``; rank ``r`` of ``W`` takes positions ``r, r + W, ...`` of one global draw, from
its item ``start`` on.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch

from tanet.engine.distributed import TrainSampler

__all__ = ["ClassSampler", "clip_weights", "build_sampler"]


def clip_weights(labels: Sequence[int | Sequence[int]], mode: str) -> torch.Tensor:
    """(N,) sampling weight of each clip for ``mode`` ``balanced`` or ``sqrt`` (see the module
    docstring); ``labels``: a class index per clip, or a tuple of them (multi-label)."""
    if mode not in ("balanced", "sqrt"):
        raise ValueError(f"class sampling mode must be balanced or sqrt, not {mode!r}")
    groups = [(lab,) if isinstance(lab, int) else tuple(lab) for lab in labels]
    counts: dict[int, int] = {}
    for g in groups:
        for c in (g or (-1,)):  # -1: the clips without a class
            counts[c] = counts.get(c, 0) + 1
    power = 1.0 if mode == "balanced" else 0.5
    per_class = {c: n ** -power for c, n in counts.items()}
    return torch.tensor([max(per_class[c] for c in (g or (-1,))) for g in groups],
                        dtype=torch.float64)


class ClassSampler(torch.utils.data.Sampler):
    """This rank's share of one seeded draw with replacement per epoch, by clip ``weights``
    (:func:`clip_weights`); yields ``(epoch, index)`` like :class:`TrainSampler`."""

    def __init__(self, weights: torch.Tensor, *, world_size: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        if weights.numel() == 0 or not bool((weights > 0).any()):
            raise ValueError("class sampling needs at least one clip with a positive weight")
        self.weights = weights.double()
        self.n, self.world_size, self.rank = weights.numel(), world_size, rank
        self.seed, self.epoch, self.start = seed, 0, 0
        self.per_rank = math.ceil(self.n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch ``epoch``'s draw from this rank's item ``start`` on (a resume)."""
        self.epoch, self.start = epoch, start

    @property
    def plan(self) -> dict[str, Any]:
        """What a resume in the middle of an epoch must find unchanged beyond processes x batch
        x accumulate: nothing (as :attr:`TrainSampler.plan`; the sampler itself is one of the
        settings that define a run)."""
        return {"data": "files"}

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)

    def draw(self, epoch: int) -> list[int]:
        """The global draw of ``epoch``: N indices (whatever the number of processes), padded by
        wrapping around to ``per_rank * world_size`` (all ranks' shares)."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        total = self.per_rank * self.world_size
        return (order * math.ceil(total / self.n))[:total]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine = self.draw(self.epoch)[self.rank::self.world_size][self.start:]
        return iter([(self.epoch, i) for i in mine])


def build_sampler(mode: str, labels: Sequence[int | Sequence[int]], *, world_size: int,
                  rank: int, seed: int) -> TrainSampler | ClassSampler:
    """The sampler of ``data.sampler`` over clips labelled ``labels``."""
    if mode == "uniform":
        return TrainSampler(len(labels), world_size=world_size, rank=rank, seed=seed)
    return ClassSampler(clip_weights(labels, mode), world_size=world_size, rank=rank, seed=seed)
