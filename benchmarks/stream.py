"""Streaming benchmark (issue 20): training-input clips/s from shards on a local S3 store
(SeaweedFS on 127.0.0.1) vs the same shards on disk vs today's per-file dataset, with the peak
memory of the loader (main process + workers, sampled from /proc) and whether it stays flat
over an epoch; ``tanet shard`` MB/s to disk and to S3; what opening a 100k-video manifest costs.

One run, candidates interleaved round after round (ratios, not absolute times). The same
training pipeline for all three: TSN segment sampling, 8 frames, multi-scale crop + flip to
112 px, per-item seeding, ``build_loader`` with 2 workers and batch 4.

Run: .venv/bin/python benchmarks/stream.py [--videos 32] [--rounds 3] [--records 100000]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import tracemalloc
from functools import partial
from pathlib import Path

import numpy as np

from tanet import remote
from tanet.apps.shard import run_shard
from tanet.data.annotations import Record
from tanet.data.dataset import VideoDataset, build_loader
from tanet.data.encode import write_video
from tanet.data.shards import StreamPlan, open_shards
from tanet.data.streaming import ShardStream
from tanet.data.transforms import build_train_transform
from tanet.engine.distributed import TrainSampler
from tanet.engine.seeding import SeededItems, seeded_item
from tanet.geometry import IMAGENET_MEAN, IMAGENET_STD
from tanet.testing.s3 import S3Store

WORKERS, BATCH = 2, 4


def make_videos(d: Path, n: int, frames: int = 64) -> list[Record]:
    """``n`` videos of ``frames`` frames, 160x120 H.264 @25 fps (3 B-frames): a panning scene."""
    rng = np.random.default_rng(0)
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w + 2 * frames].astype(np.float32)
    recs = []
    for i in range(n):
        f = rng.uniform(10, 30, 3)
        bg = np.stack([128 + 60 * np.sin(xx / f[0]), 128 + 60 * np.cos(yy / f[1] + xx / 50),
                       128 + 50 * np.sin((xx + yy) / f[2])], -1)  # (H, W + 2F, 3)
        clip = np.stack([np.clip(bg[:, 2 * t:2 * t + w] + rng.normal(0, 4, (h, w, 3)), 0, 255)
                         for t in range(frames)]).astype(np.uint8)  # (F, H, W, 3)
        name = f"c{i % 4}/v{i}.mp4"
        write_video(d / name, clip, fps=25, bframes=3, crf=23)
        recs.append(Record(str(d / name), i % 4))
    return recs


def _items() -> VideoDataset:
    return VideoDataset([], num_segments=8, train=True,
                        transform=build_train_transform(size=112, mean=IMAGENET_MEAN,
                                                        std=IMAGENET_STD))


def file_loader(recs: list[Record]):
    ds = _items()
    ds.records = recs
    sampler = TrainSampler(len(recs), seed=0)
    return sampler, build_loader(SeededItems(ds, 0), batch_size=BATCH, workers=WORKERS,
                                 sampler=sampler, seed=0)  # persistent workers, as training


def shard_loader(manifest: str):
    stream = ShardStream(open_shards(manifest), _items(), workers=WORKERS, batch_size=BATCH,
                         seed=0, buffer=16, item_context=partial(seeded_item, 0))
    return stream, build_loader(stream, batch_size=BATCH, workers=WORKERS, seed=0)


def _rss_tree(pid: int) -> int:
    """Proportional resident bytes (PSS: pages shared after fork counted once) of ``pid`` and
    its descendants (the loader's workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for ln in open(f"/proc/{p}/smaps_rollup"):
                if ln.startswith("Pss:"):
                    total += int(ln.split()[1]) * 1024
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            continue
    return total


def epoch(chooser, loader, epoch_no: int) -> tuple[float, int, list[int]]:
    """One epoch: (seconds, clips, peak RSS of each quarter of the epoch)."""
    chooser.set_epoch(epoch_no)
    peaks, clips, done = [0, 0, 0, 0], 0, threading.Event()
    n = len(loader)
    state = {"batch": 0}

    def sample() -> None:
        while not done.is_set():
            q = min(3, 4 * state["batch"] // max(n, 1))
            peaks[q] = max(peaks[q], _rss_tree(os.getpid()))
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    for b in loader:
        clips += 0 if b["video"] is None else b["video"].shape[0]
        state["batch"] += 1
    secs = time.perf_counter() - t0
    done.set()
    th.join()
    return secs, clips, peaks


def manifest_cost(records: int, d: Path) -> dict:
    """Open a generated manifest of ``records`` videos (400-record shards, every offset) and
    plan one worker's epoch (rank 0 of 64, 8 workers): time, memory, file size."""
    per = 400
    shards = [{"name": f"shard-{k:06d}.tar", "bytes": per * 2_000_000, "sha256": "0" * 64,
               "records": min(per, records - k * per),
               "offsets": [i * 2_001_024 for i in range(min(per, records - k * per))]}
              for k in range(-(-records // per))]
    path = d / "big" / "shards.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "tanet-shards", "version": 1, "class_names":
                                [f"class{i}" for i in range(400)], "num_records": records,
                                "shards": shards, "left_out": []}, indent=1))
    tracemalloc.start()
    t0 = time.perf_counter()
    ss = open_shards(path)
    t_open = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    t0 = time.perf_counter()
    plan = StreamPlan(tuple(int(c) for c in ss.counts), 0, 3, 64, 0, 8, 8, 64, True)
    order = plan.order(5)
    plan.locate(5, order)
    t_plan = time.perf_counter() - t0
    tracemalloc.stop()
    return {"records": len(ss), "shards": len(ss.shards), "file_mb": path.stat().st_size / 1e6,
            "open_s": t_open, "open_peak_mb": peak / 1e6, "plan_worker_s": t_plan}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=100_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tanet-stream-"))
    recs = make_videos(tmp / "videos", args.videos)
    (tmp / "list.txt").write_text("".join(f"{r.path} {r.label}\n" for r in recs))
    with S3Store() as store:
        os.environ.update(store.env)
        remote._FS.clear()
        store.make_bucket("bench")
        rates = {}
        for name, out in (("disk", str(tmp / "shards")), ("s3", "s3://bench/shards")):
            t0 = time.perf_counter()
            m, _ = run_shard(str(tmp / "list.txt"), out, shard_size="1MB", workers=2, quiet=True)
            mb = sum(e["bytes"] for e in m["shards"]) / 1e6
            rates[name] = (mb, time.perf_counter() - t0)
        cands = {"per-file (local)": file_loader(recs),
                 "shards on disk": shard_loader(str(tmp / "shards" / "shards.json")),
                 "shards on S3": shard_loader("s3://bench/shards/shards.json")}
        res: dict[str, list] = {k: [] for k in cands}
        for r in range(args.rounds + 1):  # round 0: warm-up (page cache, index cache)
            for k, (chooser, loader) in cands.items():
                out = epoch(chooser, loader, r)
                if r:
                    res[k].append(out)
    report(res, rates, manifest_cost(args.records, tmp), args)


def report(res: dict, rates: dict, cost: dict, args) -> None:
    load = os.getloadavg()
    base = None
    print(f"\nstreaming benchmark: {args.videos} videos (160x120, 64 frames, H.264), 8 frames "
          f"-> 112 px, {WORKERS} workers, batch {BATCH}, median of {args.rounds} interleaved "
          f"epochs")
    print("| input | clips/s | ratio to per-file | peak PSS (MB) | peak by epoch quarter (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for k, runs in res.items():
        rate = float(np.median([c / s for s, c, _ in runs]))
        base = base or rate
        peaks = np.max([p for _, _, p in runs], axis=0) / 1e6
        print(f"| {k} | {rate:.1f} | {rate / base:.2f}x | {peaks.max():.0f} | "
              f"{' / '.join(f'{x:.0f}' for x in peaks)} |")
    for k, (mb, s) in rates.items():
        print(f"tanet shard -> {k}: {mb:.1f} MB, {args.videos} videos in {s:.1f} s = "
              f"{mb / s:.2f} MB/s, {args.videos / s:.1f} videos/s (it checks every video: open, "
              f"index, the frames training reads vs a sequential decode)")
    print(f"manifest of {cost['records']} videos in {cost['shards']} shards: "
          f"{cost['file_mb']:.1f} MB, opened in {cost['open_s']:.2f} s, peak "
          f"{cost['open_peak_mb']:.0f} MB (Python heap); one worker's epoch plan (rank 0 of 64, "
          f"8 workers) {cost['plan_worker_s'] * 1e3:.0f} ms")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
