"""Commands about data and training: synth, train, test, demo."""
from __future__ import annotations

import argparse


def _add_overrides(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="KEY=VALUE",
                   help=f"override config keys, e.g. --set {example} (repeatable)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recognizer from a YAML recipe",
                       description="Train per a recipe (configs/*.yaml) with --set overrides. "
                                   "Multi-process: torchrun --nproc_per_node=N -m tanet train ...")
    p.add_argument("--config", required=True,
                   help="YAML file or shipped recipe name (`tanet recipes`), e.g. "
                        "synthetic_tanet_tiny")
    _add_overrides(p, "train.epochs=10 train.lr=0.02")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in `output` from its last checkpoint")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from tanet.config import load_config
    from tanet.engine import finish_distributed, train

    cfg = load_config(args.config, args.overrides)
    try:
        summary = train(cfg, resume=args.resume, quiet=args.quiet)
    finally:
        finish_distributed()
    if summary.get("is_main", True):
        what, best = next(((k, v) for k, v in (("mAP", summary.get("best_mAP")),
                                               ("top-1", summary.get("best_top1")))
                           if v is not None), ("", None))
        print(f"done: {summary['output']}" + (f" (best val {what} {best:.4f})"
                                              if best is not None else ""))
    return 0


def _add_test(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="evaluate a checkpoint with multi-view testing",
                       description="Top-1/top-5/mean class accuracy (multi-label: mAP, F1 at the "
                                   "card's threshold) over clips x crops views; writes "
                                   "results.json, predictions.csv, per_class.csv, report.md and "
                                   "confusion.png (multi-label: pr.png).")
    p.add_argument("--checkpoint", required=True,
                   help="a tanet .safetensors checkpoint, a published .pth, a weights name "
                        "(e.g. tanet_r50.k400) or an http(s) URL")
    p.add_argument("--config", default=None,
                   help="YAML file or recipe name (default: the config stored in the checkpoint)")
    _add_overrides(p, "data.val=val.txt test.workers=2")
    p.add_argument("--views", default=None, metavar="CLIPSxCROPS",
                   help="views per video, e.g. 10x3 (default: data.test_clips x data.test_crops)")
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint dir>/test; "
                                               "for a name or URL ./<weights file>/test)")
    p.set_defaults(func=_cmd_test)


def _cmd_test(args: argparse.Namespace) -> int:
    from tanet.config import load_config
    from tanet.engine import finish_distributed, test

    cfg = load_config(args.config, args.overrides) if args.config else None
    try:
        r = test(args.checkpoint, cfg, overrides=args.overrides, views=args.views, out=args.out,
                 quiet=args.quiet)
    finally:
        finish_distributed()
    if "out" in r and "mAP" in r:
        print(f"mAP {100 * r['mAP']:.2f} %  F1 {100 * r['f1']:.2f} % at the card's threshold "
              f"{r['threshold']:.3f}  ({r['num_videos']} videos, {r['views']} views, "
              f"{r['num_skipped']} skipped) -> {r['out']}")
    elif "out" in r:
        print(f"top-1 {100 * r['top1']:.2f} %  top-5 {100 * r['top5']:.2f} %  mean class "
              f"{100 * r['mean_class_acc']:.2f} %  ({r['num_videos']} videos, {r['views']} views, "
              f"{r['num_skipped']} skipped) -> {r['out']}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic temporal benchmark: TANet vs TSN, with a report",
                       description="Generate the synthetic benchmark (if missing), train tanet_tiny "
                                   "and tsn_tiny from scratch, evaluate both and write report.md.")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tanet.apps.demo import run_demo

    report = run_demo(args.out, quick=args.quick, quiet=args.quiet)
    print(f"report: {report}")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic temporal benchmark (forward/backward pairs)",
                       description="Write small H.264 videos whose classes come in pairs of the "
                                   "same motion played forwards and backwards (move right/left, "
                                   "grow/shrink, appear/disappear, rotate, ...), with train.txt, "
                                   "val.txt (mmaction2 list format) and classes.txt. Order-blind "
                                   "models are at chance within each pair. Idempotent.")
    p.add_argument("out", help="output directory")
    p.add_argument("--classes", type=int, default=8, help="number of classes, even, <= 12 (default 8)")
    p.add_argument("--videos-per-class", type=int, default=80,
                   help="training videos per class (default 80)")
    p.add_argument("--val-per-class", type=int, default=None,
                   help="validation videos per class (default: a quarter of --videos-per-class)")
    p.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels, even (default 64)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the videos' motions, colours and noise (default 0)")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: up to 4)")
    p.add_argument("--longtail", type=float, default=None, metavar="ALPHA",
                   help="long-tailed training set: class c gets round(V * (c + 1) ** -ALPHA) "
                        "videos (V: --videos-per-class, the head class), validation stays "
                        "balanced; e.g. 1.0")
    p.add_argument("--multilabel", action="store_true",
                   help="two motions at once in every clip, labelled with both classes "
                        "(train.csv / val.csv: path,labels); with --longtail the class "
                        "frequencies follow the power law")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tanet.data.synthetic import generate

    with tqdm(total=None, desc="synth", unit="pair", disable=args.quiet, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if args.longtail is not None or args.multilabel:
            from tanet.data.synthetic_longtail import generate_longtail

            s = generate_longtail(
                args.out, classes=args.classes, head=args.videos_per_class,
                alpha=args.longtail or 0.0, frames=args.frames, size=args.size, seed=args.seed,
                val_per_class=args.val_per_class or max(4, args.videos_per_class // 4),
                multilabel=args.multilabel, workers=args.workers, progress=progress)
        else:
            s = generate(args.out, classes=args.classes, videos_per_class=args.videos_per_class,
                         val_per_class=args.val_per_class, frames=args.frames, size=args.size,
                         seed=args.seed, workers=args.workers, progress=progress)
    state = "already complete, kept" if s["reused"] else f"written in {s['seconds']:.1f} s"
    print(f"{s['out_dir']}: {s['train_videos']} train + {s['val_videos']} val videos, "
          f"{len(s['classes'])} classes ({state}); lists {s['train_list']}, {s['val_list']}")
    if "train_counts" in s:
        print("training videos per class: " + ", ".join(
            f"{n} {c}" for n, c in zip(s["classes"], s["train_counts"])))
    return 0


COMMANDS = [_add_synth, _add_train, _add_test, _add_demo]
