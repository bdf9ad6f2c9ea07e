#!/usr/bin/env python
"""Compare finished experiment runs side by side: before/after of every logged metric, and samples.

    python experiments/compare_runs.py experiments/runs/ppo_flan_sentiments experiments/runs/ppo_flan_sentiments_robust
    python experiments/compare_runs.py RUN_A RUN_B --samples 5 --metric monitor/sentiment

Reads each run's metrics.jsonl (the first and the last evaluation) and samples.jsonl (the
continuations) and prints Markdown: one table with a row per metric and, per run, before ->
after (the text/* statistics recomputed from the continuations with this checkout's
experiments/common/hacking.py, so runs logged by older code compare on the same
definitions); then the first --samples held-out openers with each run's
final continuation. A metric one run does not log reads "-". --metric KEY adds a row for a
per-sample key of samples.jsonl (for example monitor/sentiment, the P(positive) of another
prompt set), averaged over the last evaluation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.hacking import STAT_KEYS, text_stats  # noqa: E402
from experiments.common.report import fmt, label, mean, read_metrics  # noqa: E402


def evaluations(run: Path) -> list[dict]:
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "eval"]
    if not rows:
        raise SystemExit(f"error: {run}: no evaluation in metrics.jsonl (is it a finished run's --output-dir?)")
    outputs: dict[int, list[str]] = {}
    for s in read_metrics(run / "samples.jsonl"):
        outputs.setdefault(s.get("eval"), []).append(s.get("output", ""))
    for row in rows:
        if row.get("eval") in outputs:
            row.update(text_stats(outputs[row["eval"]]))
    return rows


def last_samples(run: Path) -> list[dict]:
    rows = read_metrics(run / "samples.jsonl")
    last = max((r.get("eval", 0) for r in rows), default=None)
    return [r for r in rows if r.get("eval") == last]


def table(runs: list[Path], names: list[str]) -> list[str]:
    evals = [evaluations(r) for r in runs]
    seen = {k for ev in evals for k in ev[0]}
    keys = [k for k in ("reward", "p_yes") if k in seen] + sorted(k for k in seen if k.startswith("p_yes/")) \
        + [k for k in STAT_KEYS if k in seen] + sorted(k for k in seen if k.startswith("monitor/"))
    head = "| metric | " + " | ".join(f"{n}: before → after (step {ev[0]['step']} → {ev[-1]['step']})"
                                        for n, ev in zip(names, evals)) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    for k in keys:
        cells = [f"{fmt(ev[0].get(k))} → {fmt(ev[-1].get(k))}" for ev in evals]
        lines.append(f"| {label(k)} | " + " | ".join(cells) + " |")
    return lines


def _not_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="experiment output folders")
    p.add_argument("--samples", type=_not_negative, default=4,
                   help="held-out openers shown with each run's last output (0: none)")
    p.add_argument("--metric", action="append", default=[], help="per-sample key of samples.jsonl to average")
    a = p.parse_args(argv)
    names = [r.name for r in a.runs]
    out = table(a.runs, names)
    samples = [last_samples(r) for r in a.runs]
    for key in a.metric:
        out.append(f"| {label(key)} (last evaluation) | "
                   + " | ".join(fmt(mean([s.get(key) for s in rows if s.get(key) is not None]) if rows else None)
                                for rows in samples) + " |")
    if a.samples:
        out += ["", "| opener | " + " | ".join(f"{n} (last evaluation)" for n in names) + " |",
                "|---|" + "---|" * len(a.runs)]
        by_prompt = [{s["prompt"]: s for s in rows} for rows in samples]
        for prompt in [s["prompt"] for s in samples[0]][:a.samples]:
            cells = []
            for rows in by_prompt:
                s = rows.get(prompt)
                cells.append("-" if s is None else f"{s['output'].strip()!r} (P {s['p_yes']:.2f})".replace("|", "\\|"))
            out.append(f"| {prompt!r} | " + " | ".join(c.replace("\n", " ") for c in cells) + " |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
