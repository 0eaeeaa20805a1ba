"""Bottleneck ResNet in plain torch.nn with torchvision's parameter names.

A torchvision ImageNet ``resnet50-*.pth`` loads into :class:`ResNet` with ``strict=True`` once its
``fc.*`` keys are dropped (the recognizer owns the classifier). Every bottleneck carries one
temporal slot, ``temporal``:

* ``None``    : TSN, a plain 2D network applied frame by frame;
* ``"shift"`` : TSM, shift 1/8 of the channels one frame back and 1/8 one frame forward on the
                residual branch, before ``conv1`` (the identity path is untouched);
* ``"tam"``   : TANet, a :class:`~tanet.models.tam.TAM` after ``conv1-bn1-relu``, before ``conv2``;
* ``"me"``    : TEA's motion excitation (:class:`~tanet.models.baselines.MotionExcitation`), in
                TAM's slot (after ``conv1-bn1-relu``), as TEA places it.

TAM's placement switches travel in ``tam_kwargs`` beside TAM's own arguments: ``stages`` (which of
layer1..4 get TAM, default all), ``every`` (every n-th block of a stage, counted from its first
block as TSM's code does, default 1) and ``position`` (``before_conv1`` on the residual branch's
input, ``after_conv1`` (the paper's), ``after_conv2``). A block without TAM has no ``temporal``
parameters.

Input and output of the backbone are (N*T, C, H, W): frames of N clips of T frames, clip-major.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from tanet.models.baselines import MotionExcitation
from tanet.models.tam import TAM

__all__ = ["ResNet", "Bottleneck", "TemporalShift", "temporal_shift", "DEPTHS", "TEMPORAL_KINDS",
           "POSITIONS", "TAM_PLACEMENT", "split_tam_kwargs"]

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
TEMPORAL_KINDS = (None, "shift", "tam", "me")
POSITIONS = ("before_conv1", "after_conv1", "after_conv2")
_DEFAULT_POSITION = {"shift": "before_conv1", "tam": "after_conv1", "me": "after_conv1"}
# the paper's TANet: TAM in every block of every stage, after conv1-bn1-relu
TAM_PLACEMENT = {"stages": (1, 2, 3, 4), "every": 1, "position": "after_conv1"}


def split_tam_kwargs(tam_kwargs: dict | None) -> tuple[dict, dict]:
    """``tam_kwargs`` -> (placement: stages/every/position with defaults filled in, the rest for
    :class:`TAM`); bad placements raise a ValueError naming the switch."""
    tam = dict(tam_kwargs or {})
    place = {k: tam.pop(k, v) for k, v in TAM_PLACEMENT.items()}
    stages = place["stages"]
    if not isinstance(stages, (list, tuple)) or not stages or \
            not set(stages) <= {1, 2, 3, 4}:
        raise ValueError(f"TAM stages must be a non-empty list of 1..4 (layer1..layer4), got "
                         f"{stages!r}; for no TAM at all use a tsn_* model")
    place["stages"] = tuple(sorted(set(int(s) for s in stages)))
    if isinstance(place["every"], bool) or not isinstance(place["every"], int) or \
            place["every"] < 1:
        raise ValueError(f"TAM every must be an integer >= 1, got {place['every']!r}")
    if place["position"] not in POSITIONS:
        raise ValueError(f"unknown TAM position {place['position']!r}; choose from {POSITIONS}")
    return place, tam


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
        position: str | None = None,
    ) -> None:
        super().__init__()
        if temporal not in TEMPORAL_KINDS:
            raise ValueError(f"unknown temporal kind {temporal!r}; choose from {TEMPORAL_KINDS}")
        position = position or _DEFAULT_POSITION.get(temporal, "after_conv1")
        if position not in POSITIONS:
            raise ValueError(f"unknown temporal position {position!r}; choose from {POSITIONS}")
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
        self.position = position  # where ``temporal`` acts on the residual branch
        channels = inplanes if position == "before_conv1" else planes
        self.temporal: nn.Module | None
        if temporal == "shift":
            self.temporal = TemporalShift(num_segments)
        elif temporal == "tam":
            self.temporal = TAM(channels, num_segments, **(tam_kwargs or {}))
        elif temporal == "me":
            self.temporal = MotionExcitation(channels, num_segments)
        else:
            self.temporal = None

    def _temporal_at(self, where: str, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(x) if self.temporal is not None and self.position == where else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        identity = x
        out = self._temporal_at("before_conv1", x)  # residual branch only: identity untouched
        out = self.relu(self.bn1(self.conv1(out)))  # (N*T, planes, H, W)
        out = self._temporal_at("after_conv1", out)  # (N*T, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N*T, planes, H/s, W/s)
        out = self._temporal_at("after_conv2", out)  # (N*T, planes, H/s, W/s)
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
        temporal: None | "shift" | "tam" | "me", applied in every block of layer1..layer4 (TAM:
            in the blocks its placement switches select).
        num_segments: T, frames per clip (needed by the temporal modules).
        tam_kwargs: TAM arguments (alpha, beta, kernel_size, local_kernel_size, formulation,
            branches, kernel) and its placement (stages, every, position); only for "tam".
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
        if temporal != "tam" and tam_kwargs:
            raise ValueError(f"TAM switches {sorted(tam_kwargs)} (tam_kwargs, model.tam.*) given "
                             f"for a network without TAM (temporal={temporal!r}); use a tanet_* "
                             "model or drop them")
        place, tam = split_tam_kwargs(tam_kwargs) if temporal == "tam" else ({}, {})
        self.num_segments = num_segments
        self.temporal = temporal
        self.inplanes = stem_width
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block_kw = dict(temporal=temporal, num_segments=num_segments, tam_kwargs=tam,
                        position=place.get("position"))
        for s in range(1, 5):
            chosen = temporal != "tam" or s in place["stages"]
            every = place.get("every", 1) if chosen else 0  # 0: no block of this stage
            setattr(self, f"layer{s}", self._make_layer(widths[s - 1], layers[s - 1],
                                                        1 if s == 1 else 2, block_kw, every))
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

    def _make_layer(self, planes: int, blocks: int, stride: int, block_kw: dict,
                    every: int = 1) -> nn.Sequential:
        """One stage; block i carries the temporal module if ``every`` and i % every == 0."""
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        plain = dict(block_kw, temporal=None, tam_kwargs=None, position=None)
        kw = [block_kw if every and i % every == 0 else plain for i in range(blocks)]
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, **kw[0])]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, **kw[i]) for i in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, 3, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N*T, stem, H/4, W/4)
        x = self.layer1(x)  # (N*T, 4*w1, H/4, W/4)
        x = self.layer2(x)  # (N*T, 4*w2, H/8, W/8)
        x = self.layer3(x)  # (N*T, 4*w3, H/16, W/16)
        return self.layer4(x)  # (N*T, 4*w4, H/32, W/32)
