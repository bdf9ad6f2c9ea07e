"""Reporting: the console, evaluation tables, metrics.jsonl, plots and the before/after summary.

_smooth, summarize, mean and jsonable are pure; the rest writes to the console or to files.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence


def new_console():
    """The run's console: rich, without guessing colours for numbers and paths."""
    from rich.console import Console

    return Console(highlight=False)


@contextlib.contextmanager
def tqdm_paused():
    """Print around the progress bar instead of through it."""
    try:
        from tqdm import tqdm

        with tqdm.external_write_mode():
            yield
    except ImportError:  # pragma: no cover
        yield


def eval_table(n: int, step: int, prompts, outputs, scores, show: int, result: dict[str, Any] | None = None):
    from rich.table import Table

    questions = list(scores.per_question)
    many = len(questions) > 1
    caption = (f"{min(show, len(prompts))} of {len(prompts)} held-out openers shown; "
               f"means over all {len(prompts)}, greedy decoding")
    watch = [f"{label(k)} {v:.3f}" for k, v in (result or {}).items()
             if k.startswith(("text/", "monitor/")) and v is not None and not math.isnan(v)]
    if watch:
        caption += "\n" + " · ".join(watch)
    table = Table(title=f"Evaluation #{n} (step {step})", show_lines=False, expand=False, caption=caption)
    table.add_column("prompt", style="cyan", max_width=28, overflow="fold")
    table.add_column("output", max_width=60, overflow="fold")
    table.add_column("reward", justify="right")
    table.add_column("P(yes)", justify="right")
    if many:
        for q in questions:
            table.add_column(f"P(yes) {q}", justify="right")
    for i in range(min(show, len(prompts))):
        row = [prompts[i], outputs[i].replace("\n", " "), f"{scores.rewards[i]:+.2f}", f"{scores.p_yes[i]:.3f}"]
        if many:
            row += [f"{scores.per_question[q][i]:.3f}" for q in questions]
        table.add_row(*row)
    means = ["[bold]mean[/]", "", f"[bold]{mean(scores.rewards):+.3f}[/]", f"[bold]{mean(scores.p_yes):.3f}[/]"]
    if many:
        means += [f"[bold]{mean(scores.per_question[q]):.3f}[/]" for q in questions]
    table.add_section()
    table.add_row(*means)
    return table


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows


def plot_metrics(metrics_path: Path, out: Path, title: str = "") -> list[Path]:
    """reward.png and p_yes.png over steps, from metrics.jsonl (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("kind") == "train" and r.get("reward") is not None]
    evals = [r for r in rows if r.get("kind") == "eval"]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        xs, ys = [r["step"] for r in train], [r["reward"] for r in train]
        ax.plot(xs, ys, color="tab:blue", alpha=0.35, lw=1, label="training batch (mean)")
        ax.plot(xs, _smooth(ys), color="tab:blue", lw=2, label="training batch (moving mean)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["reward"] for r in evals], "o-", color="tab:red",
                label="held-out openers (greedy)")
    ax.set(xlabel="step", ylabel="reward", title=f"{title}: reward")
    paths.append(_save(fig, ax, out / "reward.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    if evals:
        steps = [r["step"] for r in evals]
        ax.plot(steps, [r["p_yes"] for r in evals], "o-", color="tab:red", lw=2, label="P(yes) combined")
        per_q = sorted({k for r in evals for k in r if k.startswith("p_yes/")})
        if len(per_q) > 1:
            for k in per_q:
                ax.plot(steps, [r.get(k, math.nan) for r in evals], "s--", lw=1, label=k.replace("p_yes/", "P(yes) "))
    train_q = sorted({k for r in train for k in r if "/p_yes_" in k})
    for k in train_q:
        ax.plot([r["step"] for r in train if k in r], _smooth([r[k] for r in train if k in r]), lw=1, alpha=0.6,
                label=f"training {k.split('/p_yes_')[-1]} (moving mean)")
    ax.set(xlabel="step", ylabel="P(yes)", ylim=(0, 1), title=f"{title}: P(yes) on held-out openers")
    paths.append(_save(fig, ax, out / "p_yes.png"))
    if any(k.startswith("text/") for r in evals for k in r):
        paths.append(plot_hacking(evals, out / "hacking.png", title))
    return paths


def plot_hacking(evals: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """hacking.png: the optimised P(yes) beside the independent evaluators (left), and the
    diversity, repetition and length of the held-out continuations (right)."""
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in evals]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.plot(steps, [r["p_yes"] for r in evals], "o-", color="tab:red", lw=2, label="P(yes), optimised")
    for k in sorted({k for r in evals for k in r if k.startswith("monitor/")}):
        left.plot(steps, [_num(r.get(k)) for r in evals], "s--", lw=1.5, label=f"{label(k)} (independent)")
    left.set(xlabel="step", ylabel="score in [0, 1]", ylim=(0, 1), title=f"{title}: reward vs independent evaluators")
    for k, style in (("text/distinct_1", "o-"), ("text/distinct_2", "s-"), ("text/repeat_2gram", "v-"),
                     ("text/repeat_3gram", "^-")):
        right.plot(steps, [_num(r.get(k)) for r in evals], style, lw=1.5, label=label(k))
    right.set(xlabel="step", ylabel="rate", ylim=(0, 1), title="diversity and repetition (held-out)")
    twin = right.twinx()
    twin.plot(steps, [_num(r.get("text/words")) for r in evals], "d:", color="tab:gray", label=label("text/words"))
    twin.set_ylabel("words per continuation")
    twin.set_ylim(bottom=0)
    lines, labels = twin.get_legend_handles_labels()
    right.plot([], [], "d:", color="tab:gray", label=labels[0] if labels else "words")
    left.grid(alpha=0.3)
    left.legend(loc="best", fontsize=8)
    return _save(fig, right, path)


def label(key: str) -> str:
    """A metric's name for tables and plots."""
    names = {"reward": "mean reward", "p_yes": "mean P(yes)", "text/distinct_1": "distinct-1",
             "text/distinct_2": "distinct-2", "text/repeat_2gram": "repeated 2-grams",
             "text/repeat_3gram": "repeated 3-grams",
             "text/words": "words"}
    if key in names:
        return names[key]
    if key.startswith("p_yes/"):
        return "mean P(yes) " + key[6:]
    if key.startswith("monitor/"):
        return key[8:] if key[8:] == "vader" else f"P {key[8:]}"
    return key


def _num(value: Any) -> float:
    return math.nan if value is None else value


def _save(fig, ax, path: Path) -> Path:
    """Grid, legend, tight layout, PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smooth(ys: list[float], k: int = 5) -> list[float]:
    out = []
    for i in range(len(ys)):
        window = [y for y in ys[max(0, i - k + 1):i + 1] if y is not None and not math.isnan(y)]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def summarize(evals: list[dict[str, Any]], steps: int, seconds: float, stopped: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"steps": steps, "seconds": round(seconds, 1), "stopped": stopped}
    if evals:
        before, after = evals[0], evals[-1]
        keys = [k for k in before if k in ("reward", "p_yes") or k.startswith(("p_yes/", "text/", "monitor/"))]
        summary.update(before_step=before["step"], after_step=after["step"],
                       before={k: before[k] for k in keys}, after={k: after.get(k) for k in keys},
                       change={k: after.get(k, math.nan) - before[k] for k in keys})
    return summary


def print_summary(console, summary: dict[str, Any], name: str) -> None:
    from rich.table import Table

    table = Table(title=f"{name}: before vs after training (held-out openers, greedy)")
    table.add_column("metric")
    table.add_column(f"before (step {summary.get('before_step', '-')})", justify="right")
    table.add_column(f"after (step {summary.get('after_step', '-')})", justify="right")
    table.add_column("change", justify="right")
    for key, before in summary.get("before", {}).items():
        after, change = summary["after"][key], summary["change"][key]
        name = label(key) + (" (independent)" if key.startswith("monitor/") else "")
        table.add_row(name, fmt(before), fmt(after), f"[bold]{fmt(change, '+.3f')}[/]")
    note = f"{summary['steps']} steps, {summary['seconds'] / 60:.1f} min in all"
    if summary.get("stopped"):
        note += f"; stopped early: {summary['stopped']}"
    table.caption = note
    console.print(table)


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for tables: "-" for None and NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def mean(values: Sequence[float]) -> float:
    """The mean of the values that are numbers (None and NaN skipped); NaN when none is."""
    good = [v for v in values if v is not None and not math.isnan(v)]
    return sum(good) / len(good) if good else math.nan


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append one JSON line per record (non-finite floats as null)."""
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(jsonable(record)) + "\n")


def jsonable(value: Any) -> Any:
    """`value` with only JSON types: NaN and infinities become None, numpy/torch scalars floats."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
