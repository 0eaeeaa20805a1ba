"""``tanet serve``: an HTTP inference server (FastAPI + uvicorn) with dynamic batching, limits,
Prometheus metrics, several models and a web page; its own API (``/v1``) and the Open Inference
Protocol (``/v2``, KServe v2 with Triton's binary tensor data). Needs the ``serve`` extra:
``pip install 'tanet[serve]'``.

* :mod:`~tanet.apps.serve.app`: the app factory ``create_app(ServeSettings(...))``.
* :mod:`~tanet.apps.serve.settings`: the options, and the names models are served under.
* :mod:`~tanet.apps.serve.service`: the models, admission and metrics; how a request is run.
* :mod:`~tanet.apps.serve.models`: one served model (predictor, batcher, pool, calibration).
* :mod:`~tanet.apps.serve.v1`, :mod:`~tanet.apps.serve.v2`: the two APIs' routes;
  :mod:`~tanet.apps.serve.protocol`: the v2 wire format (JSON + binary tensor data).
* :mod:`~tanet.apps.serve.batching`: the worker pool and the model thread that batches.
* :mod:`~tanet.apps.serve.uploads`: multipart uploads streamed to temporary files, with limits.
* :mod:`~tanet.apps.serve.guard`, :mod:`~tanet.apps.serve.metrics`: API key, metrics, admission.
* :mod:`~tanet.apps.serve.frames`: video facts and the sampled frames as pictures.
* ``static/``: the page (plain HTML/JS/CSS, no build step, nothing loaded from elsewhere).
"""
from tanet.apps.serve.app import create_app
from tanet.apps.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
