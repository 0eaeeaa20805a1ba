"""Evaluation: multi-view scores over a loader (sharded across processes), and ``tanet test``.

Evaluation shards the videos without padding and gathers the scores by video index, so every
video counts exactly once whatever the number of processes.
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tanet.config import Config, apply_overrides, config_from_dict
from tanet.data.views import parse_views
from tanet.engine.build import autocast, read_split, run_precision, split_loader, test_dataset
from tanet.engine.distributed import DistInfo, all_gather, init_distributed, log, unwrap
from tanet.io import atomic_path, atomic_write_text, read_class_names
from tanet.engine.reports import (per_class_rows, plot_pr_curves, write_per_class_csv,
                                  write_report_md)
from tanet.metrics import (best_f1_threshold, confusion_matrix, mean_average_precision,
                           mean_class_accuracy, one_hot, plot_confusion_matrix,
                           precision_recall_f1, top1_hits, topk_accuracy)
from tanet.models.convert import read_checkpoint
from tanet.models.factory import model_from_checkpoint

__all__ = ["EvalResult", "evaluate", "test"]


@dataclass
class EvalResult:
    """Scores of every evaluated video, ordered by dataset index (on every rank)."""

    scores: torch.Tensor  # (N, K) probabilities averaged over views (multi-label: sigmoid)
    labels: torch.Tensor  # (N,) or (N, K) multi-hot
    indices: torch.Tensor  # (N,) dataset index
    paths: list[str] = field(default_factory=list)
    skipped_paths: list[str] = field(default_factory=list)
    loss: float = 0.0  # mean cross-entropy (multi-label: BCE) of the view-averaged logits
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    multilabel: bool = False  # the model's head: sigmoid scores

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_paths)

    def metrics(self, num_classes: int, threshold: float | None = None) -> dict[str, Any]:
        """Top-1/top-5/mean class accuracy; a multi-label model: ``mAP`` (macro, over the
        classes with positives), ``f1`` (micro, over all video-class pairs) at ``threshold``
        (None: the F1-optimal one here, ``threshold``) and ``top1`` (the best class is one of
        the video's)."""
        if self.multilabel:
            return self._multilabel_metrics(num_classes, threshold)
        acc = topk_accuracy(self.scores, self.labels, (1, 5))
        cm = confusion_matrix(self.scores.argmax(1), self.labels, num_classes)
        return {"top1": acc[1], "top5": acc[5], "mean_class_acc": mean_class_accuracy(cm),
                "num_videos": int(self.labels.numel()), "num_skipped": self.num_skipped,
                "num_warnings": len({p for p, _ in self.warnings}), "loss": self.loss}

    def _multilabel_metrics(self, num_classes: int, threshold: float | None) -> dict[str, Any]:
        best, best_f1 = best_f1_threshold(self.scores, self.labels)
        t = best if threshold is None else threshold
        pred = self.scores >= t  # (N, K)
        pos = one_hot(self.labels, num_classes)  # (N, K)
        tp = int((pred & pos).sum())
        f1 = 2 * tp / max(int(pred.sum()) + int(pos.sum()), 1)
        n = int(self.scores.shape[0])
        return {"mAP": mean_average_precision(self.scores, self.labels), "f1": f1,
                "threshold": t, "macro_f1": float(precision_recall_f1(pred, pos)[2].mean())
                if n else 0.0, "best_threshold": best, "best_f1": best_f1,
                "top1": top1_hits(self.scores, self.labels) / max(n, 1), "num_videos": n,
                "num_skipped": self.num_skipped,
                "num_warnings": len({p for p, _ in self.warnings}), "loss": self.loss}


@dataclass
class _Shard:
    """One process's part of an evaluation, before the gather."""

    scores: list[torch.Tensor] = field(default_factory=list)  # (B, K) each
    labels: list[torch.Tensor] = field(default_factory=list)
    indices: list[torch.Tensor] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    skipped_paths: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    loss_sum: float = 0.0


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, info: DistInfo, *,
             cfg: Config, desc: str = "eval", quiet: bool = False) -> EvalResult:
    """Multi-view scores: (B, V, T, C, H, W) clips are scored per view, softmaxed and averaged
    (a multi-label model: the views' logits averaged, then a sigmoid per class, as
    ``tanet predict`` scores them, so the card's threshold means the same there)."""
    from tqdm import tqdm

    model.eval()
    card = getattr(unwrap(model), "card", None)
    multilabel = bool(card is not None and card.multilabel)
    shard = _Shard()
    bar = tqdm(loader, desc=desc, disable=quiet or not info.main, leave=False, dynamic_ncols=True)
    for batch in bar:
        shard.skipped_paths += [s.path for s in batch["skipped"]]
        shard.warnings += batch["warnings"]
        video = batch["video"]
        if video is None:
            continue
        video = video.to(info.device, non_blocking=True)
        if video.dim() == 5:
            video = video.unsqueeze(1)  # (B, 1, T, C, H, W)
        b, v = video.shape[:2]
        with autocast(cfg, info.device):
            logits = model(video.flatten(0, 1))  # (B*V, K)
        logits = logits.float().view(b, v, -1)  # (B, V, K)
        label = batch["label"].to(info.device)  # (B,) or (B, K)
        if multilabel:
            target = label.float() if label.dim() == 2 else F.one_hot(label, logits.shape[-1])
            shard.loss_sum += F.binary_cross_entropy_with_logits(
                logits.mean(1), target.float(), reduction="sum").item()
            shard.scores.append(logits.mean(1).sigmoid().cpu())  # (B, K)
        else:
            shard.loss_sum += F.cross_entropy(logits.mean(1), label, reduction="sum").item()
            shard.scores.append(logits.softmax(-1).mean(1).cpu())  # (B, K)
        shard.labels.append(label.cpu())
        shard.indices.append(batch["index"].cpu())
        shard.paths += [str(p) for p in batch["path"]]
    res = _gather(info, shard, unwrap(model).num_classes)
    res.multilabel = multilabel
    return res


def _gather(info: DistInfo, shard: _Shard, num_classes: int) -> EvalResult:
    """All processes' shards as one result ordered by dataset index."""
    parts: list[_Shard] = all_gather(info, shard)
    scores = torch.cat([s for p in parts for s in p.scores] or [torch.zeros(0, num_classes)])
    labels = torch.cat([x for p in parts for x in p.labels] or [torch.zeros(0, dtype=torch.long)])
    index = torch.cat([x for p in parts for x in p.indices] or [torch.zeros(0, dtype=torch.long)])
    paths = [x for p in parts for x in p.paths]
    order = index.argsort()
    return EvalResult(scores=scores[order], labels=labels[order], indices=index[order],
                      paths=[paths[i] for i in order.tolist()],
                      skipped_paths=[x for p in parts for x in p.skipped_paths],
                      warnings=[w for p in parts for w in p.warnings],
                      loss=sum(p.loss_sum for p in parts) / max(int(index.numel()), 1))


def _test_config(checkpoint: Path, stored: dict | None, cfg: Config | None,
                 overrides: Sequence[str]) -> Config:
    """The config of a test: the given one, else the checkpoint's own (+ ``--set``), else the
    defaults (+ ``--set``: a converted published checkpoint has no config)."""
    if cfg is not None:
        return cfg
    source = f"{checkpoint} (stored config)" if stored is not None else "defaults"
    cfg = config_from_dict(stored, source=source)
    apply_overrides(cfg, list(overrides))
    return cfg.validate(str(checkpoint))


def test(checkpoint: str | os.PathLike, cfg: Config | None = None, *,
         overrides: Sequence[str] = (), views: str | None = None, out: str | os.PathLike | None = None,
         quiet: bool = False, info: DistInfo | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``data.val`` with clips x crops views per video.

    The model and its test pipeline (frames, crop size, short side, sampling, class names) come
    from the checkpoint's card; ``cfg`` (default: the config stored in the checkpoint, with
    ``--set`` overrides) gives the data and may override the crop size, short side and sampling
    (``model.input_size``, ``data.short_side``, ``data.sampling``: the rule training applies, so
    a run's own config changes nothing). Writes
    ``results.json`` (``num_warnings``: videos read truncated or damaged, listed in
    ``warnings.txt``), ``predictions.csv`` and ``confusion.png`` to ``out`` (default:
    ``<checkpoint dir>/test``) and returns the results (plus ``eval``: the scores).
    """
    info = info or init_distributed()
    ckpt = read_checkpoint(checkpoint)  # a file, a weights name or a URL (fetched once)
    local = Path(checkpoint).is_file()
    checkpoint = Path(checkpoint) if local else ckpt.path
    cfg = _test_config(checkpoint, ckpt.config, cfg, overrides)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    clips, crops = parse_views(views) if views else (cfg.data.test_clips, cfg.data.test_crops)
    model = model_from_checkpoint(ckpt).eval().to(info.device)
    card = model.card
    names = card.class_names or (read_class_names(cfg.data.labels) if cfg.data.labels else None)
    if not names or len(names) != card.num_classes:
        raise ValueError(f"{checkpoint}: the model card has no class names for its "
                         f"{card.num_classes} classes; pass them with --set data.labels=FILE or "
                         f"store them with `tanet convert --labels FILE`")
    card.class_names = list(names)
    split = read_split(cfg, "val", class_names=card.class_names)
    if split.multilabel and not card.multilabel:
        raise ValueError(f"{split.source}: a multi-label list, but {checkpoint} is a single-label "
                         f"(softmax) model; test it on a list with one class a video")
    geom = card.geometry.with_overrides(**cfg.geometry_overrides())  # the rule training applied
    dataset = test_dataset(cfg, split, geom, clips=clips, crops=crops)
    n = len(split)
    _, loader = split_loader(cfg, split, dataset, info, train=False,  # files or shards
                             batch_size=cfg.test.batch_size, workers=cfg.test.workers)
    precision = run_precision(cfg, info.device)  # train.amp, auto by default
    log(info, f"test: {checkpoint} on {split.source}: {n} videos x {clips} clips x {crops} "
              f"crops; {precision.describe('train.amp')}", quiet)
    t0 = time.perf_counter()
    res = evaluate(model, loader, info, cfg=cfg, desc="test", quiet=quiet)
    m = res.metrics(card.num_classes, threshold=card.threshold if card.multilabel else None)
    keys = (("mAP", "f1", "threshold", "macro_f1", "best_threshold", "best_f1", "top1")
            if card.multilabel else ("top1", "top5", "mean_class_acc"))
    results = {**{k: m[k] for k in keys},
               "num_videos": m["num_videos"], "num_skipped": m["num_skipped"],
               "num_warnings": m["num_warnings"],
               "views": f"{clips}x{crops}", "checkpoint": str(checkpoint), "data": split.source,
               "seconds": time.perf_counter() - t0, "amp": cfg.train.amp,
               "precision": precision.name}
    if info.main:
        home = checkpoint.parent if local else Path(checkpoint.stem)  # names, URLs: ./<file>/
        out_dir = Path(out) if out is not None else home / "test"
        counts = json.loads(ckpt.info.get("tanet.train_counts", "null"))  # tanet train's
        _write_test_outputs(out_dir, res, results, list(card.class_names), card.name,
                            threshold=card.threshold, train_counts=counts)
        results["out"] = str(out_dir)
    results["eval"] = res  # scores per video for callers (not written to results.json)
    return results


def _write_test_outputs(out_dir: Path, res: EvalResult, results: dict[str, Any],
                        names: list[str], model_name: str, *, threshold: float = 0.5,
                        train_counts: list[int] | None = None) -> None:
    """predictions.csv, the per-class table (per_class.csv, report.md), confusion.png (or, for
    a multi-label model, pr.png), skipped.txt and warnings.txt (if any) and results.json,
    atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    k = len(names)
    rows = per_class_rows(res.scores, res.labels, names, multilabel=res.multilabel,
                          threshold=threshold, train_counts=train_counts)
    write_per_class_csv(out_dir / "per_class.csv", rows)
    if res.multilabel:
        _write_multilabel_predictions(out_dir / "predictions.csv", res, names, threshold)
        plot_pr_curves(res.scores, res.labels, names, out_dir / "pr.png",
                       title=f"{model_name}: mAP {100 * results['mAP']:.1f} %")
        write_report_md(out_dir / "report.md", results, rows, model_name=model_name,
                        picture="pr.png")
        _write_lists(out_dir, res, results)
        return
    write_report_md(out_dir / "report.md", results, rows, model_name=model_name,
                    picture="confusion.png")
    with atomic_path(out_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "label", "label_name", "pred", "pred_name", "score", "top5"])
        top = res.scores.topk(min(5, k), dim=1)
        for row in range(res.labels.numel()):
            lab, pred = int(res.labels[row]), int(top.indices[row, 0])
            w.writerow([int(res.indices[row]), res.paths[row], lab, names[lab], pred,
                        names[pred], f"{float(top.values[row, 0]):.5f}",
                        " ".join(str(int(x)) for x in top.indices[row])])
    cm = confusion_matrix(res.scores.argmax(1), res.labels, k)
    plot_confusion_matrix(cm, out_dir / "confusion.png", class_names=names,
                          title=f"{model_name}: top-1 {100 * results['top1']:.1f} %")
    _write_lists(out_dir, res, results)


def _write_multilabel_predictions(path: Path, res: EvalResult, names: list[str],
                                  threshold: float) -> None:
    """predictions.csv of a multi-label model: the true classes, those over the threshold
    (``;``-separated names) and the top 5 (indices)."""
    top = res.scores.topk(min(5, len(names)), dim=1)
    pos = one_hot(res.labels, len(names))  # (N, K)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "labels", "predicted", "top5"])
        for row in range(res.scores.shape[0]):
            true = ";".join(names[c] for c in pos[row].nonzero().flatten().tolist())
            over = ";".join(names[c] for c in (res.scores[row] >= threshold).nonzero()
                            .flatten().tolist())
            w.writerow([int(res.indices[row]), res.paths[row], true, over,
                        " ".join(str(int(x)) for x in top.indices[row])])


def _write_lists(out_dir: Path, res: EvalResult, results: dict[str, Any]) -> None:
    """skipped.txt, warnings.txt (when there are any) and results.json."""
    if res.skipped_paths:
        atomic_write_text(out_dir / "skipped.txt", "".join(p + "\n" for p in res.skipped_paths))
    if res.warnings:  # truncated or damaged videos that were scored
        atomic_write_text(out_dir / "warnings.txt",
                          "".join(f"{p}\t{w}\n" for p, w in res.warnings))
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
