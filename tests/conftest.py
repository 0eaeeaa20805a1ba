"""Test session settings: video indices are cached in a temporary directory, not ~/.cache."""
from __future__ import annotations

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="tanet-test-cache-")
os.environ["TANET_CACHE_DIR"] = _CACHE  # before any test (and its subprocesses) opens a video


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)
