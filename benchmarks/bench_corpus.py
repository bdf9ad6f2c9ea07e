"""Corpus-scale `zyn score`: rows/s and peak RSS, resume after SIGKILL, Ray vs one process.

Each measured run is a fresh `python -m zyn score` process; its peak RSS comes from
wait4 (the kernel's ru_maxrss of that child alone). Inputs are synthetic reviews of
2-20 words. Results are printed as JSON lines and appended to --out.

    python benchmarks/bench_corpus.py rows --model DIR_OR_PRESET --rows 10000
    python benchmarks/bench_corpus.py resume --model DIR --rows 2000 --kill-after 3
    python benchmarks/bench_corpus.py ray --model DIR --rows 2000
    python benchmarks/bench_corpus.py tiny DIR          # saves the tests' tiny random judge to DIR
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_input(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "prompt": f"p{i // 4}", "text": f"review number {i} " + "great film " * (i % 9)})
                    + "\n")


def run_score(args: list[str]) -> dict:
    """Run `zyn score` in a child; its wall time and peak RSS."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "zyn", "score", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"zyn score failed ({status}): {proc.stderr.read().decode()[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def load_seconds(model: str, tmp: Path) -> float:
    """Start-up and model load: a run of 1 row."""
    write_input(tmp / "one.jsonl", 1)
    return run_score(["--model", model, "--input", str(tmp / "one.jsonl"), "--output", str(tmp / "one.out.jsonl")])["wall_s"]


def bench_rows(a) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        write_input(tmp / "in.jsonl", a.rows)
        start = load_seconds(a.model, tmp)
        r = run_score(["--model", a.model, "--input", str(tmp / "in.jsonl"), "--output", str(tmp / "out.jsonl")])
    r.update(case="rows", model=a.model, rows=a.rows, startup_s=start,
             rows_per_s=round(a.rows / max(r["wall_s"] - start, 1e-9), 1))
    return r


def bench_resume(a) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        write_input(tmp / "in.jsonl", a.rows)
        base = ["--model", a.model, "--input", str(tmp / "in.jsonl"), "--chunk-rows", str(a.chunk_rows)]
        whole = run_score(base + ["--output", str(tmp / "whole.jsonl")])
        out = tmp / "out.jsonl"
        parts = Path(f"{out}.parts")
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "zyn", "score", *base, "--output", str(out)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and len(list(parts.glob("rows-*.jsonl")) if parts.exists() else []) < a.kill_after:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.perf_counter() - t
        committed = sum(1 for p in parts.glob("rows-*.jsonl") for _ in open(p))
        resumed = run_score(base + ["--output", str(out), "--resume"])
        same = out.read_text() == (tmp / "whole.jsonl").read_text()
    return {"case": "resume", "model": a.model, "rows": a.rows, "chunk_rows": a.chunk_rows,
            "uninterrupted_s": whole["wall_s"], "killed_after_s": round(killed_at, 2), "rows_committed": committed,
            "resume_s": resumed["wall_s"], "output_identical": same}


def bench_ray(a) -> dict:
    import ray

    from zyn.integrations.ray_data import ZynScorer

    rows = [{"id": i, "text": f"review number {i} " + "great film " * (i % 9)} for i in range(a.rows)]
    t = time.perf_counter()
    scorer = ZynScorer(a.model, "sentiment")
    for lo in range(0, a.rows, 256):
        scorer({"text": [r["text"] for r in rows[lo:lo + 256]]})
    one = time.perf_counter() - t
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t = time.perf_counter()
    n = ray.data.from_items(rows).map_batches(ZynScorer, fn_constructor_kwargs={"model": a.model},
                                              compute=ray.data.ActorPoolStrategy(size=2),
                                              num_cpus=1, batch_size=256).count()
    two = time.perf_counter() - t
    ray.shutdown()
    return {"case": "ray", "model": a.model, "rows": n, "one_process_s": round(one, 2),
            "ray_2_actors_s": round(two, 2), "note": "both include one model load per worker"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=["rows", "resume", "ray", "tiny"])
    p.add_argument("model", nargs="?")
    p.add_argument("--model", dest="model_opt")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--chunk-rows", type=int, default=100)
    p.add_argument("--kill-after", type=int, default=3, help="parts committed before SIGKILL")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "corpus.jsonl"))
    a = p.parse_args()
    a.model = a.model_opt or a.model
    if a.case == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_tiny_causal

        model, tok = make_tiny_causal()
        model.save_pretrained(a.model)
        tok.save_pretrained(a.model)
        return
    result = {"rows": bench_rows, "resume": bench_resume, "ray": bench_ray}[a.case](a)
    result["cpus"] = os.cpu_count()
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    with open(a.out, "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
