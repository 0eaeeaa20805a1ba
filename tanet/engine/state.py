"""What a training run carries from step to step: :class:`Run` (model, optimiser, loaders,
position), :class:`RunningStats` (an epoch's sums) and :class:`EpochLog` (videos to list beside
the run). The story that uses them is :mod:`tanet.engine.train`; one optimiser step is
:mod:`tanet.engine.steps`."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from tanet.config import Config
from tanet.engine.distributed import DistInfo, TrainSampler, all_gather, all_sum
from tanet.engine.samplers import ClassSampler
from tanet.precision import Precision

__all__ = ["Run", "RunningStats", "EpochLog", "Window"]


@dataclass
class RunningStats:
    """Sums over this process's micro-batches of an epoch (``time``: seconds so far)."""

    loss: float = 0.0  # sum of per-clip losses
    correct: float = 0.0
    seen: float = 0.0
    skipped: float = 0.0
    warned: float = 0.0  # videos read with warnings (truncated or damaged)
    nonfinite: float = 0.0  # optimiser steps skipped for a NaN/Inf loss or gradient
    time: float = 0.0

    def summed(self, info: DistInfo) -> "RunningStats":
        """The sums over all processes (``time`` stays this process's)."""
        names = [f.name for f in fields(self) if f.name != "time"]
        totals = all_sum(info, [getattr(self, n) for n in names])
        return RunningStats(**dict(zip(names, totals)), time=self.time)


@dataclass
class EpochLog:
    """Videos to list beside the run: failed to decode, read with warnings (``path<TAB>
    warning``), or in a batch with a NaN/Inf loss."""

    skipped: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)

    def flush(self, run: "Run", epoch: int) -> None:
        """Append ``epoch<TAB>entry`` lines of every rank to ``skipped.txt`` / ``nonfinite.txt``
        / ``warnings.txt`` (collective: one gather for all lists); empties the lists."""
        lists = {"skipped.txt": self.skipped, "nonfinite.txt": self.nonfinite,
                 "warnings.txt": self.warned}
        gathered = all_gather(run.info, lists)  # one collective: every rank's three lists
        for name in lists:
            paths = [p for g in gathered for p in g[name]]
            if paths and run.info.main:
                run.out.mkdir(parents=True, exist_ok=True)
                with open(run.out / name, "a") as f:
                    f.writelines(f"epoch {epoch + 1}\t{p}\n" for p in paths)
        self.skipped.clear()
        self.nonfinite.clear()
        self.warned.clear()


@dataclass
class Window:
    """The micro-batches of one optimiser step."""

    bad_paths: list[str] = field(default_factory=list)  # videos of non-finite losses
    bad_value: float = 0.0
    empty: bool = False  # the last micro-batch was empty on some process


@dataclass
class Run:
    """Everything a run carries from step to step."""

    cfg: Config
    info: DistInfo
    quiet: bool
    out: Path
    model: nn.Module
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: TrainSampler | ClassSampler | Any  # files; shards: a ShardStream
    loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    class_names: list[str]
    micro_per_epoch: int
    steps_per_epoch: int
    lr: float  # base learning rate (scaled to the global batch)
    loss: Any  # (logits (B, K), targets) -> scalar, tanet.engine.losses
    multilabel: bool = False  # sigmoid head: validation by mAP, threshold on the card
    objective: Any = None  # tanet.engine.build.Objective: head, loss, class counts
    step: int = 0
    best: float = -1.0
    start_epoch: int = 0
    start_micro: int = 0
    carried: RunningStats = field(default_factory=RunningStats)
    writer: Any = None
    summary: dict[str, Any] = field(default_factory=dict)
    precision: Precision = Precision("off", "off")  # train.amp resolved (tanet.precision)
