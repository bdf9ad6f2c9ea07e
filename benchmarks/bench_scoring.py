"""Scoring throughput: the paper's per-sample reference, zyn's paths, and the machine's bound.

One process per precision, one model, one workload, so every figure is comparable with
the others of its precision:

  naive      the ZYN paper's way: one `generate(max_new_tokens=1)` per sample
  batched    length-sorted padded batches, logits at the last position only, nothing
             shared (zyn's `share_prefix=False` reference path)
  zyn        the default path: cached prefix, token trie packed into one row, attention
             block by block, last layer at the answers only
  bound      full recomputation at the matrix-multiply rate measured in this run:
             2 * non-embedding parameters * tokens per sample FLOPs per sample

int8 (CPU): torch's dynamic int8 quantisation of the float32 judge on the zyn path,
speed and drift against float32 only; zyn does not offer it (see RESULTS.md).

llama.cpp (CPU, a peer engine): the same GGUF file the preset is built from, the same
token ids (zyn's queries as zyn renders them with the judge's chat template, checked
against llama.cpp's own tokenisation of the same strings), P(yes) from the last logits
row at the answer ids resolved from the GGUF's vocabulary by zyn's rule, the same number
of threads. Three ways: naive (each query from an empty cache), prefix kept (the shared
prefix evaluated once per run, its KV kept, each query rewound to it), and multi-sequence
batches (prefix once in a KV cache shared by all sequences, then up to --token-budget
suffix tokens of several queries per `llama_decode`, each its own sequence id). It runs
between the float32 and bf16 processes, in a process of its own (a crashing build, such
as the native one on Intel AMX CPUs, is reported, not fatal); skipped with a reason
where llama-cpp-python is not installed or the judge has no GGUF file.

Ablations (zyn with padded rows instead of packing; packing without the trimmed last
layer) show where the gain comes from. It also reports the P(yes) drift of every path
against full recompute and against float32, ensemble cost for k = 1, 2, 4 text-first
questions (on the workload and against text length), cost against text length and
token budget, a GRPO-like workload (several completions per prompt), and peak
resident memory. Every time is the best of --repeats runs (the machines here are
shared; the best run is the one least disturbed). Prints tables and writes JSON.

    python benchmarks/bench_scoring.py --out benchmarks/results/scoring_cpu.json
    python benchmarks/bench_scoring.py --main-rows --out benchmarks/results/peer_cpu.json  # zyn and the peer only

The workload: 32 texts of 15-60 words (uniform), each opening with a different one of
the hand-written reviews in benchmarks/data and continued with the next ones, so no
two texts share a beginning beyond chance (shared openings would flatter the trie).

GPU figures use judges of real architectures with random weights (see
benchmarks/random_models.py; speed does not depend on the weights):

    python benchmarks/bench_scoring.py --model random:flan-t5-large --device cuda \
        --dtypes bfloat16 --n 512 --tokenizer TOKENIZER_FOLDER

For an encoder-decoder judge the bound counts what such a judge must compute: the
encoder and the decoder's cross-attention keys and values over every input token, the
rest of the decoder at one position.
"""
from __future__ import annotations

import argparse
import json
import importlib.util
import multiprocessing
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import random_models
from zyn import ZeroShotRewardModel
from zyn.backends.hf.kernels import fastest_matmul_rate
from zyn.prompts import PromptSet, Question

REVIEWS = Path(__file__).resolve().parent / "data" / "movie_reviews.jsonl"
QUESTIONS = ["Is this movie review positive?", "Is this text too repetitive?",
             "Is this movie review from FilmAffinity?", "Does this review mention the actors?"]


def _reviews(seed: int) -> list[str]:
    reviews = [json.loads(line)["text"] for line in REVIEWS.open()]
    random.Random(seed).shuffle(reviews)
    return reviews


def make_texts(n: int, seed: int = 0, lo: int = 15, hi: int = 60) -> list[str]:
    """n texts of lo..hi words: text i opens with review i and runs on into the next."""
    reviews, rng = _reviews(seed), random.Random(seed + 1)
    texts = []
    for i in range(n):
        target, words, j = rng.randint(lo, hi), [], i
        while len(words) < target:
            words += reviews[j % len(reviews)].split()
            j += 1
        texts.append(" ".join(words[:target]))
    return texts


def texts_of_tokens(tok, n_tokens: int, count: int, seed: int = 0) -> list[str]:
    """`count` distinct texts of about `n_tokens` tokens each, built like make_texts."""
    long = make_texts(count, seed=seed, lo=n_tokens, hi=n_tokens)  # >= n_tokens words
    return [tok.decode(tok(t, add_special_tokens=False)["input_ids"][:n_tokens]) for t in long]


def text_first(k: int) -> PromptSet:
    """A k-question ensemble whose templates share everything up to the end of the text."""
    qs = tuple(Question(f"q{i}", "Review: {{ text }}\n\n" + QUESTIONS[i]) for i in range(k))
    return PromptSet(name=f"ensemble{k}", questions=qs, reward="prob")


# The decoder's products that run over every encoder token: cross-attention keys and values.
CROSS_KV = ("EncDecAttention.k", "EncDecAttention.v", "encoder_attn.k_proj", "encoder_attn.v_proj")


def flops_per_sample(model, tokens: float) -> float:
    """Matrix-product FLOPs that full recomputation of one `tokens`-token input needs:
    every linear layer but the output layer (which zyn runs for the answer position
    only) at every token; for an encoder-decoder, the decoder at one position but for
    its cross-attention keys and values, which run over every input token."""
    from zyn.backends.hf.kernels import OneDNNLinear

    skip = model.get_output_embeddings()
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    total = 0.0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and m is not skip:
            weights = m.weight.numel()
        elif isinstance(m, OneDNNLinear):
            weights = m.in_features * m.out_features
        else:
            continue
        at_one = seq2seq and name.startswith("decoder.") and not any(k in name for k in CROSS_KV)
        total += 2 * weights * (1 if at_one else tokens)
    return total


def peak_rate(dtype: torch.dtype, device: str | None) -> float:
    """GFLOP/s of the fastest product at `dtype`: on CPU any kernel zyn can use (best of
    3 rounds); on a GPU an 8192^3 product, the mean of 10 after 3 warm-ups."""
    if not on_gpu(device):
        return max(fastest_matmul_rate(dtype, repeats=20) for _ in range(3))
    a = torch.randn(8192, 8192, dtype=dtype, device=device)
    b = torch.randn(8192, 8192, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192 ** 3 / (time.perf_counter() - t) / 1e9


def timed(fn, *args, repeats: int = 1):
    """(result, best wall time of `repeats` runs)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return out, best


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


def rate(n: int, seconds: float, tokens: float | None = None) -> dict:
    out = {"seconds": seconds, "samples_s": n / seconds}
    if tokens is not None:
        out["tokens_s"] = n * tokens / seconds
    return out


def on_gpu(device: str | None) -> bool:
    return device is not None and str(device).startswith("cuda")


def tokens_per_sample(rm, texts: list[str]) -> float:
    """Mean tokens of the rendered inputs, every question of every text."""
    return sum(len(rm.backend.encode(q)) for t in texts for q in rm.prompt_set.render(t)) / len(texts)


def cold(rm, texts: list[str]):
    """A call scoring `texts` on zyn's path that also computes the shared prefix again."""
    def score():
        rm.backend.clear_prefix_cache()
        return rm.score(texts)
    return score


def drift(scores: list[float], reference: list[float]) -> dict:
    diffs = [abs(a - b) for a, b in zip(scores, reference)]
    return {"max_abs": max(diffs), "mean_abs": sum(diffs) / len(diffs), "spearman": spearman(scores, reference)}


def run_dtype(args, dtype: str, texts: list[str], reference: list[float] | None) -> dict:
    if random_models.is_random(args.model):
        model, tok = random_models.build(args.model, dtype, args.device, args.tokenizer)
        rm = ZeroShotRewardModel(model, tok, prompt=args.prompt, reward="prob")
    else:
        rm = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype=dtype, device=args.device, reward="prob")
    backend, n, reps = rm.backend, len(texts), args.repeats
    tokens = tokens_per_sample(rm, texts)
    # The bound uses the fastest product this machine offers at this precision (on CPU
    # the default or oneDNN kernel), so a ratio against it shows work saved, not a
    # kernel swapped.
    gflops = peak_rate(backend.model.dtype, args.device)
    bound = gflops * 1e9 / flops_per_sample(backend.model, tokens)
    rm.score(texts[:4])  # warm-up: first-call allocations, kernel selection, self-checks
    full = ZeroShotRewardModel(backend.model, backend.tokenizer, prompt=args.prompt, reward="prob",
                               share_prefix=False)
    res = {"dtype": dtype, "kernels": backend.kernels, "matmul_gflops": gflops, "tokens_per_sample": tokens,
           "bound_samples_s": bound, "token_budget": backend.token_budget,
           "trim": backend.fast_paths(*rm.prompt_set.answers)["trim"]}
    batched, t = timed(full.score, texts, repeats=reps)
    res["batched"] = rate(n, t, tokens)

    zyn_cold = cold(rm, texts)  # times the shared prefix's own computation too
    fast, t = timed(zyn_cold, repeats=reps)
    res["zyn"] = rate(n, t, tokens)
    # packing and the trimmed last layer apply to causal judges only
    res["ablation"] = {} if backend.is_seq2seq or args.main_rows else ablations(rm, texts, reps)
    res["fast_vs_full_max_abs"] = max(abs(a - b) for a, b in zip(fast, batched))
    if reference is not None:
        res["drift_vs_float32"] = drift(fast, reference)
    res["scores"] = fast
    if dtype == "float32" and not backend.is_seq2seq:  # the peer reads exactly these
        res["queries"] = [[backend.format(q), backend.encode(q)] for t in texts for q in rm.prompt_set.render(t)]
        ids = backend.answer_ids(*rm.prompt_set.answers)
        res["answer_ids"] = [list(ids.yes), list(ids.no)]
    if args.main_rows:
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return res
    res["ensemble"] = ensemble_costs(rm, texts, reps)
    res["ensemble_vs_length"] = ensemble_vs_length(rm, args.ensemble_lengths, reps)
    if args.lengths:
        res["length"] = length_costs(rm, args.lengths, reps)
    if args.budgets:
        res["budget"] = budget_costs(rm, texts, args.budgets, reps)
    res["shared_prompts"] = shared_prompts(rm, full, reps)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if backend.device.type == "cuda":
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if not args.skip_naive:
        # The paper's way on the model as transformers loads it (default kernels; a
        # random judge was never swapped to others).
        if random_models.is_random(args.model):
            plain = full
        else:
            del rm, full, backend
            plain = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype=dtype, device=args.device,
                                        fast_kernels=False)
        naive, t = timed(naive_scores, plain, texts, repeats=min(reps, 2))
        res["naive"] = rate(n, t, tokens)
        res["naive_vs_zyn_max_abs"] = max(abs(a - b) for a, b in zip(naive, fast))
    return res


def ablations(rm, texts: list[str], reps: int) -> dict:
    """zyn with one part switched off at a time (the same model and kernels), samples/s."""
    options = {"rows_not_packed": dict(layout="rows"),  # one padded row per block, as on a GPU
               "packed_full_last_layer": dict(trim_last_layer=False)}
    out = {}
    for name, option in options.items():
        other = ZeroShotRewardModel(rm.backend.model, rm.backend.tokenizer, prompt=rm.prompt_set, reward="prob",
                                    token_budget=rm.backend.token_budget, **option)
        other.score(texts[:4])  # its one-time checks
        _, t = timed(cold(other, texts), repeats=reps)
        out[name] = len(texts) / t
    return out


def ensemble_costs(rm, texts, reps: int) -> dict:
    out = {}
    for k in (1, 2, 4):
        sub = rm.with_prompt(text_first(k))
        sub.score(texts[:2])
        _, out[k] = timed(sub.score, texts, repeats=reps)
    return {str(k): {"seconds": t, "vs_k1": t / out[1]} for k, t in out.items()}


def ensemble_vs_length(rm, lengths: list[int], reps: int) -> dict:
    """k=4 against k=1 text-first questions on 8 texts of each length (tokens)."""
    one, four = rm.with_prompt(text_first(1)), rm.with_prompt(text_first(4))
    out = {}
    for n in lengths:
        texts = texts_of_tokens(rm.backend.tokenizer, n, 8, seed=n)
        _, t1 = timed(one.score, texts, repeats=reps)
        _, t4 = timed(four.score, texts, repeats=reps)
        out[str(n)] = {"k1_seconds": t1, "k4_seconds": t4, "k4_vs_k1": t4 / t1}
    return out


def length_costs(rm, lengths: list[int], reps: int) -> dict:
    out = {}
    for n in lengths:
        texts = texts_of_tokens(rm.backend.tokenizer, n, 4, seed=n)
        _, t = timed(rm.score, texts, repeats=reps)
        out[str(n)] = {"seconds": t, "samples_s": 4 / t}
    return out


def budget_costs(rm, texts, budgets: list[int], reps: int) -> dict:
    backend, out = rm.backend, {}
    default = backend.token_budget
    for b in budgets:
        backend.token_budget = b
        _, t = timed(rm.score, texts, repeats=reps)
        out[str(b)] = {"seconds": t, "samples_s": len(texts) / t}
    backend.token_budget = default
    return out


def shared_prompts(rm, full, reps: int) -> dict:
    """GRPO-like: 8 prompts x 4 completions, each judged as prompt + completion."""
    reviews = _reviews(7)
    prompts = [" ".join(r.split()[:12]) for r in reviews[:8]]
    texts = [f"{p} {' '.join(reviews[8 + 4 * i + j].split()[:15])}" for i, p in enumerate(prompts) for j in range(4)]
    _, t_full = timed(full.score, texts, repeats=reps)
    _, t_zyn = timed(rm.score, texts, repeats=reps)
    return {"batched_samples_s": len(texts) / t_full, "zyn_samples_s": len(texts) / t_zyn, "speedup": t_full / t_zyn}



# ---------------------------------------------------------------------- the llama.cpp peer

PEER_WAYS = ("naive", "prefix_kept", "multi_seq")


def peer_gguf(model: str) -> tuple[str | None, str]:
    """The GGUF file the judge is built from (a preset's parts assembled once into
    ``<zyn cache>/bench/``, sha256 checked as they are joined), or None and why not."""
    from zyn.models import PRESETS, assemble, cache_root, resolve

    if random_models.is_random(model):
        return None, "a random judge has no GGUF file"
    src = resolve(model)
    if src.kind == "gguf":
        path = Path(src.location)
        found = sorted(path.glob("*.gguf")) if path.is_dir() else [path]
        return (str(found[0]), "") if len(found) == 1 else (None, f"no single .gguf file in {path}")
    if src.kind != "preset":
        return None, f"the judge {model!r} is not a GGUF preset or file"
    preset = PRESETS[src.preset.name]
    dest = cache_root() / "bench" / preset.filename
    if not (dest.is_file() and dest.stat().st_size == preset.size):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".{os.getpid()}.partial")
        assemble(preset.name, tmp)  # verifies the pinned sha256, deletes a mismatch
        os.replace(tmp, dest)
    return str(dest), ""


def run_peer(args, f32: dict | None) -> dict:
    """llama.cpp on the judge's GGUF file, in a process of its own (see the module's doc)."""
    res: dict = {"dtype": "llama.cpp"}
    if args.peer == "none":
        return dict(res, skipped="--peer none")
    if importlib.util.find_spec("llama_cpp") is None:
        return dict(res, skipped="llama-cpp-python is not installed (pip install -e \".[remote]\"; on an Intel "
                                 "CPU with AMX build it with CMAKE_ARGS=\"$(.ci/llama_cmake_args)\")")
    if on_gpu(args.device):
        return dict(res, skipped="the peer row is measured on the CPU only")
    if f32 is None or "queries" not in f32:
        return dict(res, skipped="needs the float32 process of a causal judge (its queries and scores)")
    gguf, why = peer_gguf(args.model)
    if gguf is None:
        return dict(res, skipped=why)
    job = {"gguf": gguf, "queries": f32["queries"], "answer_ids": f32["answer_ids"], "prompt": args.prompt,
           "n_texts": len(f32["scores"]), "reference": f32["scores"], "repeats": args.repeats,
           "threads": args.peer_threads or torch.get_num_threads(), "budget": f32["token_budget"]}
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp, "job.json"), Path(tmp, "out.json")
        job_file.write_text(json.dumps(job))
        try:
            proc = subprocess.run([sys.executable, __file__, "--peer-worker", str(job_file), str(out_file)],
                                  capture_output=True, text=True, timeout=args.peer_timeout)
        except subprocess.TimeoutExpired:
            return dict(res, skipped=f"llama.cpp took longer than --peer-timeout {args.peer_timeout} s")
        if proc.returncode != 0 or not out_file.is_file():
            how = (f"signal {-proc.returncode} ({_signal_name(-proc.returncode)})" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            return dict(res, skipped=f"llama.cpp's process ended with {how} (a native build on an Intel AMX CPU "
                                     f"segfaults: rebuild with .ci/llama_cmake_args): {tail}")
        return json.loads(out_file.read_text())


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


class GGUFVocab:
    """The few tokenizer calls `zyn.answers.resolve_answer_ids` makes, answered from a
    llama.cpp model's own vocabulary, so the answer ids come from the GGUF file."""

    def __init__(self, llm):
        self.llm = llm

    def get_vocab(self) -> dict[str, int]:
        model = self.llm._model
        return {model.token_get_text(i): i for i in range(self.llm.n_vocab())}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=False)

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    def tokenize(self, text: str) -> list[str]:
        return [self.decode([i]) for i in self.encode(text)]


def peer_worker(job_file: str, out_file: str) -> None:
    """The peer's process: load the GGUF with llama.cpp and time its three ways."""
    import numpy as np

    import llama_cpp
    from zyn.answers import resolve_answer_ids
    from zyn.prompts import load_prompt_set
    from zyn.scoring import combine

    job = json.loads(Path(job_file).read_text())
    threads, budget, reps = job["threads"], job["budget"], job["repeats"]
    queries = [ids for _, ids in job["queries"]]
    longest = max(map(len, queries))
    prefix = 0  # the tokens every query starts with (zyn caches the same ones)
    while prefix < min(map(len, queries)) - 1 and all(q[prefix] == queries[0][prefix] for q in queries):
        prefix += 1
    n_batch = max(budget, longest)
    n_ctx = -(-(prefix + n_batch + 64) // 256) * 256
    t = time.perf_counter()
    llm = llama_cpp.Llama(job["gguf"], n_ctx=n_ctx, n_batch=n_batch, n_ubatch=budget, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t
    ps = load_prompt_set(job["prompt"])
    ids = resolve_answer_ids(GGUFVocab(llm), *ps.answers)
    yes, no = list(ids.yes), list(ids.no)
    n_vocab = llm.n_vocab()
    same_tokens = sum(llm.tokenize(text.encode(), add_bos=False, special=True) == q for (text, _), q
                      in zip(job["queries"], queries))

    def logodds(ptr) -> float:
        row = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        lse = lambda v: float(np.logaddexp.reduce(v))  # noqa: E731
        return lse(row[yes]) - lse(row[no])

    def naive() -> list[float]:
        out = []
        for q in queries:
            llm.reset()
            llm.eval(q)
            out.append(logodds(llm._ctx.get_logits()))
        return out

    def prefix_kept() -> list[float]:
        llm.reset()
        llm.eval(queries[0][:prefix])
        out = []
        for q in queries:
            llm.n_tokens = prefix  # rewind: eval drops the cache past here and goes on
            llm.eval(q[prefix:])
            out.append(logodds(llm._ctx.get_logits()))
        return out

    # Multi-sequence batches: a context of its own on the same weights, one KV cache
    # shared by all sequences (the prefix's cells belong to every sequence).
    groups, group = [], []
    for i, q in enumerate(queries):
        if group and (sum(len(queries[j]) - prefix for j in group) + len(q) - prefix > budget):
            groups.append(group)
            group = []
        group.append(i)
    groups.append(group)
    n_seq = max(map(len, groups))
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx * 2, n_batch, budget
    params.n_seq_max, params.kv_unified = n_seq, True
    params.n_threads = params.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    if not ctx:
        raise SystemExit("llama_init_from_model failed")
    mem = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq)

    def decode(items) -> None:
        batch.n_tokens = len(items)
        for j, (token, pos, seqs, want) in enumerate(items):
            batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = token, pos, len(seqs), want
            for m, seq in enumerate(seqs):
                batch.seq_id[j][m] = seq
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    def multi_seq() -> list[float]:
        llama_cpp.llama_memory_clear(mem, True)
        decode([(tok, i, list(range(n_seq)), False) for i, tok in enumerate(queries[0][:prefix])])
        out = [0.0] * len(queries)
        for group in groups:
            items, last = [], {}
            for seq, i in enumerate(group):
                tail = queries[i][prefix:]
                items += [(tok, prefix + k, [seq], k == len(tail) - 1) for k, tok in enumerate(tail)]
                last[i] = len(items) - 1
            decode(items)
            for i, j in last.items():
                out[i] = logodds(llama_cpp.llama_get_logits_ith(ctx, j))
            for seq in range(len(group)):
                llama_cpp.llama_memory_seq_rm(mem, seq, prefix, -1)
        return out

    ways = {"naive": naive, "prefix_kept": prefix_kept, "multi_seq": multi_seq}
    best = {w: float("inf") for w in ways}
    raw: dict[str, list[float]] = {}
    for r in range(reps):  # the ways take turns, so a burst of other work hits all of them
        for w, fn in (ways.items() if r % 2 == 0 else reversed(ways.items())):
            t = time.perf_counter()
            raw[w] = fn()
            best[w] = min(best[w], time.perf_counter() - t)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)

    n_texts, qs = job["n_texts"], ps.questions
    per_text = len(queries) // n_texts
    res = {"dtype": "llama.cpp", "threads": threads, "gguf": job["gguf"], "load_s": load_s,
           "llama_cpp": llama_cpp.__version__, "system_info": llama_cpp.llama_print_system_info().decode(),
           "prefix_tokens": prefix, "queries": len(queries), "same_tokens": same_tokens,
           "answer_ids_same": [list(ids.yes), list(ids.no)] == job["answer_ids"], "multi_seq_batches": len(groups),
           "tokens_per_sample": sum(map(len, queries)) / n_texts, "ways": {}, "scores": {}, "drift_vs_float32": {}}
    for w in ways:
        rows = [raw[w][i * per_text:(i + 1) * per_text] for i in range(n_texts)]
        p = combine(rows, [q.calibration for q in qs], [q.reward_answer for q in qs], [q.weight for q in qs],
                    ps.combine, "prob").p_rewarded
        res["ways"][w] = rate(n_texts, best[w], res["tokens_per_sample"])
        res["scores"][w] = p
        res["drift_vs_float32"][w] = drift(p, job["reference"])
    Path(out_file).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct",
                    help="a preset, folder or hub id, or random:ARCH (" + ", ".join(random_models.CONFIGS) + ")")
    ap.add_argument("--tokenizer", default="qwen2.5-coder-0.5b-instruct",
                    help="for random:ARCH judges: a preset, or a folder of its tokenizer files")
    ap.add_argument("--prompt", default="sentiment")
    ap.add_argument("--n", type=int, default=32, help="texts in the workload")
    ap.add_argument("--dtypes", nargs="+", default=None,
                    help="float32, bfloat16, float16, and int8: torch's dynamic int8 quantisation of the "
                         "float32 judge (CPU; measured, not offered). Default: float32 bfloat16, and int8 "
                         "for a real judge on the CPU")
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="runs per timing; the best is kept")
    ap.add_argument("--lengths", type=int, nargs="*", default=[32, 128, 512, 1024])
    ap.add_argument("--ensemble-lengths", type=int, nargs="*", default=[32, 64, 128, 256])
    ap.add_argument("--budgets", type=int, nargs="*", default=None,
                    help="token budgets to scan (default 128-1024 on CPU, 4096-65536 on a GPU)")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--main-rows", action="store_true",
                    help="time the main rows only (batched, zyn, the bound, the peer): no naive reference, "
                         "ablations, ensembles or cost scans")
    ap.add_argument("--peer", choices=["llama.cpp", "none"], default="llama.cpp",
                    help="the peer engine row, after the float32 process (skipped with a reason where it cannot run)")
    ap.add_argument("--peer-threads", type=int, default=None, help="llama.cpp's threads (default: torch's)")
    ap.add_argument("--peer-timeout", type=float, default=1800)
    ap.add_argument("--peer-worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="benchmarks/results_scoring.json")
    args = ap.parse_args()
    if args.peer_worker:
        return peer_worker(*args.peer_worker)
    if args.main_rows:
        args.skip_naive = True
    int8_ok = not random_models.is_random(args.model) and not on_gpu(args.device)
    if args.dtypes is None:
        args.dtypes = ["float32", "bfloat16"] + (["int8"] if int8_ok else [])
    elif "int8" in args.dtypes and not int8_ok:
        ap.error("--dtypes int8 measures a real judge on the CPU; leave it out here")
    if args.budgets is None:
        args.budgets = [4096, 16384, 65536] if on_gpu(args.device) else [128, 256, 512, 1024]

    texts = make_texts(args.n)
    results, reference = [], None
    # Each precision runs in a child process of its own, so its peak memory is its own.
    ctx = multiprocessing.get_context("spawn")
    peer_done = False
    for dtype in args.dtypes:
        with ctx.Pool(1) as pool:
            res = pool.apply(run_child, (args, dtype, texts, reference))
        if reference is None and dtype == "float32":
            reference = res["scores"]
        results.append(res)
        print_table(res, results)
        if dtype == "float32" and not peer_done:  # the peer between zyn's precisions
            results.append(run_peer(args, res))
            print_peer(results[-1])
            peer_done = True
    if not peer_done:
        results.append(run_peer(args, None))
        print_peer(results[-1])
    print_versus(results)
    meta = {"model": args.model, "prompt": args.prompt, "n": args.n, "repeats": args.repeats,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(),
            "gpu": torch.cuda.get_device_name() if on_gpu(args.device) else None,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"machine: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}"
          + (f", {meta['gpu']}" if meta["gpu"] else ""))
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


def run_child(args, dtype, texts, reference) -> dict:
    if dtype == "int8":
        return run_int8(args, texts, reference)
    return run_dtype(args, dtype, texts, reference)


def run_int8(args, texts: list[str], reference: list[float] | None) -> dict:
    """torch's dynamic int8 quantisation of the float32 judge on zyn's default path: every
    linear layer but the output layer, weights per output channel, activations quantised
    per call. zyn does not offer it; this measures its speed and its drift against float32."""
    import warnings

    from torch import nn
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from zyn.models import load_pretrained

    model, tok = load_pretrained(args.model)
    head = model.get_output_embeddings()
    spec = {name: per_channel_dynamic_qconfig for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m is not head}
    with warnings.catch_warnings():  # torch deprecates its quantised tensors; the measurement stands
        warnings.simplefilter("ignore")
        quantize_dynamic(model, spec, inplace=True)
    rm = ZeroShotRewardModel(model, tok, prompt=args.prompt, reward="prob")
    rm.score(texts[:4])
    scores, t = timed(cold(rm, texts), repeats=args.repeats)
    res = {"dtype": "int8", "layers_quantised": len(spec), "zyn": rate(len(texts), t, tokens_per_sample(rm, texts)),
           "scores": scores, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if reference is not None:
        res["drift_vs_float32"] = drift(scores, reference)
    return res


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_peer(res: dict) -> None:
    if "skipped" in res:
        print(f"\n== llama.cpp peer: skipped ({res['skipped']})")
        return
    print(f"\n== llama.cpp {res['llama_cpp']} peer ({res['threads']} threads) on {Path(res['gguf']).name}: "
          f"{res['tokens_per_sample']:.1f} tokens/sample, {res['prefix_tokens']} shared, "
          f"same tokens as zyn {res['same_tokens']}/{res['queries']}, same answer ids {res['answer_ids_same']}")
    print(f"{'path':<26}{'samples/s':>11}{'max |dP|':>10}{'spearman':>10}   (vs zyn float32)")
    for w, r in res["ways"].items():
        d = res["drift_vs_float32"][w]
        label = f"llama.cpp {w.replace('_', ' ')}" + (f" ({res['multi_seq_batches']} batches)" if w == "multi_seq"
                                                       else "")
        print(f"{label:<26}{r['samples_s']:>11.2f}{d['max_abs']:>10.4f}{d['spearman']:>10.4f}")


def print_versus(results: list[dict]) -> None:
    peer = next((r for r in results if r["dtype"] == "llama.cpp" and "ways" in r), None)
    if peer is None:
        return
    best_way = max(peer["ways"], key=lambda w: peer["ways"][w]["samples_s"])
    best = peer["ways"][best_way]["samples_s"]
    print(f"\n== zyn against llama.cpp's best way ({best_way.replace('_', ' ')}, {best:.2f} samples/s), same run")
    for r in results:
        if r["dtype"] in ("float32", "bfloat16", "float16", "int8") and "zyn" in r:
            print(f"zyn {r['dtype']:<10}{r['zyn']['samples_s']:>8.2f} samples/s   {r['zyn']['samples_s'] / best:.2f}x")


def print_table(res: dict, results: list[dict]) -> None:
    if res["dtype"] == "int8":
        f32 = next((r for r in results if r["dtype"] == "float32"), None)
        vs = f" ({res['zyn']['samples_s'] / f32['zyn']['samples_s']:.2f}x float32's zyn path)" if f32 else ""
        print(f"\n== dynamic int8 ({res['layers_quantised']} linear layers, not offered by zyn): "
              f"zyn path {res['zyn']['samples_s']:.2f} samples/s{vs}")
        if "drift_vs_float32" in res:
            d = res["drift_vs_float32"]
            print(f"drift vs float32: max |dP| {d['max_abs']:.4f}, mean {d['mean_abs']:.4f}, "
                  f"spearman {d['spearman']:.4f}")
        return
    bound = res["bound_samples_s"]
    print(f"\n== {res['dtype']} ({res['kernels']} kernels): matmul {res['matmul_gflops']:.0f} GFLOP/s, "
          f"{res['tokens_per_sample']:.1f} tokens/sample, full-recompute bound {bound:.2f} samples/s")
    print("(x bound: full-recompute FLOPs per second over the matmul rate, the fraction of it achieved)")
    print(f"{'path':<26}{'samples/s':>11}{'x naive':>9}{'x bound':>9}")
    naive = res.get("naive", {}).get("samples_s")
    rows = [(p, res[p]["samples_s"]) for p in ("naive", "batched", "zyn") if p in res]
    rows += [(f"zyn: {k.replace('_', ' ')}", v) for k, v in res["ablation"].items()]
    for path, s in rows:
        print(f"{path:<26}{s:>11.2f}{(s / naive if naive else float('nan')):>9.2f}{s / bound:>9.2f}")
    print(f"fast path vs full recompute: max |dP| = {res['fast_vs_full_max_abs']:.2e}")
    if "drift_vs_float32" in res:
        d = res["drift_vs_float32"]
        print(f"drift vs float32: max |dP| {d['max_abs']:.4f}, mean {d['mean_abs']:.4f}, spearman {d['spearman']:.4f}")
    if "ensemble" not in res:  # --main-rows
        return
    print("ensemble cost: " + ", ".join(f"k={k}: {v['seconds']:.2f}s ({v['vs_k1']:.2f}x)"
                                        for k, v in res["ensemble"].items()))
    print("ensemble k=4 vs k=1 by text length: " + ", ".join(f"{n} tok: {v['k4_vs_k1']:.2f}x"
                                                            for n, v in res["ensemble_vs_length"].items()))
    for key in ("length", "budget"):
        if key in res:
            print(f"{key}: " + ", ".join(f"{k}: {v['samples_s']:.2f}/s" for k, v in res[key].items()))
    sp = res["shared_prompts"]
    print(f"8 prompts x 4 completions: batched {sp['batched_samples_s']:.2f}/s, zyn {sp['zyn_samples_s']:.2f}/s "
          f"({sp['speedup']:.2f}x)")
    print(f"peak resident memory of the zyn path (this precision's process): {res['peak_rss_mb']:.0f} MB"
          + (f"; GPU memory {res['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in res else ""))


if __name__ == "__main__":
    main()
