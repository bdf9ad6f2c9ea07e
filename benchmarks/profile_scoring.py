"""Where zyn's scoring time goes: torch.profiler over bench_scoring's workload, by op kind.

Loads the judge as `ZeroShotRewardModel` does (kernels chosen as usual), scores a few
texts to warm up, then profiles one cold run over the workload (the shared prefix
computed again, as bench_scoring times it) and prints the self CPU time by kind of op
(matrix products, attention, norms, the rest) and the top ops.

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

from bench_scoring import make_texts
from zyn import ZeroShotRewardModel

KINDS = {  # op name -> kind; anything else is "other"
    "mkldnn::_linear_pointwise": "products", "aten::addmm": "products", "aten::mm": "products",
    "aten::bmm": "products", "aten::linear": "products", "aten::matmul": "products",
    "mkldnn::_linear_pointwise.binary": "products",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::scaled_dot_product_attention": "attention", "aten::_softmax": "attention",
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
    args = ap.parse_args()

    rm = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype=args.dtype, reward="prob")
    texts = make_texts(args.n)
    rm.score(texts[:4])
    rm.backend.clear_prefix_cache()
    t = time.perf_counter()
    rm.score(texts)  # unprofiled, for the rate without the profiler's overhead
    plain = time.perf_counter() - t
    rm.backend.clear_prefix_cache()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        rm.score(texts)
        wall = time.perf_counter() - t
    events = prof.key_averages()
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[KINDS.get(e.key, "other")] += e.self_cpu_time_total / 1e6
    total = sum(by_kind.values())
    print(f"{args.model} {args.dtype} ({rm.backend.kernels} kernels), {args.n} texts: {args.n / plain:.2f} samples/s "
          f"unprofiled, {wall:.2f} s profiled ({total:.2f} s self CPU time in ops)")
    for kind in ("products", "attention", "norms", "other"):
        print(f"  {kind:<10}{by_kind[kind]:>8.2f} s  {by_kind[kind] / total:>6.1%}")
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]
    print(f"{'op':<52}{'calls':>8}{'self s':>9}{'share':>8}")
    for e in top:
        print(f"{e.key[:51]:<52}{e.count:>8}{e.self_cpu_time_total / 1e6:>9.3f}{e.self_cpu_time_total / 1e6 / total:>8.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "dtype": args.dtype, "kernels": rm.backend.kernels, "n": args.n,
                       "samples_s": args.n / plain, "profiled_s": wall, "by_kind": by_kind,
                       "top": [{"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6} for e in top],
                       "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M")}, f, indent=1)


if __name__ == "__main__":
    main()
