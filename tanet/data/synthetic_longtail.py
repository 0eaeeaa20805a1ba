"""Long-tailed and multi-label variants of the synthetic temporal benchmark
(:mod:`tanet.data.synthetic`): ``tanet synth --longtail ALPHA [--multilabel]``.

**Long tail.** Class ``c`` (in ``classes.txt`` order) has ``round(head * (c + 1) ** -alpha)``
training videos (at least ``minimum``): a power law, the head class ``head`` videos, the last of
12 classes ``head / 12`` at ``alpha`` 1. As in the balanced benchmark, a sequence and its
reversal are the two classes of a motion family, so a backward video is a forward one played
backwards (the same frames); the rarer class of a pair is a prefix of the commoner's sequences.
The validation videos stay balanced (``val_per_class`` each), so every class's accuracy is
measured on the same number of videos.

**Multi-label** (``multilabel=True``): every clip shows two motions at once, two objects each
doing the motion of a different family, forwards or backwards (one may be the scene's
brightness); its labels are those two classes. The first class of a training clip is drawn in
proportion to the power-law counts, the second likewise among the other families' classes
(``sum(counts) / 2`` clips), so class frequencies are long-tailed too, if flatter than the
single-label counts (a clip's two classes come from different families, so the head family
cannot be on more than half the clips; ``synth.json`` records the counts); validation clips
draw both classes uniformly. Lists are multi-label CSVs (``path,labels``, names separated
by ``;``: :mod:`tanet.data.multilabel`).

Layout of ``out_dir``: ``videos/``, ``train.txt`` + ``val.txt`` (single-label, mmaction2 list) or
``train.csv`` + ``val.csv`` (multi-label), ``classes.txt`` and ``synth.json`` (parameters; equal
parameters and complete files make :func:`generate_longtail` a no-op).
"""
from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from tanet.data.encode import write_video
from tanet.data.synthetic import _VERSION, _background, _shape_mask, class_names, render_sequence

__all__ = ["power_law_counts", "render_two_motions", "generate_longtail"]


def power_law_counts(classes: int, head: int, alpha: float, minimum: int = 2) -> list[int]:
    """Training videos per class: ``max(minimum, round(head * (c + 1) ** -alpha))``."""
    return [max(minimum, round(head * (c + 1) ** -alpha)) for c in range(classes)]


def _object(rng: np.random.Generator, s: int, f: int, bg_mean: np.ndarray, row: int) -> dict:
    """One object's random look and track (in the top or bottom half, ``row`` 0 or 1)."""
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - bg_mean).max() < 90:  # keep the object visible
        colour = rng.uniform(0, 255, 3)
    t0, t1 = rng.uniform(0, 0.2) * (f - 1), rng.uniform(0.8, 1.0) * (f - 1)
    travel = rng.uniform(0.5, 0.65) * s
    return {"colour": colour, "kind": int(rng.integers(0, 3)), "r": rng.uniform(0.11, 0.16) * s,
            "prog": np.clip((np.arange(f) - t0) / max(t1 - t0, 1e-6), 0, 1),
            "cy": rng.uniform(0.2, 0.35) * s + row * 0.45 * s, "cx": rng.uniform(0.3, 0.7) * s,
            "angle": rng.uniform(0, 2 * math.pi), "turn": rng.uniform(0.5, 1.0) * math.pi,
            "travel": travel, "start": rng.uniform(0.12 * s, s - 0.12 * s - travel),
            "appear_at": rng.uniform(0.3, 0.7) * (f - 1),
            "gain": (rng.uniform(0.35, 0.55), rng.uniform(1.0, 1.25))}


def render_two_motions(motions: list[tuple[int, bool]], rng: np.random.Generator, *,
                       frames: int = 16, size: int = 64) -> np.ndarray:
    """A clip (F, S, S, 3) uint8 in which each ``(family, backward)`` of ``motions`` happens at
    once: an object per family doing its motion (family 5: the scene's brightness), played
    backwards where ``backward``; families as in :data:`tanet.data.synthetic.FAMILIES`."""
    s, f = size, frames
    bg = _background(rng, s)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    objs = [_object(rng, s, f, bg.mean((0, 1)), row) for row in range(len(motions))]
    noise = rng.uniform(1, 4)
    out = np.empty((f, s, s, 3), np.uint8)
    for i in range(f):
        img = bg.copy()
        gain = 1.0
        for o, (family, backward) in zip(objs, motions):
            j = f - 1 - i if backward else i  # the motion's own time
            p = o["prog"][j]
            oy, ox, rr, ang, kind = o["cy"], o["cx"], o["r"], o["angle"], o["kind"]
            if family == 0:  # move right
                ox = o["start"] + p * o["travel"]
            elif family == 1:  # grow
                rr = (0.05 + p * 0.2) * s
            elif family == 2 and j < o["appear_at"]:  # appear: not there yet
                continue
            elif family == 3:  # rotate clockwise
                kind, rr, ang = 3, max(rr, 0.22 * s), ang + p * o["turn"]
            elif family == 4:  # move down, within its half
                oy = o["cy"] - 0.15 * s + p * 0.3 * s
            elif family == 5:  # brighten
                g0, g1 = o["gain"]
                gain = g0 + p * (g1 - g0)
            img[_shape_mask(kind, yy, xx, oy, ox, rr, ang)] = o["colour"]
        img = img * gain + rng.normal(0, noise, img.shape)
        out[i] = np.clip(img, 0, 255)
    return out


def _write_single(job: tuple) -> int:
    """One sequence of a family, written as each direction whose count reaches ``k``."""
    out_dir, family, seed, split, k, frames, size, names, directions = job
    rng = np.random.default_rng([seed, family, 0 if split == "train" else 1, k, _VERSION])
    seq = render_sequence(family, rng, frames=frames, size=size)  # (F, S, S, 3)
    total = 0
    for cls in directions:
        clip = seq if cls % 2 == 0 else seq[::-1]
        path = Path(out_dir) / "videos" / f"{split}_{names[cls]}_{k:04d}.mp4"
        if not path.exists():  # atomic writes: a killed run leaves no partial file
            write_video(path, np.ascontiguousarray(clip), fps=8, gop=1, options={"qp": "20"})
        total += path.stat().st_size
    return total


def _write_multi(job: tuple) -> int:
    """One two-motion clip."""
    out_dir, name, seed, split, k, frames, size, pair = job
    rng = np.random.default_rng([seed, 7, 0 if split == "train" else 1, k, _VERSION])
    clip = render_two_motions([(c // 2, c % 2 == 1) for c in pair], rng, frames=frames, size=size)
    path = Path(out_dir) / "videos" / name
    if not path.exists():
        write_video(path, clip, fps=8, gop=1, options={"qp": "20"})
    return path.stat().st_size


def _pairs(n: int, weights: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` class pairs from different families, each drawn in proportion to ``weights``."""
    out = []
    for _ in range(n):
        a = int(rng.choice(len(weights), p=weights / weights.sum()))
        w = weights.copy()
        w[2 * (a // 2):2 * (a // 2) + 2] = 0  # not a's family
        b = int(rng.choice(len(weights), p=w / w.sum()))
        out.append((min(a, b), max(a, b)))
    return out


def _plan(out: Path, names: list[str], counts: list[int], val_per_class: int, seed: int,
          frames: int, size: int, multilabel: bool):
    """(encoding jobs, {split: list text}, the writer) of the benchmark."""
    k = len(names)
    if not multilabel:
        jobs, lists = [], {}
        for split, need in (("train", counts), ("val", [val_per_class] * k)):
            for fam in range(k // 2):
                for i in range(max(need[2 * fam], need[2 * fam + 1])):
                    dirs = [c for c in (2 * fam, 2 * fam + 1) if i < need[c]]
                    jobs.append((str(out), fam, seed, split, i, frames, size, names, dirs))
            lists[f"{split}.txt"] = "".join(f"videos/{split}_{names[c]}_{i:04d}.mp4 {c}\n"
                                            for c in range(k) for i in range(need[c]))
        return jobs, lists, _write_single
    rng = np.random.default_rng([seed, 11])
    jobs, lists = [], {}
    for split, n, w in (("train", round(sum(counts) / 2), np.array(counts, float)),
                        ("val", round(val_per_class * k / 2), np.ones(k))):
        rows = ["path,labels"]
        for i, pair in enumerate(_pairs(n, w, rng)):
            name = f"{split}_{i:05d}.mp4"
            jobs.append((str(out), name, seed, split, i, frames, size, pair))
            rows.append(f"videos/{name},{';'.join(names[c] for c in pair)}")
        lists[f"{split}.csv"] = "\n".join(rows) + "\n"
    return jobs, lists, _write_multi


def generate_longtail(out_dir: str | os.PathLike, *, classes: int = 12, head: int = 80,
                      alpha: float = 1.0, minimum: int = 2, val_per_class: int = 20,
                      multilabel: bool = False, frames: int = 16, size: int = 64, seed: int = 0,
                      workers: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the long-tailed (or multi-label) benchmark to ``out_dir``; returns a summary with
    the per-class training counts (``train_counts``: videos showing each class)."""
    from tanet.io import atomic_write_text

    names = class_names(classes)
    if frames < 2 or size < 16 or size % 2:
        raise ValueError(f"need frames >= 2 and an even size >= 16, got frames={frames}, "
                         f"size={size}")
    if head < 1 or alpha < 0 or minimum < 1 or val_per_class < 1:
        raise ValueError("need head >= 1, alpha >= 0, minimum >= 1 and val_per_class >= 1")
    if multilabel and classes < 4:
        raise ValueError("the multi-label variant needs at least 4 classes (2 families)")
    counts = power_law_counts(classes, head, alpha, minimum)
    out = Path(out_dir)
    params = {"version": _VERSION, "variant": "multilabel" if multilabel else "longtail",
              "classes": classes, "head": head, "alpha": alpha, "minimum": minimum,
              "val_per_class": val_per_class, "frames": frames, "size": size, "seed": seed}
    manifest = out / "synth.json"
    jobs, lists, write = _plan(out, names, counts, val_per_class, seed, frames, size, multilabel)
    t_start = time.perf_counter()
    if manifest.is_file():
        old = json.loads(manifest.read_text() or "{}")
        if old.get("params") == params and all((out / n).is_file() for n in lists):
            return {**old, "out_dir": str(out), "reused": True, "seconds": 0.0}
        manifest.unlink()
        for p in (out / "videos").glob("*.mp4"):  # other parameters: start afresh
            p.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    nbytes = 0
    with ProcessPoolExecutor(workers) if workers > 1 else _Serial() as ex:
        for i, b in enumerate(ex.map(write, jobs, chunksize=8)):
            nbytes += b
            if progress:
                progress(i + 1, len(jobs))
    for name, text in lists.items():
        atomic_write_text(out / name, text)
    atomic_write_text(out / "classes.txt", "".join(f"{n}\n" for n in names))
    train_counts = _counts(lists, names, multilabel)
    summary = {"params": params, "classes": names, "train_counts": train_counts,
               "train_videos": sum(1 for ln in lists[_name("train", multilabel)].splitlines()
                                   if ln and not ln.startswith("path,")),
               "val_videos": sum(1 for ln in lists[_name("val", multilabel)].splitlines()
                                 if ln and not ln.startswith("path,")),
               "bytes": nbytes, "train_list": str(out / _name("train", multilabel)),
               "val_list": str(out / _name("val", multilabel)),
               "classes_file": str(out / "classes.txt")}
    atomic_write_text(manifest, json.dumps(summary, indent=1))
    return {**summary, "out_dir": str(out), "reused": False,
            "seconds": time.perf_counter() - t_start}


def _name(split: str, multilabel: bool) -> str:
    return f"{split}.csv" if multilabel else f"{split}.txt"


def _counts(lists: dict[str, str], names: list[str], multilabel: bool) -> list[int]:
    """Training videos showing each class, read back from the written list."""
    counts = [0] * len(names)
    index = {n: i for i, n in enumerate(names)}
    for line in lists[_name("train", multilabel)].splitlines()[1 if multilabel else 0:]:
        if multilabel:
            for n in line.split(",", 1)[1].split(";"):
                counts[index[n]] += 1
        elif line.strip():
            counts[int(line.rsplit(None, 1)[1])] += 1
    return counts


class _Serial:
    """``map`` in this process, shaped like an executor (``workers=1``)."""

    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def map(fn, jobs, chunksize: int = 1):
        return map(fn, jobs)
