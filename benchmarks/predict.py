"""ms per video of ``tanet predict`` on TANet-R50 8f, 1x1 view: PyTorch eager vs ONNX Runtime vs
bf16 autocast, in one run on one video.

Builds a random-init tanet_r50 (400 classes, T=8; head std 0.02 instead of 0.001 so that the
probabilities are not all ~1/400), saves it as a tanet checkpoint, exports it to
ONNX (parity-checked), writes a 10 s 340x256 25 fps H.264 video, then times
``Predictor.predict(video)`` (decode 8 frames + resize/crop/normalise + model + softmax + top-5)
for each backend, interleaved round after round (median). The decode+transform share is timed
separately with ``Predictor.load_views``.
Usage: python benchmarks/predict.py [--rounds 5] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved  # noqa: E402


def make_video(path: Path, *, seconds: float = 10, fps: int = 25, w: int = 340, h: int = 256) -> Path:
    """A moving gradient with a bouncing square: real motion, cheap to generate."""
    from tanet.data.encode import write_video

    n = int(seconds * fps)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (xx + 3 * i) % 256
        frames[i, ..., 1] = (yy + 2 * i) % 256
        frames[i, ..., 2] = 128
        x0, y0 = (5 * i) % (w - 40), (3 * i) % (h - 40)
        frames[i, y0:y0 + 40, x0:x0 + 40] = 255
    return write_video(path, frames, fps=fps, crf=18)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch/ORT threads (default: all)")
    args = ap.parse_args()

    import tanet
    from tanet.apps.export import export_onnx
    from tanet.models.checkpoint import save_model
    from tanet.apps.predict import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = tanet.create_model("tanet_r50", num_classes=400, num_segments=8)
        with torch.no_grad():  # a head with a spread of scores, so probability gaps show
            model.fc.weight.normal_(0, 0.02)
        ckpt = save_model(tmp / "tanet_r50_8f.safetensors", model)
        video = make_video(tmp / "video.mp4")
        t0 = time.perf_counter()
        rep = export_onnx(model.eval(), tmp / "tanet_r50_8f.onnx")
        export_s = time.perf_counter() - t0

        eager = Predictor(ckpt, views="1x1")
        onnx = Predictor(rep["path"], views="1x1", threads=threads)
        bf16 = Predictor(ckpt, views="1x1", amp="bf16")
        preds = {name: p.predict(video) for name, p in
                 (("eager", eager), ("onnx", onnx), ("bf16", bf16))}
        times = interleaved({
            "decode+transform": lambda: eager.load_views(video),
            "PyTorch eager (fp32)": lambda: eager.predict(video),
            "ONNX Runtime (fp32)": lambda: onnx.predict(video),
            "PyTorch bf16 autocast": lambda: bf16.predict(video),
        }, rounds=args.rounds, warmup=1)

    base = times["PyTorch eager (fp32)"]
    ref = preds["eager"].probs
    print(f"tanet predict, TANet-R50 8f, 400 classes, 1x1 view (8 frames x 224 px), "
          f"10 s 340x256 H.264 video; torch {torch.__version__}, {threads} threads, "
          f"median of {args.rounds} interleaved rounds")
    print(f"ONNX export {export_s:.1f} s; ONNX Runtime vs PyTorch logits on a random batch: "
          f"max |diff| {rep['max_abs_diff']:.2e}\n")
    header = f"{'backend':<24}{'ms / video':>12}{'vs eager':>10}{'max |dprob|':>13}{'same top-5':>12}"
    print(header)
    print("-" * len(header))
    print(f"{'decode+transform only':<24}{1000 * times['decode+transform']:>12.1f}"
          f"{times['decode+transform'] / base:>10.2f}{'':>13}{'':>12}")
    for label, key in (("PyTorch eager (fp32)", "eager"), ("ONNX Runtime (fp32)", "onnx"),
                       ("PyTorch bf16 autocast", "bf16")):
        p = preds[key]
        same = [a for a, _ in p.top] == [a for a, _ in preds["eager"].top]
        print(f"{label:<24}{1000 * times[label]:>12.1f}{times[label] / base:>10.2f}"
              f"{np.abs(p.probs - ref).max():>13.2e}{str(same):>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
