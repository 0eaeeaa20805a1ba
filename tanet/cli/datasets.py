"""Commands about datasets: check, shard."""
from __future__ import annotations

import argparse

from tanet.data.sources import SOURCE_FORMATS


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="scan a dataset's videos: frames, codec, truncation, damage",
                       description="Open and index every video of an annotation list (any "
                                   "format) or a folder, in parallel; write a CSV (path, status "
                                   "ok/warning/error, frames, fps, duration, size, codec, "
                                   "container, cause, index) and print a summary.")
    p.add_argument("input", metavar="DIR_OR_LIST",
                   help="annotation file (video list, frame list, Kinetics CSV, Something-"
                        "Something JSON/CSV, UCF101/HMDB51 split), a list of paths one a line, "
                        "a folder (class-per-folder, split files, or any videos under it), a "
                        "video, or - (a list on standard input)")
    p.add_argument("--out", default="check.csv", help="the CSV to write (default: check.csv)")
    p.add_argument("--fix-list", default=None, metavar="OUT",
                   help="write the annotation list without the videos in error, same format")
    p.add_argument("--drop-warnings", action="store_true",
                   help="with --fix-list: leave out truncated or damaged videos too")
    p.add_argument("--deep", action="store_true",
                   help="decode every frame (slower; finds damage anywhere in a file; the exact "
                        "indices it builds are cached for training)")
    p.add_argument("--root", default=None, help="folder that relative paths in the list start "
                                                "from (default: the list's folder; for - the "
                                                "working directory)")
    p.add_argument("--labels", default=None, help="class names file (for lists that need one)")
    p.add_argument("--format", default="auto", choices=("auto",) + SOURCE_FORMATS,
                   help="annotation format (default: detected from the file or folder; "
                        "paths: a plain list; folder: every video under a folder)")
    p.add_argument("--split", type=int, default=1,
                   help="UCF101 / HMDB51: which official split (1, 2 or 3; default 1)")
    p.add_argument("--subset", default="all", choices=("train", "test", "all"),
                   help="UCF101 / HMDB51 split folders: whose videos to check (default: all)")
    p.add_argument("--frame-template", default="img_{:05d}.jpg",
                   help="file names inside frame folders, numbered from 1")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: one per CPU core)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any video is in error (or, with --drop-warnings, warned)")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from tanet.apps.check import run_check

    results, text = run_check(args.input, out=args.out, root=args.root, labels=args.labels,
                              format=args.format, deep=args.deep, workers=args.workers,
                              template=args.frame_template, fix_list=args.fix_list,
                              drop_warnings=args.drop_warnings, quiet=args.quiet,
                              split=args.split, subset=args.subset)
    print(text)
    bad = ("error", "warning") if args.drop_warnings else ("error",)
    return 1 if args.strict and any(r.status in bad for r in results) else 0


def _add_shard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shard", help="write a dataset's videos as WebDataset tar shards (local or "
                                     "s3://...) for streaming training",
                       description="Check every video of a source (as `tanet check` does) and "
                                   "write the good ones, original bytes, into tar shards of about "
                                   "--shard-size, each with KEY.json (label, frames, fps, the "
                                   "checker's verdict, the exact frame index where needed), plus "
                                   "shards.json. Deterministic (seeded shuffle), parallel, "
                                   "resumable: run it again after a kill. Broken videos are left "
                                   "out and listed with their cause.")
    p.add_argument("source", metavar="SOURCE",
                   help="what `tanet check` reads: an annotation list (any format, or at a URL), "
                        "a folder, a UCF101/HMDB51 split folder, or - (a list on standard input)")
    p.add_argument("out", metavar="OUT", help="folder or URL (s3://bucket/prefix) for the shards")
    p.add_argument("--shard-size", default="1GB",
                   help="about this many bytes per shard, with a unit: 500MB, 1GB, 2GiB "
                        "(default 1GB)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle across shards")
    p.add_argument("--prefix", default="shard", help="shard names: PREFIX-000000.tar ...")
    p.add_argument("--workers", type=int, default=None,
                   help="checking processes (default: one per CPU core)")
    p.add_argument("--deep", action="store_true",
                   help="index every video by a full decode (finds damage anywhere; slower)")
    p.add_argument("--root", default=None, help="folder or URL that relative paths in the list "
                                                "start from (default: the list's folder)")
    p.add_argument("--labels", default=None, help="class names file (for lists that need one)")
    p.add_argument("--format", default="auto", choices=("auto",) + SOURCE_FORMATS,
                   help="annotation format (default: detected)")
    p.add_argument("--split", type=int, default=1, help="UCF101 / HMDB51: official split")
    p.add_argument("--subset", default="train", choices=("train", "test", "all"),
                   help="UCF101 / HMDB51 split folders: which videos (default: train)")
    p.set_defaults(func=_cmd_shard)


def _cmd_shard(args: argparse.Namespace) -> int:
    from tanet.apps.shard import run_shard

    _, text = run_shard(args.source, args.out, shard_size=args.shard_size, seed=args.seed,
                        workers=args.workers, prefix=args.prefix, deep=args.deep,
                        quiet=args.quiet, root=args.root, labels=args.labels,
                        format=args.format, split=args.split, subset=args.subset)
    print(text)
    return 0


COMMANDS = [_add_check, _add_shard]
