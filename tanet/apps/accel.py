"""Faster PyTorch inference on CPU: the model prepared once, before the first video.

* :func:`fold_batchnorm`: every ``Conv2d -> BatchNorm2d`` pair of the ResNet trunk becomes one
  convolution (eval-mode BN is an affine map per channel), removing 53 BN passes over the
  feature maps of a ResNet-50;
* bf16 (:func:`prepare`, ``amp="bf16"``): weights converted to bfloat16 once, activations in
  channels-last (NHWC) layout. On a CPU with AVX-512 BF16 oneDNN then runs every convolution
  as a bf16 NHWC kernel with no per-call weight casts or layout reorders, and the elementwise
  ops (ReLU, residual add, TAM's multiply-adds) move half the bytes. Autocast instead casts
  the 25 M weights on every call and keeps BN in float32;
* ``compile``: ``torch.compile`` (Inductor, C++/OpenMP on CPU) with freezing: weights become
  constants, BN is folded and oneDNN weights are prepacked; the elementwise ops around the
  convolutions are fused.

TAM's branches (tiny Gemms on the pooled (N, C, T) sequence) run in the model's dtype; the
benchmarks report how far bf16 probabilities move from fp32 (``benchmarks/predict.py``,
``benchmarks/lowp_agreement.py``).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "prepare", "Prepared"]

_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm2d into the preceding Conv2d, in place; returns ``model``.

    Pairs: ``convK``/``bnK`` attributes of one module (ResNet stem and bottlenecks, whose
    forward applies ``bnK(convK(x))``) and consecutive ``Conv2d, BatchNorm2d`` in a Sequential
    (the downsample shortcut). The BN becomes ``nn.Identity``."""
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (BN with running statistics)")
    for module in list(model.modules()):
        for conv_name, bn_name in _PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return model


class Prepared:
    """A model prepared for inference (:func:`prepare`): ``self(clips)`` gives the logits and
    :meth:`features` the pooled features, both float32 whatever the model computes in."""

    def __init__(self, module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                 dtype: torch.dtype) -> None:
        self.module, self.forward, self.dtype = module, forward, dtype

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:  # (N, T, C, H, W) -> (N, K)
        return self.forward(clips.to(self.dtype)).float()

    def features(self, clips: torch.Tensor) -> torch.Tensor:  # (N, T, C, H, W) -> (N, T, D)
        return self.module.forward_features(clips.to(self.dtype)).float()


def prepare(model: nn.Module, *, bf16: bool = False, compile: bool = False) -> Prepared:
    """An inference function ``clips (N, T, C, H, W) float32 -> logits (N, K)`` for a copy of
    ``model`` (the original is left as it is): BN folded, channels-last, and bf16 weights and
    activations with ``bf16``; compiled with Inductor (freezing on) with ``compile`` (features
    then run the copy eagerly)."""
    model = copy.deepcopy(model).eval()
    if compile:
        module = model.to(torch.bfloat16) if bf16 else model
        fn = torch.compile(module, dynamic=False, options={"freezing": True})
    else:
        module = fold_batchnorm(model).to(memory_format=torch.channels_last)
        if bf16:
            module = module.to(torch.bfloat16)
        fn = module
    return Prepared(module, fn, torch.bfloat16 if bf16 else torch.float32)
