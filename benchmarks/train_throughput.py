"""Clips/s of the real ``tanet train`` path vs the bare model's train step, in one run.

Writes a class-per-folder directory of short 320x256 H.264 videos, then measures
  * bare: forward + cross-entropy + backward + SGD step on one fixed in-memory batch, and
  * engine: ``tanet.engine.train`` (the code ``tanet train`` runs) on those videos: decoding in
    loader workers, segment sampling, multi-scale crop + flip, the training loop with gradient
    clipping, lr schedule, metrics and checkpoints; clips/s of its second epoch (warm workers),
    as the engine itself reports it in ``metrics.jsonl``.
Ratio engine / bare: target >= 0.9 (the engine and loader add at most 10 %).
Then (``--compile``, default on) the bare step under ``torch.compile`` (Inductor; TAM's backward
is a custom op, so one whole graph) interleaved with the eager step, ratio compiled / eager
(target <= 0.9), and the engine again with ``train.compile=true``.
Usage: python benchmarks/train_throughput.py [--model tanet_r50] [--size 224] [--steps 3]
       [--no-compile]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tanet.testing.timing import interleaved_samples


def write_videos(root: Path, *, classes: int, per_class: int, frames: int, h: int, w: int) -> None:
    from tanet.data.encode import write_video

    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(per_class):
            base = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
            clip = np.stack([np.roll(np.kron(base, np.ones((8, 8, 1), np.uint8)), 4 * t, axis=1)
                             for t in range(frames)])  # (F, H, W, 3) a moving texture
            write_video(root / f"class{c}" / f"v{i}.mp4", clip, fps=25, crf=23)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tanet_r50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (per engine epoch)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the torch.compile'd train step (and train.compile=true)")
    args = ap.parse_args()

    from tanet.config import Config, apply_overrides
    from tanet.engine import build_model, build_optimizer

    threads = torch.get_num_threads()
    n_videos = args.batch * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_videos(tmp / "videos", classes=2, per_class=(n_videos + 1) // 2, frames=48,
                     h=256, w=320)
        print(f"{args.model} T={args.frames} {args.size}px, batch {args.batch}, "
              f"{threads} threads, {args.workers} loader workers "
              f"({n_videos} videos written in {time.perf_counter() - t0:.1f} s)")
        cfg = apply_overrides(Config(), [
            f"model.name={args.model}", f"model.num_segments={args.frames}",
            f"model.input_size={args.size}", "data.train=" + str(tmp / "videos"),
            "data.sampling=segment", "train.epochs=2", f"train.batch_size={args.batch}",
            f"train.workers={args.workers}", f"train.max_steps_per_epoch={args.steps}",
            "train.lr=0.001", f"train.threads={threads}", "output=" + str(tmp / "run")])
        cfg.validate("benchmark")

        # bare model: same network, optimiser and batch shape, data already in memory
        model = build_model(cfg, ["class0", "class1"])
        model.train()
        opt = build_optimizer(model, cfg, lr=0.001)
        x = torch.randn(args.batch, args.frames, 3, args.size, args.size)  # (N, T, C, H, W)
        y = torch.tensor([0, 1] * args.batch)[: args.batch]

        def bare_step(fn=model) -> None:
            loss = F.cross_entropy(fn(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def bare_rate() -> float:
            bare_step()  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.steps):
                bare_step()
            return args.steps * args.batch / (time.perf_counter() - t0)

        before = bare_rate()
        engine = engine_rate(cfg, tmp / "run")
        after = bare_rate()  # again after the engine run: background load hits both alike
        bare = (before + after) / 2
        if args.compile:
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            bare_step(compiled)
            compile_s = time.perf_counter() - t0
            steps = interleaved_samples({"eager": bare_step, "compiled": lambda: bare_step(compiled)},
                                        rounds=args.steps * 2, warmup=1)
            cfg.train.compile = True
            engine_c = engine_rate(cfg, tmp / "run_compiled")
    print(f"bare model train step : {bare:7.3f} clips/s (before {before:.3f}, after {after:.3f})")
    print(f"tanet train (epoch 2) : {engine:7.3f} clips/s")
    print(f"ratio engine / bare   : {engine / bare:7.3f}  (target >= 0.9)")
    if args.compile:
        e, c = statistics.median(steps["eager"]), statistics.median(steps["compiled"])
        print(f"\ntorch.compile (Inductor), first step with compile {compile_s:.0f} s; "
              f"{len(steps['eager'])} interleaved steps each:")
        print(f"bare train step eager    : {e:7.3f} s median, {min(steps['eager']):.3f} s min")
        print(f"bare train step compiled : {c:7.3f} s median, {min(steps['compiled']):.3f} s min")
        print(f"ratio compiled / eager   : {c / e:7.3f} median, "
              f"{min(steps['compiled']) / min(steps['eager']):.3f} min  (target <= 0.9)")
        print(f"tanet train, train.compile=true (epoch 2): {engine_c:7.3f} clips/s "
              f"({engine_c / engine:.3f} x the eager engine run)")


def engine_rate(cfg, out: Path) -> float:
    """clips/s of the engine's last epoch (warm workers; compiled in epoch 1)."""
    from tanet.engine import read_metrics, train

    cfg.output = str(out)
    train(cfg, quiet=True)
    records = read_metrics(out / "metrics.jsonl")
    return records[-1]["clips_per_s"]


if __name__ == "__main__":
    main()
