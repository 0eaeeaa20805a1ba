"""The authors' whole TANet, re-typed: the reference the benchmarks time tanet against and the
tests convert from.

Their model (github.com/liu-zhy/temporal-adaptive-module, Apache-2.0; ``ops/temporal_module.py``
and ``ops/models.py``, Copyright Zhaoyang Liu et al.) is TSN over a torchvision ResNet whose
bottlenecks are wrapped as ``TemporalBottleneck(net, tam)``, a dropout in place of the ResNet's
``fc``, a ``new_fc`` classifier and an average consensus over the T frames. torchvision does
not install beside tanet's torch, so its ResNet-50 (``Bottleneck``, v1.5: stride on the 3x3
conv; its weight init) is re-typed here too. Module names are theirs, so ``state_dict()`` has
the layout of their published ``.pth`` files (``base_model.layer1.0.net.conv1.weight``,
``base_model.layer1.0.tam.G.0.weight``, ``new_fc.weight``) and :mod:`tanet.models.convert`
reads it. Changes: no prints, and the consensus is ``mean`` (their ``SegmentConsensus`` is an
old-style autograd Function that current torch rejects; its maths is the mean over T).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["AuthorsTAM", "TemporalBottleneck", "Bottleneck", "AuthorsTSN", "authors_tanet_r50"]


class AuthorsTAM(nn.Module):
    """``ops/temporal_module.py: TAM``, line for line."""

    def __init__(self, in_channels: int, n_segment: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.n_segment = n_segment
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.G = nn.Sequential(
            nn.Linear(n_segment, n_segment * 2, bias=False),
            nn.BatchNorm1d(n_segment * 2), nn.ReLU(inplace=True),
            nn.Linear(n_segment * 2, kernel_size, bias=False), nn.Softmax(-1))
        self.L = nn.Sequential(
            nn.Conv1d(in_channels, in_channels // 4, kernel_size, stride=1,
                      padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(in_channels // 4), nn.ReLU(inplace=True),
            nn.Conv1d(in_channels // 4, in_channels, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        nt, c, h, w = x.size()
        t = self.n_segment
        n_batch = nt // t
        new_x = x.view(n_batch, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()  # (N, C, T, H, W)
        out = F.adaptive_avg_pool2d(new_x.view(n_batch * c, t, h, w), (1, 1))
        out = out.view(-1, t)  # (N*C, T)
        conv_kernel = self.G(out.view(-1, t)).view(n_batch * c, 1, -1, 1)  # (N*C, 1, K, 1)
        local_activation = self.L(out.view(n_batch, c, t)).view(n_batch, c, t, 1, 1)
        new_x = new_x * local_activation  # (N, C, T, H, W)
        out = F.conv2d(new_x.view(1, n_batch * c, t, h * w), conv_kernel, bias=None,
                       stride=(self.stride, 1), padding=(self.padding, 0),
                       groups=n_batch * c)  # (1, N*C, T, H*W)
        out = out.view(n_batch, c, t, h, w)
        return out.permute(0, 2, 1, 3, 4).contiguous().view(nt, c, h, w)  # (N*T, C, H, W)


class Bottleneck(nn.Module):
    """torchvision's ResNet ``Bottleneck`` (expansion 4, stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride


class TemporalBottleneck(nn.Module):
    """``ops/temporal_module.py: TemporalBottleneck``: TAM after the first 1x1 conv."""

    def __init__(self, net: Bottleneck, n_segment: int = 8, t_kernel_size: int = 3,
                 t_stride: int = 1, t_padding: int = 1) -> None:
        super().__init__()
        self.net = net
        self.n_segment = n_segment
        self.tam = AuthorsTAM(in_channels=net.conv1.out_channels, n_segment=n_segment,
                              kernel_size=t_kernel_size, stride=t_stride, padding=t_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.net.relu(self.net.bn1(self.net.conv1(x)))
        out = self.tam(out)
        out = self.net.relu(self.net.bn2(self.net.conv2(out)))
        out = self.net.bn3(self.net.conv3(out))
        if self.net.downsample is not None:
            identity = self.net.downsample(x)
        out += identity
        return self.net.relu(out)


class _ResNet(nn.Module):
    """torchvision's ``ResNet`` with bottlenecks (the parts TSN uses), its weight init."""

    def __init__(self, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            setattr(self, f"layer{i + 1}", self._make_layer(planes, n, stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(512 * 4, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, 3, H, W) -> (N*T, 2048)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class AuthorsTSN(nn.Module):
    """``ops/models.py: TSN(num_class, num_segments, "RGB", base_model="resnet50", tam=True,
    consensus_type="avg", dropout=...)``: ``make_temporal_modeling`` wraps every bottleneck of
    layer1..4, ``fc`` becomes a dropout, ``new_fc`` (std 0.001) classifies every frame and the
    consensus averages the T frames. ``partial_bn``: their ``train()`` freezes every BatchNorm2d
    but the first."""

    def __init__(self, num_class: int, num_segments: int, *, layers: tuple[int, ...] = (3, 4, 6, 3),
                 dropout: float = 0.5, partial_bn: bool = False) -> None:
        super().__init__()
        self.num_segments = num_segments
        self._enable_pbn = partial_bn
        self.base_model = _ResNet(layers)
        for i in range(1, 5):
            stage = getattr(self.base_model, f"layer{i}")
            setattr(self.base_model, f"layer{i}", nn.Sequential(
                *(TemporalBottleneck(b, num_segments) for b in stage.children())))
        feature_dim = self.base_model.fc.in_features
        self.base_model.fc = nn.Dropout(p=dropout)
        self.new_fc = nn.Linear(feature_dim, num_class)
        nn.init.normal_(self.new_fc.weight, 0, 0.001)
        nn.init.constant_(self.new_fc.bias, 0)

    def train(self, mode: bool = True) -> "AuthorsTSN":
        super().train(mode)
        if self._enable_pbn and mode:
            bns = [m for m in self.base_model.modules() if isinstance(m, nn.BatchNorm2d)]
            for m in bns[1:]:
                m.eval()
                m.weight.requires_grad = False
                m.bias.requires_grad = False
        return self

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # (N, T, 3, H, W) -> (N, K)
        base_out = self.base_model(input.view((-1, 3) + input.size()[-2:]))  # (N*T, 2048)
        base_out = self.new_fc(base_out)  # (N*T, K)
        base_out = base_out.view((-1, self.num_segments) + base_out.size()[1:])  # (N, T, K)
        return base_out.mean(dim=1, keepdim=True).squeeze(1)  # (N, K)


def authors_tanet_r50(num_class: int = 400, num_segments: int = 8, **kw) -> AuthorsTSN:
    """Their TANet-R50: ``TSN(num_class, num_segments, "RGB", "resnet50", tam=True)``."""
    return AuthorsTSN(num_class, num_segments, **kw)
