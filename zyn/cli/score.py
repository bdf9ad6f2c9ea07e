"""`zyn score`: add P(yes) and reward columns to every record of a JSONL or CSV file.

Bad records: every line is read and rendered through the prompt set before the model
runs, and a record that still fails while scoring is found by scoring its chunk in
halves. By default any bad record stops the run and every bad line is listed with its
number (exit 2), and nothing is written. With --skip-bad the good rows are scored and
written and the bad lines are listed on standard error (exit 0).

The output appears only when the run succeeds: it is written under a temporary name
next to --output and renamed at the end, so an error or Ctrl-C leaves a previous
output untouched. The output may not be the input.
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import Progress

from ..errors import InputError, ZynError
from ..records import BadLine, RecordWriter, atomic_output, check_output, input_format, read_records
from .common import add_model_options, load_reward_model

CHUNK = 256  # records per scoring call: bounds memory and drives the progress bar


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score every record of a JSONL/CSV file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p)
    p.add_argument("--input", required=True, help="FILE.jsonl, FILE.csv or - (JSONL on standard input)")
    p.add_argument("--field", default="text", help="the field holding the text to judge (default: text)")
    p.add_argument("--output", default="-", help="output file (.jsonl or .csv); default standard output")
    p.add_argument("--skip-bad", action="store_true", help="score the good rows and list the bad ones")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    check_output(args.output, args.input)
    good, bad = read_records(args.input, args.field)
    rm = load_reward_model(args)
    good = _renderable(rm.prompt_set, good, args.field, bad)
    _stop_unless_skipping(bad, args)
    names = [q.name for q in rm.prompt_set.questions]
    fmt = input_format(args.output) if args.output != "-" else input_format(args.input)
    scored = 0
    with atomic_output(args.output) as out, \
            Progress(console=err, transient=True, disable=len(good) <= CHUNK) as progress:
        writer = RecordWriter(out, fmt)
        task = progress.add_task("scoring", total=len(good))
        for start in range(0, len(good), CHUNK):
            rows = _score_chunk(rm, good[start:start + CHUNK], args.field, names, bad)
            _stop_unless_skipping(bad, args)  # before anything of this chunk is written
            writer.write(rows)
            scored += len(rows)
            progress.advance(task, min(CHUNK, len(good) - start))
    bad.sort(key=lambda b: b.line)
    for b in bad:
        err.print(f"skipped line {b.line}: {b.reason}", markup=False)
    if bad:
        err.print(f"{scored} rows scored, {len(bad)} bad line(s) skipped", markup=False)
    return 0


def _renderable(prompt_set, good: list[tuple[int, dict]], field: str, bad: list[BadLine]) -> list[tuple[int, dict]]:
    """The records that render through every question; the others join `bad` by line."""
    kept = []
    for line, record in good:
        try:
            prompt_set.render(_as_input(record, field))
        except ZynError as e:
            bad.append(BadLine(line, _reason(e)))
        else:
            kept.append((line, record))
    return kept


def _score_chunk(rm, chunk: list[tuple[int, dict]], field: str, names: list[str],
                 bad: list[BadLine]) -> list[dict]:
    """Annotated records of `chunk`; where scoring raises, halves are scored apart down
    to single records, and those that still fail join `bad` with their line."""
    try:
        scores = rm.score_detailed([_as_input(r, field) for _, r in chunk])
    except Exception as e:  # noqa: BLE001 - a record fails alone, whatever it raises
        if len(chunk) == 1:
            bad.append(BadLine(chunk[0][0], _reason(e)))
            return []
        half = len(chunk) // 2
        return (_score_chunk(rm, chunk[:half], field, names, bad)
                + _score_chunk(rm, chunk[half:], field, names, bad))
    return [_annotate(r, i, scores, names) for i, (_, r) in enumerate(chunk)]


def _stop_unless_skipping(bad: list[BadLine], args: argparse.Namespace) -> None:
    if not bad or args.skip_bad:
        return
    bad.sort(key=lambda b: b.line)
    lines = "\n".join(f"  line {b.line}: {b.reason}" for b in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    raise InputError(f"{len(bad)} bad record(s) in {args.input}, nothing written "
                     f"(fix them or pass --skip-bad):\n{lines}{more}")


def _reason(e: BaseException) -> str:
    """An error as it reads for a line: zyn's own messages without their "item N: "."""
    text = str(e)
    if isinstance(e, ZynError) and text.startswith("item "):
        text = text.split(": ", 1)[-1]
    return text if isinstance(e, ZynError) else f"{type(e).__name__}: {text}"


def _as_input(record: dict, field: str) -> dict:
    if field != "text" and field in record:
        return {**record, "text": record[field]}
    return record


def _annotate(record: dict, i: int, scores, names: list[str]) -> dict:
    out = dict(record)
    out["p_yes"] = scores.p_yes[i]
    out["reward"] = scores.rewards[i]
    if len(names) > 1:
        for name in names:
            out[f"p_yes/{name}"] = scores.per_question[name][i]
    return out
