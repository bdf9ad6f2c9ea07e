"""`zyn probe`: attack a reward the way an optimiser would, and measure what pays.

Scores every text of a JSONL/CSV file clean and under each perturbation of
`zyn.probe.PERTURBATIONS` (repetition, filler, praise, instructions to the grader,
fake chat turns, truncation, case), with one or more prompt sets (the model is
loaded once), and reports per perturbation: the mean shift of the combined
P(rewarded answer) and of the reward, the flip rate across p = 0.5, the lower rate
(the fraction of pairs where the perturbed text scores lower: for a hack, higher is
better), and where labels exist the AUROC under attack and the fraction of label-0
texts pushed over 0.5.

Writes probe.json and probe.png to --output-dir.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .common import console as cli_console, output_folder, run_options

COLUMNS = (("mean_shift_p", "ΔP"), ("mean_shift_reward", "Δreward"), ("lower_rate", "lower"),
           ("flip_rate", "flips"), ("neg_flip_up", "neg→yes"), ("auroc_attacked", "AUROC"))


def register(sub: argparse._SubParsersAction) -> None:
    from ..probe import PERTURBATIONS
    from .common import add_judge_options, add_run_options, positive_int

    p = sub.add_parser("probe", help="measure how a reward moves under hacks (repetition, injection, ...)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_judge_options(p)
    p.add_argument("--input", required=True, help="FILE.jsonl or FILE.csv of texts, labelled or not")
    p.add_argument("--field", help="the field holding the text to perturb (default: text; for prompt/completion "
                   "records, completion: the attack is on the policy's output, the prompt stays as it is)")
    p.add_argument("--label-field", default="label",
                   help="the field holding 0/1 labels (default: label); rows without it are unlabelled")
    p.add_argument("--no-labels", action="store_true", help="ignore labels even where the file has them")
    p.add_argument("--positive", metavar="VALUE", help="the label value of the positive class")
    p.add_argument("--perturb", action="append", metavar="NAME", choices=list(PERTURBATIONS),
                   help=f"a perturbation to apply; repeat for several (default: all of {', '.join(PERTURBATIONS)})")
    p.add_argument("--limit", type=positive_int, help="use only the first N rows")
    p.add_argument("--output-dir", default="zyn-probe", help="where probe.json and probe.png go (default: zyn-probe)")
    add_run_options(p)
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- input

def load_texts(path: str, field: str | None, label_field: str | None, positive: str | None = None,
               limit: int | None = None) -> tuple[list[dict], np.ndarray | None, str]:
    """Records holding `field`, their 0/1 labels if every row has `label_field` (else None),
    and the field to perturb: `field`, or by default "text", or "completion" for records of
    a prompt and its completion."""
    from ..records import read_records
    from .eval import parse_labels

    try:
        good, bad = read_records(path, field or "text")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"input: cannot read {path!r}: {e}") from None
    if bad:
        raise InputError(f"{path}: {len(bad)} malformed line(s); first: line {bad[0].line}: {bad[0].reason}")
    good = good[:limit] if limit else good
    if not good:
        raise InputError(f"{path}: no records")
    if field is None:  # what the judge reads of a prompt/completion record is both; the completion is perturbed
        first = good[0][1]
        field = "completion" if "text" not in first and isinstance(first.get("completion"), str) else "text"
    missing = [line for line, r in good if not isinstance(r.get(field), str)]
    if missing:
        raise InputError(f"{path}: no text field {field!r} on {len(missing)} row(s) (first: line {missing[0]}); "
                         "name it with --field")
    records = [r for _, r in good]
    if not label_field or all(r.get(label_field) in (None, "") for r in records):
        return records, None, field
    unlabelled = [line for (line, _), r in zip(good, records) if r.get(label_field) in (None, "")]
    if unlabelled:
        raise InputError(f"{path}: no label {label_field!r} on {len(unlabelled)} row(s) (first: line "
                         f"{unlabelled[0]}); label every row, or pass --no-labels")
    labels = parse_labels([r.get(label_field) for r in records], [line for line, _ in good], label_field, positive)
    return records, labels, field


def _with_text(record: dict, field: str, text: str) -> dict:
    out = {**record, field: text}
    if field != "text":  # the text is rebuilt from prompt + completion
        out.pop("text", None)
    return out


# ----------------------------------------------------------------------------- probing

def probe_prompt_sets(rm, prompt_sets: list, records: list[dict], labels: np.ndarray | None,
                      names: list[str], field: str = "text") -> dict:
    """Score the clean and perturbed records with each prompt set; the dict written to
    probe.json (no printing, no files). One scoring call per prompt set, so the backend
    batches and shares prefixes across every perturbation."""
    from ..probe import pair_report, perturb, question_shifts

    texts = [r[field] for r in records]
    variants = perturb(texts, names)
    batch = list(records) + [_with_text(r, field, t) for n in names for r, t in zip(records, variants[n])]
    out: dict[str, Any] = {"n": len(records), "perturbations": names,
                           "n_positive": None if labels is None else int(labels.sum()), "runs": []}
    n = len(records)
    for ps in prompt_sets:
        scores = rm.with_prompt(ps).score_detailed(batch)
        p, r = np.asarray(scores.p_yes, dtype=float), np.asarray(scores.rewards, dtype=float)
        per_q = {k: np.asarray(v, dtype=float) for k, v in scores.per_question.items()}
        clean = slice(0, n)
        report = {}
        for i, name in enumerate(names, start=1):
            part = slice(i * n, (i + 1) * n)
            report[name] = pair_report(p[clean], p[part], r[clean], r[part], labels)
            report[name]["question_shift_p_yes"] = question_shifts(
                {k: v[clean] for k, v in per_q.items()}, {k: v[part] for k, v in per_q.items()})
        out["runs"].append({
            "prompt_set": ps.name, "source": ps.source, "combine": ps.combine, "reward": ps.reward,
            "questions": {q.name: q.reward_answer for q in ps.questions},
            "clean": {"mean_p": _nanmean(p[clean]), "mean_reward": _nanmean(r[clean]),
                      "auroc": report[names[0]].get("auroc") if names else None},
            "perturbations": report,
            "scores": {"p": _listed(p), "reward": _listed(r)},
        })
    out["labels"] = None if labels is None else labels.tolist()
    out["examples"] = {name: variants[name][0] for name in names}
    return out


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else math.nan


def _listed(x: np.ndarray) -> list:
    return [None if math.isnan(v) else float(v) for v in x]


# ----------------------------------------------------------------------------- output

def _fmt(x: Any, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def results_table(results: dict):
    """One rich table: a section per prompt set, a row per perturbation."""
    from rich.table import Table

    t = Table(title=f"zyn probe: {results.get('input', '')} (n={results['n']})",
              caption="ΔP, Δreward: mean shift (perturbed - clean); lower: fraction of pairs where the perturbed "
                      "text scores lower; flips: fraction crossing p = 0.5; neg→yes: label-0 texts pushed over 0.5; "
                      "AUROC: perturbed scores against the labels")
    t.add_column("prompt set / perturbation", overflow="fold")
    for _, title in COLUMNS:
        t.add_column(title, justify="right", no_wrap=True)
    for run in results["runs"]:
        c = run["clean"]
        t.add_row(f"{run['prompt_set']} ({run['combine']})", f"P {_fmt(c['mean_p'])}", f"r {_fmt(c['mean_reward'], 2)}",
                  "", "", "", _fmt(c["auroc"]))
        for name, rep in run["perturbations"].items():
            t.add_row(f"  {name}", *(_fmt(rep.get(k), 3 if k != "mean_shift_reward" else 2,
                                          signed=k.startswith("mean_shift")) for k, _ in COLUMNS))
        t.add_section()
    return t


def write_plot(results: dict, out_dir: Path) -> Path:
    """probe.png: per perturbation, the mean shift of P and the lower rate, one bar per prompt set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = results["perturbations"]
    runs = results["runs"]
    y = np.arange(len(names))
    h = 0.8 / max(1, len(runs))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 1.6), sharey=True)
    for k, run in enumerate(runs):
        reps = [run["perturbations"][n] for n in names]
        off = y - 0.4 + h * (k + 0.5)
        axes[0].barh(off, [r["mean_shift_p"] for r in reps], height=h, label=run["prompt_set"])
        axes[1].barh(off, [r["lower_rate"] for r in reps], height=h, label=run["prompt_set"])
    axes[0].axvline(0, color="grey", linewidth=1)
    axes[0].set(xlabel="mean shift of P(rewarded answer)", yticks=y, yticklabels=names, title="reward moves by")
    axes[1].axvline(0.9, color="grey", linestyle="--", linewidth=1)
    axes[1].set(xlabel="fraction of pairs scored lower", xlim=(0, 1), title="perturbed text scores lower")
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out_dir / "probe.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def run(args: argparse.Namespace) -> int:
    from ..model import ZeroShotRewardModel
    from ..probe import PERTURBATIONS
    from ..prompts import load_prompt_set
    from .eval import check_distinct_names

    prompt_sets = [load_prompt_set(p) for p in (args.prompts or ["sentiment"])]
    check_distinct_names(prompt_sets)
    names = list(dict.fromkeys(args.perturb or PERTURBATIONS))
    records, labels, field = load_texts(args.input, args.field, None if args.no_labels else args.label_field,
                                        args.positive, args.limit)
    with output_folder(args.output_dir) as out_dir:

        console = cli_console()
        total = len(records) * (1 + len(names))
        with console.status(f"loading {args.model} and scoring {total} texts x {len(prompt_sets)} prompt set(s)"):
            rm = ZeroShotRewardModel(args.model, prompt=prompt_sets[0], **run_options(args))
            results = probe_prompt_sets(rm, prompt_sets, records, labels, names, field)
        results.update(input=str(args.input), model=args.model, field=field)
        console.print(results_table(results))
        (out_dir / "probe.json").write_text(json.dumps(_json_safe(results), indent=1, ensure_ascii=False))
        written = [out_dir / "probe.json", write_plot(results, out_dir)]
        console.print("wrote " + ", ".join(str(p) for p in written), markup=False, highlight=False)
        return 0
