"""Where zyn's scoring time goes: torch.profiler over bench_scoring's workload, by op kind.

Loads the judge as `ZeroShotRewardModel` does (kernels chosen as usual), scores a few
texts to warm up, then profiles one cold run over the workload (the shared prefix
computed again, as bench_scoring times it) and prints the self CPU time by kind of op
(matrix products, attention, norms, the rest) and the top ops.

Then, unprofiled, where a faster product would leave the time (the question on a CPU
whose products are several times faster, such as Intel AMX in bf16):

  products by shape   each linear layer's calls timed one by one (rows, in x out),
                      GFLOP/s per shape against the peak rate measured at the same time
  without products    the same cold run with every product replaced by zeros of its
                      output shape (the scores are meaningless; zeros, not empty
                      memory, whose NaNs and denormals slow the rest down twofold;
                      the time is what attention, norms, rotary embeddings, casts,
                      Python and the planner cost): the floor no product rate can
                      go under, and a profile of it by op
  projection          that floor plus the run's product FLOPs at a given rate
                      (--project GFLOP/s, default the measured peak), as samples/s and
                      as a multiple of the full-recompute bound at that rate

    python benchmarks/profile_scoring.py --dtype float32
    python benchmarks/profile_scoring.py --dtype bfloat16 --n 32 --json benchmarks/results/profile_bf16.json
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bench_scoring import flops_per_sample, make_texts, peak_rate, tokens_per_sample
from zyn import ZeroShotRewardModel
from zyn.backends.hf import kernels

KINDS = {  # op name -> kind; anything else is "other"
    "mkldnn::_linear_pointwise": "products", "aten::addmm": "products", "aten::mm": "products",
    "aten::linear": "products", "aten::matmul": "products",
    "mkldnn::_linear_pointwise.binary": "products",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::scaled_dot_product_attention": "attention", "aten::_softmax": "attention",
    "aten::baddbmm": "attention", "aten::bmm": "attention",  # zyn's attention of short blocks
    "aten::rms_norm": "norms", "aten::_fused_rms_norm": "norms",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompt", default="sentiment")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="cold runs timed for the breakdown (best kept)")
    ap.add_argument("--project", type=float, nargs="*", default=None,
                    help="product rates (GFLOP/s) to project the rate at; default the measured peak")
    args = ap.parse_args()

    rm = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype=args.dtype, reward="prob")
    texts = make_texts(args.n)
    rm.score(texts[:4])
    rm.backend.clear_prefix_cache()
    t = time.perf_counter()
    rm.score(texts)  # unprofiled, for the rate without the profiler's overhead
    plain = time.perf_counter() - t
    events, wall = profiled_run(rm, texts)
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[KINDS.get(e.key, "other")] += e.self_cpu_time_total / 1e6
    total = sum(by_kind.values())
    print(f"{args.model} {args.dtype} ({rm.backend.kernels} kernels), {args.n} texts: {args.n / plain:.2f} samples/s "
          f"unprofiled, {wall:.2f} s profiled ({total:.2f} s self CPU time in ops)")
    for kind in ("products", "attention", "norms", "other"):
        print(f"  {kind:<10}{by_kind[kind]:>8.2f} s  {by_kind[kind] / total:>6.1%}")
    top = top_ops(events, args.top)
    split = product_split(rm, texts, args.repeats, args.project, args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "dtype": args.dtype, "kernels": rm.backend.kernels, "n": args.n,
                       "samples_s": args.n / plain, "profiled_s": wall, "by_kind": by_kind,
                       "top": top,
                       **split, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M")},
                      f, indent=1)


def profiled_run(rm, texts: list[str]):
    """torch.profiler's events of one cold run, and its wall time."""
    rm.backend.clear_prefix_cache()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        rm.score(texts)
        wall = time.perf_counter() - t
    return prof.key_averages(), wall


def top_ops(events, n: int) -> list[dict]:
    """Print and return the `n` ops with the most self CPU time."""
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    print(f"{'op':<52}{'calls':>8}{'self s':>9}{'share':>8}")
    for e in top:
        print(f"{e.key[:51]:<52}{e.count:>8}{e.self_cpu_time_total / 1e6:>9.3f}{e.self_cpu_time_total / 1e6 / total:>8.1%}")
    return [{"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6} for e in top]


def cold_run(rm, texts: list[str], repeats: int) -> float:
    """Best wall time of `repeats` cold runs (the shared prefix computed again each time)."""
    best = float("inf")
    for _ in range(repeats):
        rm.backend.clear_prefix_cache()
        t = time.perf_counter()
        rm.score(texts)
        best = min(best, time.perf_counter() - t)
    return best


def _linears(model) -> list[torch.nn.Module]:
    """The layers that run the model's products: zyn's oneDNN ones, or plain linears
    (but the output layer, which zyn reads at the answer rows only, in the runner)."""
    skip = model.get_output_embeddings()
    return [m for m in model.modules()
            if isinstance(m, (kernels.OneDNNLinear, kernels.OneDNNGatedMLP))
            or (isinstance(m, torch.nn.Linear) and m is not skip)]


def _stub(module: torch.nn.Module) -> None:
    """Make `module` return zeros of its output shape (a write, no product)."""
    if isinstance(module, kernels.OneDNNGatedMLP):
        module.forward = lambda x: x.new_zeros(x.shape)
    else:
        out = module.out_features
        module.forward = lambda x: x.new_zeros(*x.shape[:-1], out)


def product_split(rm, texts: list[str], repeats: int, project: list[float] | None, top: int = 15) -> dict:
    """Products timed by shape, the run without products, and the projection (see the
    module's docstring). Leaves the model's layers as they were."""
    model, n = rm.backend.model, len(texts)
    dtype = model.dtype
    layers = [m for m in _linears(model) if not isinstance(m, kernels.OneDNNLinear)
              or not any(m is p for g in model.modules() if isinstance(g, kernels.OneDNNGatedMLP)
                         for p in (g.gate_proj, g.up_proj, g.down_proj))]
    shapes: dict[str, list[float]] = {}  # "in x out" -> [calls, rows, seconds, flops]

    def timed_forward(module, original):
        if isinstance(module, kernels.OneDNNGatedMLP):
            d, h = module.gate_proj.in_features, module.gate_proj.out_features
            key, per_row = f"gated MLP {d} x {h} x 3", 2 * 3 * d * h
        else:
            key, per_row = f"{module.in_features} x {module.out_features}", 2 * module.in_features * module.out_features

        def forward(x):
            t = time.perf_counter()
            y = original(x)
            took = time.perf_counter() - t
            rows = x.numel() // x.shape[-1]
            entry = shapes.setdefault(key, [0, 0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += rows
            entry[2] += took
            entry[3] += per_row * rows
            return y
        return forward

    try:
        full = cold_run(rm, texts, repeats)
        for m in layers:
            m.forward = timed_forward(m, m.forward)
        rm.backend.clear_prefix_cache()
        rm.score(texts)
        for m in layers:
            del m.forward
        for m in layers:
            _stub(m)
        without = cold_run(rm, texts, repeats)
        floor_events, _ = profiled_run(rm, texts)
    finally:
        for m in layers:
            m.__dict__.pop("forward", None)
    peak = peak_rate(dtype, None)
    flops = sum(e[3] for e in shapes.values())
    product_s = sum(e[2] for e in shapes.values())
    tokens = tokens_per_sample(rm, texts)
    bound_flops = flops_per_sample(model, tokens)  # full recompute, per sample
    print(f"\nproducts by shape, one cold run ({dtype}, peak {peak:.0f} GFLOP/s at {kernels._SHAPE}):")
    print(f"{'shape (in x out)':<28}{'calls':>7}{'rows/call':>11}{'s':>8}{'GFLOP/s':>9}{'x peak':>8}")
    for key, (calls, rows, took, fl) in sorted(shapes.items(), key=lambda kv: -kv[1][2]):
        print(f"{key:<28}{calls:>7}{rows / calls:>11.0f}{took:>8.3f}{fl / took / 1e9:>9.0f}{fl / took / 1e9 / peak:>8.2f}")
    rest = without / n
    print(f"all products{'':<16}{'':>7}{'':>11}{product_s:>8.3f}{flops / product_s / 1e9:>9.0f}"
          f"{flops / product_s / 1e9 / peak:>8.2f}")
    print(f"\nper sample: {full / n * 1e3:.1f} ms in all, of which products {product_s / n * 1e3:.1f} ms "
          f"({flops / n / 1e9:.2f} GFLOP) and everything else {rest * 1e3:.1f} ms (run without products: "
          f"{n / without:.1f} samples/s at most, whatever the product rate)")
    print("\nthe run without products, by op (what the floor is made of):")
    floor_ops = top_ops(floor_events, top)
    projections = []
    for rate in project or [peak]:
        per_sample = rest + flops / n / (rate * 1e9)
        bound = rate * 1e9 / bound_flops
        projections.append({"gflops": rate, "samples_s": 1 / per_sample, "bound_s": bound,
                            "x_bound": 1 / per_sample / bound})
        print(f"products at {rate:.0f} GFLOP/s: {1 / per_sample:.1f} samples/s, {1 / per_sample / bound:.2f}x the "
              f"full-recompute bound ({bound:.1f}/s at {tokens:.1f} tokens per sample)")
    return {"split": {"full_s": full, "without_products_s": without, "products_s": product_s,
                      "product_flops": flops, "peak_gflops": peak, "tokens_per_sample": tokens,
                      "bound_flops_per_sample": bound_flops, "by_shape": shapes, "projections": projections,
                      "floor_top": floor_ops}}


if __name__ == "__main__":
    main()
