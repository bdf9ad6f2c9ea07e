"""Load time of an offline preset: cold (assemble + verify + convert into a fresh cache) and warm.

Every measurement runs in a fresh Python process, so imports and the page cache count the way
they do for a user starting a script:

  cold     `zyn.models.prepare(NAME)` into a new, empty cache folder (assemble the package parts,
           sha256, de-quantise the GGUF with transformers, save, reload and compare)
  warm     `zyn.models.load_pretrained(NAME)` from that cache, reported apart from the imports
           before it (torch + transformers + zyn, then the model's transformers code, which
           transformers would otherwise import lazily inside the call) and the first forward
           pass after it (which pages in the memory-mapped weights)

    python benchmarks/bench_load.py --preset qwen2.5-coder-0.5b-instruct --warm-runs 3

Prints a table and one JSON line; --json PATH also writes the JSON there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = {
    "cold": """
import time, json
t0 = time.perf_counter()
from zyn import models
t1 = time.perf_counter()
stages = {}
def progress(stage, done, total):
    stages.setdefault(stage, round(time.perf_counter() - t1, 2))
models.prepare(NAME, progress=progress)
print(json.dumps({"import_s": t1 - t0, "prepare_s": time.perf_counter() - t1, "stage_start_s": stages}))
""",
    "warm": """
import time, json, importlib
t0 = time.perf_counter()
import torch, transformers
from zyn import models
t1 = time.perf_counter()
# transformers imports a model's code lazily on first use; time it apart from reading the weights
model_type = json.loads((models.prepare(NAME) / "config.json").read_text())["model_type"]
importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
t2 = time.perf_counter()
model, tok = models.load_pretrained(NAME)
t3 = time.perf_counter()
ids = tok("Review: a wonderful film.\\n\\nIs this movie review positive?", return_tensors="pt").input_ids
with torch.no_grad():
    model(ids)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "model_code_import_s": t2 - t1, "load_s": t3 - t2,
                  "first_forward_s": t4 - t3}))
""",
}


def run_child(kind: str, name: str, cache: Path) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON line."""
    code = CHILD[kind].replace("NAME", repr(name))
    env = dict(os.environ, ZYN_CACHE=str(cache), PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--warm-runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, help="cache folder to use (default: a fresh temporary one, removed after)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    cache = args.cache or Path(tempfile.mkdtemp(prefix="zyn-bench-cache-"))
    if cache.exists() and any(cache.iterdir()):
        sys.exit(f"{cache} is not empty; a cold measurement needs a fresh cache folder")
    try:
        cold = run_child("cold", args.preset, cache)
        warm = [run_child("warm", args.preset, cache) for _ in range(args.warm_runs)]
    finally:
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)

    import torch

    result = {"preset": args.preset, "cpu": cpu_model(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "cold": cold, "warm": warm}
    print(f"preset {args.preset} | CPU {result['cpu']} | torch threads {result['threads']}")
    print(f"cold  prepare {cold['prepare_s']:6.1f} s   (process {cold['process_s']:.1f} s; "
          f"stages start at {cold['stage_start_s']})")
    for i, w in enumerate(warm, 1):
        print(f"warm{i} load_pretrained {w['load_s']:5.2f} s   imports {w['import_s']:.2f} s "
              f"+ model code {w['model_code_import_s']:.2f} s   first forward {w['first_forward_s']:.2f} s   "
              f"process {w['process_s']:.2f} s")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
