"""TANet-R50 / TSN-R50: parameters, FLOPs (MACs), inference time and train-step time.

8 frames at 224 px; inference on a batch of 1 clip, a train step (forward, backward, SGD step)
on a batch of 2 clips; both models timed interleaved in the same run.
Usage: python benchmarks/model_cost.py [--device cuda] [--rounds 5] [--model tanet_r50 --base tsn_r50]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from _timing import interleaved  # noqa: E402

from tanet.models import create_model  # noqa: E402
from tanet.models.cost import model_cost  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tanet_r50")
    ap.add_argument("--base", default="tsn_r50")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t, s = args.frames, args.size
    models, costs, opts = {}, {}, {}
    for name in (args.model, args.base):
        torch.manual_seed(0)
        m = create_model(name, num_classes=400, num_segments=t)
        costs[name] = model_cost(m, frames=t, size=s)
        models[name] = m.to(dev)
        opts[name] = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x1 = torch.randn(1, t, 3, s, s, device=dev)
    x2 = torch.randn(2, t, 3, s, s, device=dev)
    y2 = torch.randint(0, 400, (2,), device=dev)

    def infer(name):
        m = models[name].eval()
        with torch.inference_mode():
            m(x1)

    def train_step(name):
        m, opt = models[name].train(), opts[name]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x2), y2).backward()
        opt.step()

    inf = interleaved({n: (lambda n=n: infer(n)) for n in models}, rounds=args.rounds, sync=sync)
    trn = interleaved({n: (lambda n=n: train_step(n)) for n in models}, rounds=args.rounds,
                      warmup=1, sync=sync)
    a, b = args.model, args.base
    print(f"{t} frames x {s} px, device={dev}, threads={torch.get_num_threads()}, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'':<22}{a:>12}{b:>12}{'ratio':>9}{'target':>9}")
    rows = [
        ("params (M)", costs[a].params / 1e6, costs[b].params / 1e6, None),
        ("GMACs / clip", costs[a].gmacs, costs[b].gmacs, 1.02),
        ("inference ms (bs 1)", inf[a] * 1e3, inf[b] * 1e3, 1.10),
        ("train step ms (bs 2)", trn[a] * 1e3, trn[b] * 1e3, 1.15),
    ]
    for label, va, vb, target in rows:
        tgt = f"<= {target:.2f}" if target else ""
        print(f"{label:<22}{va:>12.2f}{vb:>12.2f}{va / vb:>9.4f}{tgt:>9}")


if __name__ == "__main__":
    main()
