"""Long-tailed and multi-label training on the synthetic temporal benchmark: which sampler and
loss help the rare classes, through the real ``tanet train`` / ``tanet test`` path.

Data (``tanet synth --longtail ALPHA``, 32 px, 8 frames): 6 classes (move right/left, grow/
shrink, appear/disappear) whose training videos follow a power law, class c has
``round(HEAD * (c + 1) ** -ALPHA)`` (default 150 at ALPHA 1.5: 150, 53, 29, 19, 13, 10), a
balanced validation set (20 a class). The rare classes are the third with the fewest training
videos (appear, disappear). tanet_tiny (T=4, 32 px, batch ``--batch-size`` 8, the
``synthetic_tanet_tiny`` recipe otherwise: AdamW, cosine, ``--epochs`` epochs; the recipe's batch
16 makes only ~260 optimiser steps of these 274 videos in 15 epochs and stays near chance) is
trained from scratch for each seed with
  * uniform sampling + CE (the baseline), balanced sampling + CE,
  * uniform sampling + weighted CE (effective-number weights), uniform sampling + focal (gamma 2),
and evaluated once on the validation set: mean class accuracy (= top-1 here, the validation set
being balanced) and the rare classes' accuracy, side by side. The multi-label variant
(``--multilabel``: two motions a clip, the same power law) trains a sigmoid head with BCE under
uniform and balanced sampling and reports mAP and the rare classes' AP.

Prints the figures per seed as they come, then mean and min-max over the seeds, and the load
average (the machine is shared; the figures are accuracies, not times). ``--out`` also gets
``results.json``.
Usage: python benchmarks/longtail.py [--seeds 3] [--epochs 15] [--batch-size 8]
       [--out runs/longtail]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

SINGLE = {"uniform + CE": ["data.sampler=uniform", "train.loss=ce"],
          "balanced + CE": ["data.sampler=balanced", "train.loss=ce"],
          "uniform + weighted CE": ["data.sampler=uniform", "train.loss=weighted_ce"],
          "uniform + focal": ["data.sampler=uniform", "train.loss=focal"]}
MULTI = {"uniform + BCE": ["data.sampler=uniform", "train.loss=bce"],
         "balanced + BCE": ["data.sampler=balanced", "train.loss=bce"]}


def _overrides(data: Path, out: Path, epochs: int, seed: int, lists: tuple[str, str],
               batch: int) -> list[str]:
    return [f"data.root={data}", f"train.batch_size={batch}", f"data.train={data / lists[0]}", f"data.val={data / lists[1]}",
            f"data.labels={data / 'classes.txt'}", "model.num_segments=4", "model.input_size=32",
            "data.short_side=36", "data.scales=[1.0]", f"train.epochs={epochs}",
            f"train.eval_every={epochs}", f"train.seed={seed}", f"output={out}"]


def run_one(data: Path, out: Path, extra: list[str], *, epochs: int, seed: int,
            multilabel: bool, rare: list[int], batch: int = 8) -> dict[str, float]:
    """Train, then test the last checkpoint: the headline metric and the rare classes'."""
    from tanet.config import apply_overrides, load_config
    from tanet.engine import test, train
    from tanet.metrics import average_precision, confusion_matrix, per_class_accuracy

    lists = ("train.csv", "val.csv") if multilabel else ("train.txt", "val.txt")
    cfg = apply_overrides(load_config("synthetic_tanet_tiny"),
                          _overrides(data, out, epochs, seed, lists, batch) + extra
                          ).validate("bench")
    t0 = time.perf_counter()
    train(cfg, quiet=True)
    res = test(out / "last.safetensors", cfg, out=out / "test", quiet=True)
    ev = res["eval"]
    seconds = time.perf_counter() - t0
    if multilabel:
        ap = average_precision(ev.scores, ev.labels)
        return {"mAP": res["mAP"], "rare_AP": float(ap[rare].mean()), "f1": res["f1"],
                "seconds": seconds}
    k = ev.scores.shape[1]
    acc = per_class_accuracy(confusion_matrix(ev.scores.argmax(1), ev.labels, k))
    head = [c for c in range(k) if c not in rare]
    return {"mean_class_acc": res["mean_class_acc"], "rare_acc": float(acc[rare].mean()),
            "head_acc": float(acc[head].mean()), "top1": res["top1"],
            "seconds": seconds}


def _summary(name: str, runs: list[dict[str, float]], keys: list[str]) -> str:
    cells = []
    for k in keys:
        vals = [100 * r[k] for r in runs]
        cells.append(f"{statistics.mean(vals):5.1f} [{min(vals):5.1f}-{max(vals):5.1f}]")
    return f"  {name:24s} " + "  ".join(cells)


def _variant_block(title: str, data: Path, root: Path, variants: dict[str, list[str]],
                   keys: list[str], args, multilabel: bool, rare: list[int]) -> dict:
    print(f"\n{title}", flush=True)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for seed in range(args.seeds):
        for name, extra in variants.items():  # interleaved: the load hits every variant alike
            out = root / f"{'ml' if multilabel else 'lt'}_{name.replace(' ', '')}_{seed}"
            r = run_one(data, out, extra, epochs=args.epochs, seed=seed, multilabel=multilabel,
                        rare=rare, batch=args.batch_size)
            results[name].append(r)
            print(f"  seed {seed} {name:24s} " + "  ".join(f"{k} {100 * r[k]:5.1f}" for k in keys)
                  + f"  ({r['seconds']:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\n  {'':24s} " + "  ".join(f"{k + ' (mean [min-max], %)':>19s}" for k in keys))
    for name, runs in results.items():
        print(_summary(name, runs, keys))
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--head", type=int, default=150, help="training videos of the head class")
    ap.add_argument("--alpha", type=float, default=1.5, help="power-law exponent")
    ap.add_argument("--no-multilabel", action="store_true", help="skip the multi-label variant")
    ap.add_argument("--out", default=None, help="keep the data, runs and results.json here")
    args = ap.parse_args()

    from tanet.data.synthetic_longtail import generate_longtail

    print(f"load average at start: {os.getloadavg()}")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        common = dict(classes=6, head=args.head, alpha=args.alpha, val_per_class=20, frames=8,
                      size=32, seed=0, workers=2)
        lt = generate_longtail(root / "data_lt", **common)
        counts = lt["train_counts"]
        rare = sorted(range(6), key=lambda c: (counts[c], -c))[:2]
        print(f"long tail: training videos per class "
              f"{dict(zip(lt['classes'], counts))}; rare classes: "
              f"{', '.join(lt['classes'][c] for c in rare)}; {args.seeds} seeds x "
              f"{args.epochs} epochs, batch {args.batch_size}, tanet_tiny T=4 32 px")
        report = {"args": vars(args), "counts": counts, "rare": rare,
                  "single": _variant_block(
                      "single-label, validation balanced (20 a class):", root / "data_lt",
                      root, SINGLE, ["mean_class_acc", "rare_acc", "head_acc"], args, False,
                      rare)}
        if not args.no_multilabel:
            ml = generate_longtail(root / "data_ml", multilabel=True, **common)
            mcounts = ml["train_counts"]
            mrare = sorted(range(6), key=lambda c: (mcounts[c], -c))[:2]
            report["multilabel_counts"] = mcounts
            report["multilabel"] = _variant_block(
                f"multi-label (two motions a clip; class counts {mcounts}, rare: "
                f"{', '.join(ml['classes'][c] for c in mrare)}):", root / "data_ml", root, MULTI,
                ["mAP", "rare_AP"], args, True, mrare)
        report["load_end"] = os.getloadavg()
        report["minutes"] = (time.perf_counter() - t_start) / 60
        print(f"\nload average at the end: {report['load_end']}; {report['minutes']:.1f} min")
        if args.out:
            (root / "results.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
