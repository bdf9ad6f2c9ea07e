"""`zyn score`: add P(yes) and reward columns to every record of a JSONL or CSV file.

Malformed lines: by default the run stops before scoring anything and lists every
bad line with its number (exit 2), so an output is never silently short. With
--skip-bad the good rows are scored and written and the bad lines are listed on
standard error (exit 0).
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

from rich.console import Console
from rich.progress import Progress

from ..errors import InputError
from ..records import RecordWriter, input_format, read_records
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
    good, bad = read_records(args.input, args.field)
    if bad and not args.skip_bad:
        lines = "\n".join(f"  line {b.line}: {b.reason}" for b in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise InputError(f"{len(bad)} malformed line(s) in {args.input}, nothing written "
                         f"(fix them or pass --skip-bad):\n{lines}{more}")
    rm = load_reward_model(args)
    names = [q.name for q in rm.prompt_set.questions]
    fmt = input_format(args.output) if args.output != "-" else input_format(args.input)
    with (open(args.output, "w", encoding="utf-8", newline="") if args.output != "-" else nullcontext(sys.stdout)) as out:
        writer = RecordWriter(out, fmt)
        with Progress(console=err, transient=True, disable=len(good) <= CHUNK) as progress:
            task = progress.add_task("scoring", total=len(good))
            for start in range(0, len(good), CHUNK):
                chunk = [record for _, record in good[start:start + CHUNK]]
                scores = rm.score_detailed([_as_input(r, args.field) for r in chunk])
                writer.write([_annotate(r, i, scores, names) for i, r in enumerate(chunk)])
                progress.advance(task, len(chunk))
    for b in bad:
        err.print(f"skipped line {b.line}: {b.reason}", markup=False)
    if bad:
        err.print(f"{len(good)} rows scored, {len(bad)} bad line(s) skipped", markup=False)
    return 0


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
