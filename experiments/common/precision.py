"""Devices and precision: which device, bf16 or fp32 (measured on a CPU), and autocast."""
from __future__ import annotations

import contextlib
import time

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
    """bf16 or fp32. On a GPU bf16 where supported; on a CPU whichever multiplies faster here.

    CPUs differ (an AVX512-BF16 core runs bf16 several times faster than float32, an AVX2-only
    one several times slower), so "auto" times a small product of each kind, once.
    """
    import torch

    if setting != "auto":
        return setting
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_bf16_speedup() >= 1.5 else "fp32"


def _cpu_bf16_speedup() -> float:
    import torch

    a, b = torch.randn(256, 640), torch.randn(640, 2048)

    def best(x, y):
        x @ y  # warm-up (kernel selection)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a, b) / best(a.bfloat16(), b.bfloat16())


def autocast(device: str, precision: str):
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
