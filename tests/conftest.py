"""Test session settings: video indices are cached in a temporary directory, not ~/.cache; a
fixture for modules that run on one torch thread."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="tanet-test-cache-")
os.environ["TANET_CACHE_DIR"] = _CACHE  # before any test (and its subprocesses) opens a video


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``):
    its tests share the 2 cores with a server or stream subprocess, and on a loaded machine the
    tiny model's 2-thread calls stall for up to seconds at OpenMP barriers (behaviour is
    tested here; speed is the benchmarks')."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
