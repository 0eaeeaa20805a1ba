"""Temporal Adaptive Module (Liu et al., ICCV 2021).

Contract: input and output are (N*T, C, H, W): the frames of N clips of T frames stacked along
the batch axis (TSN/TSM convention), clip-major (frame t of clip n at row n*T + t).

TAM squeezes each frame to a C-vector, then learns from the (N, C, T) sequence
  * a local, location-sensitive importance map V (N, C, T) in (0, 1)    (branch ``L``), and
  * a global, location-invariant temporal kernel Theta (N, C, K), softmax-normalised (branch ``G``),
and returns Y[n, c, t] = sum_k Theta[n, c, k] * V[n, c, t + k - K//2] * X[n, c, t + k - K//2]
(zero padding at the clip ends): a channel-wise adaptive temporal convolution.

Switches (the paper's ablations; defaults are the paper's TAM, parameter for parameter):
  * ``branches``: ``"both"`` | ``"local"`` (importance map V only, identity aggregation:
    Y = V * X) | ``"global"`` (adaptive kernel Theta only, no importance map: V = 1);
  * ``kernel``: ``"adaptive"`` (Theta from branch G, per video) | ``"fixed"`` (Theta a learned
    per-channel kernel shared by every video, softmax-normalised like G's output: the
    non-adaptive channel-wise temporal convolution TAM is compared with).
A module without a branch has no parameters for it (no ``G`` for ``local`` or ``fixed``, no
``L`` for ``global``).

Two numerically equal formulations are provided:
  * ``"reference"``: the authors' code: permute to (N, C, T, H, W), excite, then one grouped
    ``F.conv2d`` over a (1, N*C, T, H*W) tensor with N*C groups, permute back.
  * ``"fast"`` (default): folds V into the kernel, W[n, t, c, k] = Theta[n, c, k] * V[n, c, t+k-p]
    (a tiny (N, T, C, K) tensor), and accumulates K shifted, per-channel-weighted copies of X in
    its native (N, T, C, H, W) layout: no permutes, no copies of the feature map, no grouped conv.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tanet.models.tam_ops import banded_temporal_conv, banded_temporal_conv_op

__all__ = ["TAM", "FORMULATIONS", "BRANCHES", "KERNELS", "KERNEL_INITS"]

FORMULATIONS = ("fast", "reference")
BRANCHES = ("both", "local", "global")
KERNELS = ("adaptive", "fixed")
KERNEL_INITS = ("uniform", "random")
# std of the random fixed-kernel logits: the spread of G's pre-softmax logits at initialisation
# (measured on random input: 0.3-0.4), so both kernels start equally far from uniform
_RANDOM_LOGIT_STD = 0.35


class TAM(nn.Module):
    """Temporal Adaptive Module.

    Args:
        in_channels: C, channels of the feature map.
        num_segments: T, frames per clip. Must be >= 2.
        alpha: expansion of the global branch hidden layer (alpha * T).
        beta: reduction of the local branch (C / beta).
        kernel_size: K, taps of the adaptive temporal kernel (odd).
        local_kernel_size: temporal kernel of the local branch's first Conv1d (paper: 3).
        formulation: ``"fast"`` (default) or ``"reference"`` (the authors' grouped conv).
        branches: ``"both"`` (paper) | ``"local"`` | ``"global"``: which branches are built.
        kernel: ``"adaptive"`` (paper) | ``"fixed"``: Theta from G, or a learned static
            per-channel kernel (parameter ``kernel_logits`` (C, K), zero-initialised: a uniform
            average until trained).
        kernel_init: ``"uniform"`` (zero logits: a time-symmetric start) | ``"random"`` (logits
            N(0, 0.35^2), the spread of G's logits at initialisation); ``kernel="fixed"`` only.

    Parameter names are the authors' (``G.0``, ``G.1``, ``G.3``, ``L.0``, ``L.1``, ``L.3``), so
    their weights load with no renaming.
    """

    def __init__(
        self,
        in_channels: int,
        num_segments: int,
        *,
        alpha: int = 2,
        beta: int = 4,
        kernel_size: int = 3,
        local_kernel_size: int = 3,
        formulation: str = "fast",
        branches: str = "both",
        kernel: str = "adaptive",
        kernel_init: str = "uniform",
    ) -> None:
        super().__init__()
        if num_segments < 2:
            raise ValueError(
                f"TAM needs num_segments >= 2 to model time, got {num_segments}; "
                "use a TSN model (temporal=None) for single-frame input"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TAM kernel_size must be odd and positive, got {kernel_size}")
        if in_channels // beta < 1:
            raise ValueError(f"TAM in_channels={in_channels} too small for beta={beta}")
        if formulation not in FORMULATIONS:
            raise ValueError(f"unknown TAM formulation {formulation!r}; choose from {FORMULATIONS}")
        if branches not in BRANCHES or kernel not in KERNELS:
            raise ValueError(f"unknown TAM branches={branches!r} / kernel={kernel!r}; choose "
                             f"branches from {BRANCHES} and kernel from {KERNELS} "
                             "(tam_kwargs, or model.tam.* in a config)")
        if kernel_init not in KERNEL_INITS or (kernel_init != "uniform" and kernel != "fixed"):
            raise ValueError(f"TAM kernel_init={kernel_init!r}: choose from {KERNEL_INITS}, and "
                             "only with kernel='fixed' (the adaptive kernel has no parameter)")
        if kernel == "fixed" and branches == "local":
            raise ValueError("TAM kernel='fixed' replaces the global branch's kernel, but "
                             "branches='local' has no aggregation kernel; use branches='both' "
                             "or 'global'")
        self.in_channels = in_channels
        self.num_segments = num_segments
        self.alpha = alpha
        self.beta = beta
        self.kernel_size = kernel_size
        self.local_kernel_size = local_kernel_size
        self.formulation = formulation
        self.branch_set = branches  # not ``branches``: that name is the method below
        self.kernel = kernel

        t = num_segments
        self.G: nn.Sequential | None = None
        self.L: nn.Sequential | None = None
        self.kernel_logits: nn.Parameter | None = None
        if branches != "local" and kernel == "adaptive":
            self.G = nn.Sequential(  # global branch: (N*C, T) -> (N*C, K)
                nn.Linear(t, t * alpha, bias=False),
                nn.BatchNorm1d(t * alpha),
                nn.ReLU(inplace=True),
                nn.Linear(t * alpha, kernel_size, bias=False),
                nn.Softmax(-1),
            )
        elif kernel == "fixed":
            self.kernel_logits = nn.Parameter(torch.zeros(in_channels, kernel_size))  # (C, K)
            if kernel_init == "random":
                nn.init.normal_(self.kernel_logits, std=_RANDOM_LOGIT_STD)
        if branches != "global":
            self.L = nn.Sequential(  # local branch: (N, C, T) -> (N, C, T)
                nn.Conv1d(in_channels, in_channels // beta, local_kernel_size, stride=1,
                          padding=local_kernel_size // 2, bias=False),
                nn.BatchNorm1d(in_channels // beta),
                nn.ReLU(inplace=True),
                nn.Conv1d(in_channels // beta, in_channels, 1, bias=False),
                nn.Sigmoid(),
            )

    def extra_repr(self) -> str:
        switches = "" if (self.branch_set, self.kernel) == ("both", "adaptive") else \
            f", branches={self.branch_set!r}, kernel={self.kernel!r}"
        return (f"in_channels={self.in_channels}, num_segments={self.num_segments}, "
                f"alpha={self.alpha}, beta={self.beta}, kernel_size={self.kernel_size}, "
                f"formulation={self.formulation!r}{switches}")

    def _check(self, x: torch.Tensor) -> tuple[int, int, int, int, int]:
        if x.dim() != 4:
            raise ValueError(f"TAM expects (N*T, C, H, W), got shape {tuple(x.shape)}")
        nt, c, h, w = x.shape
        t = self.num_segments
        if nt % t != 0:
            raise ValueError(
                f"TAM got {nt} frames, not a multiple of num_segments={t}: "
                "input must be (N*T, C, H, W) with whole clips of T frames"
            )
        if c != self.in_channels:
            raise ValueError(f"TAM built for {self.in_channels} channels, got {c}")
        return nt // t, t, c, h, w

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Importance map V (N, C, T) and kernel Theta (N, C, K) for input (N*T, C, H, W).

        A missing branch reads as its identity: V = 1 without ``L``, Theta = the centre tap
        without a kernel (``branches="local"``)."""
        n, t, c, h, w = self._check(x)
        pooled = x.mean(dim=(2, 3)).view(n, t, c).transpose(1, 2)  # (N, C, T)
        theta = self._theta(pooled)  # (N, C, K) or None
        if theta is None:
            theta = F.one_hot(torch.full((n, c), self.kernel_size // 2, device=x.device),
                              self.kernel_size).to(pooled.dtype)  # (N, C, K)
        v = self.L(pooled) if self.L is not None else torch.ones_like(pooled)  # (N, C, T)
        return v, theta

    def _theta(self, pooled: torch.Tensor) -> torch.Tensor | None:
        """The aggregation kernel (N, C, K) for pooled (N, C, T): G's per-video softmax, the fixed
        per-channel softmax, or None (``branches="local"``: identity aggregation)."""
        n, c, t = pooled.shape
        if self.G is not None:
            return self.G(pooled.reshape(n * c, t)).view(n, c, self.kernel_size)  # (N, C, K)
        if self.kernel_logits is not None:
            return self.kernel_logits.softmax(-1).to(pooled.dtype).expand(n, c, -1)  # (N, C, K)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.formulation == "reference":
            return self._forward_reference(x)
        return self._forward_fast(x)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' formulation (ops/temporal_module.py), kept as the numeric reference."""
        n, t, c, h, w = self._check(x)
        k = self.kernel_size
        xt = x.view(n, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()  # (N, C, T, H, W)
        pooled = F.adaptive_avg_pool2d(xt.view(n * c, t, h, w), (1, 1)).view(-1, t)  # (N*C, T)
        theta = self._theta(pooled.view(n, c, t))  # (N, C, K); None: local branch only
        z = xt  # (N, C, T, H, W)
        if self.L is not None:
            v = self.L(pooled.view(n, c, t)).view(n, c, t, 1, 1)  # (N, C, T, 1, 1)
            z = xt * v  # (N, C, T, H, W)
        y = z.view(1, n * c, t, h * w)  # (1, N*C, T, H*W); identity aggregation if no kernel
        if theta is not None:
            kernel = theta.reshape(n * c, 1, -1, 1)  # (N*C, 1, K, 1)
            y = F.conv2d(y, kernel, bias=None, stride=(1, 1),
                         padding=(k // 2, 0), groups=n * c)  # (1, N*C, T, H*W)
        y = y.view(n, c, t, h, w).permute(0, 2, 1, 3, 4).contiguous()  # (N, T, C, H, W)
        return y.view(n * t, c, h, w)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = self._check(x)
        k, p = self.kernel_size, self.kernel_size // 2
        xs = x.reshape(n, t, c, h * w)  # (N, T, C, HW); a view for contiguous input
        pooled = xs.sum(-1) / (h * w)  # (N, T, C); sum's backward is a free expand, mean's is not
        theta = self._theta(pooled.transpose(1, 2))  # (N, C, K); None: local branch only
        v = self._local_fast(pooled) if self.L is not None else None  # (N, T, C)
        if theta is None:  # identity aggregation: Y = V * X
            return (xs * v.unsqueeze(-1)).view(n * t, c, h, w)  # (N*T, C, H, W)
        if v is None:  # no importance map: V = 1
            v = pooled.new_ones(n, t, c)  # (N, T, C)
        # Fold the importance map into the kernel: W[n, t, c, j] = Theta[n, c, j] * V[n, t+j-p, c].
        v_win = F.pad(v, (0, 0, p, p)).unfold(1, k, 1)  # (N, T, C, K), zero outside the clip
        weight = v_win * theta.unsqueeze(1)  # (N, T, C, K)
        if torch.is_grad_enabled() and (xs.requires_grad or weight.requires_grad):
            y = banded_temporal_conv_op(xs, weight)  # (N, T, C, HW)
        else:
            y = banded_temporal_conv(xs, weight.to(xs.dtype))  # (N, T, C, HW)
        return y.view(n * t, c, h, w)

    def _local_fast(self, pooled: torch.Tensor) -> torch.Tensor:
        """Branch L on (N, T, C) as two matmuls with the Conv1d weights: same maths, no mkldnn
        overhead on these tiny tensors, and the output already in (N, T, C)."""
        n, t, c = pooled.shape
        conv0, bn, _, conv3, _ = self.L
        q = conv0.kernel_size[0]
        cols = F.pad(pooled, (0, 0, q // 2, q // 2)).unfold(1, q, 1)  # (N, T, C, q)
        hid = F.linear(cols.reshape(n * t, c * q), conv0.weight.view(conv0.out_channels, c * q))
        hid = F.relu(bn(hid))  # (N*T, C/beta); BN over N*T rows == BN1d over (N, T)
        v = torch.sigmoid(F.linear(hid, conv3.weight.view(c, -1)))  # (N*T, C)
        return v.view(n, t, c)
