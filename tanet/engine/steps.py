"""One optimiser step of training: the forward/backward of each micro-batch
(:func:`forward_backward`: loss, gradients, running sums) and the step at each accumulation
boundary (:func:`optimizer_step`: clipping, the non-finite and stop decisions every process
agrees on, the update and the schedule)."""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from tanet.engine.build import autocast
from tanet.engine.distributed import all_sum, any_rank
from tanet.engine.signals import StopRequest, report_nonfinite
from tanet.engine.state import EpochLog, Run, RunningStats, Window
from tanet.metrics import top1_hits

__all__ = ["forward_backward", "optimizer_step"]


def forward_backward(run: Run, batch: dict[str, Any], window: Window, stats: RunningStats,
                      *, sync: bool) -> None:
    """Loss and gradients of one micro-batch (gradients all-reduced only when ``sync``). Every
    process takes part in each all-reduce: a batch that came back empty (all its videos failed
    to decode) on any process is skipped everywhere."""
    info, tc = run.info, run.cfg.train
    video = batch["video"]  # (B, T, C, H, W) or None
    empty = video is None
    window.empty = any_rank(info, empty)
    if window.empty:
        return
    video = video.to(info.device, non_blocking=True)
    label = batch["label"].to(info.device)
    no_sync = run.ddp_model.no_sync() if info.distributed and not sync else contextlib.nullcontext()
    with no_sync:
        with autocast(run.cfg, info.device):
            logits = run.ddp_model(video)  # (B, K)
            loss = run.loss(logits.float(), label)  # train.loss (tanet.engine.losses)
        run.scaler.scale(loss / tc.accumulate).backward()
    value = loss.item()
    if math.isfinite(value):
        stats.loss += value * video.shape[0]
        stats.correct += top1_hits(logits.detach(), label)
        stats.seen += video.shape[0]
    else:
        window.bad_value = value
        window.bad_paths += [str(p) for p in batch["path"]]


def optimizer_step(run: Run, epoch: int, window: Window, stats: RunningStats,
                    log_: EpochLog, stop: StopRequest) -> bool:
    """Clip, agree across processes, then apply (or drop) the window's gradients and advance
    the schedule. Returns whether a stop was requested on any process."""
    info, tc = run.info, run.cfg.train
    grad_norm = None
    if not window.empty and tc.clip_grad:
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.clip_grad)
    # a non-finite loss (or gradient, without fp16 loss scaling, which handles its own
    # overflows) and a stop request (SIGINT/SIGTERM), agreed by all ranks
    bad = bool(window.bad_paths) and not window.empty
    if grad_norm is not None and tc.amp != "fp16":
        bad = bad or not math.isfinite(grad_norm.item())
    agreed = all_sum(info, [float(bad), float(stop.requested)])
    any_bad, stopping = agreed[0] > 0, agreed[1] > 0
    if window.empty:  # the window's gradients were not all-reduced: drop them everywhere
        run.optimizer.zero_grad(set_to_none=True)
    elif any_bad:
        report_nonfinite(main=info.main, out=run.out, policy=tc.on_nonfinite, epoch=epoch,
                         step=run.step, value=window.bad_value, paths=window.bad_paths)
        stats.nonfinite += 1
        log_.nonfinite += window.bad_paths
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler.is_enabled():  # fp16: count it as an overflow
            if grad_norm is None:
                run.scaler.unscale_(run.optimizer)
            run.scaler.update()
    else:
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1
    return stopping
