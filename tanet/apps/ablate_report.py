"""The report of an ablation study: ``results.csv`` (one row per run), ``summary.csv`` and
``report.md`` (one row per variant: mean +- std over seeds) and ``ablation.png``.

Read from the ``result.json`` files of the finished runs, so it can be rewritten at any time.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

__all__ = ["write_report", "summarise"]
# ``study`` and ``runs`` below are tanet.apps.ablate's Study and Run (not imported: ablate
# imports this module)

_RUN_FIELDS = ["variant", "seed", "model", "tam", "top1", "top5", "mean_class_acc", "pair_acc",
               "num_videos", "params", "macs", "train_s", "epochs", "threads"]


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than 2 values)."""
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def summarise(study: Any, results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per variant (study order): seeds done, top-1 / within-pair mean and std,
    params, MACs, mean training time."""
    rows = []
    for v in study.variants:
        rs = results.get(v.name, [])
        top1_m, top1_s = _mean_std([r["top1"] for r in rs])
        pairs = [r["pair_acc"] for r in rs if r.get("pair_acc") is not None]
        pair_m, pair_s = _mean_std(pairs)
        train_m, _ = _mean_std([r["train_s"] for r in rs])
        rows.append({"variant": v.name, "label": v.label or "", "model": rs[0]["model"] if rs
                     else (v.model or ""), "tam": _switches(v.model, v.tam, rs),
                     "seeds": len(rs), "top1_mean": top1_m, "top1_std": top1_s,
                     "pair_mean": pair_m, "pair_std": pair_s,
                     "params": rs[0]["params"] if rs else None,
                     "macs": rs[0]["macs"] if rs else None, "train_s_mean": train_m})
    return rows


def _switches(model: str | None, tam: dict[str, Any], rs: list[dict[str, Any]]) -> str:
    name = rs[0]["model"] if rs else (model or "")
    if tam:
        return ", ".join(f"{k}={_short(v)}" for k, v in tam.items())
    return "paper" if name.startswith("tanet") else "-"


def _short(v: Any) -> str:
    return "[" + ",".join(str(x) for x in v) + "]" if isinstance(v, (list, tuple)) else str(v)


def _pct(m: float | None, s: float | None) -> str:
    if m is None:
        return "-"
    return f"{100 * m:.1f} ± {100 * s:.1f}" if s is not None else f"{100 * m:.1f}"


def _collect(runs: list[Any]) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.done:
            results.setdefault(run.variant.name, []).append(
                json.loads((run.dir / "result.json").read_text()))
    return results


def write_report(study: Any, runs: list[Any], out: Path, *,
                 failed: dict[str, str] | None = None) -> Path:
    """Write results.csv, summary.csv, ablation.png and report.md under ``out``; returns the
    report's path."""
    from tanet.io import atomic_write_text

    results = _collect(runs)
    rows = summarise(study, results)
    flat = [r for v in study.variants for r in results.get(v.name, [])]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_RUN_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in flat:
        w.writerow({**r, "tam": json.dumps(r.get("tam") or {}, sort_keys=True)})
    atomic_write_text(out / "results.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "summary.csv", buf.getvalue())
    if flat:
        _plot(study, results, out / "ablation.png")
    report = out / "report.md"
    atomic_write_text(report, _markdown(study, runs, rows, results, failed or {},
                                        plot=bool(flat)))
    return report


def _markdown(study: Any, runs: list[Any], rows: list[dict[str, Any]],
              results: dict[str, list[dict[str, Any]]], failed: dict[str, str], *,
              plot: bool) -> str:
    import torch

    done = sum(len(v) for v in results.values())
    ref = rows[0]
    lines = [f"# Ablation study: {study.name}", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [_setting(study, runs), "",
              f"Top-1 and within-pair accuracy: mean ± sample std over the seeds, in %; Δ is the "
              f"difference of means from the first variant ({ref['variant']}). Params and MACs "
              f"of one clip at the training input size; train time: mean per run (the runs "
              f"shared the machine, so times are indicative).", "",
              "| variant | model | TAM switches | seeds | top-1 | Δ top-1 | within pairs | "
              "params | MACs / clip | train time |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        delta = "-" if r["top1_mean"] is None or ref["top1_mean"] is None else \
            f"{100 * (r['top1_mean'] - ref['top1_mean']):+.1f}"
        params = f"{r['params'] / 1e6:.3f} M" if r["params"] is not None else "-"
        macs = f"{r['macs'] / 1e6:.1f} M" if r["macs"] is not None else "-"
        train = f"{r['train_s_mean']:.0f} s" if r["train_s_mean"] is not None else "-"
        lines.append(f"| {r['variant']} | {r['model']} | {r['tam']} | {r['seeds']} | "
                     f"{_pct(r['top1_mean'], r['top1_std'])} | {delta} | "
                     f"{_pct(r['pair_mean'], r['pair_std'])} | {params} | {macs} | {train} |")
    labels = [f"- **{r['variant']}**: {r['label']}" for r in rows if r["label"]]
    if labels:
        lines += ["", *labels]
    lines += ["", "*Within pairs*: over validation videos of a class with a time-reversed "
              "partner, how often the true class scores above the partner (50 % is chance for "
              "a model blind to temporal order).", ""]
    if plot:
        lines += ["![top-1 and within-pair accuracy per variant](ablation.png)", ""]
    lines += ["## Runs", "", "| variant | seed | top-1 | within pairs | train time |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for v in study.variants:
        for r in results.get(v.name, []):
            pair = "-" if r.get("pair_acc") is None else f"{100 * r['pair_acc']:.1f}"
            lines.append(f"| {v.name} | {r['seed']} | {100 * r['top1']:.1f} | {pair} | "
                         f"{r['train_s']:.0f} s |")
    missing = len(runs) - done
    if missing:
        lines += ["", f"**{missing} of {len(runs)} runs are not finished** "
                  f"({len(failed)} failed this time); re-run the command to complete them."]
        lines += [f"- `{d}`: {e}" for d, e in failed.items()]
    where = "" if study.output and Path(study.output) == runs[0].dir.parents[2] else \
        f" --out {runs[0].dir.parents[2]}"
    command = f"tanet ablate {study.ref or study.source}{where}"
    lines += ["", f"Reproduce: `{command}` (finished runs are kept; results.csv has every run). "
              f"{os.cpu_count()} CPU core(s), torch {torch.__version__}, {platform.machine()}.", ""]
    return "\n".join(lines)


def _setting(study: Any, runs: list[Any]) -> str:
    cfg = runs[0].cfg
    syn = study.synthetic
    if syn is not None:
        data = (f"the synthetic temporal benchmark ({syn['classes']} classes in "
                f"{syn['classes'] // 2} time-reversed pairs; {syn['videos_per_class']} training "
                f"and {syn['val_per_class']} validation videos per class, {syn['frames']} frames "
                f"of {syn['size']} px, data seed {syn['seed']})")
    else:
        data = f"`{cfg['data']['train']}` / `{cfg['data']['val']}`"
    tc = cfg["train"]
    return (f"Data: {data}. Recipe `{study.recipe}` with the study's overrides: "
            f"{tc['epochs']} epoch{'s' if tc['epochs'] != 1 else ''}, batch {tc['batch_size']}, "
            f"{tc['optimizer']} lr {tc['lr']:g}, "
            f"T={cfg['model']['num_segments']}, {cfg['model']['input_size'] or 'default'} px "
            f"input. Seeds {', '.join(str(s) for s in study.seeds)} (train.seed: "
            f"initialisation and clip order; the videos are the same for every seed).")


def _plot(study: Any, results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tanet.io import save_figure

    names = [v.name for v in study.variants]
    panels = [("top1", "top-1 (%)")]
    if any(r.get("pair_acc") is not None for rs in results.values() for r in rs):
        panels.append(("pair_acc", "within reversal pairs (%)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5, 1.1 * len(names)) * len(panels), 3.8),
                             squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for i, name in enumerate(names):
            vals = [100 * r[key] for r in results.get(name, []) if r.get(key) is not None]
            if not vals:
                continue
            m, s = _mean_std(vals)
            ax.bar(i, m, color=f"C{i % 10}", alpha=0.6, yerr=s or 0, capsize=4)
            ax.scatter([i] * len(vals), vals, color="k", s=10, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(title)
        ax.set_ylim(0, 101)
        ax.axhline(50 if key == "pair_acc" else 0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{study.name}: {title}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
