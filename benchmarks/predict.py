"""ms per video of ``tanet predict`` on TANet-R50 8f, 1x1 view: PyTorch eager, ONNX Runtime fp32
and int8, bf16, torch.compile, in one run on one video.

Builds a random-init tanet_r50 (400 classes, T=8; head std 0.02 instead of 0.001 so that the
probabilities are not all ~1/400), saves it as a tanet checkpoint, exports it to
ONNX (parity-checked) and to int8 ONNX three ways (what stays float: all of TAM, TAM's kernel
generation, nothing; calibrated on 4 videos of the same kind), writes a 10 s 340x256 25 fps H.264
video, then times ``Predictor.predict(video)`` (decode 8 frames + resize/crop/normalise + model +
softmax + top-5) for each backend, interleaved round after round (median). The decode+transform
share is timed separately with ``Predictor.load_views``. ``bf16 (tanet)`` is ``--amp bf16``: a
bf16 copy of the model with BN folded, channels-last; ``bf16 autocast`` the plain model under
``torch.autocast``; ``compiled`` is ``--compile`` (Inductor, freezing).
Accuracy of int8/bf16 on a trained model: benchmarks/lowp_agreement.py.
Folder section (``--sections folder``): videos/s of ``tanet predict DIR`` on ``--videos`` videos,
the pipeline (``tanet.apps.pipeline``: decode workers ahead of the model; also batched across
videos, ``--max-batch 8``) vs today's loop (``Predictor.predict_many``), for PyTorch fp32, ORT
int8 (tam-kernel float) and the default precision where it is not fp32, on 340x256 videos
(Kinetics' size) and 720p ones (a phone's), with the decode share measured; the answers are
checked equal (by default bit for bit).
Usage: python benchmarks/predict.py [--rounds 5] [--threads N] [--no-compile]
       [--sections single,folder] [--videos 16]
       [--folder-sizes 340x256,1280x720]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tanet.testing.timing import interleaved


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


def section_single(args, tmp: Path, model, ckpt: Path, video: Path, threads: int) -> None:
    """ms per video of every backend on one video (the table of the Faster inference section)."""
    from tanet.apps.export import export_onnx
    from tanet.apps.predict import Predictor
    from tanet.apps.quantize import export_int8

    t0 = time.perf_counter()
    rep = export_onnx(model.eval(), tmp / "tanet_r50_8f.onnx")
    export_s = time.perf_counter() - t0
    int8 = {}
    for keep in ("tam", "tam-kernel", "none"):
        t0 = time.perf_counter()
        r = export_int8(model, tmp / f"int8_{keep}.onnx", calibrate=tmp / "calib", quiet=True,
                        keep_float=keep, fp32=rep["path"])
        int8[keep] = (r["path"], time.perf_counter() - t0)
    autocast = Predictor(ckpt, amp="off")  # the plain model under torch.autocast: old bf16 path
    autocast.backend.amp = torch.bfloat16
    rows = [("PyTorch eager (fp32)", Predictor(ckpt, amp="off")),
            ("ONNX Runtime (fp32)", Predictor(rep["path"], threads=threads)),
            *((f"ORT int8, float: {k}", Predictor(p, threads=threads))
              for k, (p, _) in int8.items()),
            ("PyTorch bf16 (tanet)", Predictor(ckpt, amp="bf16")),
            ("PyTorch bf16 autocast", autocast)]
    compile_s = {}
    if not args.no_compile:
        for label, amp in (("compiled fp32", "off"), ("compiled bf16", "bf16")):
            p = Predictor(ckpt, compile=True, amp=amp)
            t0 = time.perf_counter()
            p.predict(video)  # compiles
            compile_s[label] = time.perf_counter() - t0
            rows.append((f"PyTorch {label}", p))
    preds = {label: p.predict(video) for label, p in rows}
    eager = rows[0][1]
    times = interleaved({"decode+transform": lambda: eager.load_views(video),
                         **{label: (lambda p=p: p.predict(video)) for label, p in rows}},
                        rounds=args.rounds, warmup=1)
    base, ort_base = times["PyTorch eager (fp32)"], times["ONNX Runtime (fp32)"]
    ref = preds["PyTorch eager (fp32)"]
    print(f"tanet predict, TANet-R50 8f, 400 classes, 1x1 view (8 frames x 224 px), "
          f"10 s 340x256 H.264 video; torch {torch.__version__}, {threads} threads, "
          f"median of {args.rounds} interleaved rounds")
    print(f"ONNX export {export_s:.1f} s; ONNX Runtime vs PyTorch logits on a random batch: "
          f"max |diff| {rep['max_abs_diff']:.2e}; int8 export (4 calibration videos) "
          + ", ".join(f"{k} {s:.0f} s" for k, (_, s) in int8.items())
          + "".join(f"; {k}: first video (compile) {s:.0f} s" for k, s in compile_s.items()) + "\n")
    header = (f"{'backend':<26}{'ms / video':>12}{'vs eager':>10}{'vs ORT':>8}"
              f"{'max |dprob|':>13}{'same top-5':>12}")
    print(header)
    print("-" * len(header))
    d = times["decode+transform"]
    print(f"{'decode+transform only':<26}{1000 * d:>12.1f}{d / base:>10.2f}{d / ort_base:>8.2f}")
    for label, _ in rows:
        p, t = preds[label], times[label]
        same = [a for a, _ in p.top] == [a for a, _ in ref.top]
        print(f"{label:<26}{1000 * t:>12.1f}{t / base:>10.2f}{t / ort_base:>8.2f}"
              f"{np.abs(p.probs - ref.probs).max():>13.2e}{str(same):>12}")


def section_folder(args, tmp: Path, model, ckpt: Path, threads: int) -> None:
    """videos/s of ``tanet predict DIR``: the pipeline (decode workers ahead of the model; by
    default one video per model call on a CPU, and batched across videos with ``--max-batch``)
    vs today's loop (``Predictor.predict_many``), per backend and per video size."""
    from tanet.apps.export import export_onnx
    from tanet.apps.pipeline import default_workers, predict_pipelined
    from tanet.apps.predict import Predictor
    from tanet.apps.quantize import export_int8
    from tanet.precision import resolve_amp

    fp32 = export_onnx(model.eval(), tmp / "folder_fp32.onnx")["path"]
    int8 = export_int8(model, tmp / "folder_int8.onnx", calibrate=tmp / "calib", quiet=True,
                       fp32=fp32)["path"]
    auto = resolve_amp("auto")
    backends = {"PyTorch fp32": Predictor(ckpt, amp="off"),
                "ORT int8": Predictor(int8, threads=threads)}
    if auto.amp != "off":
        backends[f"PyTorch default ({auto.name})"] = Predictor(ckpt)
    default = f"PyTorch default ({auto.name})" if auto.amp != "off" else "PyTorch fp32"
    print(f"tanet predict DIR: {args.videos} videos a size (4-8 s, 25 fps, H.264, x264's "
          f"keyframe interval), TANet-R50 8f 1x1; {threads} torch/ORT threads; pipeline: 1 "
          f"decode worker (the default here: {default_workers('cpu')}); median of "
          f"{args.rounds} interleaved rounds; "
          f"{auto.describe('--amp')}")
    for size in args.folder_sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        paths = [str(make_video(tmp / size / f"v{i:02d}.mp4", seconds=4 + i % 5, w=w, h=h))
                 for i in range(args.videos)]
        decode = backends["PyTorch fp32"]
        t0 = time.perf_counter()
        for path in paths:
            decode.load_views(path)
        share = (time.perf_counter() - t0) / len(paths)
        fns = {}
        for label, p in backends.items():
            fns[f"{label}, loop"] = lambda p=p: list(p.predict_many(paths))
            fns[f"{label}, pipeline"] = lambda p=p: list(predict_pipelined(p, paths, workers=1))
            if not args.no_batch_column:
                fns[f"{label}, pipeline, --max-batch 8"] = \
                    lambda p=p: list(predict_pipelined(p, paths, workers=1, max_batch=8))
        for label, p in backends.items():  # same answers (default: bit for bit)
            a, b = list(p.predict_many(paths)), list(predict_pipelined(p, paths, workers=1))
            exact = all(np.array_equal(x.probs, y.probs) for x, y in zip(a, b))
            print(f"  {size}: {label}: pipeline == loop bit for bit: {exact}; same top-1: "
                  f"{all(x.top[0][0] == y.top[0][0] for x, y in zip(a, b))}")
        times = interleaved(fns, rounds=args.rounds, warmup=1)
        print(f"\n{size}: decode + transform {1000 * share:.0f} ms a video (one process)")
        for label in backends:
            loop = times[f"{label}, loop"]
            for k in [k for k in times if k.startswith(label + ",")]:
                print(f"  {k:<44}{len(paths) / times[k]:8.2f} videos/s  {loop / times[k]:6.2f}x "
                      "loop")
        now = "pipeline" if default_workers("cpu") else "loop"
        print(f"  {size}: the default now ({default}, {now}) vs the old default (PyTorch fp32, "
              f"loop): {times['PyTorch fp32, loop'] / times[f'{default}, {now}']:.2f}x; the "
              f"pipeline (1 worker) vs the loop, {default}: "
              f"{times[f'{default}, loop'] / times[f'{default}, pipeline']:.2f}x (target >= 1.3)"
              "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch/ORT threads (default: all)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    ap.add_argument("--sections", default="single,folder", help="single,folder")
    ap.add_argument("--videos", type=int, default=16, help="videos a size, folder section")
    ap.add_argument("--folder-sizes", default="340x256,1280x720",
                    help="video sizes of the folder section (Kinetics' 340x256; a phone's 720p)")
    ap.add_argument("--no-batch-column", action="store_true",
                    help="folder section: skip the pipeline batched across videos")
    args = ap.parse_args()

    import tanet
    from tanet.models.checkpoint import save_model

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = tanet.create_model("tanet_r50", num_classes=400, num_segments=8)
        with torch.no_grad():  # a head with a spread of scores, so probability gaps show
            model.fc.weight.normal_(0, 0.02)
        ckpt = save_model(tmp / "tanet_r50_8f.safetensors", model)
        video = make_video(tmp / "video.mp4")
        for i in range(4):  # calibration clips for int8: the same kind of motion, other phases
            make_video(tmp / "calib" / f"c{i}.mp4", seconds=2 + i)
        if "single" in args.sections:
            section_single(args, tmp, model, ckpt, video, threads)
        if "folder" in args.sections:
            print()
            section_folder(args, tmp, model, ckpt, threads)
    print(f"\nload average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
