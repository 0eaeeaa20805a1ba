"""Commands about features: extract."""
from __future__ import annotations

import argparse
import sys

from tanet.cli.inference import add_pipeline_options
from tanet.precision import AMPS


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="pooled features of every video in a directory or list",
                       description="Per-video backbone features (averaged over frames and views, "
                                   "or per frame) into one .npz with paths, labels and class "
                                   "names when the list has them. Resumable: finished shards "
                                   "are kept in <out>.parts and a rerun continues. Many "
                                   "processes or machines: torchrun --nproc_per_node=N -m tanet "
                                   "extract ... (one merged output, in input order).")
    p.add_argument("input", help="a video, a directory (every video under it; a class-per-"
                                 "folder tree keeps its labels), an annotation file of any "
                                 "supported format, a list of paths one a line, a UCF101/HMDB51 "
                                 "split folder, or - (a list on standard input)")
    p.add_argument("--checkpoint", required=True,
                   help="a tanet .safetensors checkpoint, a published .pth, a weights name "
                        "(e.g. tanet_r50.k400) or an http(s) URL")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--per-frame", action="store_true",
                   help="keep the T frames' features, (N, T, D), instead of their mean")
    p.add_argument("--views", default="1x1", metavar="CLIPSxCROPS",
                   help="views averaged per video, e.g. 1x1 (default) or 10x3")
    p.add_argument("--root", default=None,
                   help="folder that relative paths in the list start from (default: the "
                        "list's folder; for - the working directory)")
    p.add_argument("--split", type=int, default=1, help="UCF101/HMDB51 split folders: split N")
    p.add_argument("--subset", choices=("train", "test", "all"), default="train",
                   help="UCF101/HMDB51 split folders: which videos (default train)")
    p.add_argument("--shard-size", type=int, default=64,
                   help="videos per resumable shard (default 64)")
    p.add_argument("--parts", default=None,
                   help="shard folder (default <out>.parts); {rank} in it gives each process "
                        "its own, for machines without a shared file system")
    p.add_argument("--amp", choices=AMPS, default="auto",
                   help="precision: auto (default) is bf16 where the hardware computes in bf16 "
                        "natively, else fp32; off: fp32")
    add_pipeline_options(p)
    p.add_argument("--device", default="cpu",
                   help="torch device: cpu (default), cuda, cuda:1, ...")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args: argparse.Namespace) -> int:
    from tanet.apps.extract import extract
    from tanet.apps.pipeline import check_options
    from tanet.apps.sharding import from_main, joined
    from tanet.data.sources import resolve_videos

    check_options(args.decode_workers, args.max_batch)  # before the model loads
    with joined(args.device) as info:
        videos = from_main(lambda: resolve_videos(args.input, root=args.root, split=args.split,
                                                  subset=args.subset), info)
        device = str(info.device) if info.distributed else args.device
        s = extract(videos, args.checkpoint, args.out, per_frame=args.per_frame,
                    views=args.views, shard_size=args.shard_size, parts=args.parts,
                    device=device, amp=args.amp, quiet=args.quiet, info=info,
                    workers=args.decode_workers, max_batch=args.max_batch)
    if info.main:
        state = ("already complete, kept" if s["reused"] else "written" + (
            f"; {s['resumed']} from an earlier partial run" if s["resumed"] else ""))
        print(f"{s['out']}: {s['videos']} videos, {s['failed']} failed ({state})")
        if s["failed"]:
            print(f"warning: {s['failed']} video(s) failed to decode; their rows are NaN and "
                  f"'errors' in {s['out']} says why", file=sys.stderr)
    return 1 if s["failed"] else 0


COMMANDS = [_add_extract]
