"""Data: prompts from a local .txt/.jsonl/.csv file or a datasets hub name[:split]."""
from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any

from .config import ExperimentError, one_line


def load_prompts(spec: str, *, words: int, limit: int | None = None, split: str = "train",
                 seed: int = 0) -> list[str]:
    """Prompts from a local .txt/.jsonl/.csv file or a datasets hub name[:split].

    A .txt file holds one prompt per line. A .jsonl/.csv file gives a ``prompt`` column
    (taken as is) or a ``text`` column (its first `words` words, as the paper did with IMDB).
    A hub dataset gives ``prompt`` or ``text`` the same way; `split` applies unless the
    name carries one (``imdb:test``).
    """
    path = Path(spec)
    if path.suffix.lower() in (".txt", ".jsonl", ".json", ".csv") or path.exists():
        rows = _read_local(path, words)
    else:
        rows = _read_hub(spec, words, split, seed, limit)
    rows = list(dict.fromkeys(r for r in rows if r))  # drop empties and duplicates, keep order
    if not rows:
        raise ExperimentError(f"dataset {spec}: no prompts found")
    return rows[:limit] if limit else rows


def _first_words(text: str, n: int) -> str:
    return " ".join(str(text).split()[:n])


def _read_local(path: Path, words: int) -> list[str]:
    if not path.is_file():
        raise ExperimentError(f"dataset {path}: no such file (give a .txt/.jsonl/.csv file or a hub name)")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if suffix in (".jsonl", ".json"):
        records = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise ExperimentError(f"dataset {path}: line {i} is not JSON") from None
    elif suffix == ".csv":
        records = list(csv.DictReader(text.splitlines()))
    else:
        raise ExperimentError(f"dataset {path}: unknown file type {suffix!r}; use .txt, .jsonl or .csv")
    return [_record_prompt(r, words, path) for r in records]


def _record_prompt(record: Any, words: int, where: Any) -> str:
    if isinstance(record, str):
        return _first_words(record, words)
    if isinstance(record, dict):
        if record.get("prompt"):
            return str(record["prompt"]).strip()
        if record.get("text"):
            return _first_words(record["text"], words)
    raise ExperimentError(f"dataset {where}: each record needs a 'prompt' or a 'text' field")


def _read_hub(spec: str, words: int, split: str, seed: int, limit: int | None) -> list[str]:
    name, _, given_split = spec.partition(":")
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency of trl
        raise ExperimentError("hub datasets need the 'datasets' package; give a local file instead") from None
    from zyn.models import hub

    try:
        with _quiet_hub(), hub.datasets_offline_if_unreachable():  # no ~23 s of retries when offline
            ds = datasets.load_dataset(name, split=given_split or split)
    except Exception as e:  # offline, unknown name, unknown split: all the user's to fix
        offline = hub.unreachable()
        why = f"it is not in the local datasets cache and {offline}" if offline else one_line(e)[:200]
        raise ExperimentError(f"could not load the dataset {spec!r} ({why}); without hub "
                              f"access pass a local .txt/.jsonl/.csv file") from None
    column = "prompt" if "prompt" in ds.column_names else "text" if "text" in ds.column_names else None
    if column is None:
        raise ExperimentError(f"dataset {spec}: needs a 'prompt' or 'text' column, has {ds.column_names}")
    ds = ds.shuffle(seed=seed)
    if limit:
        ds = ds.select(range(min(len(ds), limit * 2)))
    return [_record_prompt({column: t}, words, spec) for t in ds[column]]


@contextlib.contextmanager
def _quiet_hub():
    """Silence the hub client's retry warnings (an offline machine would print one per retry)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
