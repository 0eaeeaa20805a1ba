"""Commands that serve models over HTTP: serve."""
from __future__ import annotations

import argparse
import os

from tanet.precision import AMPS


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API + web page for one or more models (FastAPI + "
                                     "uvicorn; tanet's /v1 and the Open Inference Protocol, v2)",
                       description="POST /v1/predict (multipart field 'file') answers what "
                                   "`tanet predict --json` prints; /v2 speaks the Open Inference "
                                   "Protocol (KServe v2, Triton's binary tensor data: "
                                   "tritonclient.http works); GET / is a page to try it. "
                                   "Concurrent requests are batched; decoding runs in a pool.")
    p.add_argument("--checkpoint", default=None,
                   help="a tanet .safetensors, a published .pth, a weights name or URL, or an .onnx "
                        "export (and/or models given with --model)")
    p.add_argument("--name", default=None,
                   help="the --checkpoint model's name in URLs (/v2/models/NAME, ?model=NAME); "
                        "default: its file name without the suffix (best.safetensors -> best), a "
                        "published weights name as it is (tanet_r50.k400)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT",
                   help="serve this model too (repeatable; anything --checkpoint takes; without "
                        "NAME= it gets the default name, as --name), each with its own batcher "
                        "and calibration; /v1 without ?model= uses the first model "
                        "(--checkpoint's, else the first --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--views", default="1x1", metavar="CLIPSxCROPS", help="default test views")
    p.add_argument("--topk", type=int, default=5, help="default classes per answer")
    p.add_argument("--labels", default=None,
                   help="class names file (overrides the cards; for every model)")
    p.add_argument("--device", default="cpu",
                   help="torch device of PyTorch models: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--amp", choices=AMPS, default="auto",
                   help="precision (PyTorch only): auto (default) is bf16 where the hardware "
                        "computes in bf16 natively, else fp32; off: fp32")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch", type=int, default=16, metavar="VIEWS",
                   help="most views per model call (1: no batching); lowered at start-up to the "
                        "largest size that is still faster per view on this machine")
    g.add_argument("--no-calibrate", action="store_true",
                   help="keep --max-batch as given (no start-up timing of batch sizes)")
    g.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch that is not full waits for more")
    g.add_argument("--decode-workers", type=int, default=2,
                   help="videos decoded at once while the model runs")
    g.add_argument("--sequential", action="store_true",
                   help="one request at a time, no batching, no overlap (a baseline)")
    g.add_argument("--release-memory", action="store_true",
                   help="let glibc return freed memory to the OS (default: keep it for the next "
                        "batch; big batches page-fault their activations anew otherwise)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-queue", type=int, default=64,
                   help="requests in progress (all models); more are refused with 503 + "
                        "Retry-After")
    g.add_argument("--max-upload-mb", type=float, default=200.0,
                   help="413 above this: a /v1 upload, a whole v2 request body")
    g.add_argument("--max-views", type=int, default=30,
                   help="clips x crops per request (v2: over all its videos or clips)")
    g.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="per-request deadline: upload, queue, decode and model (408/504 after)")
    g.add_argument("--api-key", default=os.environ.get("TANET_API_KEY"),
                   help="require this key on /v1/*, /v2/* (not its health probes) and /metrics "
                        "(default: $TANET_API_KEY)")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin requests from ORIGIN (repeatable; default: none)")
    g.add_argument("--tmp-dir", default=None,
                   help="where uploads are spooled (default: a new temporary folder)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from tanet.apps.serve import ServeSettings, create_app
    except ImportError as e:
        raise RuntimeError(f"tanet serve needs FastAPI and uvicorn ({e.name} is missing): "
                           "pip install 'tanet[serve]'") from e
    for name in ("max_batch", "decode_workers", "max_queue", "max_views"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.checkpoint is None and not args.model:
        raise ValueError("tanet serve needs a model: --checkpoint CHECKPOINT and/or "
                         "--model NAME=CHECKPOINT")
    settings = ServeSettings(
        checkpoint=args.checkpoint, name=args.name, models=tuple(args.model), views=args.views,
        topk=args.topk, labels=args.labels, device=args.device, amp=args.amp,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, decode_workers=args.decode_workers,
        sequential=args.sequential,
        max_queue=args.max_queue, max_upload_mb=args.max_upload_mb, max_views=args.max_views,
        timeout_s=args.timeout, api_key=args.api_key or None,
        cors_origins=tuple(args.cors_origin), tmp_dir=args.tmp_dir,
        keep_memory=not args.release_memory, calibrate=not args.no_calibrate)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info",
                access_log=not args.quiet, timeout_graceful_shutdown=10)
    return 0


COMMANDS = [_add_serve]
