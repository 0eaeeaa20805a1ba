"""Accuracy of int8 (ONNX Runtime) and bf16 (PyTorch) against fp32 on the demo's validation set.

Uses the demo's trained tanet_tiny (``tanet demo`` writes ``runs/demo``; when ``--run`` has no
``tanet/last.safetensors`` the synthetic benchmark is generated and tanet_tiny trained with the
demo's recipe, ~4 min on 2 cores). For each variant, on the 240 validation videos decoded as
``tanet predict`` does: top-1 agreement with fp32, top-1 of both, and the largest change of a
class probability (mean over videos and max). int8 is calibrated on 100 training videos
(``tanet export --int8 --calibrate train.txt --validate val.txt``), once per choice of what
stays float: all of TAM, TAM's kernel generation (softmax/sigmoid branches), nothing.
Usage: python benchmarks/lowp_agreement.py [--run runs/demo]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def trained_run(run: Path) -> Path:
    """``run/tanet/last.safetensors``, training it first (demo data and recipe) if missing."""
    ckpt = run / "tanet" / "last.safetensors"
    if ckpt.is_file():
        return ckpt
    from tanet.apps.demo import DATA
    from tanet.config import load_config
    from tanet.data import synthetic
    from tanet.engine import train

    data = run / "data"
    print(f"no {ckpt}: generating {data} and training tanet_tiny (demo recipe) ...")
    synthetic.generate(data, **DATA)
    cfg = load_config("synthetic_tanet_tiny", [
        f"data.root={data}", f"data.train={data / 'train.txt'}", f"data.val={data / 'val.txt'}",
        f"data.labels={data / 'classes.txt'}", f"output={run / 'tanet'}"])
    train(cfg, quiet=True)
    return ckpt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="the demo's output directory")
    ap.add_argument("--calibrate-count", type=int, default=100)
    args = ap.parse_args()

    from tanet.apps.export import export_onnx
    from tanet.apps.predict import Predictor
    from tanet.apps.quantize import calibration_videos, compare, export_int8
    from tanet.models.factory import load_model

    run = Path(args.run)
    ckpt = trained_run(run)
    data = run / "data"
    model = load_model(ckpt)
    videos, labels = calibration_videos(data / "val.txt", class_names=model.card.class_names)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx")["path"]
        for keep in ("tam", "tam-kernel", "none"):
            t0 = time.perf_counter()
            r = export_int8(model, Path(tmp) / f"{keep}.onnx", calibrate=data / "train.txt",
                            validate=data / "val.txt", limit=args.calibrate_count,
                            keep_float=keep, fp32=fp32, quiet=True)
            rows.append((f"ORT int8, float: {keep}", r, time.perf_counter() - t0))
        t0 = time.perf_counter()
        r = compare(Predictor(ckpt), Predictor(ckpt, amp="bf16"), videos, labels)
        rows.append(("PyTorch bf16 (tanet)", r, time.perf_counter() - t0))
    print(f"{ckpt}: tanet_tiny, {len(videos)} validation videos of the synthetic benchmark, 1x1 "
          f"view; int8 calibrated on {args.calibrate_count} training videos; reference fp32")
    header = (f"{'variant':<26}{'agreement':>11}{'top-1 fp32':>12}{'top-1':>8}{'diff':>8}"
              f"{'mean max|dp|':>14}{'max |dp|':>10}{'time s':>8}")
    print(header)
    print("-" * len(header))
    for label, r, s in rows:
        print(f"{label:<26}{100 * r['agreement']:>10.2f}%{100 * r['top1_fp32']:>11.2f}%"
              f"{100 * r['top1_int8']:>7.2f}%{100 * r['top1_diff']:>+8.2f}"
              f"{r['mean_max_abs_dprob']:>14.2e}{r['max_abs_dprob']:>10.2e}{s:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
