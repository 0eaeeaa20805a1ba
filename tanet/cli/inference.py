"""Commands that run a trained model: predict, visualize."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Iterator

from tanet.geometry import SAMPLINGS
from tanet.precision import AMPS

if TYPE_CHECKING:
    from tanet.engine.distributed import DistInfo


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify a video or every video in a directory or list",
                       description="Top-k classes per video from a checkpoint alone (its model "
                                   "card gives frames, size, mean/std and class names).")
    p.add_argument("input", help="a video file, a directory (every video under it; a "
                                 "class-per-folder tree too), a list (annotation file of any "
                                 "format, or paths one a line), a UCF101/HMDB51 split folder, "
                                 "or - (a list on standard input); with --live a URL, - (a "
                                 "video stream on standard input) or a capture device "
                                 "(/dev/video0)")
    p.add_argument("--root", default=None,
                   help="folder that relative paths in a list start from (default: the list's "
                        "folder; for - the working directory)")
    p.add_argument("--split", type=int, default=1, help="UCF101/HMDB51 split folders: split N")
    p.add_argument("--subset", choices=("train", "test", "all"), default="train",
                   help="UCF101/HMDB51 split folders: which videos (default train)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="tanet .safetensors (or an authors'/mmaction2 .pth), a "
                                          "weights name (e.g. tanet_r50.k400, see `tanet models "
                                          "--pretrained`) or an http(s) URL")
    src.add_argument("--onnx", help="an .onnx from `tanet export` (runs on ONNX Runtime)")
    p.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    p.add_argument("--views", default="1x1", metavar="CLIPSxCROPS",
                   help="test views, e.g. 1x1 (default) or 10x3")
    p.add_argument("--labels", default=None, help="class names file, one per line (overrides the card)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per video: path, top [{label, score}], labels (a "
                        "multi-label model: every class over the card's threshold), warnings "
                        "(truncated or damaged video), error; with --window one per window: "
                        "path, window, start, end, frames (the sampled frame indices), top "
                        "(and labels)")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="classify sliding windows of this length, each sampled as a clip of its "
                        "span (the checkpoint's sampling); writes a CSV and a PNG timeline")
    p.add_argument("--stride", type=float, default=None, metavar="SECONDS",
                   help="window step (default: half the window)")
    p.add_argument("--out", default="predictions", help="directory for --window outputs")
    _add_segment_options(p)
    p.add_argument("--sampling", choices=SAMPLINGS, default=None,
                   help="frame sampling of clips and windows (default: the checkpoint's card; "
                        "mmaction2's Kinetics TANet uses dense)")
    p.add_argument("--amp", choices=AMPS, default="auto",
                   help="precision (PyTorch only): auto (default) is bf16 where the hardware "
                        "computes in bf16 natively (CPU flags avx512_bf16/amx_bf16, CUDA 8.0+), "
                        "else fp32; off: fp32. bf16 on CPU: bf16 weights converted once, "
                        "channels-last, BN folded")
    add_pipeline_options(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (Inductor; the first video pays the compile)")
    p.add_argument("--device", default="cpu",
                   help="torch device of a PyTorch model: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--live", action="store_true",
                   help="classify a live source as it streams: one JSON line per --stride "
                        "(window default 2 s), late windows dropped; see tanet.apps.live")
    p.add_argument("--format", default=None, help="--live: FFmpeg input format to force "
                   "(v4l2, avfoundation, dshow, mpegts, h264, lavfi, ...)")
    p.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="--live: FFmpeg input option, e.g. framerate=30 or rtsp_transport=udp")
    p.set_defaults(func=_cmd_predict)


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """``--decode-workers`` and ``--max-batch`` (``tanet.apps.pipeline``): predict and extract."""
    p.add_argument("--decode-workers", type=int, default=None, metavar="N",
                   help="processes decoding videos ahead of the model (0: decode in the main "
                        "process, one video after another). Default: on CUDA a quarter of the "
                        "cores (1-4); on a CPU none up to 4 cores (the model uses them all), "
                        "one per 8 cores above")
    p.add_argument("--max-batch", type=int, default=None, metavar="VIEWS",
                   help="views of consecutive videos run in one model call at most (default: "
                        "one video a call on a CPU, its loop's numbers bit for bit; 32 on CUDA)")


def _add_segment_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("action segments (with --window)")
    g.add_argument("--segments", action="store_true",
                   help="join the windows into segments (start, end, label, score): neighbours "
                        "with the same top-1 label join, windows under --min-score are "
                        "background, short flickers and gaps between two runs of one label are "
                        "absorbed; writes <video>.segments.json and .csv to --out and prints "
                        "them (with --json: one object per video instead of the window lines)")
    g.add_argument("--min-score", type=float, default=0.0,
                   help="a window whose top-1 probability is below this is background")
    g.add_argument("--min-duration", type=float, default=None, metavar="SECONDS",
                   help="a run of another label shorter than this between two runs of one "
                        "label is absorbed (default: one window)")
    g.add_argument("--max-gap", type=float, default=None, metavar="SECONDS",
                   help="a background run shorter than this between two runs of one label is "
                        "bridged (default: one window)")
    g.add_argument("--vtt", nargs="?", const="", default=None, metavar="FILE",
                   help="WebVTT subtitles of the segments (implies --segments): FILE for one "
                        "video, else <out>/<video>.vtt")
    g.add_argument("--srt", nargs="?", const="", default=None, metavar="FILE",
                   help="SubRip subtitles of the segments, as --vtt")


def _cmd_predict_live(args: argparse.Namespace) -> int:
    from tanet.apps.live import run_live
    from tanet.apps.predict import Predictor

    bad = [o for o in args.input_option if "=" not in o]
    if bad:
        raise ValueError(f"--input-option {bad[0]!r}: expected KEY=VALUE, e.g. framerate=30")
    options = dict(o.split("=", 1) for o in args.input_option)
    predictor = Predictor(args.onnx or args.checkpoint, views=args.views, topk=args.topk,
                          labels=args.labels, device=args.device, amp=args.amp,
                          sampling=args.sampling, compile=args.compile)
    stats = run_live(predictor, args.input, window=args.window or 2.0, stride=args.stride,
                     format=args.format, options=options, quiet=args.quiet)
    return 1 if stats.end.startswith("error") else 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """Under torchrun each process takes a share of the videos; rank 0 prints every result,
    in input order (the output of one process)."""
    from tanet.apps.pipeline import check_options
    from tanet.apps.sharding import joined

    check_options(args.decode_workers, args.max_batch)  # before the model loads
    with joined(args.device) as info:
        return _predict(args, info)


def _predict(args: argparse.Namespace, info: DistInfo) -> int:
    import json

    from tqdm import tqdm

    from tanet.apps.pipeline import predict_pipelined
    from tanet.apps.predict import Prediction, Predictor
    from tanet.apps.sharding import from_main, ordered_map
    from tanet.data.sources import resolve_videos
    from tanet.engine.distributed import all_sum

    if args.live:
        return _cmd_predict_live(args)
    paths = from_main(lambda: resolve_videos(args.input, root=args.root, split=args.split,
                                             subset=args.subset).paths, info)
    if _wants_segments(args) and not args.window:
        raise ValueError("--segments, --vtt and --srt need --window SECONDS (segments are made "
                         "of sliding windows)")
    if (args.vtt or args.srt) and len(paths) > 1:
        raise ValueError(f"--vtt FILE / --srt FILE name one file, for one video ({len(paths)} "
                         "given): without a FILE each video gets <out>/<video>.vtt / .srt")
    rule = _segment_rule(args)  # a bad value fails before the model loads
    predictor = Predictor(args.onnx or args.checkpoint, views=args.views, topk=args.topk,
                          labels=args.labels, amp=args.amp, sampling=args.sampling,
                          device=str(info.device) if info.distributed else args.device,
                          compile=args.compile)
    if predictor.precision is not None and info.main and not args.quiet:
        print(f"tanet predict: {predictor.precision.describe('--amp')}", file=sys.stderr)
    bar = tqdm(total=len(paths), desc="predict", unit="video", file=sys.stderr,
               disable=args.quiet or len(paths) == 1 or not info.main, dynamic_ncols=True)
    failed = 0
    if args.window:  # one CSV + PNG per video: each process writes its own share
        failed = _predict_windows(args, predictor, paths[info.rank::info.world_size], bar, info,
                                  rule)
        return 1 if all_sum(info, [failed])[0] else 0

    def pipeline(chunk: list[str]) -> Iterator[Prediction]:  # decoded ahead, batched
        return predict_pipelined(predictor, chunk, workers=args.decode_workers,
                                 max_batch=args.max_batch)

    for pred in ordered_map(pipeline, paths, info, progress=bar.update):
        failed += pred.error is not None
        line = json.dumps(pred.to_json()) if args.json else str(pred)
        tqdm.write(line, file=sys.stderr if (pred.error and not args.json) else sys.stdout)
    bar.close()
    return 1 if all_sum(info, [failed])[0] else 0


def _wants_segments(args: argparse.Namespace) -> bool:
    return args.segments or args.vtt is not None or args.srt is not None


def _segment_rule(args: argparse.Namespace):
    """The segments rule of ``--segments`` (None without it)."""
    from tanet.apps.segments import SegmentRule

    if not _wants_segments(args):
        return None
    return SegmentRule(args.min_score, args.min_duration, args.max_gap)


def _predict_windows(args: argparse.Namespace, predictor, paths: list, bar, info, rule) -> int:
    """``--window``: per video a CSV + PNG timeline, and with a segments ``rule`` (``--segments``,
    ``--vtt``, ``--srt``) its segments; returns the number of videos that failed."""
    import json
    from pathlib import Path

    from tqdm import tqdm

    from tanet.apps.predict import write_timeline
    from tanet.apps.segments import segments_of, write_segments

    segments = rule is not None
    stride = args.stride or args.window / 2
    failed = 0
    for path in paths:
        bar.update(info.world_size)
        try:
            res = predictor.predict_windows(path, args.window, stride=args.stride)
        except Exception as e:
            failed += 1
            tqdm.write(f"{path}: error: {e}", file=sys.stderr)
            continue
        csv_path, png_path = write_timeline(res, args.out, top=args.topk)
        written = [csv_path, png_path]
        if segments:
            segs = segments_of(res, rule)
            about = {"path": res.path, "window": args.window, "stride": stride,
                     "rule": rule.to_json(args.window)}
            stem = Path(args.out) / Path(res.path).stem
            written += [write_segments(segs, f"{stem}.segments.{fmt}", about=about)
                        for fmt in ("json", "csv")]
            written += [write_segments(segs, name or f"{stem}.{fmt}")
                        for fmt, name in (("vtt", args.vtt), ("srt", args.srt)) if name is not None]
            if args.json:
                tqdm.write(json.dumps({**about, "segments": [s.to_json() for s in segs]}),
                           file=sys.stdout)
        elif args.json:
            for k in range(len(res.starts)):
                tqdm.write(json.dumps(res.window_json(k, predictor.topk)), file=sys.stdout)
        out = sys.stderr if args.json else sys.stdout
        tqdm.write(f"{path}: {len(res.starts)} windows -> {', '.join(map(str, written))}"
                   + "".join(f" [warning: {w}]" for w in res.warnings), file=out)
        if segments and not args.json:
            for s in segs:
                tqdm.write(f"  {s.start:.2f}-{s.end:.2f} s: {s.label} ({s.score:.3f})", file=out)
    return failed


def _add_visualize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="PNGs of what TAM does on one video",
                       description="Writes frames.png (the sampled frames), tam_kernels.png (TAM's "
                                   "importance maps L and aggregation kernels G per stage) and "
                                   "evidence.png (per-frame class evidence before consensus).")
    p.add_argument("video", help="the video to look at (a path or URL)")
    p.add_argument("--checkpoint", required=True,
                   help="a tanet .safetensors checkpoint (or .pth, weights name, URL)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--topk", type=int, default=5, help="classes drawn in evidence.png (default 5)")
    p.set_defaults(func=_cmd_visualize)


def _cmd_visualize(args: argparse.Namespace) -> int:
    from tanet.apps.visualize import visualize_video

    for path in visualize_video(args.video, args.checkpoint, args.out, topk=args.topk):
        print(path)
    return 0


COMMANDS = [_add_predict, _add_visualize]
