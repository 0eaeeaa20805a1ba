"""Pre-extracted frames (``img_00001.jpg`` ...) read as a video (:class:`FrameFolder`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tanet.data.convert import resized as _resized
from tanet.data.video_types import VideoDecodeError, VideoInfo, checked_indices

__all__ = ["FrameFolder"]


class FrameFolder:
    """Reader of a folder of extracted frames, numbered from 1 (``img_00001.jpg``).

    Index ``i`` (0-based, as everywhere in this package) is file ``template.format(i + 1)``.
    ``num_frames`` is the length of the run of consecutive files starting at 1.
    """

    def __init__(self, path: str | os.PathLike, template: str = "img_{:05d}.jpg", *,
                 short_side: int | None = None, fps: float = 30.0):
        self.path = str(path)
        self.template = template
        self.short_side = short_side
        self.warnings: list[str] = []
        p = Path(self.path)
        if not p.is_dir():
            raise VideoDecodeError(self.path, "frame folder not found")
        names = set(os.listdir(p))
        n = 0
        while template.format(n + 1) in names:
            n += 1
        if n == 0:
            raise VideoDecodeError(self.path, f"no frames named like {template.format(1)!r}")
        first = self._load(0)
        h, w = first.shape[:2]
        self.info = VideoInfo(num_frames=n, fps=fps, duration=n / fps, width=w, height=h,
                              codec="images", container="folder", exact=True)

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image

        f = os.path.join(self.path, self.template.format(i + 1))
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if self.short_side:
                    size = _resized(im.width, im.height, self.short_side)
                    if size != im.size:
                        im = im.resize(size, Image.BILINEAR)
                return np.asarray(im)  # (H, W, 3)
        except (OSError, ValueError) as e:
            raise VideoDecodeError(f, f"cannot read image ({e})") from None

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (0-based; any order, repeats allowed) as uint8 (T, H, W, 3)."""
        idx = checked_indices(self.path, indices, self.info.num_frames)
        cache = {int(i): self._load(int(i)) for i in np.unique(idx)}
        return np.stack([cache[int(i)] for i in idx])  # (T, H, W, 3)

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
