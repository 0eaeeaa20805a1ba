"""Reproducibility: RNG states as plain tensors/lists (state files), and per-item seeding.

Every video item draws its augmentation randomness from RNGs seeded by ``(seed, epoch, index)``
(:class:`SeededItems`), so the data a step sees does not depend on the number of loader
workers, on the number of processes, or on where a run was resumed.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["SeededItems", "seeded_item", "rng_state", "set_rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class SeededItems(torch.utils.data.Dataset):
    """Wrap a dataset so item ``(epoch, i)`` draws its randomness from RNGs seeded by
    ``(seed, epoch, i)`` (torch, numpy and python ``random``); the caller's RNG states are
    restored afterwards in the main process."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        with seeded_item(self.seed, epoch, i):
            return self.dataset[i]


@contextlib.contextmanager
def seeded_item(seed: int, epoch: int, i: int) -> Iterator[None]:
    """Seed torch, numpy and python ``random`` by ``(seed, epoch, i)`` for the block (item
    ``i`` of an epoch: a file's index or a shard record's id); in the main process the
    caller's RNG states are restored afterwards."""
    s = (seed * 1_000_003 + epoch * 10_007_179 + i) % (2**63 - 1)
    in_worker = torch.utils.data.get_worker_info() is not None
    saved = None if in_worker else _rng_state_raw()
    torch.default_generator.manual_seed(s)  # CPU only; torch.manual_seed costs ~5 ms
    np.random.seed(s % (2**32))
    random.seed(s)
    try:
        yield
    finally:
        if saved is not None:
            _set_rng_state_raw(saved)


def _rng_state_raw() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state_raw(state: tuple) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and python as tensors / plain lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
