"""Which numeric precision runs: ``amp: auto`` and its one rule (:func:`resolve_amp`).

``auto`` (the default of ``tanet train``, ``test``, ``predict``, ``extract`` and ``serve``)
picks bf16 where the hardware computes in bf16 natively and fp32 elsewhere:

* a CPU whose flags (``/proc/cpuinfo``) include ``avx512_bf16`` or ``amx_bf16`` (Intel Cooper
  Lake / Sapphire Rapids and later, AMD Zen 4 and later): oneDNN runs convolutions and matrix
  products as bf16 kernels;
* a CUDA device that supports bf16 without emulation (compute capability 8.0+, Ampere on);
* anything else (older CPUs, Arm, MPS, CUDA before Ampere): fp32. ``auto`` never picks fp16,
  which needs loss scaling and overflows where bf16 does not.

``off`` (fp32), ``bf16`` and ``fp16`` are taken as asked. What bf16 means is each caller's:
training and ``tanet test`` run the fp32 model under ``torch.autocast`` (loss, softmax of the
scores and BatchNorm statistics stay fp32), prediction on a CPU runs a bf16 copy of the model
(:mod:`tanet.apps.accel`). This module imports nothing of tanet, so the engine and the apps
share it (the engine never imports the apps).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["AMPS", "BF16_CPU_FLAGS", "Precision", "cpu_flags", "native_bf16", "resolve_amp"]

AMPS = ("auto", "off", "bf16", "fp16")  # the values of train.amp / --amp
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU flags of native bf16 arithmetic
_NAMES = {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class Precision:
    """A resolved ``amp`` setting: ``setting`` as asked (``auto`` | ``off`` | ``bf16`` |
    ``fp16``), ``amp`` what runs (``off`` | ``bf16`` | ``fp16``) and ``reason`` (why, for
    ``auto``: the hardware fact it rests on)."""

    setting: str
    amp: str
    reason: str = ""

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: what records call the precision."""
        return _NAMES[self.amp]

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in this precision on ``device``'s type, or nothing for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.dtype)

    def describe(self, key: str = "amp") -> str:
        """One line for the log, e.g. ``precision bf16 (amp auto: this CPU has avx512_bf16;
        amp=off for fp32)``; ``key`` is how the caller spells the option."""
        if self.setting != "auto":
            return f"precision {self.name} ({key} {self.setting})"
        off = f"; {key} off for fp32" if self.amp != "off" else ""
        return f"precision {self.name} ({key} auto: {self.reason}{off})"


@functools.lru_cache(maxsize=None)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags: the ``flags`` (x86) or ``Features`` (Arm) line of ``cpuinfo``;
    where there is no such file (macOS, Windows), what torch reports of the bf16 features."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return _torch_cpu_flags()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return _torch_cpu_flags()


def _torch_cpu_flags() -> frozenset[str]:
    """bf16 features as torch's CPU capability probes see them (private API: absent -> none)."""
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    found = set()
    for flag, name in probes.items():
        probe = getattr(getattr(torch._C, "_cpu", None), name, None)
        try:
            if probe is not None and probe():
                found.add(flag)
        except RuntimeError:
            pass
    return frozenset(found)


def native_bf16(device: torch.device | str, flags: frozenset[str] | None = None
                ) -> tuple[bool, str]:
    """Whether ``device`` computes in bf16 natively, and the fact that says so (or not).
    ``flags``: the CPU's flags (default: :func:`cpu_flags`)."""
    device = torch.device(device)
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        have = [f for f in BF16_CPU_FLAGS if f in flags]
        if have:
            return True, f"this CPU has {', '.join(have)}"
        return False, f"this CPU has neither {' nor '.join(BF16_CPU_FLAGS)}"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        if major >= 8:
            return True, f"{name} (compute capability {major}.{minor}) has bf16"
        return False, f"{name} (compute capability {major}.{minor}) has no native bf16"
    return False, f"no bf16 rule for {device.type} devices"


def resolve_amp(setting: str | None, device: torch.device | str = "cpu", *,
                flags: frozenset[str] | None = None) -> Precision:
    """The precision ``setting`` means on ``device``: ``auto`` is bf16 where
    :func:`native_bf16` says so and fp32 elsewhere; ``off`` (or None), ``bf16`` and ``fp16``
    are taken as asked. ``flags`` overrides the CPU's flags (tests)."""
    setting = "off" if setting is None else setting
    if setting not in AMPS:
        raise ValueError(f"amp must be one of {', '.join(AMPS)}; got {setting!r}")
    if setting != "auto":
        return Precision(setting, setting)
    native, why = native_bf16(device, flags)
    return Precision("auto", "bf16" if native else "off", why)
