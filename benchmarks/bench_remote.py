"""Remote scoring through a real OpenAI-compatible server vs local scoring of the same model.

Starts llama-cpp-python's server (``llama_cpp.server``) on 127.0.0.1 with a GGUF
file, scores the same texts through it (``openai+http://...``: /v1/completions or
/v1/chat/completions top-k logprobs) and locally (zyn's transformers backend on the
same GGUF de-quantised to float32), and reports how far log-odds and P(yes) differ.
The server computes with the quantised weights, so the two differ somewhat: the
difference measured here is the tolerance to expect.

    python benchmarks/bench_remote.py [--model qwen2.5-coder-0.5b-instruct] [--prompt sentiment] [--n 40]

The Qwen preset has a chat template (the server's chat path is compared);
--model gemma-3-270m has none (the plain completions path).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zyn import ZeroShotRewardModel  # noqa: E402
# the test suite's helpers, by their folder: a package named `tests` that verl and OpenRLHF
# install would hide `tests.support`
sys.path.insert(0, str(ROOT / "tests"))
from support.llama_server import llama_cpp_server  # noqa: E402


def gguf_file(model: str) -> Path:
    """The GGUF file of a preset (assembled once under the system temp folder) or a .gguf path."""
    if model.endswith(".gguf"):
        return Path(model)
    from zyn import models

    dest = Path(tempfile.gettempdir()) / "zyn_bench_remote" / f"{model}.gguf"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        models.assemble(model, dest)
    return dest


def compare(local: dict[str, list[float]], remote: dict[str, list[float]]) -> dict:
    """Differences of log-odds and P(yes) per question, NaN (unscorable) entries left out."""
    out = {}
    for name in local:
        pairs = [(a, b) for a, b in zip(local[name], remote[name]) if not (math.isnan(a) or math.isnan(b))]
        d_lo = sorted(abs(a - b) for a, b in pairs)
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        d_p = sorted(abs(sig(a) - sig(b)) for a, b in pairs)
        la, lb = [a for a, _ in pairs], [b for _, b in pairs]
        out[name] = {
            "n": len(pairs), "nan": len(local[name]) - len(pairs),
            "logodds_abs_max": d_lo[-1], "logodds_abs_mean": statistics.fmean(d_lo),
            "logodds_abs_p90": d_lo[int(0.9 * (len(d_lo) - 1))],
            "p_yes_abs_max": d_p[-1], "p_yes_abs_mean": statistics.fmean(d_p),
            "pearson": statistics.correlation(la, lb) if len(pairs) > 2 else math.nan,
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct",
                    help="an offline preset (qwen2.5-coder-0.5b-instruct: chat template; gemma-3-270m: none) "
                         "or a .gguf file")
    ap.add_argument("--prompt", default="sentiment")
    ap.add_argument("--n", type=int, default=40, help="texts from benchmarks/data/movie_reviews.jsonl")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)

    gguf = gguf_file(args.model)
    rows = [json.loads(line) for line in (ROOT / "benchmarks/data/movie_reviews.jsonl").open()][:args.n]
    texts = [r["text"] for r in rows]

    t = time.perf_counter()
    local_rm = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype="float32")
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    local = local_rm.score_detailed(texts)
    local_s = time.perf_counter() - t

    chat = bool(getattr(local_rm.backend.tokenizer, "chat_template", None))
    server_log = Path(tempfile.gettempdir()) / "zyn_llama_cpp_server.log"
    with llama_cpp_server(str(gguf), n_threads=args.threads, log_path=str(server_log)) as url:
        remote_rm = ZeroShotRewardModel(f"openai+{url}", prompt=args.prompt, top_k=args.top_k,
                                        chat_auto=chat, concurrency=2)
        t = time.perf_counter()
        remote = remote_rm.score_detailed(texts)
        remote_s = time.perf_counter() - t
        flags = dict(remote_rm.backend.counts)

    result = {"model": args.model, "gguf": gguf.name, "prompt": args.prompt, "n_texts": len(texts),
              "path": "chat" if chat else "completions",
              "top_k": args.top_k, "flags": flags, "local_load_s": round(load_s, 1),
              "local_score_s": round(local_s, 2), "remote_score_s": round(remote_s, 2),
              "per_question": compare(local.logodds, remote.logodds),
              "p_yes_combined_abs_max": max(abs(a - b) for a, b in zip(local.p_yes, remote.p_yes)
                                           if not (math.isnan(a) or math.isnan(b)))}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
