"""Start time: a fresh process, from `import zyn` to the first score of a warm preset.

Each run is a new Python process (the parent times it from spawn to exit) that imports
zyn, builds `ZeroShotRewardModel(MODEL, dtype=DTYPE)` on an already prepared preset and
scores one text, timing each step on its way:

  import zyn        `import zyn` (torch, jinja2, yaml, zyn's own modules)
  import engine     zyn.backends.hf and zyn.models, imported here so the steps below
                    can be timed (on the user's path they are imported by the first
                    line that needs them; the total is the same)
  precision         `dtype="fast"`: which of bf16 and float32 multiplies faster here
  load              `load_pretrained`: transformers' model code, weights, tokenizer
  kernel choice     whether oneDNN's linear beats torch's default here
  kernel swap       oneDNN linears and fused norms swapped in, the logits checked (for a
                    preset whose outcome is kept: swapped as kept, checked at the first call)
  first-call checks which fast paths reproduce a plain forward (once per model; for a
                    preset, read from the choices file after one fingerprint pass,
                    which also scores the first call where it fits in that pass)
  first score       the rest of the first `score` call
  total             `import zyn` to the first score, inside the process
  process           spawn to exit, seen from the parent (interpreter start included)

The first run is a warm-up (page cache, and the measured choices' cache if enabled) and
is reported apart; the table gives the median and the best of the others.

    python benchmarks/bench_start.py --runs 5
    python benchmarks/bench_start.py --runs 5 --dtype fast
    python benchmarks/bench_start.py --runs 5 --no-choice-cache   # measure the choices and checks each time
"""
from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

STEPS = ["import zyn", "import engine", "precision", "load", "kernel choice", "kernel swap",
         "first-call checks", "first score", "total"]
TEXT = "The film was long, but the acting was wonderful and the story kept me watching until the end."


def child(model: str, dtype: str | None, prompt: str = "sentiment") -> dict:
    times: dict[str, float] = {}
    mark = time.perf_counter()
    import zyn

    now = time.perf_counter()
    times["import zyn"], mark = now - mark, now
    import zyn.backends.hf.backend as backend_mod
    import zyn.backends.hf.precision as precision_mod
    import zyn.models

    now = time.perf_counter()
    times["import engine"] = now - mark

    def timed(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[label] = times.get(label, 0.0) + time.perf_counter() - t
        setattr(owner, name, wrapper)

    timed(precision_mod, "fastest_cpu_dtype", "precision")
    timed(zyn.models, "load_pretrained", "load")
    timed(backend_mod, "onednn_is_faster", "kernel choice")
    timed(backend_mod, "use_fast_kernels", "kernel swap")
    timed(backend_mod.HFBackend, "_check", "first-call checks")

    start = time.perf_counter()
    rm = zyn.ZeroShotRewardModel(model, dtype=dtype, prompt=prompt)
    built = time.perf_counter()
    p = rm.score([TEXT])[0]
    end = time.perf_counter()
    times["first score"] = end - built - times.get("first-call checks", 0.0)
    times["total"] = end - start + times["import zyn"] + times["import engine"]
    for k in STEPS:
        times.setdefault(k, 0.0)
    return {"times": times, "p_yes": p, "dtype": str(rm.backend.model.dtype), "kernels": rm.backend.kernels,
            "since_interpreter": end - _T0}


def run_one(model: str, dtype: str | None, env: dict, prompt: str = "sentiment") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", model, "--prompt", prompt]
    if dtype:
        cmd += ["--dtype", dtype]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["times"]["process"] = wall
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--dtype", default=None, help="as ZeroShotRewardModel's dtype (default: float32 on CPU; 'fast')")
    ap.add_argument("--prompt", default="sentiment",
                    help="prompt set (a name or a YAML path: pin a copy to compare P(yes) across code versions)")
    ap.add_argument("--runs", type=int, default=5, help="measured runs after one warm-up run")
    ap.add_argument("--no-choice-cache", action="store_true",
                    help="set ZYN_NO_CHOICE_CACHE=1: measure the kernel and precision choices and the "
                         "model's checks in every process")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.dtype, args.prompt)))
        return
    env = dict(os.environ)
    if args.no_choice_cache:
        env["ZYN_NO_CHOICE_CACHE"] = "1"
    warm = run_one(args.model, args.dtype, env, args.prompt)
    runs = [run_one(args.model, args.dtype, env, args.prompt) for _ in range(args.runs)]
    cols = STEPS + ["process"]
    print(f"model {args.model}, dtype {args.dtype or 'default'} -> {warm['dtype']}, kernels {warm['kernels']}, "
          f"P(yes) {warm['p_yes']:.6f}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'step':<20}{'warm-up':>9}{'median':>9}{'best':>9}   (seconds, {len(runs)} fresh processes)")
    for c in cols:
        vals = [r["times"][c] for r in runs]
        print(f"{c:<20}{warm['times'][c]:>9.2f}{statistics.median(vals):>9.2f}{min(vals):>9.2f}")
    # a process that measures its checks scores its first call in a pass of its own, one that
    # reads them scores it in the fingerprint's pass: the same numbers up to float rounding
    ps = [warm["p_yes"]] + [r["p_yes"] for r in runs]
    print(f"P(yes) in every process within {max(ps) - min(ps):.1e} of each other "
          f"({len(set(ps))} distinct value{'s' if len(set(ps)) > 1 else ''})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "dtype": args.dtype, "prompt": args.prompt, "warm_up": warm, "runs": runs,
                       "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}, f, indent=1)


if __name__ == "__main__":
    main()
