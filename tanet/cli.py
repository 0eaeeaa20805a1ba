"""``tanet <command>``: the only module that parses command-line arguments.

Each command is a pair ``_add_<name>(sub)`` (registers its parser, sets ``func``) and
``_cmd_<name>(args) -> int``. Heavy imports happen inside the command functions so that
``tanet --help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and FLOPs of a model, TAM share, ratio to TSN",
                       description="Count parameters and multiply-accumulates (GMACs) of one clip, "
                                   "with the TAM share, and compare with the TSN baseline.")
    p.add_argument("model", help="registered model name (see `tanet models`), e.g. tanet_r50")
    p.add_argument("--frames", type=int, default=None, help="frames per clip T (default: model's)")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (default: model's)")
    p.add_argument("--num-classes", type=int, default=400)
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from tanet.models import create_model, list_models, model_defaults
    from tanet.models.cost import model_cost

    defaults = model_defaults(args.model)
    frames = args.frames or defaults["num_segments"]
    size = args.size or defaults["input_size"][-1]
    model = create_model(args.model, num_classes=args.num_classes, num_segments=frames)
    cost = model_cost(model, frames=frames, size=size)
    rows = [(args.model, cost)]
    base_name = "tsn_" + args.model.split("_", 1)[1]
    if base_name != args.model and base_name in list_models():
        base = create_model(base_name, num_classes=args.num_classes, num_segments=frames)
        rows.append((base_name, model_cost(base, frames=frames, size=size)))
    print(f"input: 1 clip x {frames} frames x 3 x {size} x {size}, {args.num_classes} classes\n")
    header = f"{'model':<14}{'params (M)':>12}{'TAM params (M)':>16}{'GMACs':>10}{'TAM GMACs':>11}"
    print(header)
    print("-" * len(header))
    for name, c in rows:
        print(f"{name:<14}{c.params / 1e6:>12.2f}{c.tam_params / 1e6:>16.3f}{c.gmacs:>10.2f}"
              f"{c.tam_macs / 1e9:>11.3f}")
    if len(rows) == 2:
        a, b = rows[0][1], rows[1][1]
        print(f"\nratio {rows[0][0]} / {rows[1][0]}: params {a.params / b.params:.4f}, "
              f"MACs {a.macs / b.macs:.4f}")
    if cost.tam_params:
        print(f"TAM share: {100 * cost.tam_params / cost.params:.2f} % of parameters, "
              f"{100 * cost.tam_macs / cost.macs:.3f} % of MACs")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. 'tanet_*'")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from tanet.models import list_models, model_defaults

    for name in list_models(args.pattern):
        d = model_defaults(name)
        print(f"{name:<14} frames={d['num_segments']:<3} input={d['input_size'][-1]}px")
    return 0


def _add_recipes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the training recipes shipped with tanet",
                       description="Recipe names for `--config NAME`; --show NAME prints one.")
    p.add_argument("--show", metavar="NAME", default=None, help="print this recipe's YAML")
    p.set_defaults(func=_cmd_recipes)


def _cmd_recipes(args: argparse.Namespace) -> int:
    from tanet.config import find_config, list_recipes

    if args.show:
        print(find_config(args.show).read_text(encoding="utf-8"), end="")
        return 0
    for name in list_recipes():
        first = find_config(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        print(f"{name:<30} {first}")
    return 0


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
        best = summary.get("best_top1")
        print(f"done: {summary['output']}" + (f" (best val top-1 {best:.4f})" if best is not None else ""))
    return 0


def _add_test(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="evaluate a checkpoint with multi-view testing",
                       description="Top-1/top-5/mean class accuracy over clips x crops views; "
                                   "writes results.json, predictions.csv and confusion.png.")
    p.add_argument("--checkpoint", required=True, help="a tanet .safetensors checkpoint")
    p.add_argument("--config", default=None,
                   help="YAML file or recipe name (default: the config stored in the checkpoint)")
    _add_overrides(p, "data.val=val.txt test.workers=2")
    p.add_argument("--views", default=None, metavar="CLIPSxCROPS",
                   help="views per video, e.g. 10x3 (default: data.test_clips x data.test_crops)")
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint dir>/test)")
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
    if "out" in r:
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


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import the authors' or mmaction2's TANet checkpoint",
                       description="Convert a published checkpoint (the authors' "
                                   "liu-zhy/temporal-adaptive-module .pth.tar or mmaction2's .pth) "
                                   "to tanet's .safetensors with a model card. Architecture, "
                                   "classes and frames are read from the weights.")
    p.add_argument("src", help="source checkpoint (.pth / .pth.tar / .safetensors)")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--from", dest="source", default="auto",
                   choices=("auto", "official", "mmaction2", "tanet"), help="source layout")
    p.add_argument("--model", default=None,
                   help="expected model name (checked against the weights), e.g. tanet_r50")
    p.add_argument("--labels", default=None, help="class names, one per line, stored in the card")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from tanet.models.checkpoint import read_metadata
    from tanet.io import read_class_names
    from tanet.models.factory import convert_checkpoint

    names = read_class_names(args.labels) if args.labels else None
    out = convert_checkpoint(args.src, args.dst, source=args.source, name=args.model,
                             class_names=names)
    card = read_metadata(out)["card"]
    print(f"{args.src} -> {out}: {card['name']}, {card['num_classes']} classes, "
          f"T={card['num_segments']}, mean={card['mean']}, std={card['std']}"
          + (", class names stored" if card.get("class_names") else ", no class names (--labels)"))
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX or a torch.export program",
                       description="Export for deployment: input clips (N, T, C, H, W) with a "
                                   "dynamic batch axis N and the checkpoint's fixed T and size; "
                                   "output logits. ONNX is checked against PyTorch on ONNX Runtime.")
    p.add_argument("out", help="output file (.onnx or .pt2)")
    p.add_argument("--checkpoint", required=True, help="a tanet .safetensors checkpoint")
    p.add_argument("--format", default="onnx", choices=("onnx", "torch-export"))
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from tanet.apps.export import export_onnx, export_program
    from tanet.models.factory import load_model

    model = load_model(args.checkpoint)
    if args.format == "onnx":
        r = export_onnx(model, args.out, opset=args.opset, verify=not args.no_verify)
        check = "" if r["max_abs_diff"] is None else \
            f"; ONNX Runtime vs PyTorch max |diff| {r['max_abs_diff']:.2e}"
        print(f"wrote {r['path']} (opset {r['opset']}{check})")
    else:
        print(f"wrote {export_program(model, args.out)} (torch.export; load with "
              "tanet.apps.export.load_program)")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: up to 4)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tanet.data.synthetic import generate

    with tqdm(total=None, desc="synth", unit="pair", disable=args.quiet, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        s = generate(args.out, classes=args.classes, videos_per_class=args.videos_per_class,
                     val_per_class=args.val_per_class, frames=args.frames, size=args.size,
                     seed=args.seed, workers=args.workers, progress=progress)
    state = "already complete, kept" if s["reused"] else f"written in {s['seconds']:.1f} s"
    print(f"{s['out_dir']}: {s['train_videos']} train + {s['val_videos']} val videos, "
          f"{len(s['classes'])} classes ({state}); lists {s['train_list']}, {s['val_list']}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify a video or every video in a directory",
                       description="Top-k classes per video from a checkpoint alone (its model "
                                   "card gives frames, size, mean/std and class names).")
    p.add_argument("input", help="a video file or a directory (walked recursively)")
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
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from tanet.apps.predict import Predictor, find_videos, write_timeline

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


# Registration order is the order in `tanet --help`.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_info,
    _add_models,
    _add_recipes,
    _add_synth,
    _add_train,
    _add_test,
    _add_demo,
    _add_convert,
    _add_export,
    _add_predict,
    _add_visualize,
]


def _common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="no progress bars or per-epoch lines")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks instead of one-line errors")


def build_parser() -> argparse.ArgumentParser:
    from tanet import __version__

    parser = argparse.ArgumentParser(
        prog="tanet", description="Video recognition with TAM / TANet (and TSN / TSM baselines).")
    parser.add_argument("--version", action="version", version=f"tanet {__version__}")
    _common_options(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)  # `tanet --quiet CMD` and `tanet CMD --quiet`
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common], **k)  # type: ignore
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(e, "exit_code", None) is not None:  # engine.TrainingInterrupted: saved
            print(f"interrupted: {e}", file=sys.stderr)
            return int(e.exit_code)  # type: ignore[attr-defined]
        if not isinstance(e, (KeyError, ValueError, FileNotFoundError, RuntimeError,
                              FloatingPointError)):  # FloatingPointError: NonFiniteLossError
            raise
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
