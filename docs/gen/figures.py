"""The concept pages' figures, drawn on every build from the real modules (nothing is copied from
the paper, and nothing here is committed):

* ``tam.png``: TAM's data flow; every box of the two branches is a layer of a real
  ``TAM(64, 8)``, labelled from the layer itself.
* ``tanet.png``: TANet-R50 (stages and block counts read from ``create_model("tanet_r50")``) and
  its TA-Block: a torchvision Bottleneck with TAM in its temporal slot, the three ``position``
  values marked.
* ``tam_adaptive.png``: a synthetic clip (``tanet.data.synthetic``) and the same clip reversed
  through the first TAM of a ``tanet_tiny``: the importance map V and the kernels Theta differ
  between them (they are computed from the clip), while a fixed kernel (``kernel="fixed"``)
  is the same for both.
* ``clip_policy.png``: which frames ``clip_indices`` takes (segment, dense, several clips,
  training) and how ``WindowPlan`` samples windows as clips of their span.

Each function returns PNG bytes; ``FIGURES`` maps file names to them.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np

__all__ = ["FIGURES", "tam_figure", "tanet_figure", "tam_adaptive_figure", "clip_policy_figure"]

_BOX = dict(boxstyle="round,pad=0.35", fc="#eef3fb", ec="#3b6bb5", lw=1.0)
_DATA = dict(boxstyle="round,pad=0.35", fc="#fff6e0", ec="#c08a00", lw=1.0)
_OP = dict(boxstyle="circle,pad=0.25", fc="white", ec="#444444", lw=1.0)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], **kw) -> None:
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.0,
                                                    shrinkA=11, shrinkB=11, **kw))


def _link(ax, a, b, at_a: tuple[float, float], at_b: tuple[float, float], **kw) -> None:
    """An arrow from a point of text box ``a`` to one of ``b`` (fractions of their boxes)."""
    style = dict(arrowstyle="-|>", color=kw.pop("color", "#444444"), lw=1.0, shrinkA=4,
                 shrinkB=4, **kw)
    ax.annotate("", xy=at_b, xycoords=b, xytext=at_a, textcoords=a, arrowprops=style)


def _layer_label(m) -> str:
    """A short label of one branch layer, read from the layer."""
    import torch.nn as nn

    if isinstance(m, nn.Conv1d):
        return f"Conv1d {m.in_channels}→{m.out_channels}, k={m.kernel_size[0]}"
    if isinstance(m, nn.Linear):
        return f"Linear {m.in_features}→{m.out_features}"
    if isinstance(m, nn.BatchNorm1d):
        return f"BatchNorm1d({m.num_features})"
    return type(m).__name__


def tam_figure() -> bytes:
    from matplotlib.figure import Figure

    from tanet.models.tam import TAM

    c, t = 64, 8
    tam = TAM(c, t)
    k = tam.kernel_size
    fig = Figure(figsize=(9.5, 7.2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    ax.text(5, 9.5, "X  (N·T, C, H, W)   input frames' features", ha="center", bbox=_DATA)
    ax.text(5, 8.55, "global average pool over H, W", ha="center", bbox=_BOX)
    ax.text(5, 7.6, "X̂  (N, C, T)", ha="center", bbox=_DATA)
    _arrow(ax, (5, 9.5), (5, 8.55))
    _arrow(ax, (5, 8.55), (5, 7.6))
    columns = [(2.4, "local branch L: importance map", tam.L, "V  (N, C, T) in (0, 1)",
                "on X̂ as (N, C, T): time is the length"),
               (7.6, "global branch G: adaptive kernel", tam.G, f"Θ  (N, C, K={k}), sums to 1",
                "on X̂ as (N·C, T): time is the features")]
    for x, title, branch, out, note in columns:
        _arrow(ax, (5, 7.6), (x, 6.75))
        ax.text(x, 6.75, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x, 6.4, note, ha="center", va="center", fontsize=8, color="#555555")
        ax.annotate("", xy=(x, 5.95), xytext=(x, 6.3),
                    arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.0, shrinkB=9))
        y = 5.95
        for m in branch:
            ax.text(x, y, _layer_label(m), ha="center", fontsize=9, bbox=_BOX)
            _arrow(ax, (x, y), (x, y - 0.62))
            y -= 0.62
        ax.text(x, y, out, ha="center", bbox=_DATA)
        ax.text(x, y - 0.35, "per clip, channel and frame" if branch is tam.L
                else "one K-tap kernel per clip and channel", ha="center", fontsize=8,
                color="#555555")
    ax.text(2.4, 1.55, "⊙", ha="center", va="center", fontsize=14, bbox=_OP)
    ax.text(2.75, 1.05, "Z = X ⊙ V (excite)", ha="left", va="center", fontsize=9)
    _arrow(ax, (2.4, 2.85), (2.4, 1.55))
    ax.plot([3.25, 0.3, 0.3], [9.5, 9.5, 1.55], color="#999999", lw=1.0, ls="--")
    ax.annotate("", xy=(2.4, 1.55), xytext=(0.3, 1.55),
                arrowprops=dict(arrowstyle="-|>", color="#999999", lw=1.0, ls="--", shrinkB=11))
    ax.text(0.4, 5.0, "X", fontsize=9, color="#777777")
    ax.text(5.9, 1.55, "⊛", ha="center", va="center", fontsize=14, bbox=_OP)
    ax.text(6.35, 1.2, "Y[n,c,t] = Σ_k Θ[n,c,k] · Z[n,c,t+k−K//2]\n"
                      "channel-wise temporal convolution (aggregate)", fontsize=9)
    _arrow(ax, (2.4, 1.55), (5.9, 1.55))
    _arrow(ax, (7.6, 2.85), (5.9, 1.55))
    ax.text(5.9, 0.4, "Y  (N·T, C, H, W)   same layout as X", ha="center", bbox=_DATA)
    _arrow(ax, (5.9, 1.55), (5.9, 0.4))
    ax.text(9.9, 9.5, f"as built by TAM({c}, {t}):\nC={c}, T={t}, α={tam.alpha}, "
                      f"β={tam.beta}, K={k}", ha="right", va="top", fontsize=8, color="#555555")
    return _png(fig)


def _stage_blocks() -> list[tuple[str, int, int, int]]:
    """(stage, blocks, blocks with TAM, output channels) of TANet-R50, from the built model."""
    from tanet import create_model
    from tanet.models.tam import TAM

    model = create_model("tanet_r50", num_classes=400, num_segments=8)
    out = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(model.backbone, name)
        with_tam = sum(isinstance(getattr(b, "temporal", None), TAM) for b in stage)
        out.append((name, len(stage), with_tam, stage[-1].conv3.out_channels))
    return out


def tanet_figure() -> bytes:
    from matplotlib.figure import Figure

    from tanet.models.resnet import POSITIONS, TAM_PLACEMENT

    stages = _stage_blocks()
    fig = Figure(figsize=(10, 6.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    row = [("clips\n(N, T, 3, H, W)", _DATA), ("frames\n(N·T, 3, H, W)", _DATA), ("stem", _BOX)]
    row += [(f"{s}\n{n} blocks\n(TAM in {m})\n{ch} ch", _BOX) for s, n, m, ch in stages]
    row += [("pool, dropout,\nfc per frame", _BOX), ("average\nover T\n→ (N, K)", _DATA)]
    xs = np.linspace(0.55, 9.45, len(row))
    boxes = [ax.text(x, 8.6, label, ha="center", va="center", fontsize=8, bbox=style)
             for (label, style), x in zip(row, xs)]
    for a, b in zip(boxes, boxes[1:]):
        _link(ax, a, b, (1, 0.5), (0, 0.5))
    ax.text(5, 9.7, "TANet-R50: a ResNet-50 run on every frame, TAM inside every block, "
                    "scores averaged over the T frames", ha="center", fontsize=10, weight="bold")
    ax.text(5, 6.95, "TA-Block: torchvision's Bottleneck with TAM on its residual branch",
            ha="center", fontsize=10, weight="bold")
    steps = [("input (N·T, Cin, H, W)", _DATA, None), ("slot: before_conv1", None, "before_conv1"),
             ("conv1 1×1, BN, ReLU", _BOX, None), ("slot: after_conv1", None, "after_conv1"),
             ("conv2 3×3, BN, ReLU", _BOX, None), ("slot: after_conv2", None, "after_conv2"),
             ("conv3 1×1, BN", _BOX, None), ("⊕ identity, ReLU", _BOX, None)]
    default = TAM_PLACEMENT["position"]
    y = 6.3
    texts = []
    for label, style, slot in steps:
        if slot is not None:
            assert slot in POSITIONS
            on = slot == default
            box = dict(boxstyle="round,pad=0.35", fc="#e4f4e4" if on else "white",
                       ec="#2e8b57" if on else "#aaaaaa", lw=1.4 if on else 0.8,
                       ls="-" if on else "--")
            texts.append(ax.text(3.2, y, f"TAM  ({slot}{', the paper' if on else ''})",
                                 ha="center", va="center", fontsize=9,
                                 color="black" if on else "#888888", bbox=box))
        else:
            texts.append(ax.text(3.2, y, label, ha="center", va="center", fontsize=9,
                                 bbox=style))
        y -= 0.78
    for a, b in zip(texts, texts[1:]):
        _link(ax, a, b, (0.5, 0), (0.5, 1))
    _link(ax, texts[0], texts[-1], (1, 0.5), (1, 0.5), connectionstyle="arc3,rad=-0.45",
          color="#999999")
    ax.text(5.05, 3.6, "identity\n(untouched)", fontsize=8, color="#555555")
    ax.text(6.4, 5.6, "position chooses the slot\n(model.tam.position);\n"
                      "stages and every choose\nwhich blocks get TAM.\n\n"
                      "TAM keeps the layout\n(N·T, C, H, W): the block's\n"
                      "shapes and weights are\nResNet's, so ImageNet\n"
                      "weights load unchanged.", fontsize=9, va="top")
    return _png(fig)


def _synthetic_clip(t: int, size: int) -> np.ndarray:
    """A ``move_right`` clip of the synthetic benchmark, (T, S, S, 3) uint8, seed 0."""
    from tanet.data.synthetic import render_sequence

    frames = render_sequence(0, np.random.default_rng(0), frames=16, size=size)  # (16, S, S, 3)
    return frames[np.linspace(0, 15, t).round().astype(int)]


def _normalised(clip: np.ndarray):
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) normalised as the model's card says."""
    import torch

    from tanet.geometry import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (x - mean[:, None, None]) / std[:, None, None]  # (T, 3, H, W)


def tam_adaptive_figure() -> bytes:
    import torch
    from matplotlib.figure import Figure

    from tanet import create_model
    from tanet.apps.visualize import capture_tam

    t, size, channels = 8, 64, 16
    clip = _synthetic_clip(t, size)
    clips = {"clip": clip, "reversed": clip[::-1].copy()}
    caps = {}
    for kernel in ("adaptive", "fixed"):
        torch.manual_seed(0)
        kw = {"kernel": "fixed", "kernel_init": "random"} if kernel == "fixed" else {}
        model = create_model("tanet_tiny", num_classes=6, num_segments=t, tam_kwargs=kw)
        for name, c in clips.items():
            caps[kernel, name] = capture_tam(model, _normalised(c))[0]  # the first TAM
    fig = Figure(figsize=(11, 6.4))
    grid = fig.add_gridspec(3, t, height_ratios=[1, 1, 3.2], hspace=0.3, top=0.93, bottom=0.08)
    for r, (name, c) in enumerate(clips.items()):
        for i in range(t):
            ax = fig.add_subplot(grid[r, i])
            ax.imshow(c[i])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=9)
    a_v, b_v = caps["adaptive", "clip"].v[:channels], caps["adaptive", "reversed"].v[:channels]
    a_t = caps["adaptive", "clip"].theta[:channels]
    b_t = caps["adaptive", "reversed"].theta[:channels]
    f_d = caps["fixed", "clip"].theta[:channels] - caps["fixed", "reversed"].theta[:channels]
    d_max = float(max(np.abs(a_v - b_v).max(), np.abs(a_t - b_t).max()))
    panels = [(a_v, "V: clip", "magma", None), (b_v, "V: reversed", "magma", None),
              (a_v - b_v, "V: clip − reversed", "RdBu", d_max),
              (a_t, "adaptive Θ: clip", "viridis", None),
              (a_t - b_t, "adaptive Θ: clip − reversed", "RdBu", d_max),
              (f_d, "fixed Θ: clip − reversed", "RdBu", d_max)]
    sub = grid[2, :].subgridspec(1, len(panels), wspace=0.6)
    lo, hi = float(min(a_v.min(), b_v.min())), float(max(a_v.max(), b_v.max()))
    for i, (arr, title, cmap, sym) in enumerate(panels):
        ax = fig.add_subplot(sub[0, i])
        vmin, vmax = (-sym, sym) if sym else ((lo, hi) if "V" in title else (None, None))
        im = ax.imshow(arr, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(title, fontsize=8)
        is_theta = arr.shape[1] != t
        ax.set_xlabel("tap" if is_theta else "frame", fontsize=8)
        if is_theta:
            k = arr.shape[1]
            ax.set_xticks(range(k), [f"{d:+d}" for d in range(-(k // 2), k // 2 + 1)])
        if i == 0:
            ax.set_ylabel(f"channel (first {channels})", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.08, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle("The first TAM of an untrained tanet_tiny (seed 0) on a synthetic move_right "
                 "clip and its reversal", fontsize=10)
    return _png(fig)


def clip_policy_figure() -> bytes:
    from matplotlib.figure import Figure

    from tanet.data.sampling import WindowPlan, clip_indices

    n, t = 120, 8
    rows = [("segment, test (1 clip)", clip_indices(n, t, sampling="segment")),
            ("segment, train (random offsets)",
             clip_indices(n, t, sampling="segment", train=True, rng=np.random.default_rng(0))),
            ("segment, test, 3 clips", clip_indices(n, t, sampling="segment", clips=3)),
            ("dense, stride 8, test (1 clip)", clip_indices(n, t, sampling="dense",
                                                             dense_stride=8)),
            ("dense, stride 8, test, 3 clips", clip_indices(n, t, sampling="dense",
                                                             dense_stride=8, clips=3))]
    plan = WindowPlan(length=50, step=25, num_segments=t, sampling="segment")
    spans = plan.spans(n)
    fig = Figure(figsize=(10, 4.6))
    ax = fig.add_axes((0.25, 0.12, 0.72, 0.8))
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    labels = []
    y = 0
    for label, idx in rows:
        for c, clip in enumerate(idx):
            ax.scatter(clip, np.full(t, y - 0.22 * c), s=18, color=colours[c % 3])
        labels.append((y, label))
        y -= 1
    for w, (start, length) in enumerate(spans):
        yy = y - 0.25 * w
        ax.plot([start, start + length - 1], [yy, yy], color="#dddddd", lw=7,
                solid_capstyle="butt", zorder=1)
        ax.scatter(plan.sample(start, length), np.full(t, yy), s=14, color=colours[w % 3],
                   zorder=3)
    labels.append((y - 0.25 * (len(spans) - 1) / 2,
                   f"windows of {plan.length} frames every {plan.step}\n(WindowPlan: each a test "
                   f"clip of its span)"))
    ax.set_yticks([p for p, _ in labels], [s for _, s in labels], fontsize=8)
    ax.set_xlim(-2, n + 1)
    ax.set_xlabel(f"frame index of a {n}-frame video (T = {t})")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("tanet.data.sampling.clip_indices and WindowPlan", fontsize=10)
    return _png(fig)


FIGURES: dict[str, Callable[[], bytes]] = {
    "tam.png": tam_figure,
    "tanet.png": tanet_figure,
    "tam_adaptive.png": tam_adaptive_figure,
    "clip_policy.png": clip_policy_figure,
}
