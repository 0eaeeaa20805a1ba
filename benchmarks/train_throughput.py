"""Training speed, ratios measured side by side in one run: the engine vs the bare step, bf16 vs
fp32 (eager and compiled), ``tanet train`` with the default precision vs fp32, and the
authors' whole TANet-R50 vs tanet's default (train step and inference).

Writes a class-per-folder directory of short 320x256 H.264 videos, then, per section
(``--sections``, all by default):
  * engine: the bare train step (forward + cross-entropy + backward + SGD on one in-memory
    batch) vs ``tanet.engine.train`` on the videos (loader workers, sampling, augmentation,
    clipping, schedule, metrics, checkpoints; clips/s of its second epoch). Target >= 0.9.
  * amp: the bare step under ``train.amp`` bf16 (``torch.autocast``) vs fp32, eager and
    ``torch.compile``d, interleaved; then ``tanet train`` with the default ``train.amp: auto``
    vs ``train.amp=off`` (epoch time, interleaved epochs). bf16 is timed only where the CPU
    computes in bf16 natively (``tanet.precision``; ``--bf16`` times the emulation anyway).
  * authors: their TANet-R50 (``tanet.testing.authors_tanet``, re-typed from their code) in
    fp32, as their code trains and tests it, vs tanet's default (``amp: auto``: what ``tanet
    train`` and ``tanet predict`` run on this machine) on the same clips: train step (batch 2)
    and inference (1 clip, what ``tanet predict`` runs: ``TorchBackend``). Target on a bf16 CPU:
    the default step <= 0.5x theirs.
Usage: python benchmarks/train_throughput.py [--model tanet_r50] [--size 224] [--steps 3]
       [--sections engine,amp,authors] [--no-compile] [--bf16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

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


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, amp: str = "off",
            fn: Callable | None = None) -> Callable[[], None]:
    """One SGD train step of ``model`` (through ``fn``, e.g. its compiled form) on (x, y) under
    ``amp`` autocast, as ``tanet.engine.steps`` runs it (loss in fp32)."""
    from tanet.precision import resolve_amp

    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    run = fn if fn is not None else model
    precision = resolve_amp(amp)

    def step() -> None:
        with precision.autocast("cpu"):
            logits = run(x)  # (N, K)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def summary(label: str, samples: dict[str, list[float]], base: str) -> None:
    """Median and min seconds of each candidate, and its ratio to ``base``."""
    b, bmin = statistics.median(samples[base]), min(samples[base])
    for k, v in samples.items():
        print(f"  {label + k:<44}{statistics.median(v):8.3f} s median {min(v):8.3f} s min   "
              f"{statistics.median(v) / b:6.3f}x / {min(v) / bmin:6.3f}x {base}")


def engine_rate(cfg, out: Path) -> float:
    """clips/s of the engine's last epoch (warm workers; compiled in epoch 1)."""
    from tanet.engine import read_metrics, train

    cfg.output = str(out)
    train(cfg, quiet=True)
    return read_metrics(out / "metrics.jsonl")[-1]["clips_per_s"]


def section_engine(cfg, args, tmp: Path, x, y) -> None:
    from tanet.engine import build_model

    model = build_model(cfg, ["class0", "class1"]).train()
    step = step_fn(model, x, y, amp="off")

    def bare_rate() -> float:
        step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        return args.steps * args.batch / (time.perf_counter() - t0)

    before = bare_rate()
    cfg.train.amp = "off"
    engine = engine_rate(cfg, tmp / "run")
    after = bare_rate()  # again after the engine run: background load hits both alike
    bare = (before + after) / 2
    print(f"\n[engine] fp32, {args.steps} steps per epoch")
    print(f"  bare model train step : {bare:7.3f} clips/s (before {before:.3f}, after {after:.3f})")
    print(f"  tanet train (epoch 2) : {engine:7.3f} clips/s")
    print(f"  ratio engine / bare   : {engine / bare:7.3f}  (target >= 0.9)")


def section_amp(cfg, args, tmp: Path, x, y, bf16: bool) -> None:
    from tanet.engine import build_model
    from tanet.precision import resolve_amp

    model = build_model(cfg, ["class0", "class1"]).train()
    fns = {"fp32 eager": step_fn(model, x, y, amp="off")}
    if bf16:
        fns["bf16 eager"] = step_fn(model, x, y, amp="bf16")
    if args.compile:
        compiled = torch.compile(model)
        for amp in ("off", "bf16") if bf16 else ("off",):
            t0 = time.perf_counter()
            fns[f"{'fp32' if amp == 'off' else amp} compiled"] = f = step_fn(
                model, x, y, amp=amp, fn=compiled)
            f()  # compiles
            print(f"  (compile of the {amp} step: {time.perf_counter() - t0:.0f} s)")
    samples = interleaved_samples(fns, rounds=args.steps * 2, warmup=1)
    print(f"\n[amp] bare train step, {args.steps * 2} interleaved steps each")
    summary("", samples, "fp32 eager")
    auto = resolve_amp("auto")
    cfg.train.compile = False
    epochs: dict[str, list[float]] = {"train.amp=auto (default)": [], "train.amp=off": []}
    for r in range(2):  # interleaved runs of the engine: each one's last epoch time
        for key, amp in zip(epochs, ("auto", "off")):
            cfg.train.amp = amp
            epochs[key].append(args.steps * args.batch / engine_rate(cfg, tmp / f"e{amp}{r}"))
    print(f"  tanet train epoch time, default vs fp32; default: {auto.describe('train.amp')}")
    summary("", epochs, "train.amp=off")


def section_authors(cfg, args, x, y) -> None:
    from tanet.apps.predict import TorchBackend
    from tanet.models import create_model
    from tanet.precision import resolve_amp
    from tanet.testing.authors_tanet import authors_tanet_r50

    torch.manual_seed(0)
    theirs = authors_tanet_r50(num_class=2, num_segments=args.frames).train()
    ours = create_model("tanet_r50", num_classes=2, num_segments=args.frames).train()
    auto = resolve_amp("auto")
    steps = interleaved_samples({"authors fp32": step_fn(theirs, x, y, amp="off"),
                                 f"tanet default ({auto.name})": step_fn(ours, x, y, amp="auto"),
                                 "tanet fp32": step_fn(ours, x, y, amp="off")},
                                rounds=args.steps * 2, warmup=1)
    print(f"\n[authors] TANet-R50 train step, batch {args.batch}; tanet default: "
          f"{auto.describe('train.amp')}")
    summary("", steps, "authors fp32")
    clip = x[:1]  # (1, T, C, H, W): one video's view
    theirs.eval()
    backend = TorchBackend(ours.eval(), amp="auto")

    def their_inference() -> None:
        with torch.inference_mode():
            theirs(clip)

    infer = interleaved_samples({"authors fp32": their_inference,
                                 f"tanet default ({auto.name})": lambda: backend(clip),
                                 "tanet fp32": (lambda b=TorchBackend(ours, amp="off"): b(clip))},
                                rounds=args.steps * 3, warmup=1)
    print("  inference, 1 clip (tanet: TorchBackend, what tanet predict runs):")
    summary("", infer, "authors fp32")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tanet_r50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (per engine epoch)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sections", default="engine,amp,authors")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the torch.compile'd train step")
    ap.add_argument("--bf16", action="store_true",
                    help="time bf16 even where the CPU only emulates it")
    args = ap.parse_args()

    from tanet.config import Config, apply_overrides
    from tanet.precision import native_bf16

    native, why = native_bf16("cpu")
    threads = torch.get_num_threads()
    n_videos = args.batch * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_videos(tmp / "videos", classes=2, per_class=(n_videos + 1) // 2, frames=48,
                     h=256, w=320)
        print(f"{args.model} T={args.frames} {args.size}px, batch {args.batch}, "
              f"{threads} threads, {args.workers} loader workers ({n_videos} videos written in "
              f"{time.perf_counter() - t0:.1f} s); {why}; load average "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        cfg = apply_overrides(Config(), [
            f"model.name={args.model}", f"model.num_segments={args.frames}",
            f"model.input_size={args.size}", "data.train=" + str(tmp / "videos"),
            "data.sampling=segment", "train.epochs=2", f"train.batch_size={args.batch}",
            f"train.workers={args.workers}", f"train.max_steps_per_epoch={args.steps}",
            "train.lr=0.001", f"train.threads={threads}", "output=" + str(tmp / "run")])
        cfg.validate("benchmark")
        x = torch.randn(args.batch, args.frames, 3, args.size, args.size)  # (N, T, C, H, W)
        y = torch.tensor([0, 1] * args.batch)[: args.batch]
        sections = args.sections.split(",")
        if "engine" in sections:
            section_engine(cfg, args, tmp, x, y)
        if "amp" in sections:
            if not (native or args.bf16):
                print(f"\n[amp] bf16 not timed: {why} (emulated bf16 is no guide; --bf16 "
                      f"times it anyway)")
            section_amp(cfg, args, tmp, x, y, bf16=native or args.bf16)
        if "authors" in sections:
            section_authors(cfg, args, x, y)
    print(f"\nload average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
