"""The demo: TANet vs TSN on the synthetic temporal benchmark, end to end on a CPU.

``run_demo(out)`` generates the benchmark under ``<out>/data`` if it is missing, trains
``tanet_tiny`` and ``tsn_tiny`` from scratch with the recipes ``configs/synthetic_*_tiny.yaml``,
tests both on the validation split and writes ``<out>/report.md`` with an accuracy table
(overall, and within the reversal pairs: classes that differ only in temporal order), training
curves, confusion matrices and a picture of TANet's TAM kernels.

The runs use the recipes' precision, ``train.amp: auto`` (:mod:`tanet.precision`: bf16 where
the CPU computes in bf16 natively, else fp32), and say which. Where that is not fp32, both models
are trained in fp32 as well (``<out>/<model>_fp32``) and the table shows their top-1 and train
time beside the default's, so the change of default is visible (for one release).
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tanet.data.synthetic import reversal_pairs
from tanet.precision import Precision, resolve_amp

__all__ = ["run_demo", "reversal_pairs", "pair_accuracy"]

MODELS = (("tanet", "synthetic_tanet_tiny"), ("tsn", "synthetic_tsn_tiny"))  # recipe names


# the benchmark the demo generates (tanet.data.synthetic.generate arguments)
DATA = dict(classes=6, videos_per_class=200, val_per_class=40, frames=16, size=64, seed=0)
QUICK_DATA = dict(classes=4, videos_per_class=8, val_per_class=4, frames=16, size=64, seed=0)


def pair_accuracy(scores: torch.Tensor, labels: torch.Tensor,
                  pairs: list[tuple[int, int]]) -> float:
    """Within-pair accuracy: over videos of a paired class, how often the true class outscores
    its temporal reverse. 0.5 is chance for an order-blind model."""
    partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    rows = [i for i, y in enumerate(labels.tolist()) if y in partner]
    if not rows:
        return float("nan")
    idx = torch.tensor(rows)
    y = labels[idx]  # (M,)
    other = torch.tensor([partner[int(v)] for v in y])  # (M,)
    s = scores[idx]  # (M, K)
    win = s.gather(1, y.view(-1, 1)).squeeze(1) > s.gather(1, other.view(-1, 1)).squeeze(1)
    return win.float().mean().item()


def _plot_curves(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tanet.io import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, recs) in enumerate(runs.items()):
        color = f"C{i}"  # one colour per model in both panels
        ep = [r["epoch"] for r in recs]
        a.plot(ep, [r["train_loss"] for r in recs], marker="o", ms=3, color=color, label=name)
        val = [(r["epoch"], r["val_top1"]) for r in recs if "val_top1" in r]
        b.plot([e for e, _ in val], [100 * v for _, v in val], marker="o", ms=3, color=color,
               label=f"{name} val")
        b.plot(ep, [100 * r["train_top1"] for r in recs], ls="--", alpha=0.6, color=color,
               label=f"{name} train")
    a.set_xlabel("epoch"), a.set_ylabel("training loss"), a.set_title("loss")
    b.set_xlabel("epoch"), b.set_ylabel("top-1 (%)"), b.set_title("accuracy"), b.set_ylim(0, 101)
    a.legend(), b.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run_demo(out: str | os.PathLike = "runs/demo", *, quick: bool = False,
             quiet: bool = False) -> Path:
    """Run the whole demo; returns the path of ``report.md``."""
    from tanet.config import load_config
    from tanet.data import synthetic
    from tanet.engine import read_metrics
    from tanet.io import read_class_names

    t_start = time.perf_counter()
    out = Path(out)
    data = out / "data"
    if not quiet:
        print(f"synthetic benchmark in {data} ...", file=sys.stderr)
    gen = synthetic.generate(data, **(QUICK_DATA if quick else DATA))  # a no-op if present
    if not quiet:
        how = "reused" if gen["reused"] else f"{gen['seconds']:.1f} s"
        print(f"  {gen['train_videos']} train / {gen['val_videos']} val videos ({how})",
              file=sys.stderr)
    common = [f"data.root={data}", f"data.train={data / 'train.txt'}",
              f"data.val={data / 'val.txt'}", f"data.labels={data / 'classes.txt'}"]
    if quick:
        common += ["train.epochs=1", "model.input_size=32", "data.short_side=36",
                   "train.workers=0", "test.workers=0"]
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    scores = {}
    device = "cuda" if torch.cuda.is_available() else "cpu"  # what train() will use
    precision = resolve_amp(load_config(MODELS[0][1], common).train.amp, device)
    if not quiet:
        print(f"demo: {precision.describe('train.amp')}", file=sys.stderr)
    for name, recipe in MODELS:
        cfg, res, train_s = _train_and_test(recipe, common, out / name, quiet)
        scores[name] = res.pop("eval")
        curves[cfg.model.name] = read_metrics(out / name / "metrics.jsonl")
        rows[cfg.model.name] = {**res, "train_s": train_s, "epochs": cfg.train.epochs,
                                "dir": name}
    if precision.amp != "off":  # fp32 beside the default, for one release
        for name, recipe in MODELS:
            cfg, res, train_s = _train_and_test(recipe, [*common, "train.amp=off"],
                                                out / f"{name}_fp32", quiet)
            rows[cfg.model.name].update(top1_fp32=res["top1"], train_s_fp32=train_s)
    class_names = read_class_names(data / "classes.txt")
    pairs = reversal_pairs(class_names)
    for (name, _), key in zip(MODELS, rows):
        ev = scores[name]
        rows[key]["pair_acc"] = pair_accuracy(ev.scores, ev.labels, pairs)

    _plot_curves(curves, out / "curves.png")
    tam_png = out / "tam_kernels.png"
    _tam_picture(out / "tanet" / "last.safetensors", data, tam_png)
    wall = time.perf_counter() - t_start
    report = out / "report.md"
    _write_report(report, rows, pairs, class_names, wall, quick=quick, precision=precision)
    if not quiet:
        print(report.read_text())
    return report


def _train_and_test(recipe: str, sets: list[str], out: Path, quiet: bool
                    ) -> tuple[Any, dict[str, Any], float]:
    """Train ``recipe`` with ``--set sets`` into ``out`` and test its last checkpoint: the
    config, ``tanet test``'s results and the training seconds."""
    from tanet.config import load_config
    from tanet.engine import test, train

    cfg = load_config(recipe, [*sets, f"output={out}"])
    if not quiet:
        print(f"== {cfg.model.name}: {cfg.train.epochs} epochs", file=sys.stderr)
    t0 = time.perf_counter()
    train(cfg, quiet=quiet)
    train_s = time.perf_counter() - t0
    return cfg, test(out / "last.safetensors", cfg, out=out / "test", quiet=quiet), train_s


def _tam_picture(checkpoint: Path, data: Path, png: Path) -> None:
    """TAM kernels of the trained TANet on the first validation video (as ``tanet predict``
    samples it)."""
    from tanet.apps.predict import Predictor
    from tanet.apps.visualize import plot_tam_kernels
    from tanet.data.annotations import read_annotations

    predictor = Predictor(checkpoint)
    records, names = read_annotations(data / "val.txt", root=data,
                                      labels=predictor.class_names)
    _, views, _ = predictor.load_views(data / records[0].path)  # (1, T, C, s, s)
    plot_tam_kernels(predictor.model, views[0], png,
                     title=f"TAM kernels of tanet_tiny on a '{names[records[0].label]}' "
                           f"validation video")


def _write_report(path: Path, rows: dict[str, dict[str, Any]], pairs: list[tuple[int, int]],
                  class_names: list[str], wall: float, *, quick: bool,
                  precision: Precision) -> None:
    from tanet.io import atomic_path

    fp32 = all("top1_fp32" in r for r in rows.values())  # fp32 runs beside the default
    extra = " top-1 fp32 | train time fp32 |" if fp32 else ""

    lines = ["# tanet demo: TANet vs TSN on the synthetic temporal benchmark", ""]
    if quick:
        lines += ["**Quick run (`--quick`): a smoke test, not the reference figures.**", ""]
    lines += [f"{len(class_names)} classes, {len(pairs)} reversal pairs (classes that differ "
              f"only in the direction of time); both models trained from scratch on the same "
              f"videos with the same recipe; evaluated on the validation split "
              f"(`tanet test`, last checkpoint).", "",
              f"Trained and tested in {precision.describe('train.amp')} (the recipes' "
              f"default)" + (
                  "; the same runs in fp32 (`train.amp=off`) beside them." if fp32 else "."), "",
              "| model | top-1 | top-5 | mean class acc | within reversal pairs | videos | "
              "train time |" + extra, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
              + " ---: | ---: |" * fp32]
    for model, r in rows.items():
        lines.append(f"| {model} | {100 * r['top1']:.1f} % | {100 * r['top5']:.1f} % | "
                     f"{100 * r['mean_class_acc']:.1f} % | {100 * r['pair_acc']:.1f} % | "
                     f"{r['num_videos']} | {r['train_s']:.0f} s ({r['epochs']} epochs) |"
                     + (f" {100 * r['top1_fp32']:.1f} % | {r['train_s_fp32']:.0f} s |"
                        if fp32 else ""))
    lines += ["", "*Within reversal pairs*: over videos of a paired class, how often the true "
              "class scores above its time-reversed partner; 50 % is chance for a model blind "
              "to temporal order (TSN averages per-frame scores, so it cannot tell a clip from "
              "its reverse).", "",
              f"Total wall time: {wall:.0f} s ({wall / 60:.1f} min) on {os.cpu_count()} CPU "
              f"core(s), torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{platform.machine()}.", "",
              "## Training curves", "", "![training curves](curves.png)", "",
              "## Confusion matrices", ""]
    for model, r in rows.items():
        lines += [f"**{model}**", "", f"![{model} confusion]({r['dir']}/test/confusion.png)", ""]
    lines += ["## TAM kernels", "",
              "Local importance maps V (channels x frames) and global temporal kernels Theta "
              "(channels x taps) per stage, on one validation video.", "",
              "![TAM kernels](tam_kernels.png)", "",
              "Reproduce: `make demo` (or `tanet demo --out runs/demo`).", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
