"""`zyn eval`: measure a reward against labelled data.

Scores every record of a labelled JSONL/CSV file with one or more prompt sets
(the model is loaded once), and reports per prompt set, per question and combined:
AUROC, accuracy at p = 0.5, the best in-sample accuracy and its threshold, the
Brier score and the expected calibration error (equal-width bins, --bins).
Combined is P(rewarded answer) against the labels; a question is its own P(yes),
against the labels flipped for a question that rewards "no".

--calibrate contentfree  shift each question so content-free inputs ("N/A", "",
                         "[MASK]") sit at p = 0.5 (no labels used).
--calibrate platt        Platt-scale each question's log-odds on the labels. The
                         reported figures are 2-fold cross-fitted (each half is
                         scored with the calibration fitted on the other half), so
                         they are out of sample; --save-calibrated writes the fit on
                         all rows.

Writes results.json, reliability.png and histograms.png to --output-dir.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ZynError
from .common import console as cli_console, output_folder, run_options

_TRUE = {"1", "true", "yes", "pos", "positive"}
_FALSE = {"0", "false", "no", "neg", "negative"}
CONTENT_FREE = "contentfree"
PLATT = "platt"


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_judge_options, add_run_options, positive_int

    p = sub.add_parser("eval", help="measure prompt sets against labelled data (AUROC, accuracy, calibration)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_judge_options(p)
    p.add_argument("--input", required=True, help="labelled FILE.jsonl or FILE.csv")
    p.add_argument("--label-field", default="label", help="the field holding the label (default: label)")
    p.add_argument("--positive", metavar="VALUE",
                   help="the label value of the positive class (default: labels must be 0/1 or true/false)")
    p.add_argument("--field", default="text", help="the field holding the text to judge (default: text)")
    p.add_argument("--calibrate", choices=(CONTENT_FREE, PLATT), help="also report calibrated scores")
    p.add_argument("--save-calibrated", metavar="OUT.yaml",
                   help="write the calibrated prompt set (with several --prompt, put {name} in the path)")
    p.add_argument("--output-dir", default="zyn-eval", help="where results.json and the plots go (default: zyn-eval)")
    p.add_argument("--bins", type=positive_int, default=10,
                   help="equal-width bins for ECE and reliability (default: 10)")
    p.add_argument("--limit", type=positive_int, help="use only the first N labelled rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the Platt cross-fitting split (default: 0)")
    add_run_options(p)
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- input

def parse_labels(values: list[Any], lines: list[int], field: str, positive: str | None) -> np.ndarray:
    """0/1 labels from raw label values (bools, 0/1, "true"/"false", or == `positive`)."""
    if positive is not None:
        distinct = sorted({_norm(v) for v in values})
        if len(distinct) > 2:
            raise InputError(f"labels in {field!r} are not binary: {len(distinct)} distinct values "
                             f"{distinct[:6]}")
        if _norm(positive) not in distinct:
            raise InputError(f"--positive {positive!r} matches no value of {field!r} (values: {distinct[:6]})")
        return np.array([int(_norm(v) == _norm(positive)) for v in values])
    out = []
    for v, line in zip(values, lines):
        s = _norm(v)
        if s in _TRUE or s == "1.0":
            out.append(1)
        elif s in _FALSE or s == "0.0":
            out.append(0)
        else:
            raise InputError(f"labels in {field!r} are not binary: line {line} has {v!r}; use 0/1 or "
                             f"true/false, or name the positive class with --positive VALUE")
    return np.array(out)


def _norm(v: Any) -> str:
    return str(v).strip().lower()


def load_labelled(path: str, field: str, label_field: str, positive: str | None,
                  limit: int | None = None) -> tuple[list[dict], np.ndarray]:
    """Records (with "text" taken from `field`) and their 0/1 labels."""
    from ..records import read_records

    try:
        good, bad = read_records(path, field)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"input: cannot read {path!r}: {e}") from None
    if bad:
        b = bad[0]
        raise InputError(f"{path}: {len(bad)} malformed line(s); first: line {b.line}: {b.reason}")
    if not good:
        raise InputError(f"{path}: no records")
    if limit:
        good = good[:limit]
    missing = [line for line, r in good if r.get(label_field) in (None, "")]
    if missing:
        raise InputError(f"{path}: no label field {label_field!r} on {len(missing)} row(s) (first: line "
                         f"{missing[0]}); name it with --label-field")
    labels = parse_labels([r[label_field] for _, r in good], [line for line, _ in good], label_field, positive)
    if labels.min() == labels.max():
        raise InputError(f"{path}: every label is {int(labels[0])}; evaluation needs both classes")
    records = [{**r, "text": r[field]} if field != "text" and field in r else r for _, r in good]
    return records, labels


# ----------------------------------------------------------------------------- evaluation

def evaluate_prompt_sets(rm, prompt_sets: list, records: list[dict], labels: np.ndarray,
                         calibrate: str | None = None, n_bins: int = 10, seed: int = 0) -> dict:
    """Score `records` with each prompt set and evaluate. Returns the results dict
    written to results.json (no printing, no files).

    Per run, ``scores`` holds the combined P(rewarded answer) and each question's
    P(yes) (`zyn.calibration.apply_calibration`); a question's metrics are against
    its oriented labels (`zyn.calibration.oriented_labels`)."""
    from .. import calibration as cal
    from ..evaluation import evaluate, reliability_curve

    if calibrate == PLATT and min(int(labels.sum()), int(len(labels) - labels.sum())) < 2:
        raise InputError("--calibrate platt needs at least 2 rows of each class (it cross-fits on two halves)")
    out: dict[str, Any] = {"n": int(len(labels)), "n_positive": int(labels.sum()), "bins": n_bins, "runs": []}
    for ps in prompt_sets:
        raw = cal.raw_logodds(rm.with_prompt(ps), records)
        own = {q.name: q.calibration for q in ps.questions}
        pen = ps.penalty(records)
        variants = [("as given", *cal.apply_calibration(raw, ps, own, pen), None)]
        if calibrate == CONTENT_FREE:
            fit = cal.content_free_calibration(rm.with_prompt(ps))
            variants.append(("content-free", *cal.apply_calibration(raw, ps, fit, pen), fit))
        elif calibrate == PLATT:
            per_q, combined = cal.platt_cross_fitted(raw, ps, labels, seed, penalty=pen)
            variants.append(("platt 2-fold", per_q, combined, cal.fit_platt_per_question(raw, labels, ps)))
        # where a calibrated P(yes) rounds to exactly 0 or 1 (log-odds beyond ~37, e.g. a question
        # scaled by 20), the raw log-odds still rank: they order equal P for AUROC (positive scales
        # keep the order); the combined P is tie-broken by the questions' oriented raw log-odds
        oriented = sum(np.asarray(raw[q.name], dtype=float) * (1 if q.reward_answer == "yes" else -1)
                       for q in ps.questions)
        for variant, per_q, combined, saved in variants:
            scores = {"combined": combined, **per_q}
            metrics = {"combined": evaluate(combined, labels, n_bins, tiebreak=oriented).as_dict()}
            # a question's P(yes) is right when its yes answer is: flip the labels of a "no" question
            metrics.update({q.name: evaluate(per_q[q.name], cal.oriented_labels(labels, q.reward_answer),
                                             n_bins, tiebreak=raw[q.name]).as_dict() for q in ps.questions})
            ok = ~np.isnan(combined)
            rel = [b.__dict__ for b in reliability_curve(combined[ok], labels[ok], n_bins)]
            out["runs"].append({
                "prompt_set": ps.name, "source": ps.source, "variant": variant,
                "questions": [q.name for q in ps.questions],
                "reward_answers": {q.name: q.reward_answer for q in ps.questions},
                "calibration": {k: list(v) for k, v in saved.items()} if saved else None,
                "metrics": metrics, "reliability": rel,
                "scores": {k: [None if math.isnan(x) else float(x) for x in v] for k, v in scores.items()},
            })
    out["labels"] = labels.tolist()
    return out


# ----------------------------------------------------------------------------- output

def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def results_table(results: dict):
    """One rich table: a section per (prompt set, calibration), the combined row
    first, then the questions of an ensemble."""
    from rich.table import Table

    t = Table(title=f"zyn eval: {results.get('input', '')} (n={results['n']}, {results['n_positive']} positive)",
              caption=f"best acc: in-sample, at the threshold shown; ECE: {results['bins']} equal-width bins; "
                      "a question: its P(yes), labels flipped where it rewards no")
    t.add_column("prompt set / question", overflow="fold")
    t.add_column("calibration", overflow="fold")
    for col in ("AUROC", "acc@0.5", "best acc (thr)", "Brier", "ECE", "n"):
        t.add_column(col, justify="right", no_wrap=True)
    for run in results["runs"]:
        names = ["combined"] + (run["questions"] if len(run["questions"]) > 1 else [])
        for i, name in enumerate(names):
            m = run["metrics"][name]
            thr = m["best_threshold"]
            label = run["prompt_set"] if i == 0 else f"  {name}"
            t.add_row(label, run["variant"] if i == 0 else "",
                      _fmt(m["auroc"]), _fmt(m["accuracy"]),
                      f"{_fmt(m['best_accuracy'])} ({'inf' if math.isinf(thr) else _fmt(thr, 2)})",
                      _fmt(m["brier"]), _fmt(m["ece"]), str(m["n"]))
        t.add_section()
    return t


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """reliability.png (one curve per run) and histograms.png (P by class, one panel per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    labels = np.array(results["labels"])
    names = [r["prompt_set"] + ("" if r["variant"] == "as given" else f" [{r['variant']}]") for r in runs]

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, run in zip(names, runs):
        pts = [(b["mean_predicted"], b["fraction_positive"]) for b in run["reliability"] if b["count"]]
        ece = run["metrics"]["combined"]["ece"]
        ax.plot(*zip(*pts), marker="o", label=f"{name} (ECE {_fmt(ece)})")
    ax.set(xlabel="mean predicted P(yes)", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability ({results['bins']} equal-width bins)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    rel_path = out_dir / "reliability.png"
    fig.savefig(rel_path, dpi=110)
    plt.close(fig)

    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    edges = np.linspace(0, 1, 21)
    for ax, name, run in zip(axes.flat, names, runs):
        s = np.array([np.nan if x is None else x for x in run["scores"]["combined"]])
        for cls, colour, lab in ((1, "tab:green", "positive"), (0, "tab:red", "negative")):
            v = s[(labels == cls) & ~np.isnan(s)]
            ax.hist(v, bins=edges, alpha=0.6, color=colour, label=f"{lab} (n={len(v)})")
        ax.set(title=f"{name}\nAUROC {_fmt(run['metrics']['combined']['auroc'])}", xlabel="P(yes)")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    hist_path = out_dir / "histograms.png"
    fig.savefig(hist_path, dpi=110)
    plt.close(fig)
    return [rel_path, hist_path]


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def check_distinct_names(prompt_sets: list) -> None:
    """Refuse two prompt sets of one name: the results are reported by name."""
    names = [ps.name for ps in prompt_sets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        files = [ps.source for ps in prompt_sets if ps.name in twice]
        raise InputError(f"--prompt: {len(files)} prompt sets are named {twice[0]!r} ({', '.join(files)}); results "
                         "are reported by name: give each file its own `name:`")


def calibrated_paths(pattern: str, prompt_sets: list, input_path: str) -> dict[str, Path]:
    """Where --save-calibrated writes each prompt set's calibrated copy, checked before
    any scoring (a folder that exists, not the input file, not a folder)."""
    from ..records import check_output

    if len(prompt_sets) > 1 and "{name}" not in pattern:
        raise InputError("--save-calibrated: with several --prompt, put {name} in the path (e.g. cal_{name}.yaml)")
    paths = {ps.name: Path(pattern.replace("{name}", ps.name)) for ps in prompt_sets}
    for path in paths.values():
        try:
            check_output(str(path), input_path)
        except InputError as e:
            raise InputError(f"--save-calibrated: {str(e).removeprefix('output: ')}") from None
    return paths


def save_calibrated(results: dict, prompt_sets: list, paths: dict[str, Path]) -> list[Path]:
    from ..calibration import calibrated_prompt_set

    written = []
    by_name = {ps.name: ps for ps in prompt_sets}
    for run in results["runs"]:
        if run["variant"] == "as given" or not run["calibration"]:
            continue
        path = paths[run["prompt_set"]]
        calibrated = calibrated_prompt_set(by_name[run["prompt_set"]], run["calibration"])
        if not calibrated.name.endswith("_calibrated"):  # a name of its own: compared with its original by name
            calibrated = dataclasses.replace(calibrated, name=f"{calibrated.name}_calibrated")
        calibrated.to_yaml(path)
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    from ..model import ZeroShotRewardModel
    from ..prompts import load_prompt_set

    if args.save_calibrated and not args.calibrate:
        raise InputError("--save-calibrated needs --calibrate contentfree or --calibrate platt")
    if args.bins < 1:
        raise InputError("--bins must be at least 1")
    prompt_sets = [load_prompt_set(p) for p in (args.prompts or ["sentiment"])]
    check_distinct_names(prompt_sets)
    with output_folder(args.output_dir) as out_dir:  # first: --save-calibrated may point into it
        calibrated = calibrated_paths(args.save_calibrated, prompt_sets, args.input) if args.save_calibrated else {}
        records, labels = load_labelled(args.input, args.field, args.label_field, args.positive, args.limit)

        console = cli_console()
        with console.status(f"loading {args.model} and scoring {len(records)} rows x {len(prompt_sets)} prompt set(s)"):
            rm = ZeroShotRewardModel(args.model, prompt=prompt_sets[0], **run_options(args))
            try:
                results = evaluate_prompt_sets(rm, prompt_sets, records, labels, args.calibrate, args.bins, args.seed)
            except ZynError:
                raise
            except ValueError as e:  # the maths' own refusals (all scores NaN, a class gone after NaN rows)
                raise InputError(f"cannot evaluate: {e}") from None
        results.update(input=str(args.input), model=args.model, label_field=args.label_field)
        console.print(results_table(results))
        (out_dir / "results.json").write_text(json.dumps(_json_safe(results), indent=1))
        written = [out_dir / "results.json", *write_plots(results, out_dir)]
        if args.save_calibrated:
            written += save_calibrated(results, prompt_sets, calibrated)
        console.print("wrote " + ", ".join(str(p) for p in written), markup=False, highlight=False)
        return 0
