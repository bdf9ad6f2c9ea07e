"""Start time lead: can oneDNN's weight packing overlap the tokenizer's load?

Packing the judge's linear weights (`torch.ops.mkldnn._reorder_linear_weight`, what
`zyn.backends.hf.kernels.OneDNNLinear` does at construction) releases the GIL, and
transformers' tokenizer load is ~0.5 s of mostly Python. Each run is a fresh process
(cold allocator, weights memory-mapped from the cache as zyn loads them) timing one of:

  seq    pack every linear (output layer excepted), then load the tokenizer
  par    pack in a thread (oneDNN's threads as usual) while the tokenizer loads
  par1   the same with the packing thread limited to one OpenMP thread

    python benchmarks/bench_pack_overlap.py --runs 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODES = ("seq", "par", "par1")


def child(model: str, mode: str) -> dict:
    import threading
    from pathlib import Path

    import torch
    from transformers import AutoConfig, AutoTokenizer

    import zyn.models.gguf as gguf
    from zyn.models import prepare
    from zyn.models.loading import _added_tokens

    folder = str(prepare(model))
    config = AutoConfig.from_pretrained(folder)
    with gguf.hidden_progress_bars():
        lm = gguf.auto_class(config).from_pretrained(folder, config=config, dtype=torch.float32).eval()
    head = lm.get_output_embeddings()
    linears = [m for m in lm.modules() if isinstance(m, torch.nn.Linear) and m is not head]

    def pack(threads: int | None = None) -> list:
        if threads:
            torch.set_num_threads(threads)
        return [torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), 512) for m in linears]

    def tokenizer():
        return AutoTokenizer.from_pretrained(folder, **_added_tokens(Path(folder)))

    t0 = time.perf_counter()
    if mode == "seq":
        pack()
        t1 = time.perf_counter()
        tokenizer()
        t2 = time.perf_counter()
        return {"pack": t1 - t0, "tokenizer": t2 - t1, "total": t2 - t0}
    out: list = []
    worker = threading.Thread(target=lambda: out.append(pack(1 if mode == "par1" else None)))
    worker.start()
    tokenizer()
    t1 = time.perf_counter()
    worker.join()
    t2 = time.perf_counter()
    return {"tokenizer": t1 - t0, "total": t2 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--runs", type=int, default=3, help="rounds; each runs every mode once, in turns")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.child)))
        return
    totals: dict[str, list[float]] = {m: [] for m in MODES}
    subprocess.run([sys.executable, __file__, "--child", "seq", "--model", args.model], check=True,
                   capture_output=True)  # warm-up: page cache
    for r in range(args.runs):
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--model", args.model], check=True,
                                 capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            totals[mode].append(res["total"])
            print(f"round {r + 1} {mode:5s} " + " ".join(f"{k} {v:.2f} s" for k, v in res.items()), flush=True)
    for mode in MODES:
        print(f"{mode:5s} packing + tokenizer: median {statistics.median(totals[mode]):.2f} s, "
              f"best {min(totals[mode]):.2f} s")


if __name__ == "__main__":
    main()
