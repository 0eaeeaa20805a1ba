"""Side-by-side timing: candidates are run interleaved, round after round, so background load
hits every candidate alike. The median is the default statistic; the minimum (the run least
disturbed by other processes) is the steadier one on a shared, noisy machine."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_samples(fns: dict[str, Callable[[], object]], *, rounds: int = 10,
                        warmup: int = 2,
                        sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds of every call of each function, measured interleaved."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t0)
    return times


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int = 10, warmup: int = 2,
                sync: Callable[[], None] = lambda: None, stat: str = "median") -> dict[str, float]:
    """Median (or ``stat="min"``) seconds per call of each function, measured interleaved."""
    pick = {"median": statistics.median, "min": min}[stat]
    samples = interleaved_samples(fns, rounds=rounds, warmup=warmup, sync=sync)
    return {k: pick(v) for k, v in samples.items()}
