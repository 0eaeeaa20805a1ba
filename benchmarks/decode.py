"""Decode benchmark: ms per 8-frame clip (TSN segment sampling, train) from a 10 s 340x256 H.264
video (3 B-frames), normal GOP (keyframe every 25 frames) and a single keyframe, for our reader, naive PyAV
seek-per-frame, and decord when installed. Each clip opens the file (as a data loader does),
with our index cache cleared, so every reader pays its own open/index cost.

Run: .venv/bin/python benchmarks/decode.py [--clips 40]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from tanet.data import decode as D
from tanet.data.encode import write_video
from tanet.data.sampling import segment_indices


def make_video(path: Path, gop: int) -> Path:
    """10 s, 25 fps, 340x256, x264 defaults for B-frames (3): a panning smooth background, moving
    discs and mild noise, so that the stream looks like camera footage rather than a flat test
    card (I, P and B frames all occur)."""
    rng = np.random.default_rng(0)
    h, w, n = 256, 340, 250
    yy, xx = np.mgrid[0:h, 0:w + 2 * n].astype(np.float32)
    bg = np.stack([128 + 60 * np.sin(xx / 37), 128 + 60 * np.cos(yy / 23 + xx / 91),
                   128 + 50 * np.sin((xx + yy) / 53)], -1)  # (H, W + 2n, 3)
    centres = rng.uniform([0, 0], [h, w], (5, 2))
    vel = rng.uniform(-4, 4, (5, 2))
    colours = rng.uniform(0, 255, (5, 3))
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        img = bg[:, 2 * t:2 * t + w].copy()  # (H, W, 3), panning 2 px / frame
        for c, v, col in zip(centres, vel, colours):
            cy, cx = (c + t * v) % (h, w)
            img[(yy[:, :w] - cy) ** 2 + (xx[:, :w] - cx) ** 2 < 400] = col
        img += rng.normal(0, 3, img.shape)
        frames[t] = np.clip(img, 0, 255)
    return write_video(path, frames, fps=25, gop=gop, bframes=3, crf=23)


def ours(path, idx):
    D._INDEX_CACHE.clear()
    with D.open_video(path) as r:
        return r.get_frames(idx)


def naive(path, idx):
    """Seek to each wanted frame's timestamp (backward to a keyframe) and decode up to it."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        step = int(round(1 / (float(s.average_rate) * float(s.time_base))))
        start = s.start_time or 0
        for i in idx:
            ts = start + int(i) * step
            c.seek(ts, stream=s, backward=True)
            for f in c.decode(s):
                if f.pts >= ts:
                    out.append(f.to_ndarray(format="rgb24"))
                    break
    return np.stack(out)


def decord_reader():
    try:
        import decord  # noqa: F401
    except Exception as e:  # not installed or broken build
        return None, f"{type(e).__name__}: {e}"

    def run(path, idx):
        vr = decord.VideoReader(str(path))
        return vr.get_batch(list(idx)).asnumpy()
    return run, None


def time_clips(readers: dict, path, clips) -> dict[str, float]:
    """Median ms per clip of each reader, interleaved clip by clip so that load from other
    processes on the machine hits all readers alike."""
    times: dict[str, list[float]] = {r: [] for r in readers}
    for fn in readers.values():
        fn(path, clips[0])  # warm-up (page cache, lazy imports)
    for idx in clips:
        for name, fn in readers.items():
            t0 = time.perf_counter()
            fn(path, idx)
            times[name].append(time.perf_counter() - t0)
    return {r: 1e3 * statistics.median(t) for r, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=40)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        videos = {"normal GOP (25)": make_video(Path(tmp) / "gop25.mp4", 25),
                  "single keyframe": make_video(Path(tmp) / "gop1k.mp4", 10_000)}
        n = D.VideoReader(videos["normal GOP (25)"]).info.num_frames
        clips = [segment_indices(n, 8, train=True, rng=rng) for _ in range(args.clips)]
        dec, why = decord_reader()
        readers = {"ours": ours, "naive PyAV seek": naive}
        if dec is not None:
            readers["decord"] = dec
        for name, path in videos.items():  # correctness first: all readers agree
            ref = ours(path, clips[0])
            for rname, fn in readers.items():
                diff = np.abs(fn(path, clips[0]).astype(int) - ref).max()
                if diff > 3:
                    print(f"warning: {rname} differs from ours by up to {diff} on {name}")
        print(f"8-frame segment clips, 10 s 340x256 H.264 @25 fps, median of {args.clips} clips"
              f" (open + decode)\n")
        res = {v: time_clips(readers, p, clips) for v, p in videos.items()}
        names = list(readers)
        print(f"{'video':<18}" + "".join(f"{r + ' ms/clip':>24}" for r in names))
        for v in videos:
            print(f"{v:<18}" + "".join(f"{res[v][r]:>24.2f}" for r in names))
        print()
        for v in videos:
            line = f"{v}: naive / ours = {res[v]['naive PyAV seek'] / res[v]['ours']:.2f}x"
            if "decord" in res[v]:
                line += f", decord / ours = {res[v]['decord'] / res[v]['ours']:.2f}x"
            print(line)
        if dec is None:
            print(f"decord: unavailable ({why})")


if __name__ == "__main__":
    main()
