"""Forward+backward time of TAM: fast formulation vs the authors' grouped-conv reference.

Shapes: TANet-R50's four stages (C = 64, 128, 256, 512 at 56, 28, 14, 7 px) with T=8, batch 2
clips, 224 px input. Both formulations share weights and inputs and run interleaved in one run.
Usage: python benchmarks/tam_op.py [--device cuda] [--rounds 20]
"""
from __future__ import annotations

import argparse

import torch

from tanet.models.tam import TAM  # noqa: E402
from tanet.testing.timing import interleaved

STAGES = [("layer1", 64, 56), ("layer2", 128, 28), ("layer3", 256, 14), ("layer4", 512, 7)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n, t = args.batch, args.frames
    print(f"TAM forward+backward, N={n} clips x T={t}, device={dev}, threads={torch.get_num_threads()}")
    print(f"{'stage':<8}{'shape (NT,C,H,W)':<22}{'reference ms':>14}{'fast ms':>10}{'speed-up':>10}")
    tot = {"reference": 0.0, "fast": 0.0}
    for name, c, s in STAGES:
        torch.manual_seed(0)
        fast = TAM(c, t).to(dev)
        ref = TAM(c, t, formulation="reference").to(dev)
        ref.load_state_dict(fast.state_dict())
        x = torch.randn(n * t, c, s, s, device=dev)
        g = torch.randn(n * t, c, s, s, device=dev)

        def step(m):
            xi = x.detach().requires_grad_()
            m(xi).backward(g)

        res = interleaved({"reference": lambda: step(ref), "fast": lambda: step(fast)},
                          rounds=args.rounds, sync=sync)
        for k in tot:
            tot[k] += res[k]
        print(f"{name:<8}{str((n * t, c, s, s)):<22}{res['reference'] * 1e3:>14.2f}"
              f"{res['fast'] * 1e3:>10.2f}{res['reference'] / res['fast']:>9.2f}x")
    print(f"{'all four':<30}{tot['reference'] * 1e3:>14.2f}{tot['fast'] * 1e3:>10.2f}"
          f"{tot['reference'] / tot['fast']:>9.2f}x")


if __name__ == "__main__":
    main()
