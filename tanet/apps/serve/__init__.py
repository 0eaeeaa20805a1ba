"""``tanet serve``: an HTTP inference server (FastAPI + uvicorn) with dynamic batching, limits,
Prometheus metrics and a web page. Needs the ``serve`` extra: ``pip install 'tanet[serve]'``.

* :mod:`~tanet.apps.serve.app`: the app factory ``create_app(ServeSettings(...))`` and routes.
* :mod:`~tanet.apps.serve.batching`: the worker pool and the model thread that batches.
* :mod:`~tanet.apps.serve.uploads`: multipart uploads streamed to temporary files, with limits.
* :mod:`~tanet.apps.serve.guard`, :mod:`~tanet.apps.serve.metrics`: API key, metrics, admission.
* ``static/``: the page (plain HTML/JS/CSS, no build step, nothing loaded from elsewhere).
"""
from tanet.apps.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
