"""TANet-R50 / TSN-R50: parameters, FLOPs (MACs), inference time and train-step time.

8 frames at 224 px; inference on a batch of 1 clip, a train step (forward, backward, SGD step)
on a batch of 2 clips; both models timed interleaved in the same run.
Usage: python benchmarks/model_cost.py [--device cuda] [--rounds 5] [--model tanet_r50 --base tsn_r50]
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from tanet.models import create_model  # noqa: E402
from tanet.models.cost import model_cost  # noqa: E402
from tanet.testing.timing import interleaved_samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tanet_r50")
    ap.add_argument("--base", default="tsn_r50")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=15)
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

    inf = interleaved_samples({n: (lambda n=n: infer(n)) for n in models}, rounds=args.rounds,
                              sync=sync)
    trn = interleaved_samples({n: (lambda n=n: train_step(n)) for n in models},
                              rounds=args.rounds, warmup=1, sync=sync)
    a, b = args.model, args.base
    print(f"{t} frames x {s} px, device={dev}, threads={torch.get_num_threads()}, "
          f"{args.rounds} interleaved rounds (median / min)")
    print(f"{'':<22}{a:>16}{b:>16}{'ratio (median)':>16}{'ratio (min)':>13}{'target':>9}")
    ca, cb = costs[a], costs[b]
    print(f"{'params (M)':<22}{ca.params / 1e6:>16.2f}{cb.params / 1e6:>16.2f}"
          f"{ca.params / cb.params:>16.4f}")
    print(f"{'GMACs / clip':<22}{ca.gmacs:>16.2f}{cb.gmacs:>16.2f}{ca.gmacs / cb.gmacs:>16.4f}"
          f"{'':>13}{'<= 1.02':>9}")
    for label, res, target in (("inference ms (bs 1)", inf, 1.10),
                               ("train step ms (bs 2)", trn, 1.15)):
        med = {k: statistics.median(v) * 1e3 for k, v in res.items()}
        low = {k: min(v) * 1e3 for k, v in res.items()}
        print(f"{label:<22}{f'{med[a]:.1f} / {low[a]:.1f}':>16}{f'{med[b]:.1f} / {low[b]:.1f}':>16}"
              f"{med[a] / med[b]:>16.4f}{low[a] / low[b]:>13.4f}{f'<= {target:.2f}':>9}")

if __name__ == "__main__":
    main()
