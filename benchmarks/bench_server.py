"""Load test of the reward server against direct batched scoring of the same texts.

N concurrent clients each send M requests of K texts to POST /v1/rewards on a
server on 127.0.0.1 (in this process on a uvicorn thread, or with --subprocess a
`zyn serve` process), within a time limit. Reports throughput and latency
percentiles, scores the same texts directly in batches before and after (same
process, same model; the machine is shared, so the two runs bracket the served
one) and checks that every served P(yes) and reward equals the direct one
(P(yes) within 1e-5; the reward within 1e-5 times its scale, 10 for "zyn").

    python benchmarks/bench_server.py                       # tiny random model, 16 x 50 x 8
    python benchmarks/bench_server.py --model qwen2.5-coder-0.5b-instruct --clients 4 --requests 5
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import tempfile
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from zyn import ZeroShotRewardModel  # noqa: E402
from zyn.server import create_app, serve_in_thread  # noqa: E402

# |d reward / d P(yes)| of the bounded shapes: the reward tolerance is 1e-5 times this.
REWARD_SCALE = {"prob": 1.0, "zyn": 10.0}


def tiny_model():
    """(model, tokenizer): a 2-layer random Llama with a small byte-level BPE vocabulary."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [line for line in (ROOT / "benchmarks/data/movie_reviews.jsonl").read_text().splitlines()]
    corpus += ["Yes No yes no YES NO Review: Is this movie review positive?"] * 3
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30.0)  # spread P(yes) away from 0.5
    return model, fast


def make_texts(n: int) -> list[str]:
    """n distinct review-like texts: the benchmark reviews, numbered in front. The number
    leads so that repeats of one review share no tokens: zyn scores shared beginnings once,
    which would flatter direct scoring of all texts in one call over served batches."""
    base = [json.loads(line)["text"] for line in (ROOT / "benchmarks/data/movie_reviews.jsonl").open()]
    return [f"#{i}: {base[i % len(base)]}" for i in range(n)]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


async def load(url: str, texts: list[str], clients: int, requests: int, k: int, deadline: float,
               headers: dict) -> tuple[list[float], dict[int, dict], int, list[str]]:
    """Run the clients; returns latencies (s), {request index: answer}, items sent, errors."""
    latencies: list[float] = []
    answers: dict[int, dict] = {}
    errors: list[str] = []
    sent = 0

    async def client(c: int, http: httpx.AsyncClient):
        nonlocal sent
        for r in range(requests):
            if time.monotonic() > deadline:
                return
            idx = (c * requests + r) * k
            start = time.perf_counter()
            try:
                resp = await http.post(f"{url}/v1/rewards", json={"texts": texts[idx:idx + k]}, headers=headers)
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - start)
            sent += k
            if resp.status_code == 200:
                answers[idx] = resp.json()
            else:
                errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=180, limits=limits) as http:
        await asyncio.gather(*[client(c, http) for c in range(clients)])
    return latencies, answers, sent, errors


def start_subprocess(args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "zyn", "serve", "--model", args.model, "--prompt", args.prompt, "--host",
           "127.0.0.1", "--port", str(port), "--max-batch", str(args.max_batch), "--max-wait-ms",
           str(args.max_wait_ms), "--max-items", str(max(args.texts, 1))]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"zyn serve did not start: {' '.join(cmd)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (random, built here) or any zyn model name")
    ap.add_argument("--prompt", default="sentiment")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=50, help="requests per client")
    ap.add_argument("--texts", type=int, default=8, help="texts per request")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds for the load phase")
    ap.add_argument("--subprocess", action="store_true", help="run `zyn serve` as a separate process")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.subprocess and args.model == "tiny":
        # the server process loads the tiny model from a folder, and so does the direct run
        folder = Path(tempfile.mkdtemp(prefix="zyn_tiny_"))
        model, tok = tiny_model()
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        args.model = str(folder)

    rm = build_reward_model(args)
    texts = make_texts(args.clients * args.requests * args.texts)
    rm.score(texts[:2])  # warm up (first-call allocations, prefix cache)
    load_before = os.getloadavg()[0]
    # Direct scoring before and after the served phase: the machine is shared, and
    # its load drifts; the two runs bracket the served one.
    direct_before, before_s = timed(rm.score_detailed, texts)
    latencies, answers, errors, served_s, metrics = run_served(args, rm, texts)
    scored = [t for idx in sorted(answers) for t in texts[idx:idx + args.texts]]
    direct, after_s = timed(rm.score_detailed, scored)
    load_after = os.getloadavg()[0]
    before_s *= len(scored) / len(texts)  # the served phase may have stopped early (time limit)

    served_p = [p for idx in sorted(answers) for p in answers[idx]["p_yes"]]
    served_r = [r for idx in sorted(answers) for r in answers[idx]["rewards"]]
    d_p = max((abs(a - b) for a, b in zip(served_p, direct.p_yes)), default=0.0)
    d_r = max((abs(a - b) for a, b in zip(served_r, direct.rewards)), default=0.0)
    scale = REWARD_SCALE.get(rm.reward_shape, math.inf)
    ok = d_p <= 1e-5 and d_r <= 1e-5 * scale and not errors and len(served_p) == len(scored) > 0

    n = len(scored)
    direct_s = (before_s + after_s) / 2
    result = {
        "model": args.model, "prompt": args.prompt, "server": "subprocess" if args.subprocess else "in-process",
        "clients": args.clients, "requests_per_client": args.requests, "texts_per_request": args.texts,
        "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "cpu_count": os.cpu_count(),
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
        "requests_done": len(latencies), "items_scored": n, "errors": len(errors),
        "served_s": round(served_s, 2), "served_items_per_s": round(n / served_s, 1),
        "served_requests_per_s": round(len(latencies) / served_s, 1),
        "latency_ms": {q: round(1000 * percentile(latencies, v), 1) for q, v in
                       (("p50", .5), ("p90", .9), ("p99", .99))} if latencies else {},
        "mean_batch_items": _mean_batch(metrics),
        "direct_s_before_after": [round(before_s, 2), round(after_s, 2)],
        "direct_items_per_s": round(n / direct_s, 1),
        "served_vs_direct": round(direct_s / served_s, 3),
        "max_abs_diff_p_yes": d_p, "max_abs_diff_reward": d_r, "reward_shape": rm.reward_shape,
        "equal_within_tolerance": ok,  # P(yes) within 1e-5, reward within 1e-5 x its scale
    }
    print(json.dumps(result, indent=2))
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


def build_reward_model(args) -> ZeroShotRewardModel:
    if args.model == "tiny":
        model, tok = tiny_model()
        return ZeroShotRewardModel(model, tok, prompt=args.prompt)
    return ZeroShotRewardModel(args.model, prompt=args.prompt)


def timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def run_served(args, rm, texts):
    """The load phase against an in-process or subprocess server; returns latencies,
    answers, errors, wall seconds and the server's /metrics text."""
    proc = server = None
    if args.subprocess:
        proc, url = start_subprocess(args)
    else:
        server = serve_in_thread(create_app({rm.prompt_set.name: rm}, batch_size=args.max_batch,
                                            max_wait_ms=args.max_wait_ms, max_items=max(args.texts, 1)))
        url = server.__enter__()
    try:
        t0 = time.perf_counter()
        latencies, answers, _, errors = asyncio.run(
            load(url, texts, args.clients, args.requests, args.texts, time.monotonic() + args.time_limit, {}))
        served_s = time.perf_counter() - t0
        metrics = httpx.get(url + "/metrics").text
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    return latencies, answers, errors, served_s, metrics


def _mean_batch(metrics: str) -> float | None:
    values = {}
    for line in metrics.splitlines():
        for key in ("zyn_batch_size_items_sum", "zyn_batch_size_items_count"):
            if line.startswith(key + " "):
                values[key] = float(line.split()[-1])
    n = values.get("zyn_batch_size_items_count")
    return round(values["zyn_batch_size_items_sum"] / n, 1) if n else None


if __name__ == "__main__":
    sys.exit(main())
