"""Scoring throughput: the paper's per-sample reference, zyn's paths, and the machine's bound.

One process, one model, one workload, so every figure is comparable with the others:

  naive      the ZYN paper's way: one `generate(max_new_tokens=1)` per sample
  batched    length-sorted batches, logits at the last position only, no prefix reuse
  zyn        the default path (batched + shared-prefix reuse)
  bound      full recomputation at the matrix-multiply rate measured in this run:
             2 * non-embedding parameters * tokens per sample FLOPs per sample

It also reports the P(yes) drift of every path against the float32 full recompute,
ensemble cost for k = 1, 2, 4 text-first questions, cost against text length and
batch size, and peak resident memory. Prints a table and writes JSON.

    python benchmarks/bench_scoring.py --model qwen2.5-coder-0.5b-instruct --dtypes float32 bfloat16
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import resource
import time

import torch

from zyn import ZeroShotRewardModel
from zyn.kernels import fastest_matmul_rate
from zyn.prompts import PromptSet, Question

SENTENCES = [
    "The acting was superb and the story kept me hooked until the very last scene.",
    "I found the plot predictable and the dialogue painfully flat.",
    "A gorgeous score carries the slower middle section.",
    "Nobody in the cast seemed to know why they were there.",
    "It is funny, warm and surprisingly sad in places.",
    "The special effects look cheap even for a film of this budget.",
    "My kids loved it and I did not hate it either.",
    "The director clearly had a vision, but the editing ruins it.",
    "Two hours went by like twenty minutes.",
    "The ending made no sense at all and left the whole theatre groaning.",
    "Every frame looks like a painting.",
    "I want my money back.",
]
QUESTIONS = ["Is this movie review positive?", "Is this text too repetitive?",
             "Is this movie review from FilmAffinity?", "Does this review mention the actors?"]


def make_texts(n: int, seed: int = 0, lo: int = 15, hi: int = 60) -> list[str]:
    """n review-like texts of lo..hi words, fixed by the seed."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target, words = rng.randint(lo, hi), []
        while len(words) < target:
            words += rng.choice(SENTENCES).split()
        texts.append(" ".join(words[:target]))
    return texts


def text_first(k: int) -> PromptSet:
    """A k-question ensemble whose templates share everything up to the end of the text."""
    qs = tuple(Question(f"q{i}", "Review: {{ text }}\n\n" + QUESTIONS[i]) for i in range(k))
    return PromptSet(name=f"ensemble{k}", questions=qs, reward="prob")


def nonembedding_params(model) -> int:
    """Weights of the matrix products run for every token: all linear layers but the
    output layer (which zyn runs for the answer position only)."""
    from zyn.kernels import OneDNNLinear

    skip = model.get_output_embeddings()
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m is not skip:
            total += m.weight.numel()
        elif isinstance(m, OneDNNLinear):
            total += m.in_features * m.out_features
    return total


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def naive_scores(rm: ZeroShotRewardModel, texts: list[str]) -> list[float]:
    """The paper's reference: one generate(max_new_tokens=1) per sample, single answer ids."""
    backend, tok = rm.backend, rm.backend.tokenizer
    yes, no = tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("No")
    out = []
    for text in texts:
        (query,) = rm.prompt_set.render(text)
        ids = torch.tensor([backend.encode(query)], device=backend.device)
        gen = backend.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                                     output_scores=True, return_dict_in_generate=True, pad_token_id=backend.pad_id)
        pair = torch.softmax(gen.scores[0][0, [yes, no]].float(), dim=-1)
        out.append(pair[0].item())
    return out


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=x.__getitem__)
        r = [0.0] * len(x)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else 1.0


def run_dtype(args, dtype: str, texts: list[str], reference: list[float] | None) -> dict:
    rm = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype=dtype, device=args.device, reward="prob")
    backend = rm.backend
    tokens = sum(len(backend.encode(q)) for t in texts for q in rm.prompt_set.render(t)) / len(texts)
    # The bound uses the fastest product this CPU offers at this precision (default or
    # oneDNN kernel), so a ratio against it shows work saved, not a kernel swapped.
    rate = max(fastest_matmul_rate(backend.model.dtype, repeats=20) for _ in range(3))
    bound = rate * 1e9 / (2 * nonembedding_params(backend.model) * tokens)
    rm.score(texts[:4])  # warm-up: first-call allocations and kernel selection
    full = ZeroShotRewardModel(backend.model, backend.tokenizer, prompt=args.prompt, reward="prob",
                               share_prefix=False)
    res = {"dtype": dtype, "kernels": backend.kernels, "matmul_gflops": rate, "tokens_per_sample": tokens,
           "bound_samples_s": bound}
    batched, t = timed(full.score, texts)
    res["batched"] = {"seconds": t, "samples_s": len(texts) / t, "tokens_s": len(texts) * tokens / t}
    backend._prefix = None  # time the shared prefix's own computation too
    fast, t = timed(rm.score, texts)
    res["zyn"] = {"seconds": t, "samples_s": len(texts) / t, "tokens_s": len(texts) * tokens / t}
    res["fast_vs_full_max_abs"] = max(abs(a - b) for a, b in zip(fast, batched))
    if reference is not None:
        res["drift_vs_float32"] = {"max_abs": max(abs(a - b) for a, b in zip(fast, reference)),
                                   "mean_abs": sum(abs(a - b) for a, b in zip(fast, reference)) / len(fast),
                                   "spearman": spearman(fast, reference)}
    res["scores"] = fast
    res["ensemble"] = ensemble_costs(rm, texts)
    if args.lengths:
        res["length"] = length_costs(rm, args.lengths)
    if args.batch_sizes:
        res["batch"] = batch_costs(rm, texts, args.batch_sizes)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not args.skip_naive:
        # The paper's way on the model as transformers loads it (default kernels).
        del rm, full, backend
        plain = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype=dtype, device=args.device,
                                    fast_kernels=False)
        naive, t = timed(naive_scores, plain, texts)
        res["naive"] = {"seconds": t, "samples_s": len(texts) / t}
        res["naive_vs_zyn_max_abs"] = max(abs(a - b) for a, b in zip(naive, fast))
    return res


def ensemble_costs(rm, texts) -> dict:
    out = {}
    for k in (1, 2, 4):
        sub = rm.with_prompt(text_first(k))
        sub.score(texts[:2])
        _, t = timed(sub.score, texts)
        out[k] = t
    return {str(k): {"seconds": t, "vs_k1": t / out[1]} for k, t in out.items()}


def length_costs(rm, lengths: list[int]) -> dict:
    tok = rm.backend.tokenizer
    out = {}
    for n in lengths:
        words = make_texts(1, seed=n, lo=4 * n, hi=4 * n)[0]
        text = tok.decode(tok(words, add_special_tokens=False)["input_ids"][:n])
        _, t = timed(rm.score, [text] * 1 + [text + " ."] * 3)  # 4 distinct texts of ~n tokens
        out[str(n)] = {"seconds": t, "samples_s": 4 / t}
    return out


def batch_costs(rm, texts, sizes: list[int]) -> dict:
    out = {}
    for b in sizes:
        rm.backend.batch_size = b
        _, t = timed(rm.score, texts)
        out[str(b)] = {"seconds": t, "samples_s": len(texts) / t}
    rm.backend.batch_size = 16 if rm.backend.device.type == "cpu" else 64
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompt", default="sentiment")
    ap.add_argument("--n", type=int, default=32, help="texts in the workload")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--lengths", type=int, nargs="*", default=[32, 128, 512, 1024])
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 4, 8, 16])
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--out", default="benchmarks/results_scoring.json")
    args = ap.parse_args()

    texts = make_texts(args.n)
    results, reference = [], None
    # Each precision runs in a child process of its own, so its peak memory is its own.
    ctx = multiprocessing.get_context("spawn")
    for dtype in args.dtypes:
        with ctx.Pool(1) as pool:
            res = pool.apply(run_child, (args, dtype, texts, reference))
        if reference is None and dtype == "float32":
            reference = res["scores"]
        results.append(res)
        print_table(res)
    meta = {"model": args.model, "prompt": args.prompt, "n": args.n, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": cpu_name()}
    print(f"machine: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}")
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


def run_child(args, dtype, texts, reference) -> dict:
    return run_dtype(args, dtype, texts, reference)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(res: dict) -> None:
    bound = res["bound_samples_s"]
    print(f"\n== {res['dtype']} ({res['kernels']} kernels): matmul {res['matmul_gflops']:.0f} GFLOP/s, {res['tokens_per_sample']:.1f} tokens/sample,"
          f" full-recompute bound {bound:.2f} samples/s")
    print(f"{'path':<10}{'samples/s':>11}{'x naive':>9}{'x bound':>9}")
    naive = res.get("naive", {}).get("samples_s")
    for path in ("naive", "batched", "zyn"):
        if path in res:
            s = res[path]["samples_s"]
            print(f"{path:<10}{s:>11.2f}{(s / naive if naive else float('nan')):>9.2f}{s / bound:>9.2f}")
    print(f"fast path vs full recompute: max |dP| = {res['fast_vs_full_max_abs']:.2e}")
    if "drift_vs_float32" in res:
        d = res["drift_vs_float32"]
        print(f"drift vs float32: max |dP| {d['max_abs']:.4f}, mean {d['mean_abs']:.4f}, spearman {d['spearman']:.4f}")
    print("ensemble cost: " + ", ".join(f"k={k}: {v['seconds']:.2f}s ({v['vs_k1']:.2f}x)" for k, v in res["ensemble"].items()))
    for key in ("length", "batch"):
        if key in res:
            print(f"{key}: " + ", ".join(f"{k}: {v['samples_s']:.2f}/s" for k, v in res[key].items()))
    print(f"peak resident memory of the zyn path (this precision's process): {res['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
