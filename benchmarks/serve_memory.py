"""Resident memory of ``tanet serve`` with one and two models: the tiny test model (4 frames of
32 px) and TANet-R50 8f (random init, 400 classes), each served with its defaults (start-up
batch calibration up to 16 views, freed memory kept for the next batch).

For each case a real server subprocess is started on 127.0.0.1; its VmRSS is read from /proc
once it answers (idle, after the calibration), then after 16 concurrent /v1 requests per model
(the 10 s 340x256 H.264 video of benchmarks/predict.py, 1x1 view), with its peak (VmHWM). What
a second model costs is the difference between the two-model and the one-model server.
Usage: python benchmarks/serve_memory.py [--models tiny,r50] [--requests 16] [--counts 1,2]
[--flags "--no-calibrate --max-batch 1"] (server options: fix the batch cap, whose activations
stay resident, to compare like with like)
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
from pathlib import Path

import torch
from predict import make_video  # benchmarks/predict.py, beside this script

from tanet.testing.serve import Server, multipart


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def load(server: Server, names: list[str], body: bytes, ctype: str, n: int) -> None:
    """``n`` concurrent requests to each model, all answered 200."""
    def one(name: str) -> None:
        status = server.request("POST", f"/v1/predict?model={name}", body,
                                {"Content-Type": ctype}, timeout=1800)[0]
        if status != 200:
            raise RuntimeError(f"HTTP {status} from model {name}")

    threads = [threading.Thread(target=one, args=(name,)) for name in names for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def checkpoints(kind: str, tmp: Path) -> list[Path]:
    """Two different checkpoints of one architecture."""
    import tanet
    from tanet.models.checkpoint import save_model
    from tanet.testing.tiny import tiny_checkpoint

    if kind == "tiny":
        return [tiny_checkpoint(tmp / f"tiny{i}.safetensors", ["a", "b", "c", "d", "e"],
                                fc_std=0.3 + i)[0] for i in range(2)]
    out = []
    for i in range(2):
        torch.manual_seed(i)
        model = tanet.create_model("tanet_r50", num_classes=400, num_segments=8)
        out.append(save_model(tmp / f"r50_{i}.safetensors", model))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,r50")
    ap.add_argument("--requests", type=int, default=16, help="concurrent requests per model")
    ap.add_argument("--counts", default="1,2", help="servers with this many models")
    ap.add_argument("--flags", default="", help="more tanet serve options, e.g. '--no-calibrate "
                    "--max-batch 1'")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f}; torch {torch.__version__}; "
          f"server options: {args.flags or '(defaults)'}")
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        body, ctype = multipart("video.mp4", make_video(tmp / "video.mp4").read_bytes())
        for kind in args.models.split(","):
            first, second = checkpoints(kind, tmp)
            for count in counts:
                extra = ["--model", f"second={second}"] if count == 2 else []
                s = Server(first, tmp / f"up-{kind}-{count}", tmp / f"log-{kind}-{count}.txt",
                           "--quiet", *extra, *args.flags.split(), ready_s=1800)
                try:
                    idle = memory_mb(s.proc.pid)["VmRSS"]
                    names = [first.stem] + (["second"] if count == 2 else [])
                    load(s, names, body, ctype, args.requests)
                    after = memory_mb(s.proc.pid)
                    caps = [m["batching"]["max_batch"]
                            for m in s.request("GET", "/v1/models")[2]["models"]]
                finally:
                    s.stop()
                rows.append((kind, count, idle, after["VmRSS"], after["VmHWM"]))
                print(f"{kind:<5} x{count}: RSS idle {idle:7.0f} MB, after load "
                      f"{after['VmRSS']:7.0f} MB, peak {after['VmHWM']:7.0f} MB (batch caps "
                      f"{caps})", flush=True)
    if counts != [1, 2]:
        return 0
    print("\nper extra model (two-model server minus one-model server):")
    for kind in args.models.split(","):
        one, two = [r for r in rows if r[0] == kind]
        print(f"{kind:<5} idle +{two[2] - one[2]:.0f} MB, after load +{two[3] - one[3]:.0f} MB, "
              f"peak +{two[4] - one[4]:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
