"""Clip transforms: pure functions on uint8 clips plus thin ``nn.Module`` wrappers.

Layout: a clip is a uint8 tensor (T, C, H, W) (``clip_from_frames`` makes one from the decoder's
(T, H, W, 3) array without copying: the result is a channels-last view). Every random choice is
drawn once per clip and applied to all its frames. Augmentation stays in uint8; ``normalize``
converts to float once at the end and returns (T, C, H, W) float32, or (V, T, C, H, W) for the
multi-view test transforms. Randomness comes from ``generator`` (default: torch's global RNG, so
an engine that seeds torch per item gets reproducible augmentation).

Train recipe as the authors' ``GroupMultiScaleCrop`` (scales 1, .875, .75, .66, max distortion 1,
13 fixed crop positions) + ``GroupRandomHorizontalFlip`` (with an optional label swap map).
Test views as their ``GroupScale`` + ``GroupCenterCrop`` (1), ``GroupFullResSample`` without
flip (3: left/centre/right) and ``GroupOverSample`` (10: 4 corners + centre, each also flipped).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["clip_from_frames", "resize", "resize_short_side", "crop", "center_crop", "hflip",
           "fixed_crop_offsets", "multi_scale_crop_params", "multi_scale_crop", "three_crop",
           "ten_crop", "normalize", "TrainTransform", "TestTransform",
           "build_train_transform", "build_test_transform"]


def clip_from_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 array -> (T, 3, H, W) uint8 tensor (a channels-last view, no copy)."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2)  # (T, C, H, W)


def resize(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking, like PIL) resize of (T, C, H, W) to (h, w)."""
    h, w = size
    if tuple(clip.shape[-2:]) == (h, w):
        return clip
    return F.interpolate(clip, size=(h, w), mode="bilinear", align_corners=False,
                         antialias=True)  # (T, C, h, w)


def resize_short_side(clip: torch.Tensor, short: int) -> torch.Tensor:
    """Resize so that min(H, W) == short, keeping the aspect ratio (as ``GroupScale``)."""
    h, w = clip.shape[-2:]
    if min(h, w) == short:
        return clip
    if h <= w:
        return resize(clip, (short, int(short * w / h)))
    return resize(clip, (int(short * h / w), short))


def crop(clip: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    """(T, C, H, W) -> (T, C, h, w) window (a view)."""
    H, W = clip.shape[-2:]
    if top < 0 or left < 0 or top + h > H or left + w > W:
        raise ValueError(f"crop ({top}, {left}, {h}, {w}) outside a {H}x{W} clip")
    return clip[..., top:top + h, left:left + w]


def center_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Central size x size window; a clip smaller than ``size`` is first resized up."""
    H, W = clip.shape[-2:]
    if min(H, W) < size:
        clip = resize_short_side(clip, size)
        H, W = clip.shape[-2:]
    return crop(clip, int(round((H - size) / 2.0)), int(round((W - size) / 2.0)), size, size)


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right: (T, C, H, W) -> (T, C, H, W)."""
    return clip.flip(-1)


def fixed_crop_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int,
                       more: bool = True) -> list[tuple[int, int]]:
    """The authors' ``fill_fix_offset``: (w_offset, h_offset) of 5 (or 13 with ``more``) crops."""
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    ret = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if more:
        ret += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    return ret


def _randint(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def multi_scale_crop_params(image_h: int, image_w: int, size: int,
                            scales: Sequence[float] = (1, .875, .75, .66), max_distort: int = 1,
                            generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """One draw of ``GroupMultiScaleCrop``: (top, left, crop_h, crop_w)."""
    base = min(image_w, image_h)
    sizes = [int(base * s) for s in scales]
    crop_h = [size if abs(x - size) < 3 else x for x in sizes]
    crop_w = [size if abs(x - size) < 3 else x for x in sizes]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w)
             if abs(i - j) <= max_distort]
    cw, ch = pairs[_randint(len(pairs), generator)]
    cw, ch = min(cw, image_w), min(ch, image_h)
    offsets = fixed_crop_offsets(image_w, image_h, cw, ch, more=True)
    ow, oh = offsets[_randint(len(offsets), generator)]
    return oh, ow, ch, cw


def multi_scale_crop(clip: torch.Tensor, size: int, scales: Sequence[float] = (1, .875, .75, .66),
                     max_distort: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random multi-scale corner/centre crop resized to size x size: (T, C, size, size)."""
    top, left, ch, cw = multi_scale_crop_params(clip.shape[-2], clip.shape[-1], size, scales,
                                                max_distort, generator)
    return resize(crop(clip, top, left, ch, cw), (size, size))


def three_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Left/right/centre (top/bottom/centre when portrait) size x size crops, as the authors'
    ``GroupFullResSample(flip=False)``: (T, C, H, W) -> (3, T, C, size, size)."""
    H, W = clip.shape[-2:]
    if min(H, W) < size:
        clip = resize_short_side(clip, size)
        H, W = clip.shape[-2:]
    ws, hs = (W - size) // 4, (H - size) // 4
    if W >= H:
        offs = [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs)]
    else:
        offs = [(2 * ws, 0), (2 * ws, 4 * hs), (2 * ws, 2 * hs)]
    return torch.stack([crop(clip, oh, ow, size, size) for ow, oh in offs])  # (3, T, C, s, s)


def ten_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """4 corners + centre, each followed by its mirror (``GroupOverSample``): (10, T, C, s, s)."""
    H, W = clip.shape[-2:]
    if min(H, W) < size:
        clip = resize_short_side(clip, size)
        H, W = clip.shape[-2:]
    views = []
    for ow, oh in fixed_crop_offsets(W, H, size, size, more=False):
        c = crop(clip, oh, ow, size, size)
        views += [c, hflip(c)]
    return torch.stack(views)  # (10, T, C, s, s)


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              value_scale: float = 255.0) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 ``(x / value_scale - mean) / std``, contiguous.

    ``mean``/``std`` on the 0-1 scale (ImageNet .485/.229) with ``value_scale=255``; for
    mmaction2-style 0-255 statistics (123.675/58.395) pass ``value_scale=1``.
    """
    c = clip.shape[-3]
    m = torch.as_tensor(mean, dtype=torch.float32).view(c, 1, 1) * value_scale
    s = torch.as_tensor(std, dtype=torch.float32).view(c, 1, 1) * value_scale
    x = clip.contiguous().to(torch.float32)  # (..., C, H, W)
    return x.sub_(m).mul_(1.0 / s)


class TrainTransform(nn.Module):
    """Multi-scale crop + optional flip (with label swaps) + normalise, one draw per clip.

    ``forward(clip (T, C, H, W) uint8, label) -> (float (T, C, size, size), label)``.
    """

    def __init__(self, *, size: int, mean: Sequence[float], std: Sequence[float],
                 flip: bool = True, flip_label_map: Mapping[int, int] | None = None,
                 scales: Sequence[float] = (1, .875, .75, .66), max_distort: int = 1,
                 value_scale: float = 255.0):
        super().__init__()
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.flip, self.scales, self.max_distort = flip, tuple(scales), max_distort
        pairs = dict(flip_label_map or {})
        # a swap goes both ways: {left: right} also maps right -> left unless given otherwise
        self.flip_label_map = {**{b: a for a, b in pairs.items()}, **pairs}
        self.value_scale = value_scale

    def forward(self, clip: torch.Tensor, label: int | tuple[int, ...] = -1,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
        """``label``: a class index, or a multi-label video's tuple of them (each swapped)."""
        x = multi_scale_crop(clip, self.size, self.scales, self.max_distort, generator)
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            x = hflip(x)  # (T, C, size, size)
            swap = self.flip_label_map
            label = (tuple(sorted({swap.get(c, c) for c in label})) if isinstance(label, tuple)
                     else swap.get(label, label))
        return normalize(x, self.mean, self.std, self.value_scale), label

    def extra_repr(self) -> str:
        return (f"size={self.size}, scales={self.scales}, flip={self.flip}, "
                f"flip_label_map={len(self.flip_label_map)} pairs")


class TestTransform(nn.Module):
    """Resize short side + 1 centre / 3 / 10 crops + normalise (deterministic).

    ``forward(clip, label) -> (float (T, C, s, s) for 1 crop, (V, T, C, s, s) for 3 or 10, label)``.
    """

    def __init__(self, *, size: int, mean: Sequence[float], std: Sequence[float],
                 short_side: int | None = None, crops: int = 1, value_scale: float = 255.0):
        super().__init__()
        if crops not in (1, 3, 10):
            raise ValueError(f"test crops must be 1, 3 or 10, got {crops}")
        self.size, self.mean, self.std, self.crops = size, tuple(mean), tuple(std), crops
        self.short_side = short_side or size * 256 // 224  # the authors' scale_size
        self.value_scale = value_scale

    def forward(self, clip: torch.Tensor, label: int = -1,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        x = resize_short_side(clip, self.short_side)
        if self.crops == 1:
            x = center_crop(x, self.size)  # (T, C, s, s)
        elif self.crops == 3:
            x = three_crop(x, self.size)  # (3, T, C, s, s)
        else:
            x = ten_crop(x, self.size)  # (10, T, C, s, s)
        return normalize(x, self.mean, self.std, self.value_scale), label

    def extra_repr(self) -> str:
        return f"size={self.size}, short_side={self.short_side}, crops={self.crops}"


def build_train_transform(*, size: int, mean: Sequence[float], std: Sequence[float],
                          flip: bool = True, flip_label_map: Mapping[int, int] | None = None,
                          scales: Sequence[float] = (1, .875, .75, .66),
                          value_scale: float = 255.0) -> TrainTransform:
    """The training augmentation of TSN/TSM/TANet (see :class:`TrainTransform`)."""
    return TrainTransform(size=size, mean=mean, std=std, flip=flip, flip_label_map=flip_label_map,
                          scales=scales, value_scale=value_scale)


def build_test_transform(*, size: int, mean: Sequence[float], std: Sequence[float],
                         short_side: int | None = None, crops: int = 1,
                         value_scale: float = 255.0) -> TestTransform:
    """The test views (see :class:`TestTransform`)."""
    return TestTransform(size=size, mean=mean, std=std, short_side=short_side, crops=crops,
                         value_scale=value_scale)
