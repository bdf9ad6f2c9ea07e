"""Old code against new on one workload: the same numbers, and the speed of each, interleaved.

Two worker processes load the same judge, one importing zyn from a git worktree of an
older commit (made under /tmp if missing), one from this checkout. The parent sends
each the same texts in alternating order, round after round, so a burst of other work
on a shared machine slows both alike. It reports
samples/s of each (best and median round) and the largest |dP| between their scores.

    python benchmarks/compare_refactor.py --base ebb75c8 --rounds 8 [--new-first]

Each timed call scores the texts from scratch but for model loading: the shared prefix
is computed again (the old backend's cache is reset through its private field, the new
one's through `clear_prefix_cache`). The first call of each (checks, allocations) is
not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worktree(commit: str) -> Path:
    """A checkout of `commit` under /tmp (made once)."""
    path = Path(f"/tmp/zyn-{commit}")
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                       stdout=subprocess.DEVNULL)
    return path


class Worker:
    """A child process scoring with the zyn found under `root`."""

    def __init__(self, root: Path, args):
        env = dict(os.environ, PYTHONPATH=str(root))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", args.model, "--prompt",
               args.prompt, "--dtype", args.dtype]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd="/tmp")
        self.info = self._read()

    def score(self, texts: list[str]) -> dict:
        self.proc.stdin.write(json.dumps(texts) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker exited with {self.proc.wait()}")
        return json.loads(line)


def serve(args) -> None:
    """Worker: load the judge, then score each JSON list of texts read from stdin."""
    import torch

    import zyn
    from zyn import ZeroShotRewardModel

    rm = ZeroShotRewardModel(args.model, prompt=args.prompt, dtype=args.dtype, reward="prob")
    backend = rm.backend
    reset = getattr(backend, "clear_prefix_cache", None)
    print(json.dumps({"zyn": zyn.__file__, "kernels": backend.kernels, "threads": torch.get_num_threads()}),
          flush=True)
    for line in sys.stdin:
        texts = json.loads(line)
        if reset is not None:
            reset()
        else:
            backend._prefix = None  # the old backend's prefix cache
        t = time.perf_counter()
        scores = rm.score(texts)
        print(json.dumps({"seconds": time.perf_counter() - t, "scores": scores}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="ebb75c8", help="the older commit")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompt", default="sentiment")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n", type=int, default=32, help="texts (bench_scoring's workload)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-first", action="store_true", help="start (and first time) the new code's worker first")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return serve(args)
    sys.path.insert(0, str(HERE))
    from bench_scoring import make_texts

    texts = make_texts(args.n)
    roots = {"old": worktree(args.base), "new": ROOT}
    names = ["new", "old"] if args.new_first else ["old", "new"]
    workers = {name: Worker(roots[name], args) for name in names}
    for name, w in workers.items():
        print(f"{name}: zyn from {w.info['zyn']}, {w.info['kernels']} kernels, {w.info['threads']} threads")
        w.score(texts[:4])  # first call: checks, allocations
    rates: dict[str, list[float]] = {name: [] for name in workers}
    dp = 0.0
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        scores = {}
        for name in order:
            out = workers[name].score(texts)
            rates[name].append(len(texts) / out["seconds"])
            scores[name] = out["scores"]
        dp = max([dp] + [abs(a - b) for a, b in zip(scores["old"], scores["new"])])
        print(f"round {r + 1}: " + ", ".join(f"{k} {rates[k][-1]:.2f}" for k in order) + " samples/s")
    for w in workers.values():
        w.close()
    best = {k: max(v) for k, v in rates.items()}
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    print(f"{args.model} {args.dtype}, prompt {args.prompt}, {len(texts)} texts, {args.rounds} rounds, "
          f"{names[0]} started first: old ({args.base}) best {best['old']:.2f} / median {median['old']:.2f} "
          f"samples/s, new best {best['new']:.2f} / median {median['new']:.2f} samples/s "
          f"(best {best['new'] / best['old']:.2f}x); max |dP| {dp:.2e}")


if __name__ == "__main__":
    main()
