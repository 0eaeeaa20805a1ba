"""Decode benchmark: ms per 8-frame clip (TSN segment sampling, train) from 10 s 340x256 @25 fps
videos, for our reader, naive PyAV seek-per-frame (on the clean H.264 files) and decord (where it
reads the file at all), on clean files and on the shapes real datasets hold (tanet.data.variants:
MPEG-4 AVI with B-frames, DivX packed B-frames (1, 2 and 3 in a row, open and closed GOPs, two
leading keyframes: the DivX 5 AVI of issue 19), Xvid without packing, H.264 with pts = dts,
H.264 in AVI, a truncated AVI, an MP4 whose last packet is broken).

Each clip opens the file (as a data loader does) with our in-memory index cache cleared: ours
reads the index from the disk cache where one was stored (after the first open of the file:
the exact indices and those slow to build), else builds it again; decord builds its own each
open. Also: how many clip frames each reader gets right (equal to a plain sequential decode's,
max |diff| <= 1), and the cost of our index on a fresh file (disk cache empty) against one
sequential decode of the file.

Timing: readers interleaved clip by clip, medians (and minima) over the clips.
Run: .venv/bin/python benchmarks/decode.py [--clips 40] [--fresh-rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from tanet.data import decode as D
from tanet.data import index_cache
from tanet.data import variants as V
from tanet.data.encode import write_video
from tanet.data.sampling import segment_indices
from tanet.testing.media import sequential_frames


def make_frames() -> np.ndarray:
    """10 s, 25 fps, 340x256: a panning smooth background, moving discs and mild noise, so that
    the stream looks like camera footage rather than a flat test card."""
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
    return frames


def make_videos(d: Path) -> dict[str, Path]:
    x = make_frames()
    gop25 = write_video(d / "gop25.mp4", x, fps=25, gop=25, bframes=3, crf=23)
    avi_b = write_video(d / "mpeg4_b2.avi", x, fps=25, codec="mpeg4", gop=25, bframes=2, crf=5)
    avi_b1 = write_video(d / "mpeg4_b1.avi", x, fps=25, codec="mpeg4", gop=25, bframes=1, crf=5)
    b3c = V.mpeg4_source(d / "b3c.avi", x, bframes=3, gop=25, closed_gop=True, qscale=5)
    b2k = V.mpeg4_source(d / "b2k.avi", x, bframes=2, gop=25, leading_keyframes=2, qscale=5)
    return {
        "H.264 MP4, GOP 25": gop25,
        "H.264 MP4, 1 keyframe": write_video(d / "gop1k.mp4", x, fps=25, gop=10_000, bframes=3,
                                             crf=23),
        "MPEG-4 AVI, B-frames": avi_b,
        "MPEG-4 AVI, packed (DivX)": V.pack_bframes(avi_b1, d / "packed.avi"),
        "DivX 5, packed I B B P, 2 keys": V.pack_bframes(b2k, d / "divx5.avi"),
        "DivX, packed 3 B, closed GOP": V.pack_bframes(b3c, d / "divx_b3c.avi"),
        "Xvid, packed 2 B": V.pack_bframes(avi_b, d / "xvid_packed.avi", xvid=True),
        "Xvid, 2 B, not packed": V.xvid_unpacked(avi_b, d / "xvid.avi"),
        "H.264 MP4, pts = dts": V.pts_from_dts(gop25, d / "pts_dts.mp4"),
        "H.264 AVI, B-frames": write_video(d / "h264.avi", x, fps=25, gop=25, bframes=3, crf=23),
        "MPEG-4 AVI, truncated": V.truncate(avi_b, d / "cut.avi", 0.6),
        "H.264 MP4, last packet broken": V.break_packet(gop25, d / "last.mp4"),
    }


def decode_only(path) -> None:
    """A sequential decode without colour conversion (what an exact index costs at least)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.codec_context.thread_count = 1
        for p in c.demux(s):
            if p.size:
                try:
                    s.decode(p)
                except av.FFmpegError:
                    pass
        s.decode(None)


def demux_only(path) -> None:
    """Every packet's timestamp, nothing decoded (what an index from timestamps alone costs)."""
    with av.open(str(path)) as c:
        for _ in c.demux(video=0):
            pass


def ours(path, idx):
    index_cache.clear_memory_cache()
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


def decord_reads(path) -> str | None:
    """None if decord reads ``path`` (tried in a subprocess: a crash there costs nothing),
    else why not."""
    code = ("import sys, decord; vr = decord.VideoReader(sys.argv[1]); n = len(vr); "
            "vr.get_batch([0, n // 2, n - 1]).asnumpy()")
    try:
        r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "hangs"
    if r.returncode == 0:
        return None
    if r.returncode < 0:
        return f"crashes (signal {-r.returncode})"
    last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
    name, _, msg = last.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}: {msg.split(') ')[-1][:60]}"  # DECORDError: ...


def decord_reader():
    try:
        import decord
    except Exception as e:  # not installed or broken build
        return None, f"{type(e).__name__}: {e}"

    def run(path, idx):
        vr = decord.VideoReader(str(path))
        return vr.get_batch([int(i) for i in idx]).asnumpy()
    return run, None


def time_clips(readers: dict, path, clips) -> dict[str, list[float]]:
    """ms per clip of each reader, interleaved clip by clip (load hits all readers alike)."""
    times: dict[str, list[float]] = {r: [] for r in readers}
    for fn in readers.values():
        fn(path, clips[0])  # warm-up (page cache, lazy imports, our disk cache)
    for idx in clips:
        for name, fn in readers.items():
            t0 = time.perf_counter()
            fn(path, idx)
            times[name].append(1e3 * (time.perf_counter() - t0))
    return times


def right(fn, path, clips, ref) -> str:
    """Clip frames equal to the sequential decode's (max |diff| <= 1), of all asked."""
    ok = total = 0
    for idx in clips:
        idx = np.minimum(idx, len(ref) - 1)
        try:
            got = fn(path, idx)
        except Exception:
            got = None
        total += len(idx)
        if got is not None and got.shape[1:] == ref.shape[1:]:
            ok += int((np.abs(got.astype(int) - ref[idx]).max(axis=(1, 2, 3)) <= 1).sum())
    return f"{100 * ok / total:.0f} %"


def fresh_index_ms(path, rounds: int) -> tuple[float, float, float, str]:
    """Median ms to open with no cache at all, of a demux-only pass and of a decode-only pass,
    and the route; interleaved."""
    a, b, c = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TANET_CACHE_DIR"] = cache
            index_cache.clear_memory_cache()
            t0 = time.perf_counter()
            r = D.VideoReader(path)
            a.append(1e3 * (time.perf_counter() - t0))
            route = "decoded" if r.info.exact else "packets"
            r.close()
        t0 = time.perf_counter()
        decode_only(path)
        b.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        demux_only(path)
        c.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(a), statistics.median(c), statistics.median(b), route


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--fresh-rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TANET_CACHE_DIR"] = str(Path(tmp) / "cache")
        videos = make_videos(Path(tmp))
        dec, why = decord_reader()
        print(f"8-frame segment clips, 10 s 340x256 @25 fps, {args.clips} clips per video "
              f"(open + decode); ms per clip: median (min)\n")
        head = f"{'video':<31}{'frames':>7}{'ours':>16}{'naive seek':>16}{'decord':>16}" \
               f"   right: ours / naive / decord"
        print(head)
        print("-" * len(head))
        for name, path in videos.items():
            ref = sequential_frames(path)
            n = D.VideoReader(path).info.num_frames
            clips = [segment_indices(n, 8, train=True, rng=rng) for _ in range(args.clips)]
            readers = {"ours": ours}
            if name.startswith("H.264 MP4, GOP") or name.startswith("H.264 MP4, 1"):
                readers["naive"] = naive
            bad = why if dec is None else decord_reads(path)
            if bad is None:
                readers["decord"] = dec
            t = time_clips(readers, path, clips)
            cell = {k: f"{statistics.median(v):.1f} ({min(v):.1f})" for k, v in t.items()}
            rights = [right(readers[k], path, clips[:10], ref) if k in readers else "-"
                      for k in ("ours", "naive", "decord")]
            print(f"{name:<31}{n:>7}{cell['ours']:>16}{cell.get('naive', '-'):>16}"
                  f"{cell.get('decord', 'fails' if dec else 'not installed'):>16}   "
                  f"{' / '.join(rights)}"
                  + (f"   (decord: {bad})" if bad and dec is not None else ""))
            if "decord" in t:
                ratio = statistics.median(t["decord"]) / statistics.median(t["ours"])
                print(f"{'':<31}decord / ours = {ratio:.2f}x")
        print(f"\nindex on a fresh file (no cache; median of {args.fresh_rounds}) vs a "
              f"demux-only pass and a decode-only pass of the whole file, ms\n")
        print(f"{'video':<31}{'route':>9}{'index':>10}{'demux only':>12}{'full decode':>13}"
              f"{'index / decode':>16}")
        for name, path in videos.items():
            ms, demux, full, route = fresh_index_ms(path, args.fresh_rounds)
            print(f"{name:<31}{route:>9}{ms:>10.1f}{demux:>12.1f}{full:>13.1f}"
                  f"{ms / full:>16.2f}")
        if dec is None:
            print(f"\ndecord: unavailable ({why})")


if __name__ == "__main__":
    main()
