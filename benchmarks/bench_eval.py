"""Reward quality of the default judge: single question vs ensemble vs calibrated vs verbalisers.

    python benchmarks/bench_eval.py                       # default judge, both shipped data sets
    python benchmarks/bench_eval.py --model smollm2-135m-instruct --limit 40   # a quick smoke run

Scores every question of the compared prompt sets once per data set (questions
that several sets share, same template and answers, are scored once), caches the
raw log-odds in --cache, then computes all figures offline:

  * as given: each prompt set as shipped (combined and per question);
  * content-free: shift = -mean log-odds of "N/A", "", "[MASK]" per question;
  * Platt 2-fold: fitted on one stratified half, reported on the other (both ways);
  * Platt cross-domain: fitted on the other data set, reported on this one;
  * the ensemble combined as mean of log-odds as well as mean of probabilities.

Writes --out/eval.json and --out/eval.md (a markdown table) and prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zyn import ZeroShotRewardModel, load_prompt_set  # noqa: E402
from zyn.calibration import (apply_calibration, content_free_records, content_free_shift,  # noqa: E402
                             fit_platt_per_question, oriented_labels, platt_cross_fitted, uncalibrated)
from zyn.evaluation import evaluate  # noqa: E402
from zyn.models import DEFAULT_JUDGE  # noqa: E402

DATA = {"movies": ROOT / "benchmarks/data/movie_reviews.jsonl",
        "customers": ROOT / "benchmarks/data/customer_messages.jsonl"}
PROMPTS = ["sentiment", "sentiment_ensemble", "sentiment_verbalisers"]
CF = "__content_free__"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def load_jsonl(path: Path, limit: int | None) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if limit:
        rows = rows[:limit]
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])


def question_key(ps, q) -> str:
    return json.dumps([q.template, ps.answers, ps.system, ps.chat_template])


class RawCache:
    """Raw (uncalibrated) log-odds per (question template + answers, data set), on disk."""

    def __init__(self, path: Path, model: str):
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {}
        self.data = data if data.get("model") == model else {"model": model, "entries": {}, "seconds": {}}

    def get(self, rm, ps, dataset: str, inputs: list) -> dict[str, np.ndarray]:
        """{question: raw log-odds} for `ps` on `inputs`, scoring only what is not cached."""
        entries = self.data["entries"]
        todo = [q for q in ps.questions if f"{dataset}|{question_key(ps, q)}" not in entries]
        if todo:
            sub = dataclasses.replace(uncalibrated(ps), questions=tuple(todo), combine="mean")
            t0 = time.perf_counter()
            lo = rm.with_prompt(sub).score_detailed(inputs).logodds
            dt = time.perf_counter() - t0
            for q in todo:
                entries[f"{dataset}|{question_key(ps, q)}"] = lo[q.name]
            self.data["seconds"][f"{dataset}|{ps.name}|{'+'.join(q.name for q in todo)}"] = [dt, len(inputs)]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data))
        return {q.name: np.array(entries[f"{dataset}|{question_key(ps, q)}"], dtype=float) for q in ps.questions}


def metrics_row(ps, dataset: str, variant: str, per_q: dict, combined: np.ndarray, labels) -> dict:
    """Metrics of the combined P against the labels; per question, the AUROC of its
    P(yes) against the labels oriented to it (flipped where it rewards "no")."""
    m = evaluate(combined, labels).as_dict()
    m["per_question_auroc"] = {q.name: evaluate(per_q[q.name], oriented_labels(labels, q.reward_answer)).auroc
                               for q in ps.questions} if len(ps.questions) > 1 else {}
    return {"prompt_set": ps.name, "data": dataset, "variant": variant, **m}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_JUDGE)
    ap.add_argument("--prompt", action="append", dest="prompts", help=f"prompt sets (default: {PROMPTS})")
    ap.add_argument("--limit", type=int, help="first N rows of each data set")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--cache", help="raw log-odds cache (default: OUT/eval_raw_<model>.json)")
    ap.add_argument("--pairwise", type=int, metavar="N",
                    help="instead: judge N (positive, negative) movie-review pairs with the pairwise prompt set")
    ap.add_argument("--pairwise-prompt", default="pairwise", help="prompt set of the pairwise judge")
    ap.add_argument("--pairwise-question", default="Which of these two movie reviews is more positive?")
    args = ap.parse_args()
    if args.pairwise:
        return bench_pairwise(args)
    out = Path(args.out)
    safe = args.model.replace("/", "_")
    cache = RawCache(Path(args.cache or out / f"eval_raw_{safe}{'_lim%d' % args.limit if args.limit else ''}.json"),
                     args.model)
    prompt_sets = [load_prompt_set(p) for p in (args.prompts or PROMPTS)]
    data = {k: load_jsonl(p, args.limit) for k, p in DATA.items()}

    t0 = time.perf_counter()
    rm = ZeroShotRewardModel(args.model, prompt=prompt_sets[0])
    load_s = time.perf_counter() - t0

    raw: dict[tuple[str, str], dict] = {}
    for ps in prompt_sets:
        for ds, (texts, _) in data.items():
            raw[ps.name, ds] = cache.get(rm, ps, ds, texts)
        raw[ps.name, CF] = cache.get(rm, ps, CF, content_free_records(ps))

    rows = []
    for ps in prompt_sets:
        cf = {q: (1.0, content_free_shift(v)) for q, v in raw[ps.name, CF].items()}
        for ds, (_, labels) in data.items():
            r = raw[ps.name, ds]
            rows.append(metrics_row(ps, ds, "as given", *apply_calibration(r, ps), labels))
            if len(ps.questions) > 1:
                ml = dataclasses.replace(ps, combine="mean_logodds")
                rows.append(metrics_row(ml, ds, "as given, mean_logodds", *apply_calibration(r, ml), labels))
            rows.append(metrics_row(ps, ds, "content-free", *apply_calibration(r, ps, cf), labels))
            # Platt, 2-fold within the data set: every row scored by the fit on the other half
            rows.append(metrics_row(ps, ds, "platt 2-fold", *platt_cross_fitted(r, ps, labels), labels))
            # Platt across domains: fit on the other data set
            other = next(o for o in data if o != ds)
            fit = fit_platt_per_question(raw[ps.name, other], data[other][1], ps)
            row = metrics_row(ps, ds, f"platt fit on {other}", *apply_calibration(r, ps, fit), labels)
            row["calibration"] = fit
            rows.append(row)
        # the calibrations one would ship: fitted on all rows of both data sets
        both = {k: np.concatenate([raw[ps.name, ds][k] for ds in data]) for k in raw[ps.name, CF]}
        all_labels = np.concatenate([data[ds][1] for ds in data])
        rows.append({"prompt_set": ps.name, "data": "all", "variant": "fits",
                     "content_free": cf, "platt_all": fit_platt_per_question(both, all_labels, ps)})

    info = {"model": args.model, "cpu": cpu_name(), "torch_threads": __import__("torch").get_num_threads(),
            "load_seconds": round(load_s, 1), "scoring_seconds": cache.data["seconds"],
            "n": {k: int(len(v[1])) for k, v in data.items()}, "limit": args.limit,
            "command": " ".join(["python", "benchmarks/bench_eval.py", *sys.argv[1:]])}
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"_{safe}" if args.model != DEFAULT_JUDGE else ""
    (out / f"eval{suffix}.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1, default=float))
    md = markdown(info, rows)
    (out / f"eval{suffix}.md").write_text(md)
    print(md)
    return 0


def bench_pairwise(args) -> int:
    """Pairwise sanity figure: for N pairs (positive review, negative review), how often the
    judge prefers the positive one when asked which is more positive, with one order only
    and debiased over both orders, and the raw position bias mean(p_AB + p_BA - 1)."""
    from zyn.pairwise import PairwiseJudge

    texts, labels = load_jsonl(DATA["movies"], None)
    pos = [t for t, y in zip(texts, labels) if y == 1]
    neg = [t for t, y in zip(texts, labels) if y == 0]
    rng = np.random.default_rng(0)
    pairs = [(pos[i], neg[j]) for i, j in zip(rng.permutation(len(pos))[:args.pairwise],
                                               rng.permutation(len(neg))[:args.pairwise])]
    judge = PairwiseJudge(args.model, prompt=args.pairwise_prompt)
    question = args.pairwise_question if "question" in judge.prompt_set.fields else None
    t0 = time.perf_counter()
    p_ab, p_ba = judge.raw(pairs, question)
    dt = time.perf_counter() - t0
    p_ab, p_ba = np.array(p_ab), np.array(p_ba)
    debiased = (p_ab + 1 - p_ba) / 2
    res = {"model": args.model, "cpu": cpu_name(), "pairs": len(pairs), "prompt": args.pairwise_prompt,
           "question": question,
           "acc_positive_first_only": float(np.mean(p_ab > 0.5)),
           "acc_positive_second_only": float(np.mean(p_ba < 0.5)),
           "acc_debiased": float(np.mean(debiased > 0.5)),
           "mean_position_bias": float(np.mean(p_ab + p_ba - 1)),
           "max_abs_sum_error": float(np.max(np.abs(debiased + (p_ba + 1 - p_ab) / 2 - 1))),
           "seconds": round(dt, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"eval_pairwise_{Path(args.pairwise_prompt).stem}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


def _f(x) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def markdown(info: dict, rows: list[dict]) -> str:
    lines = [f"model `{info['model']}`, CPU {info['cpu']}, {info['torch_threads']} torch threads, "
             f"n = {info['n']}", "",
             "| prompt set | data | calibration | AUROC | acc@0.5 | best acc (thr) | Brier | ECE (10 bins) | per-question AUROC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["variant"] == "fits":
            continue
        pq = ", ".join(f"{k} {_f(v)}" for k, v in r["per_question_auroc"].items())
        lines.append(f"| {r['prompt_set']} | {r['data']} | {r['variant']} | {_f(r['auroc'])} | {_f(r['accuracy'])} | "
                     f"{_f(r['best_accuracy'])} ({_f(r['best_threshold'])}) | {_f(r['brier'])} | {_f(r['ece'])} | {pq} |")
    lines += ["", "Calibrations (scale, shift) per question:", ""]
    for r in rows:
        if r["variant"] == "fits":
            cf = ", ".join(f"{k} ({a:.3f}, {b:+.3f})" for k, (a, b) in r["content_free"].items())
            pl = ", ".join(f"{k} ({a:.3f}, {b:+.3f})" for k, (a, b) in r["platt_all"].items())
            lines.append(f"- {r['prompt_set']}: content-free {cf}; Platt on all rows {pl}")
    lines += ["", "Scoring time (s, rows): " + json.dumps(info["scoring_seconds"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
