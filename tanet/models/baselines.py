"""Temporal-module baselines that share TAM's slot in the bottleneck, for like-for-like ablations.

TSN (no temporal module) and TSM (:class:`~tanet.models.resnet.TemporalShift`) live in
:mod:`tanet.models.resnet`; TAM in :mod:`tanet.models.tam`. Contract as TAM's: (N*T, C, H, W) in
and out, frames of N clips of T frames stacked clip-major.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MotionExcitation"]


class MotionExcitation(nn.Module):
    """TEA's motion excitation (ME) module.

    Source: Y. Li, B. Ji, X. Shi, J. Zhang, B. Kang, L. Wang, "TEA: Temporal Excitation and
    Aggregation for Action Recognition", CVPR 2020 (arXiv 2004.01398), Sec. 3.1; reference code
    ``MEModule`` in ``Phoenix1327/tea-action-recognition`` (``ops/tea50_8f.py``). TEA places it
    after the first 1x1 conv of each bottleneck, which is TAM's slot here. Only ME is built: TEA's
    multiple temporal aggregation (a Res2Net-style split of conv2) is not, so the trunk stays the
    plain ResNet that TSN, TSM and TANet share.

    Channels are reduced by ``reduction`` (1x1 conv + BN), a depthwise 3x3 conv is applied to
    each frame's reduced features, and the motion feature of frame t is
    ``conv(F[t+1]) - F[t]`` (zero for the last frame); its spatial mean, expanded back to C
    channels (1x1 conv + BN) and passed through ``sigmoid - 0.5``, excites the input:
    ``Y = X + X * A``.

    Args:
        in_channels: C.
        num_segments: T, frames per clip (>= 2).
        reduction: channel reduction r (TEA: 16); C/r is at least 1.
    """

    def __init__(self, in_channels: int, num_segments: int, *, reduction: int = 16) -> None:
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"motion excitation needs num_segments >= 2, got {num_segments}")
        mid = max(1, in_channels // reduction)
        self.in_channels = in_channels
        self.num_segments = num_segments
        self.reduction = reduction
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.conv3 = nn.Conv2d(mid, in_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(in_channels)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_segments={self.num_segments}, "
                f"reduction={self.reduction}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        nt, c, h, w = x.shape
        t = self.num_segments
        if nt % t != 0:
            raise ValueError(f"motion excitation got {nt} frames, not a multiple of T={t}")
        f = self.bn1(self.conv1(x))  # (N*T, C/r, H, W)
        g = self.conv2(f)  # (N*T, C/r, H, W)
        f = f.view(nt // t, t, *f.shape[1:])  # (N, T, C/r, H, W)
        g = g.view(nt // t, t, *g.shape[1:])  # (N, T, C/r, H, W)
        diff = g[:, 1:] - f[:, :-1]  # (N, T-1, C/r, H, W): frame t+1 transformed minus frame t
        pooled = diff.mean(dim=(3, 4))  # (N, T-1, C/r)
        pooled = F.pad(pooled, (0, 0, 0, 1))  # (N, T, C/r): zero motion for the last frame
        a = self.bn3(self.conv3(pooled.reshape(nt, -1, 1, 1)))  # (N*T, C, 1, 1)
        return x + x * (torch.sigmoid(a) - 0.5)  # (N*T, C, H, W)
