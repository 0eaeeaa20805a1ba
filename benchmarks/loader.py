"""Loader benchmark: clips/s of the full training input pipeline vs clips/s a TANet-R50 train
step consumes, on this machine, measured one after the other in one run.

Pipeline: VideoDataset (TSN segment sampling, 8 frames) on generated 340x256 H.264 videos
(x264 defaults: B-frames, keyint 250 plus scene-cut keyframes), multi-scale crop + flip to 224, normalise,
collate, ``build_loader`` with 2 workers. Model: ``create_model("tanet_r50", num_classes=400,
num_segments=8)``, SGD step on (B, 8, 3, 224, 224) batches, with all CPU threads.
The loader must not be the bottleneck: ratio = loader clips/s / model clips/s > 1.

Run: .venv/bin/python benchmarks/loader.py [--videos 12] [--clips 96] [--model-steps 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tanet.data.annotations import Record
from tanet.data.dataset import VideoDataset, build_loader
from tanet.data.encode import write_video
from tanet.data.transforms import build_train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_videos(d: Path, n: int, frames: int) -> list[Record]:
    """``n`` videos of ``frames`` frames, 340x256 @25 fps: panning smooth scene + noise."""
    rng = np.random.default_rng(0)
    h, w = 256, 340
    yy, xx = np.mgrid[0:h, 0:w + 2 * frames].astype(np.float32)
    recs = []
    for i in range(n):
        f = rng.uniform(20, 60, 3)
        bg = np.stack([128 + 60 * np.sin(xx / f[0]), 128 + 60 * np.cos(yy / f[1] + xx / 90),
                       128 + 50 * np.sin((xx + yy) / f[2])], -1)  # (H, W + 2F, 3)
        clip = np.stack([np.clip(bg[:, 2 * t:2 * t + w] + rng.normal(0, 3, (h, w, 3)), 0, 255)
                         for t in range(frames)]).astype(np.uint8)  # (F, H, W, 3)
        write_video(d / f"v{i}.mp4", clip, fps=25, bframes=3, crf=23)
        recs.append(Record(f"v{i}.mp4", i % 400))
    return recs


def loader_rate(root: Path, recs: list[Record], clips: int, workers: int, batch: int) -> float:
    ds = VideoDataset(recs * (clips // len(recs) + 2), root=root, num_segments=8, train=True,
                      transform=build_train_transform(size=224, mean=MEAN, std=STD))
    loader = build_loader(ds, batch_size=batch, workers=workers, shuffle=True, seed=0,
                          persistent_workers=False)
    it = iter(loader)
    next(it)  # warm-up: workers started, first batches in flight
    n, t0 = 0, time.perf_counter()
    for b in it:
        assert b["video"].shape[1:] == (8, 3, 224, 224) and not b["skipped"]
        n += b["video"].shape[0]
        if n >= clips:
            break
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def model_rate(steps: int, batch: int) -> tuple[float, str]:
    try:
        from tanet.models import create_model
    except ImportError as e:
        return float("nan"), f"tanet.models unavailable ({e})"
    torch.set_num_threads(torch.get_num_threads())
    model = create_model("tanet_r50", num_classes=400, num_segments=8)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 8, 3, 224, 224)  # (B, T, C, H, W)
    y = torch.randint(0, 400, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0), ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--frames", type=int, default=150, help="frames per generated video (6 s)")
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--model-batch", type=int, default=2)
    ap.add_argument("--model-steps", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recs = make_videos(Path(tmp), args.videos, args.frames)
        lr = loader_rate(Path(tmp), recs, args.clips, args.workers, args.batch)
    mr, why = model_rate(args.model_steps, args.model_batch)
    print(f"machine: {torch.get_num_threads()} torch threads, {args.workers} loader workers\n")
    print(f"{'stage':<58}{'clips/s':>10}")
    print(f"{'input pipeline (decode+sample+augment+collate), 8x224':<58}{lr:>10.2f}")
    if why:
        print(f"{'TANet-R50 train step':<58}{'n/a':>10}  ({why})")
        return
    print(f"{'TANet-R50 train step (fwd+bwd+SGD), batch %d' % args.model_batch:<58}{mr:>10.3f}")
    print(f"\nloader / model = {lr / mr:.1f}x "
          f"({'loader is not' if lr > mr else 'loader IS'} the bottleneck)")


if __name__ == "__main__":
    main()
