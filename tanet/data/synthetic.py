"""Synthetic temporal benchmark: classes that differ only in the order of their frames.

Classes come in pairs (forward, backward) of one motion family: an object moving right / left,
growing / shrinking, appearing / disappearing, rotating clockwise / anticlockwise, moving down /
up, a scene brightening / darkening. Each generated sequence is written twice: as rendered, for
the forward class, and reversed, for the backward class. So a video and its partner hold exactly
the same set of frames, and any model that averages frames without order (TSN) is at chance
within each pair, while one that sees order can be ~100 % right.

Every sequence draws a random background (gradient + texture), object shape, colour, size, speed,
start point and start/stop times, one or two distractor blobs drifting at random, and per-frame
noise. Videos are H.264 all-intra (every frame a keyframe): a frame's coding does not depend on
its neighbours, so the forward and reversed files decode to the same frames (no direction cue in
compression artefacts), and any frame decodes without its predecessors.

Layout of ``out_dir``: ``videos/<split>_<class>_<k>.mp4``, ``train.txt`` and ``val.txt``
(mmaction2 list: ``videos/....mp4 label``), ``classes.txt`` and ``synth.json`` (parameters;
its presence with equal parameters makes :func:`generate` a no-op).
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

__all__ = ["FAMILIES", "class_names", "reversal_pairs", "render_sequence", "generate"]

# (forward class, backward class) per motion family; class 2j is family j forward.
FAMILIES: list[tuple[str, str]] = [
    ("move_right", "move_left"),
    ("grow", "shrink"),
    ("appear", "disappear"),
    ("rotate_clockwise", "rotate_anticlockwise"),
    ("move_down", "move_up"),
    ("brighten", "darken"),
]
_VERSION = 2


def class_names(classes: int) -> list[str]:
    """Names of the first ``classes`` classes (an even number, at most 2 x families)."""
    if classes < 2 or classes % 2 or classes > 2 * len(FAMILIES):
        raise ValueError(f"classes must be even, between 2 and {2 * len(FAMILIES)}; got {classes}")
    return [n for pair in FAMILIES[: classes // 2] for n in pair]


def reversal_pairs(names: list[str]) -> list[tuple[int, int]]:
    """(forward, backward) class-index pairs among ``names`` (the same clip reversed)."""
    index = {n: i for i, n in enumerate(names)}
    return [(index[a], index[b]) for a, b in FAMILIES if a in index and b in index]


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Random colour gradient plus a low-contrast texture: (S, S, 3) float."""
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    g = (np.cos(a) * xx + np.sin(a) * yy)
    g = (g - g.min()) / max(np.ptp(g), 1e-6)
    bg = c0 + (c1 - c0) * g[..., None]
    k = rng.integers(2, 6)
    tex = rng.normal(0, 6, (k, k, 3)).repeat(math.ceil(s / k), 0).repeat(math.ceil(s / k), 1)
    return bg + tex[:s, :s]


def _shape_mask(kind: int, yy, xx, cy, cx, r, angle=0.0) -> np.ndarray:
    """Mask of a disc (0), square (1), triangle (2) or bar (3) of radius ``r``."""
    dy, dx = yy - cy, xx - cx
    if kind == 0:
        return dy * dy + dx * dx <= r * r
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    if kind == 1:
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if kind == 2:
        return (v <= r * 0.6) & (v >= -r) & (np.abs(u) <= (v + r) * 0.55)
    return (np.abs(u) <= r) & (np.abs(v) <= r * 0.28)


def render_sequence(family: int, rng: np.random.Generator, *, frames: int = 16,
                    size: int = 64) -> np.ndarray:
    """One forward sequence of a motion family as uint8 (F, S, S, 3)."""
    s, f = size, frames
    bg = _background(rng, s)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - bg.mean((0, 1))).max() < 90:  # keep the object visible
        colour = rng.uniform(0, 255, 3)
    kind = int(rng.integers(0, 4))
    r = rng.uniform(0.14, 0.22) * s
    # progress 0 -> 1 between a random start and stop frame (random speed), clamped outside
    t0, t1 = rng.uniform(0, 0.2) * (f - 1), rng.uniform(0.8, 1.0) * (f - 1)
    prog = np.clip((np.arange(f) - t0) / max(t1 - t0, 1e-6), 0, 1)
    cy, cx = rng.uniform(0.3, 0.7, 2) * s
    angle0 = rng.uniform(0, 2 * math.pi)
    n_dis = int(rng.integers(0, 2))
    dis_pos = rng.uniform(0, s, (n_dis, 2))
    dis_vel = rng.normal(0, 0.02 * s, (n_dis, 2))
    dis_col = rng.uniform(0, 255, (n_dis, 3))
    dis_r = rng.uniform(0.03, 0.06, n_dis) * s
    travel = rng.uniform(0.55, 0.72) * s
    start = rng.uniform(0.12 * s, s - 0.12 * s - travel)  # left/top end of the path
    appear_at = rng.uniform(0.3, 0.7) * (f - 1)
    turn = rng.uniform(0.5, 1.0) * math.pi  # total rotation (90-180 degrees)
    gain0, gain1 = rng.uniform(0.35, 0.55), rng.uniform(1.0, 1.25)
    noise = rng.uniform(1, 4)
    out = np.empty((f, s, s, 3), np.uint8)
    for i in range(f):
        img = bg.copy()
        for (py, px), (vy, vx), col, dr in zip(dis_pos, dis_vel, dis_col, dis_r):
            img[_shape_mask(0, yy, xx, (py + i * vy) % s, (px + i * vx) % s, dr)] = col
        p = prog[i]
        oy, ox, rr, ang, show = cy, cx, r, angle0, True
        if family == 0:  # move right
            ox = start + p * travel
        elif family == 1:  # grow
            rr = (0.07 + p * 0.28) * s
        elif family == 2:  # appear
            show = i >= appear_at
        elif family == 3:  # rotate clockwise (image y points down)
            kind, rr = 3, max(r, 0.3 * s)
            ang = angle0 + p * turn
        elif family == 4:  # move down
            oy = start + p * travel
        if show:
            img[_shape_mask(kind, yy, xx, oy, ox, rr, ang)] = colour
        if family == 5:  # brighten
            img = img * (gain0 + p * (gain1 - gain0))
        img += rng.normal(0, noise, img.shape)
        out[i] = np.clip(img, 0, 255)
    return out


def _write_pair(job: tuple) -> int:
    """Render one sequence; write it forward and reversed. Returns bytes written."""
    out_dir, family, seed, split, k, frames, size, names = job
    rng = np.random.default_rng([seed, family, 0 if split == "train" else 1, k, _VERSION])
    seq = render_sequence(family, rng, frames=frames, size=size)  # (F, S, S, 3)
    total = 0
    for cls, clip in ((2 * family, seq), (2 * family + 1, seq[::-1])):
        path = Path(out_dir) / "videos" / f"{split}_{names[cls]}_{k:04d}.mp4"
        if not path.exists():  # write_video is atomic: a killed run leaves no partial file
            write_video(path, np.ascontiguousarray(clip), fps=8, gop=1,
                        options={"qp": "20"})  # constant QP: a frame codes the same anywhere
        total += path.stat().st_size
    return total


def _write_text(path: Path, text: str) -> None:
    from tanet.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def generate(out_dir: str | os.PathLike, *, classes: int = 8, videos_per_class: int = 80,
             val_per_class: int | None = None, frames: int = 16, size: int = 64, seed: int = 0,
             workers: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the benchmark to ``out_dir`` and return a summary dict.

    ``videos_per_class`` training videos per class, ``val_per_class`` (default a quarter of
    it, at least 4) validation videos. Deterministic for ``seed``; a complete earlier run with
    the same parameters is kept (``summary["reused"]``). ``progress(done, total)`` is called
    after each sequence (two videos).
    """
    names = class_names(classes)
    if frames < 2 or size < 16:
        raise ValueError(f"need frames >= 2 and size >= 16, got frames={frames}, size={size}")
    if size % 2:
        raise ValueError(f"size must be even (H.264 4:2:0), got {size}")
    val_per_class = max(4, videos_per_class // 4) if val_per_class is None else val_per_class
    out = Path(out_dir)
    params = {"version": _VERSION, "classes": classes, "videos_per_class": videos_per_class,
              "val_per_class": val_per_class, "frames": frames, "size": size, "seed": seed}
    manifest = out / "synth.json"
    lists = {"train": out / "train.txt", "val": out / "val.txt"}
    t_start = time.perf_counter()
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("params") == params and all(p.is_file() for p in lists.values()) and all(
                (out / ln.split()[0]).is_file() for p in lists.values()
                for ln in p.read_text().splitlines() if ln.strip()):
            return {**old, "out_dir": str(out), "reused": True, "seconds": 0.0}
        manifest.unlink()
        for p in (out / "videos").glob("*.mp4"):  # different parameters: start afresh
            p.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), fam, seed, split, k, frames, size, names)
            for split, n in (("train", videos_per_class), ("val", val_per_class))
            for fam in range(classes // 2) for k in range(n)]
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    nbytes = 0
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            for i, b in enumerate(ex.map(_write_pair, jobs, chunksize=8)):
                nbytes += b
                if progress:
                    progress(i + 1, len(jobs))
    else:
        for i, job in enumerate(jobs):
            nbytes += _write_pair(job)
            if progress:
                progress(i + 1, len(jobs))
    for split, n in (("train", videos_per_class), ("val", val_per_class)):
        lines = [f"videos/{split}_{names[c]}_{k:04d}.mp4 {c}"
                 for k in range(n) for c in range(classes)]
        _write_text(lists[split], "\n".join(lines) + "\n")
    _write_text(out / "classes.txt", "".join(f"{n}\n" for n in names))
    summary = {"params": params, "classes": names, "train_videos": videos_per_class * classes,
               "val_videos": val_per_class * classes, "bytes": nbytes,
               "train_list": str(lists["train"]), "val_list": str(lists["val"]),
               "classes_file": str(out / "classes.txt")}
    _write_text(manifest, json.dumps(summary, indent=1))
    return {**summary, "out_dir": str(out), "reused": False,
            "seconds": time.perf_counter() - t_start}
