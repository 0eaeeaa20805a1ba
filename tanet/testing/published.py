"""Published checkpoint layouts the tests and benchmarks write themselves (the inverse of
``tanet.models.convert``), so that a real .pth in the publishers' layout can be served locally."""
from __future__ import annotations

import re
from typing import Mapping

import torch


def to_mmaction2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """tanet names -> mmaction2's TANet names (ConvModules, TABlock.block, tam, cls_head)."""
    out = {}
    for k, v in state.items():
        if k.startswith("fc."):
            out["cls_head.fc_cls." + k[3:]] = v
            continue
        k = k.replace("backbone.conv1.weight", "backbone.conv1.conv.weight")
        k = re.sub(r"^backbone\.bn1\.", "backbone.conv1.bn.", k)
        m = re.match(r"^(backbone\.layer\d+\.\d+)\.(.*)$", k)
        if m:
            prefix, rest = m.groups()
            rest = re.sub(r"^conv(\d)\.weight$", r"conv\1.conv.weight", rest)
            rest = re.sub(r"^bn(\d)\.", r"conv\1.bn.", rest)
            rest = rest.replace("downsample.0.", "downsample.conv.").replace("downsample.1.",
                                                                           "downsample.bn.")
            k = f"{prefix}.tam.{rest[9:]}" if rest.startswith("temporal.") else \
                f"{prefix}.block.{rest}"
        out[k] = v
    return out
