"""Live mode: the highest real-time rate that TANet-R50 8f sustains without dropping frames.

Builds a random-init tanet_r50 (400 classes, T=8, 224 px crop, 256 px test short side), writes a
25 fps H.264 MPEG-TS stream (default 30 s of 320x240, a moving gradient with a bouncing square),
serves it over HTTP on 127.0.0.1 paced by its timestamps at 1x, 2x, 4x ... real time (the test
suite's server, tests/_live_server.py) and runs ``tanet predict URL --live`` (``run_live``, 2 s
windows every 2 s, PyTorch eager fp32) on each, until a rate drops frames. Per rate: the pace the
source achieved, windows classified/dropped, frames dropped, inference ms per window (median,
min, max; and, measured just before each rate, the same call on a fixed clip with no stream
running, "offline", median and min of 3), the real-time factor (mean inference / stride; for
the least-disturbed window too) and the latency from a window's
last frame to its result. The load average is printed before and after: the host may be shared.
Usage: python benchmarks/live.py [--seconds 30] [--rates 1,2,4,6,8] [--size 320x240]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from predict import make_video  # benchmarks/predict.py, beside this script

from tanet.testing.live_server import StreamServer
from tanet.testing.timing import interleaved_samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="stream length")
    ap.add_argument("--rates", default="1,2,4,6,8", help="real-time multiples to try, in order")
    ap.add_argument("--size", default="320x240", help="stream WxH")
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--stride", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = ap.parse_args()

    import tanet
    from tanet.apps.live import run_live
    from tanet.apps.predict import Predictor
    from tanet.models.checkpoint import save_model

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    rates = [float(r) for r in args.rates.split(",")]
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = tanet.create_model("tanet_r50", num_classes=400, num_segments=8)
        ckpt = save_model(tmp / "tanet_r50_8f.safetensors", model)
        stream = make_video(tmp / "stream.ts", seconds=args.seconds, fps=25, w=w, h=h)
        predictor = Predictor(ckpt, views="1x1")
        g = predictor.geometry
        clip = np.random.default_rng(0).integers(0, 255, (1, 8, g.short_side, g.short_side * 4 // 3,
                                                          3), dtype=np.uint8)  # (1, T, H, W, 3)
        for rate in rates:
            offline = interleaved_samples({"offline": lambda: predictor.predict_frames(clip)},
                                          rounds=3, warmup=1)["offline"]
            out = io.StringIO()
            with StreamServer(stream, rate=rate) as url:
                stats = run_live(predictor, url, window=args.window, stride=args.stride,
                                 quiet=True, out=out, err=io.StringIO())
            results = [json.loads(x) for x in out.getvalue().splitlines()]
            infer = [r["timing"]["infer_ms"] for r in results]
            rows.append((rate, stats, infer, [1e3 * t for t in offline]))
            if stats.frames_dropped:
                break
    load1 = os.getloadavg()

    print(f"tanet predict --live, TANet-R50 8f (random init, 400 classes, 1x1 view, 8 x 224 px), "
          f"{args.window:g} s windows every {args.stride:g} s, PyTorch eager fp32; "
          f"{args.seconds:g} s {w}x{h} 25 fps H.264 MPEG-TS over HTTP on 127.0.0.1; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (1 min)\n")
    head = (f"{'rate':>5}{'pace':>7}{'windows':>9}{'dropped':>9}{'frames dropped':>16}"
            f"{'infer ms med/min/max':>22}{'offline med/min':>17}{'rtf':>7}{'rtf x rate':>12}"
            f"{'latency max ms':>16}")
    print(head)
    print("-" * len(head))
    sustained = max((r for r, s, *_ in rows if not s.frames_dropped), default=0.0)
    for rate, s, infer, off in rows:
        ms = f"{statistics.median(infer):.0f}/{min(infer):.0f}/{max(infer):.0f}"
        off_ms = f"{statistics.median(off):.0f}/{min(off):.0f}"
        d = s.to_json()
        print(f"{rate:>4g}x{d['pace']:>7.2f}{s.windows:>9}{s.windows_dropped:>9}"
              f"{s.frames_dropped:>16}{ms:>22}{off_ms:>17}{s.rtf:>7.3f}"
              f"{s.rtf * rate:>12.2f}{d['latency_ms_max']:>16.0f}")
    base = rows[0][1]
    least = min(min(r[2]) for r in rows) / 1e3 / base.stride_s
    print(f"\nhighest rate sustained without dropping frames: {sustained:g}x real time "
          f"(a {25 * sustained:g} fps stream); at 1x the model needs {base.rtf:.2f} of each "
          f"stride (real-time factor: {1 / base.rtf if base.rtf else 0:.1f}x headroom); the "
          f"least-disturbed window needed {least:.2f} ({1 / least if least else 0:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
