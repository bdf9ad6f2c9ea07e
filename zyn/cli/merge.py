"""`zyn merge OUTPUT SHARDS...`: join the shard files of a sharded `zyn score` in input order.

SHARDS are files named STEM-0000I-of-0000N.EXT, or folders holding them; every shard
of the run must be there. The output (JSONL, CSV or Parquet, by extension) appears in
one rename. Selections (--group-by with --keep best or --pairs, --min-p) run here, in
one streaming pass, since a group may cross a shard's edge.
"""
from __future__ import annotations

import argparse

from ..corpus.output import write_output
from ..corpus.readers import input_kind, open_input
from ..corpus.shards import order_shards
from ..corpus.writers import output_kind
from ..errors import InputError
from ..records import check_output
from .score import add_selection_options, selector_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="join the shard files of `zyn score --shard` in input order",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the joined file (.jsonl, .csv or .parquet)")
    p.add_argument("shards", nargs="+", help="shard files, or folders holding them")
    p.add_argument("--field", default="text", help="the judged text's field, for --pairs (default: text)")
    add_selection_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    selector = selector_of(args)
    files = order_shards(args.shards)
    for f in files:
        check_output(args.output, f)
    fmt = output_kind(args.output)
    batches = (chunk_records for f in files for chunk_records in _records(f))
    write_output(args.output, fmt, batches, selector, **_columns(files, fmt, selector))
    return 0


def _columns(files: list[str], fmt: str, selector) -> dict:
    """A CSV or Parquet output's columns from every shard, gathered before its first row is
    written, so that a field only a later shard holds is kept (pairs have columns of their
    own). Parquet shards give their schemas from their footers; others are read once more."""
    from ..corpus.writers import arrow_table, merge_fields, unify

    if fmt == "jsonl" or selector.pairs:
        return {}
    if fmt == "csv":
        fields: list[str] = []
        for f in files:
            for batch in _records(f):
                fields = merge_fields(fields, batch)
        return {"fields": fields}
    import pyarrow.parquet as pq

    schemas = []
    for f in files:
        if input_kind(f) == "parquet":
            schemas.append(pq.read_schema(f))
        else:
            schemas += [arrow_table(batch, range(1, len(batch) + 1), f"{f}: row").schema for batch in _records(f)]
    return {"schema": unify(schemas)}


SCORE_COLUMNS = ("p_yes", "reward", "penalty")  # a shard's number columns, besides p_yes/<question>


def _records(path: str):
    csv = input_kind(path) == "csv"
    reader = open_input(path)
    for chunk in reader.chunks(0, None, 1024):
        rows = [row.value for row in chunk]
        bad = next((row for row in chunk if not isinstance(row.value, dict)), None)
        if bad is not None:
            raise InputError(f"{path}: {reader.unit} {bad.number}: {bad.value}; is it a shard `zyn score` wrote?")
        yield [_numbers(r) for r in rows] if csv else rows


def _numbers(row: dict) -> dict:
    """A CSV shard's score columns as numbers again (CSV keeps text only)."""
    out = dict(row)
    for key, value in row.items():
        if isinstance(key, str) and (key in SCORE_COLUMNS or key.startswith("p_yes/")) and isinstance(value, str):
            try:
                out[key] = float(value) if value else None
            except ValueError:
                raise InputError(f"column {key!r}: {value!r} is not a number; is it a shard `zyn score` "
                                 "wrote?") from None
    return out

