"""Devices and precision: which device, bf16 or fp32 (zyn's measured choice on a CPU), and autocast."""
from __future__ import annotations

import contextlib

from .config import ExperimentError


def resolve_device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ExperimentError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu (or auto)")
        try:
            index = torch.device(name).index or 0
        except RuntimeError:
            raise ExperimentError(f"--device {name}: not a device name; use cpu, cuda or cuda:N") from None
        if index >= torch.cuda.device_count():
            raise ExperimentError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here")
        return name
    if name != "cpu":
        raise ExperimentError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return name


def choose_precision(setting: str, device: str) -> str:
    """bf16 or fp32: the setting itself, or ("auto") zyn's precision resolver's choice:
    bf16 on a GPU that supports it, and on a CPU whichever multiplies faster here
    (measured once per process; see zyn.backends.hf.precision)."""
    import torch

    from zyn.backends.hf.precision import resolve_dtype

    if setting != "auto":
        return setting
    return "bf16" if resolve_dtype("fast", torch.device(device)) == torch.bfloat16 else "fp32"


def autocast(device: str, precision: str):
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
