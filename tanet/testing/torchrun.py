"""Run a job under ``torchrun`` on this machine: the multi-process tests (gloo, CPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Mapping

__all__ = ["torchrun"]


def torchrun(nproc: int, *args: str, env: Mapping[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=NPROC ARGS`` (``python -m torch.distributed.run``)
    with ``env`` (default: this process's) less the variables of an outer torchrun (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``) and one thread per process; asserts it exits 0, showing the
    tail of its standard error otherwise. Returns the finished process (output captured)."""
    env = {k: v for k, v in (os.environ if env is None else env).items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
