"""Commands that run a trained model: predict, visualize."""
from __future__ import annotations

import argparse
import sys


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify a video or every video in a directory",
                       description="Top-k classes per video from a checkpoint alone (its model "
                                   "card gives frames, size, mean/std and class names).")
    p.add_argument("input", help="a video file or a directory (walked recursively); with --live a "
                                 "URL, - (standard input) or a capture device (/dev/video0)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="tanet .safetensors (or an authors'/mmaction2 .pth)")
    src.add_argument("--onnx", help="an .onnx from `tanet export` (runs on ONNX Runtime)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--views", default="1x1", metavar="CLIPSxCROPS",
                   help="test views, e.g. 1x1 (default) or 10x3")
    p.add_argument("--labels", default=None, help="class names file, one per line (overrides the card)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per video: path, top [{label, score}], error")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="classify sliding windows of this length; writes a CSV and a PNG timeline")
    p.add_argument("--stride", type=float, default=None, metavar="SECONDS",
                   help="window step (default: half the window)")
    p.add_argument("--out", default="predictions", help="directory for --window outputs")
    p.add_argument("--sampling", choices=("segment", "dense"), default=None,
                   help="frame sampling (default: the checkpoint's training config, else segment; "
                        "mmaction2's Kinetics TANet used dense)")
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast (PyTorch only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--live", action="store_true",
                   help="classify a live source as it streams: one JSON line per --stride "
                        "(window default 2 s), late windows dropped; see tanet.apps.live")
    p.add_argument("--format", default=None, help="--live: FFmpeg input format to force "
                   "(v4l2, avfoundation, dshow, mpegts, h264, lavfi, ...)")
    p.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="--live: FFmpeg input option, e.g. framerate=30 or rtsp_transport=udp")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict_live(args: argparse.Namespace) -> int:
    from tanet.apps.live import run_live
    from tanet.apps.predict import Predictor

    bad = [o for o in args.input_option if "=" not in o]
    if bad:
        raise ValueError(f"--input-option {bad[0]!r}: expected KEY=VALUE, e.g. framerate=30")
    options = dict(o.split("=", 1) for o in args.input_option)
    predictor = Predictor(args.onnx or args.checkpoint, views=args.views, topk=args.topk,
                          labels=args.labels, device=args.device, amp=args.amp)
    stats = run_live(predictor, args.input, window=args.window or 2.0, stride=args.stride,
                     format=args.format, options=options, quiet=args.quiet)
    return 1 if stats.end.startswith("error") else 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from tanet.apps.predict import Predictor, find_videos, write_timeline

    if args.live:
        return _cmd_predict_live(args)
    inp = Path(args.input)
    if not inp.exists():
        raise FileNotFoundError(f"{inp}: no such file or directory")
    paths = find_videos(inp) if inp.is_dir() else [inp]
    if not paths:
        raise FileNotFoundError(f"{inp}: no video files found (looked for .mp4, .avi, .mkv, ...)")
    predictor = Predictor(args.onnx or args.checkpoint, views=args.views, topk=args.topk,
                          labels=args.labels, device=args.device, amp=args.amp,
                          sampling=args.sampling)
    bar = tqdm(paths, desc="predict", unit="video", disable=args.quiet or len(paths) == 1,
               file=sys.stderr, dynamic_ncols=True)
    failed = 0
    if args.window:
        for path in bar:
            try:
                res = predictor.predict_windows(path, args.window, stride=args.stride)
            except Exception as e:
                failed += 1
                tqdm.write(f"{path}: error: {e}", file=sys.stderr)
                continue
            csv_path, png_path = write_timeline(res, args.out, top=args.topk)
            tqdm.write(f"{path}: {len(res.starts)} windows -> {csv_path}, {png_path}")
        return 1 if failed else 0
    for pred in predictor.predict_many(bar):
        failed += pred.error is not None
        line = json.dumps(pred.to_json()) if args.json else str(pred)
        tqdm.write(line, file=sys.stderr if (pred.error and not args.json) else sys.stdout)
    return 1 if failed else 0


def _add_visualize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="PNGs of what TAM does on one video",
                       description="Writes frames.png (the sampled frames), tam_kernels.png (TAM's "
                                   "importance maps L and aggregation kernels G per stage) and "
                                   "evidence.png (per-frame class evidence before consensus).")
    p.add_argument("video")
    p.add_argument("--checkpoint", required=True, help="a tanet .safetensors checkpoint")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--topk", type=int, default=5)
    p.set_defaults(func=_cmd_visualize)


def _cmd_visualize(args: argparse.Namespace) -> int:
    from tanet.apps.visualize import visualize_video

    for path in visualize_video(args.video, args.checkpoint, args.out, topk=args.topk):
        print(path)
    return 0


COMMANDS = [_add_predict, _add_visualize]
