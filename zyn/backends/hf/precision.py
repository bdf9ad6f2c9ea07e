"""The one place zyn decides where a model runs and in which precision.

    resolve_device   the named device (checked), else CUDA if present, else the CPU
    resolve_dtype    a named precision, else bf16 on a GPU that supports it, else float32;
                     "fast" measures bf16 against float32 products on this CPU
    parse_dtype      a precision's name ("bf16", "bfloat16", ...) as a torch dtype

CPUs differ (one with avx512_bf16 multiplies bf16 several times faster than float32,
one without it several times slower; see benchmarks/RESULTS.md), so no fixed choice is
right everywhere: "fast" times each precision with its fastest kernel, once per machine
(the answer is kept in the zyn cache folder; see `kernels.cached_choice`).
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from ...errors import ZynError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_device(device: Any = None) -> torch.device:
    """The device to run on: the given one (checked), else CUDA if present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ZynError(f"device: {device!r} is not a device; use cpu, cuda, cuda:1 (a GPU's index) or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZynError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device='cpu' (--device cpu)")
    return dev


def resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    """The precision: the given one, else bf16 on a GPU that supports it (float16 on
    one that does not), else float32; "fast" on a CPU: whichever multiplies faster here."""
    if dtype is None or dtype in ("auto", "fast"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return fastest_cpu_dtype() if dtype == "fast" else torch.float32
    return parse_dtype(dtype)


def parse_dtype(dtype: Any) -> torch.dtype:
    """A torch dtype from itself or its name: float32/fp32, bfloat16/bf16, float16/fp16/half."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ZynError(f"unknown dtype {dtype!r}; use auto, fast or one of {', '.join(_DTYPES)}")


@functools.cache
def fastest_cpu_dtype(min_gain: float = 1.5) -> torch.dtype:
    """bfloat16 if this CPU multiplies bf16 matrices at least `min_gain` times faster
    than float32, each with its fastest kernel, else float32. Measured once per machine
    (a few seconds) and kept in the zyn cache folder (`kernels.cached_choice`)."""
    from .kernels import cached_choice

    return parse_dtype(cached_choice(f"fastest_cpu_dtype/{min_gain}", lambda: _measure_fastest(min_gain),
                                     valid=lambda v: v in ("float32", "bfloat16")))  # what the measurement picks


def _measure_fastest(min_gain: float):
    from .kernels import Unsettled, best_of_rounds, decided, fastest_matmul_rate

    fp32, bf16 = best_of_rounds(lambda: fastest_matmul_rate(torch.float32),
                                lambda: fastest_matmul_rate(torch.bfloat16))
    choice = decided(bf16 / (min_gain * fp32))  # a close call is not kept for other processes
    name = lambda faster: "bfloat16" if faster else "float32"  # noqa: E731
    return Unsettled(name(choice.value)) if isinstance(choice, Unsettled) else name(choice)
