"""Pictures of what a TANet sees: sampled frames, TAM's importance maps and kernels, per-frame
class evidence.

Everything draws on a bare :class:`matplotlib.figure.Figure` (no pyplot, no global state, no
display needed). :func:`plot_tam_kernels` is also what the demo report uses.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from tanet.models.tam import TAM

__all__ = ["TamCapture", "capture_tam", "plot_tam_kernels", "plot_frames", "plot_frame_evidence",
           "frame_evidence", "visualize_video", "write_pictures"]


@dataclass
class TamCapture:
    """V and Theta of one TAM for one clip: ``v`` (C, T) in (0, 1), ``theta`` (C, K) summing to 1."""

    name: str  # module path, e.g. "backbone.layer2.0.temporal"
    stage: str  # "layer1" .. "layer4"
    v: np.ndarray  # (C, T)
    theta: np.ndarray  # (C, K)


def _stage_of(name: str) -> str:
    return next((p for p in name.split(".") if p.startswith("layer")), name)


def capture_tam(model: nn.Module, clip: torch.Tensor) -> list[TamCapture]:
    """Run ``model`` once on ``clip`` (T, C, H, W) or (1, T, C, H, W) in eval mode and return
    V and Theta of every TAM, in network order, via forward pre-hooks calling ``TAM.branches``."""
    if clip.dim() == 4:
        clip = clip.unsqueeze(0)  # (1, T, C, H, W)
    if clip.dim() != 5 or clip.shape[0] != 1:
        raise ValueError(f"expected one clip (T, C, H, W), got shape {tuple(clip.shape)}")
    captures: list[TamCapture] = []
    handles = []

    def hook(name: str):
        def pre(module: TAM, inputs: tuple[torch.Tensor, ...]) -> None:
            v, theta = module.branches(inputs[0])  # (1, C, T), (1, C, K)
            captures.append(TamCapture(name, _stage_of(name), v[0].float().cpu().numpy(),
                                       theta[0].float().cpu().numpy()))
        return pre

    for name, m in model.named_modules():
        if isinstance(m, TAM):
            handles.append(m.register_forward_pre_hook(hook(name)))
    if not handles:
        raise ValueError("model has no TAM modules (a TSN/TSM model?); nothing to visualise")
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model(clip.to(param.device, param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return captures


def _savefig(fig, out_png: str | os.PathLike) -> Path:
    from tanet.io import save_figure

    return save_figure(fig, out_png, tight=True)


def plot_tam_kernels(model: nn.Module, clip: torch.Tensor, out_png: str | os.PathLike, *,
                     title: str | None = None) -> Path:
    """Draw TAM's two branches per stage for one clip and save a PNG.

    For each stage (layer1..layer4), from its last TAM block: the local importance map V
    (channels x frames, channels sorted by mean importance), the global kernels Theta (channels x
    taps, sorted by their centre of mass), and the mean kernel over channels with its spread.
    ``clip``: (T, C, H, W) normalised float, as the model takes it.
    """
    from matplotlib.figure import Figure

    caps = capture_tam(model, clip)
    stages: dict[str, TamCapture] = {}
    for c in caps:  # the last block of each stage
        stages[c.stage] = c
    rows = list(stages.values())
    fig = Figure(figsize=(11, 2.6 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, cap in enumerate(rows):
        v, theta = cap.v, cap.theta  # (C, T), (C, K)
        c, t = v.shape
        k = theta.shape[1]
        taps = np.arange(k) - k // 2
        ax = axes[r, 0]
        order = np.argsort(-v.mean(1))
        im = ax.imshow(v[order], aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{cap.name}: importance map L", fontsize=8)
        ax.set_xlabel("frame")
        ax.set_ylabel(f"channel ({c}, sorted)")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[r, 1]
        order = np.argsort(theta @ taps)
        im = ax.imshow(theta[order], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_xticks(range(k), [f"{d:+d}" for d in taps])
        ax.set_title(f"{cap.stage}: aggregation kernels G", fontsize=8)
        ax.set_xlabel("temporal offset")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[r, 2]
        mean, std = theta.mean(0), theta.std(0)  # (K,)
        ax.bar(taps, mean, yerr=std, color="tab:blue", alpha=0.8, capsize=3)
        ax.axhline(1 / k, color="grey", lw=0.8, ls="--", label="uniform")
        ax.set_xticks(taps)
        ax.set_ylim(0, 1)
        ax.set_title(f"{cap.stage}: mean kernel +- std over channels", fontsize=8)
        ax.set_xlabel("temporal offset")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _savefig(fig, out_png)


def plot_frames(frames: np.ndarray, out_png: str | os.PathLike, *,
                times: Sequence[float] | None = None, title: str | None = None) -> Path:
    """The sampled frames (T, H, W, 3) uint8 in one row, labelled with their time in seconds."""
    from matplotlib.figure import Figure

    t = len(frames)
    fig = Figure(figsize=(1.8 * t, 2.2))
    axes = fig.subplots(1, t, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.imshow(frames[i])
        ax.set_axis_off()
        ax.set_title(f"{i}" + (f" @ {times[i]:.2f}s" if times is not None else ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _savefig(fig, out_png)


def frame_evidence(model: nn.Module, clip: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame class probabilities (T, K) from ``model.forward_frames`` and the clip's (K,)."""
    if clip.dim() == 4:
        clip = clip.unsqueeze(0)  # (1, T, C, H, W)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad():
            per_frame = model.forward_frames(clip.to(param.device, param.dtype))[0]  # (T, K)
    finally:
        model.train(was_training)
    clip_probs = per_frame.mean(0).softmax(-1)  # (K,): consensus, then softmax
    return per_frame.softmax(-1).float().cpu().numpy(), clip_probs.float().cpu().numpy()


def plot_frame_evidence(model: nn.Module, clip: torch.Tensor, out_png: str | os.PathLike, *,
                        class_names: Sequence[str] | None = None, topk: int = 5) -> Path:
    """Per-frame probability of the clip's top-k classes (lines over frames) and the clip's
    scores (bars), from the per-frame logits before the average consensus."""
    from matplotlib.figure import Figure

    per_frame, clip_probs = frame_evidence(model, clip)  # (T, K), (K,)
    k = min(topk, clip_probs.shape[0])
    top = np.argsort(-clip_probs)[:k]
    names = [class_names[i] if class_names and i < len(class_names) else f"class {i}" for i in top]
    fig = Figure(figsize=(11, 3.2))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    for j, cls in enumerate(top):
        ax1.plot(np.arange(per_frame.shape[0]), per_frame[:, cls], marker="o", label=names[j])
    ax1.set_xlabel("frame")
    ax1.set_ylabel("per-frame probability")
    ax1.set_ylim(0, 1)
    ax1.set_title("per-frame class evidence (before consensus)", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.barh(range(k)[::-1], clip_probs[top], color="tab:green")
    ax2.set_yticks(range(k)[::-1], names, fontsize=7)
    ax2.set_xlim(0, 1)
    ax2.set_title("clip prediction", fontsize=9)
    fig.tight_layout()
    return _savefig(fig, out_png)


def visualize_video(video: str | os.PathLike, checkpoint: str | os.PathLike,
                    out_dir: str | os.PathLike, *, topk: int = 5) -> list[Path]:
    """``tanet visualize``: sample one clip of ``video`` as ``tanet predict`` does (1x1 view) and
    write frames.png, tam_kernels.png (TANet only) and evidence.png into ``out_dir``."""
    from tanet.apps.predict import Predictor

    predictor = Predictor(checkpoint, views="1x1", topk=topk)
    if predictor.model is None:
        raise ValueError(f"{checkpoint}: visualize needs the PyTorch checkpoint (.safetensors), "
                         f"not an ONNX export (this one runs {predictor.kind})")
    return write_pictures(predictor.model, predictor, video, out_dir, topk=topk)


def write_pictures(model: nn.Module, predictor, video: str | os.PathLike,
                   out_dir: str | os.PathLike, *, topk: int = 5,
                   name: str | None = None) -> list[Path]:
    """The pictures of :func:`visualize_video` with a loaded ``model`` and a 1x1-view
    ``Predictor`` (its pipeline and class names); ``name`` titles them (default: the file's
    name). The server calls this per upload."""
    frames, views, times = predictor.load_views(video)  # (1, T, H, W, 3), (1, T, C, s, s), (1, T)
    out = Path(out_dir)
    name = name or Path(video).name
    written = [plot_frames(frames[0], out / "frames.png", times=times[0],
                           title=f"{name}: sampled frames")]
    if any(isinstance(m, TAM) for m in model.modules()):
        written.append(plot_tam_kernels(model, views[0], out / "tam_kernels.png",
                                        title=f"{name}: TAM per stage"))
    written.append(plot_frame_evidence(model, views[0], out / "evidence.png",
                                       class_names=predictor.class_names, topk=topk))
    return written
