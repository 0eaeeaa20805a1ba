"""Requests/s and p50/p95 latency of ``tanet serve`` at concurrency 1, 4 and 16: one request at a
time (``--sequential``) vs dynamic batching (its default: the batch size calibrated at start-up)
vs batching fixed at 16 views, PyTorch vs ONNX Runtime, TANet-R50 8f.

Builds a random-init tanet_r50 (400 classes, T=8, head std 0.02), saves it, exports it to ONNX,
writes the 10 s 340x256 25 fps H.264 video of benchmarks/predict.py, and starts one real
``tanet serve`` subprocess per (backend, mode) on 127.0.0.1. Clients are threads posting the
video (multipart) with http.client; every answer is checked against the sequential server's.
Rounds are interleaved (round r runs every (concurrency, server) cell once, in turn, while the
other servers idle); requests/s is the median over rounds, latencies are pooled. A model-only
table (per-clip ms at batch 1/2/4/8, same process) shows how much batching alone can give on
this machine. Then the two APIs side by side on one default server at concurrency 16: ``/v1``
(multipart) against the Open Inference Protocol (``/v2/models/NAME/infer``, the video as a BYTES
element in Triton's binary tensor data, the body made by ``tritonclient.http``), interleaved:
the ratio of their requests/s, requests lost (not answered 200 with the right top-5: must be 0)
and temporary files left in the server's folder (must be 0). Usage: python benchmarks/serve.py
[--rounds 2] [--requests 2] [--concurrency 1,4,16] [--backends pytorch,onnx] [--no-model-table]
[--protocols-only]
"""
from __future__ import annotations

import argparse
import ctypes
import http.client
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from predict import make_video  # benchmarks/predict.py, beside this script

from tanet.testing.serve import Server, multipart
from tanet.testing.timing import interleaved

MODES = {"one at a time": ["--sequential"],
         "dynamic batching": ["--max-batch", "16"],  # the default: calibrated at start-up
         "batching, fixed 16": ["--max-batch", "16", "--no-calibrate"]}


def post(port: int, body: bytes, ctype: str | dict, path: str = "/v1/predict"
         ) -> tuple[float, int, bytes, dict]:
    """(seconds, status, body, headers) of one POST; ``ctype``: the content type, or headers."""
    t0 = time.perf_counter()
    headers = {"Content-Type": ctype} if isinstance(ctype, str) else ctype
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        hdrs = dict(resp.getheaders())
    finally:
        conn.close()
    return time.perf_counter() - t0, resp.status, data, hdrs


def run_cell(port: int, body: bytes, ctype: str | dict, concurrency: int, per_client: int,
             path: str = "/v1/predict", lost: list | None = None
             ) -> tuple[float, list[float], list[bytes]]:
    """``concurrency`` clients each sending ``per_client`` requests back to back:
    (requests/s, latencies, answers). Answers other than 200 raise, or with ``lost`` are
    appended there (status, body) and the run goes on."""
    lat: list[float] = []
    answers: list = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(per_client):
            s, status, data, hdrs = post(port, body, ctype, path)
            if status != 200 and lost is None:
                raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
            with lock:
                if status != 200:
                    lost.append((status, data[:200]))  # type: ignore[union-attr]
                    continue
                lat.append(s)
                answers.append((data, hdrs) if path != "/v1/predict" else data)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat) / (time.perf_counter() - t0), lat, answers


def batch_stats(server: Server) -> str:
    """Mean views and requests per model call, from the server's /metrics (all its models)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = server.request("GET", "/metrics")[2]
    s: dict = {}
    for fam in text_string_to_metric_families(text):
        for x in fam.samples:
            s[x.name] = s.get(x.name, 0) + x.value
    calls = s.get("tanet_batch_views_count", 0)
    if not calls:
        return "-"
    return (f"{s['tanet_batch_views_sum'] / calls:.1f} views, "
            f"{s['tanet_batch_requests_sum'] / calls:.1f} requests / model call")


def calibration(server: Server) -> str:
    """The start-up calibration of a server (ms per view by batch size -> chosen max batch) and
    the batch caps it moved to while serving."""
    b = server.request("GET", "/v1/model")[2]["batching"]
    cal = b["ms_per_view_by_batch"]
    changes = b.get("changes", [])  # the tuner's moves while serving (probe / cap per view)
    start = changes[0]["from"] if changes else b["max_batch"]
    moves = "".join(f" -> {c['to']} (x{c['ratio']})" for c in changes)
    tuned = f"; while serving: {start}{moves}" if moves else ""
    return f"; calibration {cal} -> max batch {start}{tuned}" if cal else ""


def _malloc(keep: bool) -> None:
    """glibc in the steady state of its defaults (blocks over 32 MB mmapped and unmapped on free)
    or keeping freed memory (what ``tanet serve`` sets, see batching.keep_freed_memory)."""
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    if keep:
        mallopt(m_mmap_max, 0)
        mallopt(m_trim_threshold, 2**31 - 1)
    else:
        mallopt(m_mmap_max, 65536)
        mallopt(m_mmap_threshold, 32 * 2**20)
        mallopt(m_trim_threshold, 64 * 2**20)


def model_scaling(ckpt: Path, onnx: Path, rounds: int) -> None:
    """Per-clip ms of the bare model at batch 1, 2, 4, 8 (interleaved, median), PyTorch with
    glibc's defaults and with freed memory kept, and ONNX Runtime; minor page faults per call."""
    from tanet.apps.export import OnnxRecognizer
    from tanet.models.factory import create_model

    model = create_model(checkpoint=str(ckpt)).eval()
    session = OnnxRecognizer(onnx)
    xs = {n: torch.randn(n, 8, 3, 224, 224) for n in (1, 2, 4, 8)}
    faults: dict = {}

    def call(label: str, n: int, keep: bool | None):
        def run() -> None:
            if keep is None:
                session(xs[n].numpy())
                return
            _malloc(keep)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            model(xs[n])
            faults[label, n] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return run

    rows = {"PyTorch, glibc default": False, "PyTorch, memory kept": True, "ONNX Runtime": None}
    t = {}
    with torch.inference_mode():  # ONNX Runtime apart: its threads spin on after each call
        for group in (("PyTorch, glibc default", "PyTorch, memory kept"), ("ONNX Runtime",)):
            fns = {(label, n): call(label, n, rows[label]) for label in group for n in xs}
            t.update(interleaved(fns, rounds=rounds, warmup=1))
    print("\nmodel alone, ms per clip (8 frames x 224 px) by batch size "
          "[minor page faults per call]:")
    print(f"{'':<24}" + "".join(f"{f'batch {n}':>18}" for n in xs))
    for label in rows:
        cells = [f"{1000 * t[label, n] / n:.0f}" + (f" [{faults[label, n]}]" if (label, n) in faults
                                                     else "") for n in xs]
        print(f"{label:<24}" + "".join(f"{c:>18}" for c in cells))


def serving_table(args, files: dict, video: Path, reference, tmp: Path) -> None:
    """Requests/s by backend, mode and concurrency (one server per backend and mode)."""
    levels = [int(c) for c in args.concurrency.split(",")]
    body, ctype = multipart("video.mp4", video.read_bytes())
    servers = {}
    try:
        for backend in args.backends.split(","):
            for mode, flags in MODES.items():  # start-up calibration: up to minutes
                i = len(servers)
                servers[backend, mode] = Server(files[backend], tmp / f"up-{i}",
                                                tmp / f"log-{i}.txt", "--quiet", *flags,
                                                ready_s=1800)
        for s in servers.values():  # warm-up: first calls, every batch size up to 16
            run_cell(s.port, body, ctype, 16, 1)
        rates: dict = {}
        lats: dict = {}
        answers: dict = {}
        for _ in range(args.rounds):
            for c in levels:
                for key, s in servers.items():
                    r, lat, ans = run_cell(s.port, body, ctype, c, args.requests)
                    rates.setdefault((key, c), []).append(r)
                    lats.setdefault((key, c), []).extend(lat)
                    answers.setdefault(key, []).extend(ans)
        stats = {key: batch_stats(s) + calibration(s) for key, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    report(levels, servers, rates, lats, answers, stats, reference, args)


def _v2_top5(answer: tuple[bytes, dict]) -> list[str]:
    from tritonclient.http import InferenceServerClient

    data, hdrs = answer
    length = {k.lower(): v for k, v in hdrs.items()}.get("inference-header-content-length")
    res = InferenceServerClient.parse_response_body(data, header_length=int(length))
    return [b.decode() for b in res.as_numpy("labels")[0]]


def protocol_comparison(ckpt: Path, video: Path, reference, tmp: Path, rounds: int,
                        per_client: int, concurrency: int = 16) -> None:
    """/v1 (multipart) against v2 (BYTES video, Triton's binary tensor data) on one default
    server, interleaved: requests/s ratio, requests lost, temporary files left behind."""
    import tritonclient.http as th

    v1_body, ctype = multipart("video.mp4", video.read_bytes())
    x = th.InferInput("video", [1], "BYTES")
    x.set_data_from_numpy(np.array([video.read_bytes()], dtype=object))
    v2_body, header_len = th.InferenceServerClient.generate_request_body([x])
    v2_headers = {"Content-Type": "application/octet-stream",
                  "Inference-Header-Content-Length": str(header_len)}
    from tanet.apps.serve.settings import default_model_name

    name = default_model_name(ckpt)
    cells = {"/v1": (v1_body, ctype, "/v1/predict"),
             "v2": (v2_body, v2_headers, f"/v2/models/{name}/infer")}
    server = Server(ckpt, tmp / "up-api", tmp / "log-api.txt", "--quiet", ready_s=1800)
    rates: dict = {k: [] for k in cells}
    lats: dict = {k: [] for k in cells}
    answers: dict = {k: [] for k in cells}
    lost: dict = {k: [] for k in cells}
    try:
        for key, (body, hdrs, path) in cells.items():  # warm-up
            run_cell(server.port, body, hdrs, concurrency, 1, path, lost=[])
        for _ in range(rounds):
            for key, (body, hdrs, path) in cells.items():
                r, lat, ans = run_cell(server.port, body, hdrs, concurrency, per_client, path,
                                       lost=lost[key])
                rates[key].append(r)
                lats[key] += lat
                answers[key] += ans
        left = sorted(p.name for p in server.tmp_dir.iterdir())
    finally:
        server.stop()
    import json

    top5 = [lab for lab, _ in reference.top]
    wrong = {"/v1": sum(1 for a in answers["/v1"] if [t["label"] for t in json.loads(a)["top"]]
                        != top5),
             "v2": sum(1 for a in answers["v2"] if _v2_top5(a) != top5)}
    sent = rounds * concurrency * per_client
    print(f"\n/v1 against the Open Inference Protocol (v2), one default PyTorch server, "
          f"concurrency {concurrency}, {rounds} interleaved rounds x {per_client} requests per "
          f"client; load average {os.getloadavg()[0]:.1f}:")
    for key in cells:
        lat = np.array(lats[key])
        print(f"{key:<4} {statistics.median(rates[key]):6.2f} req/s (min {min(rates[key]):.2f}), "
              f"p50 {np.percentile(lat, 50):.2f} s, p95 {np.percentile(lat, 95):.2f} s; "
              f"{sent} sent, lost {len(lost[key]) + wrong[key]} "
              f"({len(lost[key])} not 200, {wrong[key]} wrong top-5)")
    ratio = statistics.median(rates["v2"]) / statistics.median(rates["/v1"])
    print(f"v2 / v1 requests/s: {ratio:.2f}x; temporary files left: {len(left)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--requests", type=int, default=2, help="requests per client per cell")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--backends", default="pytorch,onnx")
    ap.add_argument("--no-model-table", action="store_true")
    ap.add_argument("--protocols-only", action="store_true",
                    help="only the /v1 against v2 comparison")
    args = ap.parse_args()

    import tanet
    from tanet.apps.export import export_onnx
    from tanet.apps.predict import Predictor
    from tanet.models.checkpoint import save_model

    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = tanet.create_model("tanet_r50", num_classes=400, num_segments=8)
        with torch.no_grad():
            model.fc.weight.normal_(0, 0.02)
        ckpt = save_model(tmp / "tanet_r50_8f.safetensors", model)
        onnx = None if args.protocols_only else export_onnx(
            model.eval(), tmp / "tanet_r50_8f.onnx")["path"]
        del model
        video = make_video(tmp / "video.mp4")
        reference = Predictor(ckpt).predict(video)
        if not args.protocols_only:
            serving_table(args, {"pytorch": ckpt, "onnx": onnx}, video, reference, tmp)
            if not args.no_model_table:
                model_scaling(ckpt, onnx, rounds=3)
        protocol_comparison(ckpt, video, reference, tmp, args.rounds, args.requests)
    return 0


def report(levels, servers, rates, lats, answers, stats, reference, args) -> None:
    import json

    ref = [(t["label"], t["score"]) for t in reference.to_json()["top"]]
    agree = all(all(t["label"] == lab and abs(t["score"] - sc) <= 1e-4
                    for t, (lab, sc) in zip(json.loads(a)["top"], ref))
                for ans in answers.values() for a in ans)
    n = sum(len(v) for v in answers.values())
    print(f"tanet serve, TANet-R50 8f (random init, 400 classes), 1x1 view, 10 s 340x256 H.264 "
          f"upload; torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{args.rounds} interleaved rounds x {args.requests} requests per client")
    print(f"{n} answers, all equal to Predictor.predict's top-5 (1e-4): {agree}\n")
    head = (f"{'backend':<9}{'mode':<18}{'conc':>5}{'req/s':>8}{'min':>7}{'p50 s':>8}{'p95 s':>8}"
            f"{'vs one-at-a-time':>18}")
    print(head)
    print("-" * len(head))
    for backend in dict.fromkeys(b for b, _ in servers):
        for c in levels:
            base = statistics.median(rates[(backend, "one at a time"), c])
            for mode in MODES:
                key = ((backend, mode), c)
                if key not in rates:
                    continue
                r, lat = statistics.median(rates[key]), np.array(lats[key])
                print(f"{backend:<9}{mode:<18}{c:>5}{r:>8.2f}{min(rates[key]):>7.2f}"
                      f"{np.percentile(lat, 50):>8.2f}{np.percentile(lat, 95):>8.2f}"
                      f"{r / base:>17.2f}x")
    print()
    for key, s in stats.items():
        print(f"{key[0]} {key[1]}: {s}")


if __name__ == "__main__":
    raise SystemExit(main())
