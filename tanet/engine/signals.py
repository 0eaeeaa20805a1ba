"""How a run stops early: a signal (saved, resumable) or a non-finite loss (stop or skip)."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["TrainingInterrupted", "NonFiniteLossError", "StopRequest", "report_nonfinite"]


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped training after saving a resumable checkpoint."""

    def __init__(self, signum: int | None, out: Path, epoch: int, micro: int, step: int) -> None:
        self.signum = signum or signal.SIGINT
        name = signal.Signals(self.signum).name
        where = f"epoch {epoch}" + (f" + {micro} batches" if micro else "")
        super().__init__(f"{name}: stopped at {where} (step {step}); checkpoint saved in "
                         f"{out}; continue with --resume")
        self.exit_code = 128 + int(self.signum)


class NonFiniteLossError(FloatingPointError):
    """A NaN/Inf loss or gradient with ``train.on_nonfinite=stop``; names the step and videos."""


class StopRequest:
    """While active, the first SIGINT/SIGTERM only sets ``requested`` (the loop saves and
    stops at the next step boundary); the previous handler is back for a second signal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        for s, h in self._saved.items():
            signal.signal(s, h)
        os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint at the next step, "
                    f"then stopping (signal again to stop at once)\n".encode())

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._saved[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._saved.items():
            signal.signal(s, h)


def report_nonfinite(*, main: bool, out: Path, policy: str, epoch: int, step: int, value: float,
                     paths: list[str]) -> None:
    """Report a non-finite loss/gradient: raise (``policy="stop"``) or warn (``"skip"``)."""
    what = f"loss {value}" if paths else "gradient norm (loss finite on this rank)"
    where = f"epoch {epoch + 1}, step {step + 1}"
    videos = ", ".join(paths) if paths else "(the batch of another process)"
    if policy == "stop":
        last = (f"the last checkpoint is {out / 'last.safetensors'} (continue with --resume)"
                if (out / "last.state.pt").is_file() else "no checkpoint was saved yet")
        raise NonFiniteLossError(
            f"non-finite {what} at {where}; the batch's videos: {videos}. Nothing of this step "
            f"was applied; {last}. Lower train.lr, set train.clip_grad, or set "
            f"train.on_nonfinite=skip to skip such batches.")
    if paths or main:
        print(f"warning: skipped a batch with non-finite {what} at {where}: {videos} "
              f"(listed in {out / 'nonfinite.txt'})", file=sys.stderr, flush=True)
