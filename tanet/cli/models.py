"""Commands about models: info, models, recipes, convert, export."""
from __future__ import annotations

import argparse


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and FLOPs of a model, TAM share, ratio to TSN",
                       description="Count parameters and multiply-accumulates (GMACs) of one clip, "
                                   "with the TAM share, and compare with the TSN baseline.")
    p.add_argument("model", help="registered model name (see `tanet models`), e.g. tanet_r50")
    p.add_argument("--frames", type=int, default=None, help="frames per clip T (default: model's)")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (default: model's)")
    p.add_argument("--num-classes", type=int, default=400,
                   help="classes of the head whose cost is counted (default 400, Kinetics-400)")
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
    p = sub.add_parser("models", help="list registered models (--pretrained: published weights)",
                       description="Registered architectures, or with --pretrained the published "
                                   "weights usable by name wherever a checkpoint goes (--checkpoint "
                                   "tanet_r50.k400): reported accuracy, test views, release, and "
                                   "whether they are in the cache. One exact name prints its entry.")
    p.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. 'tanet_*'")
    p.add_argument("--pretrained", action="store_true", help="list the published weights")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from tanet.models import list_models, model_defaults

    if args.pretrained:
        return _print_weights(args.pattern)
    for name in list_models(args.pattern):
        d = model_defaults(name)
        print(f"{name:<14} frames={d['num_segments']:<3} input={d['input_size'][-1]}px")
    return 0


def _print_weights(pattern: str) -> int:
    """The weights table, or one entry in full when ``pattern`` is its exact name."""
    from tanet.models import hub
    from tanet.models.download import cache_dir

    entries = hub.list_weights(pattern)
    if not entries:
        raise KeyError(f"no published weights match {pattern!r} (try `tanet models --pretrained`)")
    if len(entries) == 1 and pattern in (entries[0].name, entries[0].full_name):
        w = entries[0]
        for key in ("name", "full_name", "release", "model", "layout", "dataset", "num_classes",
                    "frames", "top1", "top5", "views", "protocol", "classes", "url", "sha256",
                    "notes"):
            print(f"{key + ':':<13}{getattr(w, key)}")
        print(f"{'cache:':<13}{cache_dir() / w.file} ({hub.cache_state(w) or 'not downloaded'})")
        return 0
    header = (f"{'name':<24}{'model':<11}{'T':>3}  {'dataset':<12}{'top-1':>6}{'top-5':>7}  "
              f"{'views':<7}{'release':<15}cache")
    print(header)
    print("-" * (len(header) + 6))
    for w in entries:
        print(f"{w.name:<24}{w.model:<11}{w.frames or '-':>3}  {w.dataset:<12}"
              f"{w.top1:>6.2f}{w.top5:>7.2f}  {w.views:<7}{w.release:<15}{hub.cache_state(w)}")
    print(f"\naccuracy: the publisher's, with views = clips x crops; cache: {cache_dir()}")
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


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import the authors' or mmaction2's TANet checkpoint",
                       description="Convert a published checkpoint (the authors' "
                                   "liu-zhy/temporal-adaptive-module .pth.tar or mmaction2's .pth) "
                                   "to tanet's .safetensors with a model card. Architecture, "
                                   "classes and frames are read from the weights.")
    p.add_argument("src", help="source checkpoint (.pth / .pth.tar / .safetensors), a weights "
                               "name (`tanet models --pretrained`) or an http(s) URL")
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
    p.add_argument("--checkpoint", required=True,
                   help="a tanet .safetensors checkpoint, a published .pth, a weights name "
                        "(e.g. tanet_r50.k400) or an http(s) URL")
    p.add_argument("--format", default="onnx", choices=("onnx", "torch-export"),
                   help="onnx (default; ONNX Runtime, parity-checked) or torch-export (a "
                        "torch.export program, .pt2)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    q = p.add_argument_group("int8 (ONNX Runtime static quantisation, QDQ, per-channel weights)")
    q.add_argument("--int8", action="store_true", help="write an int8 ONNX model (needs --calibrate)")
    q.add_argument("--calibrate", metavar="LIST_OR_DIR", default=None,
                   help="calibration videos: an annotation list, a list of paths, a (class-per-"
                        "folder) directory or - (a list on standard input)")
    q.add_argument("--validate", metavar="LIST_OR_DIR", default=None,
                   help="videos for the fp32/int8 comparison (default: the --calibrate videos)")
    q.add_argument("--root", default=None, help="folder that relative paths in the lists start "
                                                 "from (default: each list's folder)")
    q.add_argument("--calibrate-count", type=int, default=100, metavar="N",
                   help="calibrate on at most N videos spread over the list (default 100)")
    q.add_argument("--keep-float", default="tam-kernel", choices=("tam-kernel", "tam", "none"),
                   help="what stays float: TAM's kernel generation (default), all of TAM, nothing")
    q.add_argument("--calibration-method", default="minmax",
                   choices=("minmax", "percentile", "entropy"),
                   help="how ONNX Runtime picks int8 ranges from the calibration videos "
                        "(default minmax)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from tanet.apps.export import export_onnx, export_program
    from tanet.models.factory import load_model

    model = load_model(args.checkpoint)
    if args.int8:
        return _export_int8(model, args)
    if args.format == "onnx":
        r = export_onnx(model, args.out, opset=args.opset, verify=not args.no_verify)
        check = "" if r["max_abs_diff"] is None else \
            f"; ONNX Runtime vs PyTorch max |diff| {r['max_abs_diff']:.2e}"
        print(f"wrote {r['path']} (opset {r['opset']}{check})")
    else:
        print(f"wrote {export_program(model, args.out)} (torch.export; load with "
              "tanet.apps.export.load_program)")
    return 0


def _export_int8(model, args: argparse.Namespace) -> int:
    from tanet.apps.quantize import export_int8

    if args.format != "onnx" or not args.calibrate:
        raise ValueError("tanet export --int8 writes ONNX and needs --calibrate LIST_OR_DIR "
                         "(videos to calibrate the activation ranges on)")
    r = export_int8(model, args.out, calibrate=args.calibrate, validate=args.validate,
                    root=args.root, limit=args.calibrate_count, keep_float=args.keep_float,
                    method=args.calibration_method, quiet=args.quiet)
    print(f"wrote {r['path']} (int8 QDQ, calibrated on {r['calibration_videos']} videos, "
          f"float: {r['keep_float']})")
    line = (f"validation, {r['videos']} videos: top-1 agreement with fp32 "
            f"{100 * r['agreement']:.2f} %, max |dprob| {r['max_abs_dprob']:.2e}")
    if "top1_fp32" in r:
        line += (f"; top-1 fp32 {100 * r['top1_fp32']:.2f} %, int8 {100 * r['top1_int8']:.2f} % "
                 f"({100 * r['top1_diff']:+.2f} points)")
    print(line)
    return 0


COMMANDS = [_add_info, _add_models, _add_recipes, _add_convert, _add_export]
