"""Tiny real mp4 datasets for the engine tests: a bright bar moving left or right (or still)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ["left", "right", "still"]


def _clip(direction: int, rng: np.random.Generator, frames: int = 12, size: int = 32) -> np.ndarray:
    x0 = int(rng.integers(4, size - 4))
    bg = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
    out = np.repeat(bg[None], frames, axis=0)  # (F, H, W, 3)
    for t in range(frames):
        x = (x0 + direction * 2 * t) % size
        out[t, :, max(x - 2, 0):x + 2] = (230, 200, 40)
    return out


def make_videos(root: Path, *, per_class: int = 4, val_per_class: int = 2, seed: int = 0) -> Path:
    """``root/train/<class>/*.mp4`` (class-per-folder), ``root/val.txt`` (video list) and
    ``root/classes.txt``; returns ``root``."""
    from tanet.data.encode import write_video

    rng = np.random.default_rng(seed)
    lines = []
    for c, name in enumerate(CLASSES):
        direction = {"left": -1, "right": 1, "still": 0}[name]
        for i in range(per_class):
            write_video(root / "train" / name / f"{i}.mp4", _clip(direction, rng))
        for i in range(val_per_class):
            rel = f"val/{name}_{i}.mp4"
            write_video(root / rel, _clip(direction, rng))
            lines.append(f"{rel} {c}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    """A seconds-long tanet_tiny run on :func:`make_videos` data."""
    return [f"data.root={data}", f"data.train={data / 'train'}", f"data.val={data / 'val.txt'}",
            f"data.labels={data / 'classes.txt'}", "model.name=tanet_tiny",
            "model.num_segments=4", "model.input_size=32", "model.dropout=0.0",
            "data.scales=[1.0, 0.875]", "train.epochs=2", "train.batch_size=4",
            "train.lr=0.01", "train.workers=0", "train.threads=1", "train.seed=1",
            "test.batch_size=3", "test.workers=0", f"output={out}", *extra]
