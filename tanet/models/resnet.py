"""Bottleneck ResNet in plain torch.nn with torchvision's parameter names.

A torchvision ImageNet ``resnet50-*.pth`` loads into :class:`ResNet` with ``strict=True`` once its
``fc.*`` keys are dropped (the recognizer owns the classifier). Every bottleneck carries one
temporal slot, ``temporal``:

* ``None``    : TSN, a plain 2D network applied frame by frame;
* ``"shift"`` : TSM, shift 1/8 of the channels one frame back and 1/8 one frame forward on the
                residual branch, before ``conv1`` (the identity path is untouched);
* ``"tam"``   : TANet, a :class:`~tanet.models.tam.TAM` after ``conv1-bn1-relu``, before ``conv2``.

Input and output of the backbone are (N*T, C, H, W): frames of N clips of T frames, clip-major.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from tanet.models.tam import TAM

__all__ = ["ResNet", "Bottleneck", "TemporalShift", "temporal_shift", "DEPTHS", "TEMPORAL_KINDS"]

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
TEMPORAL_KINDS = (None, "shift", "tam")


def temporal_shift(x: torch.Tensor, num_segments: int, fold_div: int = 8) -> torch.Tensor:
    """TSM shift on (N*T, C, H, W): channels [0, C/8) take frame t+1, [C/8, 2C/8) frame t-1,
    the rest stay; zeros enter at the clip ends."""
    nt, c, h, w = x.shape
    if nt % num_segments != 0:
        raise ValueError(f"temporal shift got {nt} frames, not a multiple of T={num_segments}")
    n, t = nt // num_segments, num_segments
    fold = c // fold_div
    xs = x.view(n, t, c, h, w)  # (N, T, C, H, W)
    out = torch.zeros_like(xs)
    out[:, :-1, :fold] = xs[:, 1:, :fold]  # shift left: frame t sees frame t+1
    out[:, 1:, fold:2 * fold] = xs[:, :-1, fold:2 * fold]  # shift right: frame t sees t-1
    out[:, :, 2 * fold:] = xs[:, :, 2 * fold:]  # unshifted channels
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Parameter-free TSM shift as a module (so it shows up in ``print(model)``)."""

    def __init__(self, num_segments: int, fold_div: int = 8) -> None:
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"temporal shift needs num_segments >= 2, got {num_segments}")
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.num_segments, self.fold_div)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on conv2, "ResNet v1.5") with one temporal slot."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        temporal: str | None = None,
        num_segments: int = 8,
        tam_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if temporal not in TEMPORAL_KINDS:
            raise ValueError(f"unknown temporal kind {temporal!r}; choose from {TEMPORAL_KINDS}")
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.temporal_kind = temporal
        self.temporal: nn.Module | None
        if temporal == "shift":
            self.temporal = TemporalShift(num_segments)
        elif temporal == "tam":
            self.temporal = TAM(planes, num_segments, **(tam_kwargs or {}))
        else:
            self.temporal = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        identity = x
        out = self.temporal(x) if self.temporal_kind == "shift" else x  # residual-branch shift
        out = self.relu(self.bn1(self.conv1(out)))  # (N*T, planes, H, W)
        if self.temporal_kind == "tam":
            out = self.temporal(out)  # (N*T, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N*T, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (N*T, 4*planes, H/s, W/s)
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet trunk (no ``fc``): (N*T, 3, H, W) -> (N*T, feature_dim, H/32, W/32).

    Args:
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        widths: bottleneck widths per stage (torchvision: 64, 128, 256, 512).
        stem_width: channels of the 7x7 stem (torchvision: 64).
        temporal: None | "shift" | "tam", applied in every block of layer1..layer4.
        num_segments: T, frames per clip (needed by the temporal modules).
        tam_kwargs: extra TAM arguments (alpha, beta, kernel_size, formulation).
        zero_init_residual: zero the last BN of each block (off by default, as torchvision).
    """

    def __init__(
        self,
        layers: Sequence[int],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        temporal: str | None = None,
        num_segments: int = 8,
        tam_kwargs: dict | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet needs 4 stages, got layers={layers}, widths={widths}")
        self.num_segments = num_segments
        self.temporal = temporal
        self.inplanes = stem_width
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block_kw = dict(temporal=temporal, num_segments=num_segments, tam_kwargs=tam_kwargs)
        self.layer1 = self._make_layer(widths[0], layers[0], 1, block_kw)
        self.layer2 = self._make_layer(widths[1], layers[1], 2, block_kw)
        self.layer3 = self._make_layer(widths[2], layers[2], 2, block_kw)
        self.layer4 = self._make_layer(widths[3], layers[3], 2, block_kw)
        self.feature_dim = widths[3] * Bottleneck.expansion

        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int, block_kw: dict) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, **block_kw)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, **block_kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, 3, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N*T, stem, H/4, W/4)
        x = self.layer1(x)  # (N*T, 4*w1, H/4, W/4)
        x = self.layer2(x)  # (N*T, 4*w2, H/8, W/8)
        x = self.layer3(x)  # (N*T, 4*w3, H/16, W/16)
        return self.layer4(x)  # (N*T, 4*w4, H/32, W/32)
