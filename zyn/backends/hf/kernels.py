"""Faster CPU kernels for a judge's layers: matrix products chosen by measuring, fused norms.

On some CPUs oneDNN's linear kernel with a pre-packed weight runs float32 products
about twice as fast as torch's default; on others it gains nothing (figures by CPU
kind in benchmarks/RESULTS.md). So zyn measures both on a 0.5B-model-sized product
once per process and swaps the kernel unless oneDNN is measurably slower; it then also
fuses a SiLU-gated MLP's activation and product into its products. The scores stay
those of the default kernel up to float rounding.

RMSNorms, six passes over the activations in transformers' modules, become one fused
op with the rounding in the same place.

The swaps change the model in place, once (the backend does it at construction for a
model it loaded itself, and checks the whole model's logits before and after, undoing
the swaps with `undo` on a mismatch). A linear layer whose parent module reads its
``.weight`` (T5's MLP casts to ``wo.weight.dtype``) is left alone: oneDNN's packed
copy replaces that weight.

Which kernel is faster is measured once per machine, not once per process: the answer
(and `precision`'s bf16-or-float32 answer) is kept in the zyn cache folder under a key
of the CPU's model name and flags, torch's version and the thread count
(`cached_choice`), so a second process reads it instead of measuring again; a changed
CPU or torch makes a new key. Only a clear answer is kept (the two rates 1.2x apart
beyond the threshold): a close call is measured in every process, as a single
measurement on a busy machine can land on either side. The same file keeps, for a model
zyn loaded from its own cache, the outcome of its kernel swap and first-call checks
(`checks`; each re-proved by a fingerprint pass before use). ``ZYN_NO_CHOICE_CACHE=1``
measures everything in every process.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import inspect
import json
import mmap
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

_SHAPE = (512, 896, 4864)  # rows x in x out: a 0.5B LM's MLP over a batch of texts


class OneDNNLinear(nn.Module):
    """A frozen ``nn.Linear`` computed by oneDNN with its weight packed once.

    Inputs and outputs are ordinary dense tensors of any leading shape.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, _SHAPE[0]),
                             persistent=False)
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel=oneDNN"


class OneDNNGatedMLP(nn.Module):
    """A gated MLP, ``down(silu(gate(x)) * up(x))``, as three oneDNN products with the
    SiLU and the product fused into the first two: no separate passes over the wide
    (tokens x intermediate) activations, which cost ~4% of a bf16 MLP otherwise."""

    def __init__(self, gate: OneDNNLinear, up: OneDNNLinear, down: OneDNNLinear):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = gate, up, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.mkldnn
        a = ops._linear_pointwise(x, self.gate_proj.packed, self.gate_proj.bias, "swish", [], "")
        h = ops._linear_pointwise.binary(x, a, self.up_proj.packed, self.up_proj.bias, "mul")
        return self.down_proj(h)


class FusedRMSNorm(nn.Module):
    """transformers' usual RMSNorm, ``weight * (x / rms(x) in float32).to(dtype)``, with
    the normalisation as one fused op instead of six passes over the activations; the
    same numbers (the rounding to the model's precision happens at the same place)."""

    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight, self.eps = weight, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def matmul_rate(dtype: torch.dtype, kernel: str = "default", repeats: int = 5) -> float:
    """GFLOP/s of a (512 x 896) @ (896 x 4864) product with torch's default kernel or oneDNN's."""
    rows, k, n = _SHAPE
    x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    if kernel == "onednn":
        layer = OneDNNLinear(_linear(w))
        fn = functools.partial(layer, x)
    else:
        fn = functools.partial(torch.nn.functional.linear, x, w)
    with torch.inference_mode():
        fn()  # first call picks kernels and allocates
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    return 2 * rows * k * n / best / 1e9


def fastest_matmul_rate(dtype: torch.dtype, repeats: int = 5) -> float:
    """The best rate this CPU reaches at `dtype` with any kernel zyn can use."""
    rates = [matmul_rate(dtype, "default", repeats)]
    if onednn_available():
        rates.append(matmul_rate(dtype, "onednn", repeats))
    return max(rates)


def best_of_rounds(measure_a: Callable[[], float], measure_b: Callable[[], float], rounds: int = 3,
                   settled: Callable[[float, float], bool] | None = None) -> tuple[float, float]:
    """The best of each of two rates, measured in alternating rounds, so that a burst of
    other work on a shared machine cannot decide between them; `settled(a, b)` may stop
    early once the answer is clear."""
    a = b = 0.0
    for _ in range(rounds):
        a, b = max(a, measure_a()), max(b, measure_b())
        if settled is not None and settled(a, b):
            break
    return a, b


@functools.cache
def onednn_is_faster(dtype: torch.dtype, min_gain: float = 0.95, rounds: int = 3) -> bool:
    """Whether oneDNN's packed linear is at least `min_gain` times as fast as the
    default kernel here (cached). Where the two are even, oneDNN still wins overall:
    it fuses the MLP's SiLU and product into its products (OneDNNGatedMLP).

    The two are measured in alternating rounds and each keeps its best, so a burst of
    other work on a shared machine cannot decide the choice for the whole process; a
    clear first round (1.5x either way) decides at once.
    """
    if not onednn_available():
        return False
    name = f"onednn_is_faster/{str(dtype).removeprefix('torch.')}/{min_gain}/{rounds}"
    return cached_choice(name, lambda: _measure_onednn(dtype, min_gain, rounds), valid=lambda v: isinstance(v, bool))


def _measure_onednn(dtype: torch.dtype, min_gain: float, rounds: int) -> "bool | Unsettled":
    try:
        onednn, default = best_of_rounds(lambda: matmul_rate(dtype, "onednn", repeats=3),
                                         lambda: matmul_rate(dtype, "default", repeats=3), rounds=rounds,
                                         settled=lambda a, b: not 1 / 1.5 < a / (min_gain * b) < 1.5)
        return decided(onednn / (min_gain * default))
    except RuntimeError:  # a build whose oneDNN lacks this dtype
        return False


# ---------------------------------------------------------------------- measured choices, kept per machine

class Unsettled:
    """A measured choice too close to call to be kept for other processes: used by
    this process only, measured again by the next (a burst of other work on a shared
    machine can swing one measurement by more than the margin)."""

    def __init__(self, value: Any):
        self.value = value


CLEAR_MARGIN = 1.2  # a ratio this far from the threshold either way is kept


def decided(ratio: float) -> "bool | Unsettled":
    """`ratio >= 1`, kept for other processes only when it is clear (`CLEAR_MARGIN`)."""
    return ratio >= 1 if not 1 / CLEAR_MARGIN < ratio < CLEAR_MARGIN else Unsettled(ratio >= 1)


def machine_key() -> dict:
    """What a measured kernel or precision choice depends on: the CPU (model name and a
    hash of its flags), torch's build, and the threads torch uses."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:  # the first processor's lines
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux: the name platform gives
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted((info.get("flags") or info.get("Features") or "").split()))
    return {"format": 2, "cpu": name, "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "torch_git": getattr(torch.version, "git_version", ""), "threads": torch.get_num_threads()}


def choice_file(machine: dict | None = None) -> Path:
    """The file that keeps this machine's measured choices (in the zyn cache folder)."""
    from ...models.cache import cache_root

    machine = machine_key() if machine is None else machine
    key = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "choices" / f"cpu-{key}.json"


def cached_choice(name: str, measure: Callable[[], Any], valid: Callable[[Any], bool] | None = None) -> Any:
    """`measure()`'s (JSON) value for `name`, measured once per machine: read from
    `choice_file` when it holds it, else measured and written there, unless `measure`
    returned it as `Unsettled` (too close to call: not kept). A file that cannot be read
    or written is ignored (the choice is measured, never fails); with
    ``ZYN_NO_CHOICE_CACHE`` set, always measured. Delete the file to measure again.

    `valid(value)`, if given, decides whether a kept value may be used (its shape, and
    whatever cheap re-check the caller runs on it; raising counts as no): one it rejects
    is measured again and replaced."""
    if os.environ.get("ZYN_NO_CHOICE_CACHE"):
        value = measure()
        return value.value if isinstance(value, Unsettled) else value
    machine = machine_key()
    path = choice_file(machine)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("machine") != machine or not isinstance(data.get("choices"), dict):
            data = None
    except (OSError, ValueError):
        data = None
    data = data or {"machine": machine, "choices": {}}
    if name in data["choices"]:
        kept = data["choices"][name]
        try:
            usable = valid is None or bool(valid(kept))
        except Exception:  # noqa: BLE001 - a malformed entry: measured again
            usable = False
        if usable:
            return kept
    value = measure()
    if isinstance(value, Unsettled):
        return value.value
    data["choices"][name] = value
    tmp = None
    try:  # atomically: a reader sees the old file or the new one
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".choices-")
        os.fchmod(fd, 0o644)  # a shared cache's other users read it too (mkstemp gives 0600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return value


Swap = tuple[nn.Module, str, nn.Module]  # (parent, child name, the child swapped out)


def use_onednn_linears(model: nn.Module, swaps: list[Swap] | None = None, check_mlps: bool = True) -> int:
    """Swap every ``nn.Linear`` of `model` (except its output embedding, and those whose
    parent reads their weight) for a OneDNNLinear, and every SiLU-gated MLP (gate_proj,
    up_proj, down_proj, act_fn) for a OneDNNGatedMLP where it gives the MLP's own
    numbers on a random input (`check_mlps` False: without that check, for a model
    whose swap was checked before and is checked again as a whole, see
    `checks.use_fast_kernels`; it reads every MLP weight twice). Each swap is appended
    to `swaps` (see `undo`).

    The output layer is left alone: it runs on one row per query, and it may share its
    weight with the input embedding. Returns how many linear layers were swapped.
    """
    skip = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    file_maps = _file_mappings()

    def onednn(parent: nn.Module, name: str, child: nn.Module) -> OneDNNLinear | None:
        if not isinstance(child, nn.Linear) or child is skip or _reads_weight(parent, name):
            return None
        packed = OneDNNLinear(child)
        release_file_pages(child.weight, file_maps)  # the packed copy replaces it
        return packed

    swapped = _swap(model, onednn, swaps)
    _swap(model, lambda parent, name, child: _fused_mlp(child, check_mlps), swaps)
    return swapped


def use_fused_norms(model: nn.Module, swaps: list[Swap] | None = None) -> int:
    """Swap every RMSNorm of `model` that a FusedRMSNorm reproduces on a random input
    (others, e.g. Gemma's ``1 + weight`` form, are left alone). Returns how many."""
    return _swap(model, lambda parent, name, child: _fused_norm(child), swaps)


def undo(swaps: list[Swap]) -> None:
    """Put back every module `swaps` recorded, latest first."""
    for parent, name, old in reversed(swaps):
        setattr(parent, name, old)
    swaps.clear()


def _swap(model: nn.Module, make: Callable[[nn.Module, str, nn.Module], nn.Module | None],
          swaps: list[Swap] | None) -> int:
    """Replace each submodule for which `make(parent, name, child)` returns a module;
    returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = make(parent, name, child)
            if new is not None:
                setattr(parent, name, new)
                if swaps is not None:
                    swaps.append((parent, name, child))
                swapped += 1
    return swapped


@functools.cache
def _forward_source(cls: type) -> str:
    try:
        return inspect.getsource(cls.forward)
    except (OSError, TypeError):  # no source to read: assume nothing is read
        return ""


def _reads_weight(parent: nn.Module, name: str) -> bool:
    """Whether `parent`'s forward reads ``self.<name>.weight`` itself."""
    return f"self.{name}.weight" in _forward_source(type(parent))


def _reproduces(module: nn.Module, fused: nn.Module, x: torch.Tensor, tol: float) -> bool:
    """Whether `fused` gives `module`'s output on `x`, within `tol` of the output's scale."""
    with torch.inference_mode():
        want, got = module(x), fused(x)
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    return bool((got - want).abs().max() <= tol * want.abs().max().clamp(min=1e-6))


def _fused_mlp(mlp: nn.Module, check: bool = True) -> OneDNNGatedMLP | None:
    """`mlp` as a OneDNNGatedMLP, if it is a SiLU-gated MLP that the fused one reproduces
    (on a random input, unless `check` is False)."""
    parts = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    act = getattr(mlp, "act_fn", None)
    if not all(isinstance(p, OneDNNLinear) for p in parts) or type(act).__name__ not in ("SiLU", "SiLUActivation"):
        return None
    fused = OneDNNGatedMLP(*parts)
    if not check:
        return fused
    dtype = parts[0].packed.dtype
    x = torch.randn(2, 3, parts[0].in_features, dtype=dtype)
    return fused if _reproduces(mlp, fused, x, 1e-4 if dtype == torch.float32 else 3e-2) else None


def _fused_norm(norm: nn.Module) -> FusedRMSNorm | None:
    """`norm` as a FusedRMSNorm, if it is an RMSNorm that the fused one reproduces."""
    weight = getattr(norm, "weight", None)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if "RMSNorm" not in type(norm).__name__ or not isinstance(weight, torch.Tensor) or weight.dim() != 1 \
            or not isinstance(eps, float):
        return None
    fused = FusedRMSNorm(weight, eps)
    x = torch.randn(2, 3, weight.shape[0], dtype=weight.dtype, device=weight.device) * 3
    # tolerance relative to the output: float32 rounding, or one 16-bit step
    return fused if _reproduces(norm, fused, x, 1e-5 if weight.dtype == torch.float32 else 1e-2) else None


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's memory-mapped .safetensors files."""
    ranges = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5].endswith(".safetensors"):
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((lo, hi))
    except OSError:  # not Linux: nothing to release
        pass
    return ranges


def release_file_pages(weight: torch.Tensor, file_maps: list[tuple[int, int]] | None = None) -> None:
    """Drop the resident pages of a weight read straight from a memory-mapped checkpoint.

    transformers maps the checkpoint file and keeps the mapping while any tensor of it
    lives (the embeddings do), so the pages a packed weight was copied from would stay
    resident: 1.4 GB for a 0.5B model. They are clean file pages, so dropping them
    loses nothing (they would be read back from the file if touched). Weights in
    ordinary memory are left alone; they are freed with their module.
    """
    if file_maps is None:
        file_maps = _file_mappings()
    start = weight.data_ptr()
    end = start + weight.numel() * weight.element_size()
    if not any(lo <= start and end <= hi for lo, hi in file_maps):
        return
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page  # whole pages inside the weight only
    if hi > lo and _LIBC is not None:
        _LIBC.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED)


_MADV_DONTNEED = 4
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if ctypes.util.find_library("c") else None


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
    layer.weight.data = weight
    return layer
