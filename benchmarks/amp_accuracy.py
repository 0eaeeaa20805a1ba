"""Is bf16 training as accurate as fp32? The demo's benchmark and the transfer benchmark, 3 seeds
each, ``train.amp=bf16`` vs ``train.amp=off`` through the real ``tanet train`` / ``tanet test``
path; plus bf16 predict against fp32 predict on the fp32-trained models, and whether TAM (its
kernel softmax, or all of it) needs fp32 under bf16 autocast.

* demo: the synthetic benchmark of ``tanet demo`` (6 classes, 1,200 / 240 videos), tanet_tiny
  with the demo's recipe (``synthetic_tanet_tiny``), seeds 0..N-1; each run tested with
  ``tanet test`` in its own precision (``train.amp`` of its config).
* transfer: the set-up of ``benchmarks/transfer.py`` (pre-train on 6 classes, fine-tune on
  move down / up, which only frame order separates), pre-training and fine-tuning both in the
  precision under test; validation top-1 after the fine-tuning's last epoch.
* predict: ``Predictor(amp="bf16")`` vs ``Predictor(amp="off")`` on the demo's 240 validation
  videos (top-1 agreement, largest probability change).
* TAM's softmax: on one batch of validation clips under bf16 autocast, the kernels Theta and the
  logits with G's softmax as autocast runs it (bf16 in, bf16 out), forced to fp32, and with
  all of TAM in fp32, against the fp32 model; and the gradient of one training step, relative
  to fp32's.
Target: bf16 top-1 within 1 point of fp32 (mean over seeds) on both benchmarks.
On a CPU without bf16 instructions (``tanet.precision.native_bf16``), torch runs bf16
convolutions through a generic kernel about 70x slower than fp32 (oneDNN has no bf16 path
there), so the study computes them as bf16 hardware does: on the bf16 operands, products exact
and accumulated in fp32, the result rounded to bf16 (:class:`Bf16ConvViaFp32`; 99.99 % of a
convolution's outputs equal the generic kernel's bit for bit, the rest 1 bf16 ulp apart). Every
other op runs as autocast runs it. ``--no-emulate`` keeps torch's generic kernel.
Every figure goes to ``<out>/results.json`` as it is measured (a rerun reuses finished runs).
Usage: python benchmarks/amp_accuracy.py [--seeds 3] [--out runs/amp_accuracy]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

AMPS = ("off", "bf16")
aten = torch.ops.aten


class Bf16ConvViaFp32(TorchDispatchMode):
    """bf16 convolutions (forward and backward) computed in fp32 on their bf16 operands and
    rounded back to bf16: a bf16 kernel's arithmetic (exact products, fp32 accumulation, a bf16
    result) at fp32 speed, for CPUs that only emulate bf16."""

    OPS = (aten.convolution.default, aten.convolution_backward.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.OPS or not any(isinstance(a, torch.Tensor) and
                                           a.dtype == torch.bfloat16 for a in args):
            return func(*args, **kwargs)
        up = tree_map(lambda a: a.float() if isinstance(a, torch.Tensor) and
                      a.dtype == torch.bfloat16 else a, args)
        return tree_map(lambda o: o.to(torch.bfloat16) if isinstance(o, torch.Tensor) and
                        o.is_floating_point() else o, func(*up, **kwargs))


class _Store:
    """results.json, rewritten after every figure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self.data:
            self.data[key] = fn()
            self.path.write_text(json.dumps(self.data, indent=1))
        return self.data[key]


def _train_test(args: list[str], out: Path) -> dict[str, Any]:
    """``tanet train`` then ``tanet test`` (last checkpoint) with ``--set args``."""
    from tanet.cli import main

    t0 = time.perf_counter()
    assert main(["train", "--config", "synthetic_tanet_tiny", "--quiet", "--set", *args,
                 f"output={out}"]) == 0
    seconds = time.perf_counter() - t0
    assert main(["test", "--checkpoint", str(out / "last.safetensors"), "--quiet", "--out",
                 str(out / "test")]) == 0
    res = json.loads((out / "test" / "results.json").read_text())
    return {"top1": res["top1"], "precision": res["precision"], "train_s": round(seconds, 1),
            "load": os.getloadavg()[0]}


def demo_runs(store: _Store, root: Path, seeds: int) -> Path:
    from tanet.apps.demo import DATA
    from tanet.data import synthetic

    data = root / "demo_data"
    synthetic.generate(data, **DATA)
    common = [f"data.root={data}", f"data.train={data / 'train.txt'}",
              f"data.val={data / 'val.txt'}", f"data.labels={data / 'classes.txt'}"]
    for seed in range(seeds):
        for amp in AMPS:  # interleaved: load hits both alike
            key = f"demo/{amp}/{seed}"
            r = store.get(key, lambda: _train_test(
                common + [f"train.seed={seed}", f"train.amp={amp}"], root / key))
            print(f"demo seed {seed} {amp:4s}: top-1 {100 * r['top1']:.2f} % "
                  f"({r['train_s']:.0f} s, load {r['load']:.1f})", flush=True)
    return data


def transfer_runs(store: _Store, root: Path, seeds: int, epochs: int) -> None:
    from tanet.data.synthetic import generate
    from tanet.testing.transfer import A, B, class_subset, overrides

    data = root / "transfer_data"
    generate(data, classes=10, videos_per_class=60, val_per_class=20, frames=8, size=32, seed=0,
             workers=1)
    class_subset(data, "A", A)
    class_subset(data, "B", B)
    def sets(tag: str, *extra: str) -> list[str]:  # the output is _train_test's
        return [a for a in overrides(data, tag, root, *extra) if not a.startswith("output=")]

    for amp in AMPS:
        pre = root / f"transfer/{amp}/pre"
        store.get(f"transfer/{amp}/pre", lambda: _train_test(
            sets("A", "train.epochs=10", f"train.amp={amp}"), pre))
    for seed in range(seeds):
        for amp in AMPS:
            init = root / f"transfer/{amp}/pre/last.safetensors"
            key = f"transfer/{amp}/{seed}"
            r = store.get(key, lambda: _train_test(
                sets("B", f"train.epochs={epochs}", f"train.seed={seed}", f"train.amp={amp}",
                     f"model.init_from={init}"), root / key))
            print(f"transfer seed {seed} {amp:4s}: top-1 {100 * r['top1']:.2f} % "
                  f"({r['train_s']:.0f} s, load {r['load']:.1f})", flush=True)


def predict_agreement(store: _Store, root: Path, data: Path) -> dict[str, Any]:
    from tanet.apps.predict import Predictor
    from tanet.apps.quantize import calibration_videos, compare

    ckpt = root / "demo/off/0/last.safetensors"
    ref = Predictor(ckpt, amp="off")
    videos, labels = calibration_videos(data / "val.txt", class_names=ref.class_names)
    return store.get("predict", lambda: compare(ref, Predictor(ckpt, amp="bf16"), videos,
                                                labels))


@contextlib.contextmanager
def _fp32_softmax(model: nn.Module) -> Iterator[None]:
    """TAM's G branch with its softmax in fp32 (and its kernel left in fp32)."""

    class Fp32Softmax(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().softmax(-1)

    saved = []
    for m in model.modules():
        if getattr(m, "G", None) is not None and isinstance(m.G[-1], nn.Softmax):
            saved.append((m.G, m.G[-1]))
            m.G[-1] = Fp32Softmax()
    try:
        yield
    finally:
        for g, sm in saved:
            g[-1] = sm


@contextlib.contextmanager
def _fp32_tam() -> Iterator[None]:
    """All of TAM (its L and G branches and the aggregation) in fp32 under autocast."""
    from tanet.models.tam import TAM

    forward = TAM.forward

    def fp32_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return forward(self, x.float())

    TAM.forward = fp32_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        TAM.forward = forward  # type: ignore[method-assign]


def softmax_study(store: _Store, root: Path, data: Path) -> dict[str, Any]:
    """Kernels, logits and one step's gradient under bf16 autocast, TAM's softmax as autocast
    runs it and in fp32, and all of TAM in fp32, against fp32."""
    from tanet.apps.predict import Predictor
    from tanet.data.annotations import read_annotations
    from tanet.models.tam import TAM

    def measure() -> dict[str, Any]:
        ckpt = root / "demo/bf16/0/last.safetensors"
        p = Predictor(ckpt, amp="off")
        model = p.model
        for m in model.modules():  # the recipe trains without dropout (the card keeps 0.5)
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        records, _ = read_annotations(data / "val.txt", root=data, labels=p.class_names)
        picked = records[::10][:24]
        x = torch.cat([p.load_views(data / r.path)[1] for r in picked])  # (24, T, C, s, s)
        y = torch.tensor([r.label for r in picked])
        thetas: dict[str, list[torch.Tensor]] = {}

        def run(tag: str, amp: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            thetas[tag] = []
            hooks = [m.G.register_forward_hook(  # G's output: the kernels (N*C, K)
                lambda mod, inp, out: thetas[tag].append(out.detach().float()))
                for m in model.modules() if isinstance(m, TAM) and m.G is not None]
            model.train()  # the training step: batch statistics, gradients
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            grads = {n: q.grad.detach().clone() for n, q in model.named_parameters()
                     if q.grad is not None}
            for h in hooks:
                h.remove()
            return logits.detach().float(), grads

        ref_logits, ref_grads = run("fp32", False)
        out: dict[str, Any] = {}
        for tag, ctx in (("bf16 softmax", contextlib.nullcontext()),
                         ("fp32 softmax", _fp32_softmax(model)), ("fp32 TAM", _fp32_tam())):
            with ctx:
                logits, grads = run(tag, True)
            dtheta = max((a - b).abs().max().item() for a, b in zip(thetas[tag], thetas["fp32"]))
            num = sum(((grads[n] - g) ** 2).sum() for n, g in ref_grads.items())
            den = sum((g ** 2).sum() for g in ref_grads.values())
            out[tag] = {"max_abs_dtheta": dtheta,
                        "max_abs_dlogit": (logits - ref_logits).abs().max().item(),
                        "top1_agreement": (logits.argmax(1) == ref_logits.argmax(1)).float()
                        .mean().item(), "grad_rel_error": (num / den).sqrt().item()}
        return out

    return store.get("tam_precision", measure)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--transfer-epochs", type=int, default=6)
    ap.add_argument("--out", default="runs/amp_accuracy")
    ap.add_argument("--no-emulate", action="store_true",
                    help="no native bf16: keep torch's generic bf16 convolution (very slow)")
    args = ap.parse_args()
    from tanet.precision import native_bf16

    emulate = not native_bf16("cpu")[0] and not args.no_emulate
    with Bf16ConvViaFp32() if emulate else contextlib.nullcontext():
        return study(args, emulate)


def study(args: argparse.Namespace, emulate: bool) -> int:
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    store = _Store(root / "results.json")
    from tanet.precision import native_bf16

    load0 = os.getloadavg()
    print(f"load average at start {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {native_bf16('cpu')[1]}"
          + ("; bf16 convolutions as bf16 hardware computes them (Bf16ConvViaFp32)"
             if emulate else ""), flush=True)
    data = demo_runs(store, root, args.seeds)
    transfer_runs(store, root, args.seeds, args.transfer_epochs)
    agree = predict_agreement(store, root, data)
    soft = softmax_study(store, root, data)
    print("\nbenchmark  seed  fp32 top-1  bf16 top-1  bf16 - fp32")
    for bench in ("demo", "transfer"):
        diffs = []
        for seed in range(args.seeds):
            a, b = (store.data[f"{bench}/{amp}/{seed}"]["top1"] for amp in AMPS)
            diffs.append(b - a)
            print(f"{bench:9s}  {seed:4d}  {100 * a:9.2f}%  {100 * b:9.2f}%  "
                  f"{100 * (b - a):+10.2f}")
        means = [statistics.mean(store.data[f"{bench}/{amp}/{s}"]["top1"]
                                 for s in range(args.seeds)) for amp in AMPS]
        print(f"{bench:9s}  mean  {100 * means[0]:9.2f}%  {100 * means[1]:9.2f}%  "
              f"{100 * (means[1] - means[0]):+10.2f}  (target: >= -1.00)")
    print(f"\nbf16 predict vs fp32 on {agree['videos']} demo validation videos (seed-0 fp32 "
          f"model): top-1 agreement {100 * agree['agreement']:.2f} %, largest probability "
          f"change {agree['max_abs_dprob']:.2e} (mean {agree['mean_max_abs_dprob']:.2e})")
    print("\nTAM under bf16 autocast as it runs, with its kernel softmax in fp32, and all in "
          "fp32 (24 validation clips, the seed-0 bf16 model), against fp32:")
    for tag, r in soft.items():
        print(f"  {tag}: max |dTheta| {r['max_abs_dtheta']:.2e}, max |dlogit| "
              f"{r['max_abs_dlogit']:.2e}, top-1 agreement {100 * r['top1_agreement']:.1f} %, "
              f"gradient relative error {r['grad_rel_error']:.3e}")
    load1 = os.getloadavg()
    print(f"\nload average at the end {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
