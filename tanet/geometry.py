"""How a model is fed at test time: :class:`Geometry`, the one description of the test pipeline,
and the names it gives each concept.

A model's card (:class:`tanet.models.recognizer.ModelCard`) is a Geometry plus the model's
identity (it inherits these fields), and the config keys that override a card are spelt the same
way, so one concept has one name everywhere:

| concept                     | card and Geometry  | config key (or option)                   |
| --------------------------- | ------------------ | ---------------------------------------- |
| frames per clip, T          | ``num_segments``   | ``model.num_segments`` (builds the model)|
| crop (C, H, W)              | ``input_size``     | ``model.input_size`` (the side, pixels)  |
| test short side (pixels)    | ``short_side``     | ``data.short_side``                      |
| frame sampling              | ``sampling``       | ``data.sampling``, ``--sampling``        |
| dense sampling's stride     | ``dense_stride``   |                                          |
| normalisation of 0-1 pixels | ``mean``, ``std``  |                                          |

:meth:`Geometry.with_overrides` is the one rule by which a config or a command's option
overrides a card, for training, ``tanet test`` and ``tanet predict``. :data:`SAMPLINGS` names the
samplings (the formulas: :func:`tanet.data.sampling.clip_indices`). This module imports nothing
of tanet, so both ``models`` (the card) and ``data`` (the clip policy) use it without importing
each other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Geometry", "SAMPLINGS", "IMAGENET_MEAN", "IMAGENET_STD"]

# Frame sampling: "segment" (TSN: one frame per each of T equal segments, centres at test time)
# or "dense" (I3D-style: T frames ``dense_stride`` apart, Kinetics).
SAMPLINGS = ("segment", "dense")

# ImageNet normalisation of 0-1 RGB pixels: the one definition (torchvision's, the paper's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

G = TypeVar("G", bound="Geometry")


@dataclass(kw_only=True, slots=True)
class Geometry:
    """The test pipeline of a model: T frames sampled with ``sampling`` (``dense``:
    ``dense_stride`` apart, None is the authors' 64 // T), decoded with their short side resized
    to ``short_side``, centre (or 3 / 10) crops of ``input_size[-1]`` pixels, normalised with
    ``mean``/``std``. Slotted, so a misspelt field is an error rather than a new attribute."""

    num_segments: int = 8  # T, frames per clip
    input_size: tuple[int, int, int] = (3, 224, 224)  # (C, H, W) of the model's input
    short_side: int = 256  # frames are resized to this short side, then cropped
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sampling: str = "segment"  # one of SAMPLINGS
    dense_stride: int | None = None  # dense sampling: None is 64 // T (the authors')

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}; "
                             f"got {self.sampling!r}")
        for name in ("num_segments", "short_side"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if min(self.input_size) < 1:
            raise ValueError(f"input_size must be positive (C, H, W); got {self.input_size}")
        if self.dense_stride is not None and self.dense_stride < 1:
            raise ValueError(f"dense_stride must be >= 1 or None; got {self.dense_stride}")

    @property
    def geometry(self) -> Geometry:
        """The test pipeline alone, a copy (of a card: without the model's identity)."""
        return Geometry(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Geometry)})

    def with_overrides(self: G, *, input_size: int | None = None, short_side: int | None = None,
                       sampling: str | None = None) -> G:
        """A copy (of the same class: a card stays a card) with a config's or a command's values;
        None keeps this one's. A new crop side ``input_size`` (pixels; the config's
        ``model.input_size``) scales the short side by the same ratio (a 224 crop of 256 becomes
        a 112 crop of 128) unless ``short_side`` is given too. Applying the same values twice
        changes nothing, so a run's stored config may be applied again to its own card. T is not
        here: it is the model's (``create_model(num_segments=...)``)."""
        changes: dict[str, object] = {}
        if input_size is not None:
            side = int(input_size)
            changes["input_size"] = (self.input_size[0], side, side)
            changes["short_side"] = int(round(side * self.short_side / self.input_size[-1]))
        if short_side is not None:
            changes["short_side"] = int(short_side)
        if sampling is not None:
            changes["sampling"] = sampling
        return dataclasses.replace(self, **changes)
