"""Training: ``train(cfg)`` is what ``tanet train`` calls.

A run is a short story over named steps: :func:`_setup` builds data, model and optimiser;
:func:`_resume` restores a saved position; each epoch is :func:`_train_epoch` (micro-batches,
with :func:`optimizer_step` at each accumulation boundary) and :func:`_end_epoch` (metrics,
validation, checkpoint).

Reproducibility: items are seeded by ``(seed, epoch, index)`` (:mod:`.seeding`) and the model's
own randomness (dropout) is restored from the state file, so ``--resume`` reproduces the
uninterrupted run bit for bit on CPU, from an epoch end or from the middle of an epoch.

Distributed: each process takes ``train.batch_size`` clips per step from a shard of one shared
permutation per epoch; decisions that must be unanimous (an empty batch, a non-finite loss, a
stop request) are agreed at the step boundary. Only rank 0 writes files.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from tanet.config import Config, dump_config
from tanet.engine.build import (build_model, build_objective, build_optimizer, build_scheduler,
                                read_split, run_precision, set_bn_mode, split_loader,
                                test_dataset, train_dataset)
from tanet.engine.checkpointing import (append_metrics, check_position, check_same_run,
                                        clear_stale_temp_files, has_saved_state, load_train_state,
                                        save_checkpoint, truncate_metrics)
from tanet.engine.distributed import (DistInfo, all_gather, any_rank, init_distributed, log,
                                      warn)
from tanet.engine.evaluate import evaluate
from tanet.engine.seeding import rng_state, seed_everything, set_rng_state
from tanet.engine.signals import StopRequest, TrainingInterrupted
from tanet.engine.state import EpochLog, Run, RunningStats, Window
from tanet.engine.steps import forward_backward, optimizer_step

__all__ = ["train", "RunningStats"]

def train(cfg: Config, *, resume: bool = False, quiet: bool = False,
          info: DistInfo | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns the final summary (best and last validation metrics).

    Files under ``cfg.output``: ``config.yaml``, ``metrics.jsonl`` (one record per epoch),
    ``last.safetensors`` + ``last.state.pt``, ``best.safetensors`` (by validation top-1; a
    multi-label model: by mAP, its card holding the F1-optimal threshold on validation),
    ``skipped.txt`` (videos that failed to decode), ``warnings.txt`` (videos read with
    warnings: truncated or damaged), ``nonfinite.txt`` (videos of batches with a
    NaN/Inf loss, ``train.on_nonfinite=skip``) and ``tb/`` (TensorBoard, optional).

    ``last`` is saved after every epoch and every ``train.checkpoint_every`` steps; the first
    SIGINT/SIGTERM saves it at the next step and raises :class:`TrainingInterrupted`. Resuming
    from any of these, even after a SIGKILL, gives the weights of the uninterrupted run.
    ``resume=True`` on a run directory with nothing saved yet starts the run (one job script
    serves the first start and every restart).
    """
    info = info or init_distributed()
    run = _setup(cfg, info, quiet)
    if resume and not has_saved_state(run.out):
        log(info, f"{run.out}: nothing saved yet; starting the run (--resume)", quiet)
        resume = False
    if resume:
        _resume(run)
    _prepare_output(run, resume)
    log(info, _describe(run), quiet)
    with StopRequest() as stop:
        for epoch in range(run.start_epoch, cfg.train.epochs):
            stats = _train_epoch(run, epoch, stop)
            _end_epoch(run, epoch, stats)
            if epoch + 1 < cfg.train.epochs and any_rank(info, stop.requested):
                raise TrainingInterrupted(stop.signum, run.out, epoch + 1, 0, run.step)
    if run.writer is not None:
        run.writer.close()
    return {**run.summary, f"best_{_selected(run)}": run.best if run.best >= 0 else None,
            "output": str(run.out), "is_main": info.main}


# --------------------------------------------------------------------------------- setup
def _setup(cfg: Config, info: DistInfo, quiet: bool) -> Run:
    """Data, model, optimiser, schedule and loaders of a fresh run."""
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.sync_bn and info.distributed and info.device.type != "cuda":
        raise ValueError("train.sync_bn: SyncBatchNorm needs CUDA (torch has no CPU kernel); "
                         "set train.sync_bn=false or train.freeze_bn=true on CPU")
    precision = run_precision(cfg, info.device)
    seed_everything(tc.seed)
    train_split = read_split(cfg, "train")
    if not len(train_split):
        raise ValueError(f"{train_split.source}: no training videos")
    names = train_split.class_names
    val_split = read_split(cfg, "val", class_names=names) if cfg.data.val else None
    objective = build_objective(cfg, train_split, val_split)
    model = build_model(cfg, names, log=lambda msg: log(info, msg, quiet),
                        multilabel=objective.multilabel).to(info.device)
    geom = model.card.geometry  # the config's values applied by build_model
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if tc.sync_bn and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    sampler, loader = split_loader(cfg, train_split, train_dataset(cfg, train_split, geom), info,
                                   train=True, batch_size=tc.batch_size, workers=tc.workers)
    val_loader = None
    if val_split is not None:  # files: a ShardSampler; shards: every record once
        _, val_loader = split_loader(cfg, val_split, test_dataset(cfg, val_split, geom), info,
                                     train=False, batch_size=tc.batch_size, workers=tc.workers)
    micro = len(loader)
    if tc.max_steps_per_epoch:
        micro = min(micro, tc.max_steps_per_epoch * tc.accumulate)
    steps = math.ceil(micro / tc.accumulate)
    global_batch = tc.batch_size * info.world_size * tc.accumulate
    lr = tc.lr * global_batch / tc.lr_batch if tc.lr_batch else tc.lr
    optimizer = build_optimizer(model, cfg, lr)
    ddp_model = model
    if info.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    if tc.compile:  # Inductor; TAM's backward is a custom op, so the graph stays whole
        ddp_model = torch.compile(ddp_model)
    return Run(cfg=cfg, info=info, quiet=quiet, out=Path(cfg.output), model=model,
                ddp_model=ddp_model, optimizer=optimizer,
                scheduler=build_scheduler(optimizer, steps, cfg),
                scaler=torch.amp.GradScaler(info.device.type, enabled=tc.amp == "fp16"),
                sampler=sampler, loader=loader, val_loader=val_loader, class_names=names,
                micro_per_epoch=micro, steps_per_epoch=steps, lr=lr, loss=objective.loss,
                multilabel=objective.multilabel, objective=objective, precision=precision)


def _describe(run: Run) -> str:
    tc, info = run.cfg.train, run.info
    return (f"train: {run.sampler.n} videos, {len(run.class_names)} classes; "
            f"{run.cfg.model.name} T={run.model.card.num_segments} "
            f"{run.model.card.input_size[-1]}px; {info.world_size} process(es) x batch "
            f"{tc.batch_size} x accumulate {tc.accumulate} = "
            f"{tc.batch_size * info.world_size * tc.accumulate}; lr {run.lr:g}; "
            f"{run.objective.describe()}; sampler {run.cfg.data.sampler}; "
            f"{run.precision.describe('train.amp')}")


def _resume(run: Run) -> None:
    """Restore weights, optimiser, schedule, position and RNG states from ``<out>/last``."""
    info, tc = run.info, run.cfg.train
    check_same_run(run.out, run.cfg)
    weights, state = load_train_state(run.out)
    run.model.load_state_dict(weights)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch, run.step = int(state["epoch"]), int(state["step"])
    run.best = float(state["best"])
    run.model.card.threshold = float(state.get("threshold", run.model.card.threshold))
    run.start_micro = int(state.get("micro", 0))
    run.carried = RunningStats(**state.get("running", {}))
    # states saved before amp auto existed trained in fp32 unless train.amp asked otherwise
    saved = state.get("precision", "fp32" if tc.amp in ("off", "auto") else run.precision.name)
    if saved != run.precision.name:
        warn(info, f"{run.out}: trained in {saved} so far, continuing in {run.precision.name} "
                   f"({run.precision.describe('train.amp')}); set train.amp to keep {saved}")
    check_position(run.out, state, info.world_size, run.cfg, plan=run.sampler.plan)
    rngs = state["rng"]
    set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
    where = f"epoch {run.start_epoch}" + (f" + {run.start_micro} batches" if run.start_micro else "")
    log(info, f"resumed {run.out} at {where} (step {run.step}, best {_selected(run)} {run.best:.4f})",
        run.quiet)
    if run.start_epoch >= tc.epochs:
        warn(info, f"{run.out}: already trained {run.start_epoch} epochs (train.epochs={tc.epochs})")


def _prepare_output(run: Run, resumed: bool) -> None:
    """Run directory, config.yaml, metrics.jsonl (truncated to the resumed epoch), TensorBoard."""
    info, out = run.info, run.out
    if not resumed and info.main and has_saved_state(out):
        warn(info, f"{out} holds a previous run; starting over (use --resume to continue)")
    if not info.main:
        return
    out.mkdir(parents=True, exist_ok=True)
    clear_stale_temp_files(out)
    p = run.precision
    notes = {"train.amp": f"resolved: {p.name} ({p.reason})"} if p.setting == "auto" else None
    dump_config(run.cfg, out / "config.yaml", notes=notes)
    metrics = out / "metrics.jsonl"
    if resumed:
        truncate_metrics(metrics, run.start_epoch)
    elif metrics.exists():
        metrics.unlink()
    if run.cfg.train.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(out / "tb"))


# --------------------------------------------------------------------------------- epochs
def _train_epoch(run: Run, epoch: int, stop: StopRequest) -> RunningStats:
    """One epoch (or the rest of a resumed one) of micro-batches; returns this process's sums."""
    from tqdm import tqdm

    tc = run.cfg.train
    first = run.start_micro if epoch == run.start_epoch else 0
    run.sampler.set_epoch(epoch, start=first * tc.batch_size)
    run.ddp_model.train()
    set_bn_mode(run.model, run.cfg)
    stats = RunningStats(**asdict(run.carried)) if first else RunningStats()
    log_ = EpochLog()
    window = Window()
    t0 = time.perf_counter() - stats.time
    bar = tqdm(total=run.steps_per_epoch, initial=first // tc.accumulate,
               desc=f"epoch {epoch + 1}/{tc.epochs}", disable=run.quiet or not run.info.main,
               dynamic_ncols=True, leave=False)
    batches = iter(run.loader)
    for micro in range(first, run.micro_per_epoch):
        batch = next(batches)
        stats.skipped += len(batch["skipped"])
        log_.skipped += [s.path for s in batch["skipped"]]
        log_.warned += [f"{p}\t{w}" for p, w in batch["warnings"]]
        stats.warned += len({p for p, _ in batch["warnings"]})
        last = (micro + 1) % tc.accumulate == 0 or micro + 1 == run.micro_per_epoch
        forward_backward(run, batch, window, stats, sync=last)
        if not last:
            continue
        stopping = optimizer_step(run, epoch, window, stats, log_, stop)
        window = Window()
        elapsed = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{stats.loss / max(stats.seen, 1):.3f}",
                        acc=f"{stats.correct / max(stats.seen, 1):.3f}",
                        lr=f"{run.optimizer.param_groups[0]['lr']:.2e}",
                        clips_s=f"{stats.seen * run.info.world_size / max(elapsed, 1e-9):.1f}")
        if micro + 1 < run.micro_per_epoch and (
                stopping or (tc.checkpoint_every and run.step % tc.checkpoint_every == 0)):
            stats.time = time.perf_counter() - t0
            log_.flush(run, epoch)
            _checkpoint(run, epoch, micro + 1, stats)
            if stopping:
                bar.close()
                raise TrainingInterrupted(stop.signum, run.out, epoch, micro + 1, run.step)
    bar.close()
    stats.time = time.perf_counter() - t0
    log_.flush(run, epoch)
    return stats


def _end_epoch(run: Run, epoch: int, stats: RunningStats) -> None:
    """Epoch record (metrics.jsonl, TensorBoard, log line), validation, checkpoint."""
    info, tc = run.info, run.cfg.train
    tot = stats.summed(info)
    record: dict[str, Any] = {
        "epoch": epoch + 1, "step": run.step, "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": tot.loss / max(tot.seen, 1), "train_top1": tot.correct / max(tot.seen, 1),
        "clips_per_s": tot.seen / max(stats.time, 1e-9), "epoch_time": stats.time,
        "skipped": int(tot.skipped), "precision": run.precision.name}
    if int(tot.nonfinite):
        record["nonfinite_batches"] = int(tot.nonfinite)
    if int(tot.skipped):
        warn(info, f"epoch {epoch + 1}: skipped {int(tot.skipped)} video(s) that failed to "
                   f"decode (listed in {run.out / 'skipped.txt'})")
    if int(tot.warned):
        record["warned"] = int(tot.warned)
        warn(info, f"epoch {epoch + 1}: {int(tot.warned)} video(s) truncated or damaged, used "
                   f"(listed in {run.out / 'warnings.txt'}; data.on_warning=skip leaves them out)")
    is_last = epoch + 1 == tc.epochs
    improved = False
    if run.val_loader is not None and ((epoch + 1) % tc.eval_every == 0 or is_last):
        # the bare model: DDP's buffer broadcast would hang on uneven evaluation shards
        res = evaluate(run.model, run.val_loader, info, cfg=run.cfg, desc="val", quiet=run.quiet)
        m = res.metrics(len(run.class_names))
        record.update({f"val_{k}": v for k, v in m.items()})
        if run.multilabel:  # the F1-optimal threshold on validation goes on the card
            run.model.card.threshold = m["threshold"]
        improved = m[_selected(run)] > run.best
        run.best = max(run.best, m[_selected(run)])
        run.summary.update({f"val_{k}": v for k, v in m.items()})
    record[f"best_{_selected(run)}"] = run.best if run.best >= 0 else None
    run.summary["epoch"] = epoch + 1
    log(info, _epoch_line(record, tc.epochs), run.quiet)
    if info.main:
        append_metrics(run.out / "metrics.jsonl", record)
        if run.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    run.writer.add_scalar(k, v, epoch + 1)
            run.writer.flush()
    _checkpoint(run, epoch + 1, 0, RunningStats(), improved=improved)


def _selected(run: Run) -> str:
    """The validation metric that picks ``best``: mAP for a multi-label model, else top-1."""
    return "mAP" if run.multilabel else "top1"


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    msg = (f"epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.4f} acc "
           f"{record['train_top1']:.4f} lr {record['lr']:.2e} {record['clips_per_s']:.1f} clips/s")
    if "val_mAP" in record:
        msg += (f" | val mAP {record['val_mAP']:.4f} F1 {record['val_f1']:.4f} at "
                f"{record['val_threshold']:.3f}")
    elif "val_top1" in record:
        msg += (f" | val top-1 {record['val_top1']:.4f} top-5 {record['val_top5']:.4f} "
                f"mean-class {record['val_mean_class_acc']:.4f}")
    return msg


def _checkpoint(run: Run, epoch_done: int, micro: int, stats: RunningStats, *,
                improved: bool = False) -> None:
    """Save ``last`` (and ``best``) at a position: ``epoch_done`` whole epochs plus ``micro``
    micro-batches of the next one. Collective: every rank calls it."""
    info, tc = run.info, run.cfg.train
    rngs = all_gather(info, rng_state())
    if info.main:
        state = {"epoch": epoch_done, "micro": micro, "step": run.step, "best": run.best,
                 "threshold": run.model.card.threshold,
                 "running": asdict(stats) if micro else {},
                 "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "rng": rngs,
                 "world_size": info.world_size, "batch_size": tc.batch_size,
                 "accumulate": tc.accumulate, "plan": run.sampler.plan,
                 "precision": run.precision.name}
        if run.scaler.is_enabled():
            state["scaler"] = run.scaler.state_dict()
        # training videos per class: `tanet test` shows them beside each class's results
        extra = ({} if run.objective.counts is None else
                 {"tanet.train_counts": json.dumps(run.objective.counts)})
        if improved:
            save_checkpoint(run.out, "best", run.model, run.cfg, extra=extra)
        save_checkpoint(run.out, "last", run.model, run.cfg, state=state, extra=extra)
    if info.distributed:
        torch.distributed.barrier()
