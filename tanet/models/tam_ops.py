"""TAM's banded temporal convolution: the kernels and a ``torch.library`` custom op.

The aggregation step of TAM's fast formulation is y[:, t] = sum_j w[:, t, :, j] * x[:, t+j-K//2]
on x (N, T, C, HW) and a per-(clip, frame, channel) kernel w (N, T, C, K). Its autograd graph as
plain tensor ops keeps K shifted copies alive; the hand-written backward needs one pass for the
input gradient and one GEMM per clip for the kernel gradient.

* :func:`banded_temporal_conv`, :func:`banded_gram`: the kernels, plain tensor ops (so
  ``torch.export``/ONNX and Inductor can trace them);
* ``torch.ops.tanet.banded_temporal_conv`` (:func:`banded_temporal_conv_op`): the forward as a
  custom op with a registered backward and a fake (meta) implementation, so ``torch.compile``
  keeps the training graph whole (no graph break) and AOTAutograd traces the backward formula.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["banded_temporal_conv", "banded_gram", "banded_temporal_conv_op"]


def banded_temporal_conv(x: torch.Tensor, weight: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Per-(clip, frame, channel) weighted sum of K neighbouring frames.

    x: (N, T, C, HW); weight: (N, T, C, K). Returns (N, T, C, HW) with
    y[:, t] = sum_j weight[:, t, :, j] * x[:, t + j - K//2] (zero outside the clip), or with
    ``transpose=True`` the adjoint: y[:, t + j - K//2] += weight[:, t, :, j] * x[:, t].
    One fused multiply-add pass per tap, in the native layout. Under ``torch.export`` (and so
    ONNX export) the taps are summed out of place instead: in-place slice updates become a
    scatter (a full copy) per tap in the exported graph.
    """
    if torch.compiler.is_exporting() and not transpose:
        return _banded_out_of_place(x, weight)
    t, k = x.shape[1], weight.shape[-1]
    p = k // 2
    wt = weight.unsqueeze(-1)  # (N, T, C, K, 1)
    y = x * wt[:, :, :, p]  # centre tap, (N, T, C, HW)
    for j in range(k):
        d = j - p  # output frame s reads input frame s + d
        if d == 0 or abs(d) >= t:
            continue
        lo, hi = max(0, -d), t - max(0, d)  # output frames with a valid input frame
        if transpose:
            y[:, lo + d:hi + d].addcmul_(x[:, lo:hi], wt[:, lo:hi, :, j])
        else:
            y[:, lo:hi].addcmul_(x[:, lo + d:hi + d], wt[:, lo:hi, :, j])
    return y


def _banded_out_of_place(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """:func:`banded_temporal_conv` as pad + K slices, multiplies and adds: (N, T, C, HW)."""
    t, k = x.shape[1], weight.shape[-1]
    p = k // 2
    xp = F.pad(x, (0, 0, 0, 0, p, p))  # (N, T + 2p, C, HW), zero frames outside the clip
    y = xp[:, p:p + t] * weight[..., p:p + 1]  # centre tap, (N, T, C, HW)
    for j in range(k):
        if j != p:
            y = y + xp[:, j:j + t] * weight[..., j:j + 1]  # (N, T, C, HW)
    return y


def banded_gram(gy: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """g[n, t, c, j] = <gy[n, t, c, :], x[n, t + j - K//2, c, :]>, zero outside the clip.

    gy, x: (N, T, C, HW) -> (N, T, C, K). One strided batched GEMM per clip over the C channels
    ((T, HW) @ (HW, T), read in place), then the K diagonals of the (T, T) result.
    """
    n, t, c, _ = x.shape
    p = k // 2
    out = x.new_zeros(n, t, c, k)
    for i in range(n):
        gram = torch.bmm(gy[i].permute(1, 0, 2), x[i].permute(1, 2, 0))  # (C, T, T)
        for j in range(k):
            d = j - p
            if abs(d) >= t:
                continue
            lo, hi = max(0, -d), t - max(0, d)
            out[i, lo:hi, :, j] = torch.diagonal(gram, offset=d, dim1=-2, dim2=-1).t()  # (T-|d|, C)
    return out


@torch.library.custom_op("tanet::banded_temporal_conv", mutates_args=())
def banded_temporal_conv_op(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """:func:`banded_temporal_conv` of x (N, T, C, HW) with weight (N, T, C, K) cast to x's dtype
    (under bf16 autocast the kernel may arrive in float32); returns (N, T, C, HW), contiguous."""
    return banded_temporal_conv(x.contiguous(), weight.to(x.dtype))


@banded_temporal_conv_op.register_fake
def _banded_temporal_conv_fake(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape)  # (N, T, C, HW), contiguous like the real output


def _setup_context(ctx, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
    x, weight = inputs
    ctx.save_for_backward(x, weight)


def _backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Input gradient: the adjoint pass; kernel gradient: the banded Gram, in weight's dtype."""
    x, weight = ctx.saved_tensors
    w = weight.to(x.dtype)
    gy = gy.contiguous()  # (N, T, C, HW)
    gx = banded_temporal_conv(gy, w, transpose=True) if ctx.needs_input_grad[0] else None
    gw = None
    if ctx.needs_input_grad[1]:
        gw = banded_gram(gy, x.contiguous(), w.shape[-1]).to(weight.dtype)  # (N, T, C, K)
    return gx, gw


banded_temporal_conv_op.register_autograd(_backward, setup_context=_setup_context)
