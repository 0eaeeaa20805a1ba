"""Weights-hub benchmark: seconds from a checkpoint spec to tanet-named weights + card
(``read_checkpoint``) for a URL on first use (download over loopback + sha256 + conversion +
writing the .safetensors), for the same URL afterwards (the cached .safetensors), and for the
mmaction2 .pth read and converted on every load (what a plain file path costs). Building the
model from the weights is the same for all three and is timed once, apart.

A randomly initialised TANet-R50 (Kinetics-400 head) saved in mmaction2's layout (~100 MB) is
served by an HTTP server on 127.0.0.1; the torch.hub cache is a temporary folder. Candidates run
interleaved round after round (benchmarks/_timing.py); medians and minima are printed.

Run: .venv/bin/python benchmarks/hub_cache.py [--rounds 7]
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import os
import statistics
import tempfile
import threading
from pathlib import Path

import torch

import tanet  # noqa: E402
from tanet.models.convert import read_checkpoint  # noqa: E402
from tanet.models.download import cache_dir  # noqa: E402
from tanet.models.factory import model_from_checkpoint  # noqa: E402
from tanet.testing.published import to_mmaction2
from tanet.testing.timing import interleaved_samples


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub_bench_") as d:
        run(Path(d), args.rounds)


def run(tmp: Path, rounds: int) -> None:
    os.environ["TORCH_HOME"] = str(tmp / "torch")
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    torch.manual_seed(0)
    model = tanet.create_model("tanet_r50", num_classes=400).eval()
    served = tmp / "served"
    served.mkdir()
    raw = served / "tanet_r50_k400_mm.pth"
    torch.save({"meta": {"epoch": 100}, "state_dict": to_mmaction2(model.state_dict())}, raw)
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          functools.partial(_Quiet, directory=str(served)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/{raw.name}#sha256={sha}"

    def first_use():
        for f in cache_dir().glob("tanet_r50_k400_mm.*"):
            f.unlink()
        return read_checkpoint(url)

    fns = {"first use: download+sha256+convert+write": first_use,
           "cached .safetensors": lambda: read_checkpoint(url),
           "local .pth, converted on every load": lambda: read_checkpoint(raw)}
    times = interleaved_samples(fns, rounds=rounds, warmup=1)
    srv.shutdown()
    build = interleaved_samples({"b": lambda: model_from_checkpoint(read_checkpoint(url))},
                                rounds=3, warmup=0)["b"]
    size = raw.stat().st_size / 2**20
    print(f"TANet-R50 K400 head, mmaction2 layout, {size:.0f} MiB .pth served on 127.0.0.1; "
          f"{rounds} interleaved rounds, torch threads {torch.get_num_threads()}")
    cached = times["cached .safetensors"]
    base = statistics.median(cached)
    for name, t in times.items():
        print(f"{name:<42} median {statistics.median(t):6.3f} s  min {min(t):6.3f} s  "
              f"x{statistics.median(t) / base:6.1f} of cached")
    print(f"{'(then building the model, common to all)':<42} median {statistics.median(build):6.3f} s"
          f"  min {min(build):6.3f} s")
    print(f"load average during the run: {os.getloadavg()[0]:.1f}; spread max/min of cached: "
          f"{max(cached) / min(cached):.2f}")


if __name__ == "__main__":
    main()
