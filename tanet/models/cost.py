"""Parameter and FLOP counts (multiply-accumulates, via ``torch.utils.flop_counter``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from tanet.models.tam import TAM

__all__ = ["ModelCost", "model_cost"]


@dataclass
class ModelCost:
    params: int
    tam_params: int
    macs: int  # per clip
    tam_macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def model_cost(model: nn.Module, *, frames: int, size: int) -> ModelCost:
    """Parameters and MACs of one clip (1, T, 3, size, size) in eval mode.

    TAM modules are counted in their reference formulation, whose grouped convolution the
    counter sees (the fast formulation does the same multiply-adds as elementwise ops, which
    FlopCounterMode, like for BN and ReLU, does not count). The excitation X*V is likewise an
    elementwise product and not counted.
    """
    tams = [m for m in model.modules() if isinstance(m, TAM)]
    saved = [m.formulation for m in tams]
    params = sum(p.numel() for p in model.parameters())
    tam_params = sum(p.numel() for m in tams for p in m.parameters())
    was_training = model.training
    model.eval()
    try:
        for m in tams:
            m.formulation = "reference"
        x = torch.zeros(1, frames, 3, size, size)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        per_module = counter.get_flop_counts()
        tam_names = {name for name, m in model.named_modules() if isinstance(m, TAM)}
        tam_flops = 0
        for key, ops in per_module.items():
            # keys are "Global" and dotted module paths prefixed with the root class name
            path = key.split(".", 1)[1] if "." in key else ""
            if path in tam_names:
                tam_flops += sum(ops.values())
        total = counter.get_total_flops()
    finally:
        for m, f in zip(tams, saved):
            m.formulation = f
        model.train(was_training)
    return ModelCost(params=params, tam_params=tam_params, macs=total // 2, tam_macs=tam_flops // 2)
