"""Transfer learning on the synthetic temporal benchmark: fine-tuning from a checkpoint trained
on other classes vs training from scratch, through the real ``tanet train`` path.

Data (``tanet.data.synthetic.generate``, 32 px, 8 frames, 60 training and 20 validation videos
per class): classes A = move right/left, grow/shrink, appear/disappear (6 classes) and B = move
down/up (2 classes: one clip played forwards or backwards, so only frame order separates them).
tanet_tiny (T=4, 32 px, the ``synthetic_tanet_tiny`` recipe otherwise) is pre-trained on A for
``--pretrain-epochs``; then, on B, for each seed:
  * finetune: ``model.init_from=<A checkpoint>`` (classifier re-initialised for 2 classes),
  * probe: the same with ``train.freeze_backbone=true`` (linear probe), and
  * scratch: the same recipe from a random initialisation,
each run for 1 epoch and for ``--epochs`` epochs (scratch: ``--scratch-epochs``; validation
after every epoch; cosine schedule over the run). Prints validation top-1 (median over seeds, min-max) and the first epoch at which
each longer run reaches the 1-epoch fine-tuned accuracy. tests/test_transfer_synthetic.py runs
the seed-0 fine-tune and a 3-epoch scratch run of the same set-up.
Usage: python benchmarks/transfer.py [--seeds 3] [--epochs 6] [--scratch-epochs 20]
       [--pretrain-epochs 10]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tanet.testing.transfer import A, B, class_subset, overrides


def run(args: list[str]) -> tuple[list[float], float]:
    """``tanet train --config synthetic_tanet_tiny --set ARGS``: val top-1 per epoch, seconds."""
    from tanet.cli import main
    from tanet.engine import read_metrics

    out = Path(next(a for a in args if a.startswith("output=")).split("=", 1)[1])
    t0 = time.perf_counter()
    assert main(["train", "--config", "synthetic_tanet_tiny", "--quiet", "--set", *args]) == 0
    seconds = time.perf_counter() - t0
    rows = read_metrics(out / "metrics.jsonl")
    return [r["val_top1"] for r in rows], seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--scratch-epochs", type=int, default=20)
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    args = ap.parse_args()

    from tanet.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        generate(data, classes=10, videos_per_class=60, val_per_class=20, frames=8, size=32,
                 seed=0, workers=1)
        class_subset(data, "A", A)
        class_subset(data, "B", B)
        pre, sec = run(overrides(data, "A", root / "pre", f"train.epochs={args.pretrain_epochs}"))
        print(f"pre-training on A ({len(A)} classes): val top-1 per epoch "
              f"{' '.join(f'{v:.3f}' for v in pre)} ({sec:.0f} s)")
        init = f"model.init_from={root / 'pre' / 'last.safetensors'}"
        kinds = {"finetune": [init], "probe": [init, "train.freeze_backbone=true"], "scratch": []}
        one: dict[str, list[float]] = {k: [] for k in kinds}
        curves: dict[str, list[list[float]]] = {k: [] for k in kinds}
        for seed in range(args.seeds):
            for kind, extra in kinds.items():  # interleaved: load hits every kind alike
                longer = args.scratch_epochs if kind == "scratch" else args.epochs
                for epochs, store in ((1, None), (longer, curves[kind])):
                    top1, sec = run(overrides(data, "B", root / kind, f"train.epochs={epochs}",
                                              f"train.seed={seed}", *extra))
                    if store is None:
                        one[kind].append(top1[0])
                    else:
                        store.append(top1)
                    print(f"  seed {seed} {kind:8s} {epochs} epoch(s): "
                          f"{' '.join(f'{v:.3f}' for v in top1)} ({sec:.0f} s)", flush=True)
        target = statistics.median(one["finetune"])
        print(f"\nB ({len(B)} classes, {args.seeds} seeds): val top-1, median [min-max]; "
              f"target = the 1-epoch fine-tuned median {target:.3f}")
        for kind in kinds:
            vals = one[kind]
            print(f"  {kind:8s} 1-epoch run: {statistics.median(vals):.3f} "
                  f"[{min(vals):.3f}-{max(vals):.3f}]")
        for kind, runs in curves.items():
            cells, reach = [], None
            for e in range(len(runs[0])):
                vals = [r[e] for r in runs]
                med = statistics.median(vals)
                if reach is None and med >= target:
                    reach = e + 1
                cells.append(f"{med:.3f} [{min(vals):.3f}-{max(vals):.3f}]")
            when = f"epoch {reach}" if reach else f"not within {len(runs[0])} epochs"
            print(f"  {kind:8s} {len(runs[0])}-epoch run, after each epoch: " + "  ".join(cells)
                  + f"  -> reaches the target: {when}")


if __name__ == "__main__":
    main()
