"""`zyn merge OUTPUT SHARDS...`: join the shard files of a sharded `zyn score` in input order.

SHARDS are files named STEM-0000I-of-0000N.EXT, or folders holding them; every shard
of the run must be there. The output (JSONL, CSV or Parquet, by extension) appears in
one rename. Selections (--group-by with --keep best or --pairs, --min-p) run here, in
one streaming pass, since a group may cross a shard's edge.
"""
from __future__ import annotations

import argparse

from ..corpus.output import write_output
from ..corpus.readers import open_input
from ..corpus.shards import order_shards
from ..corpus.writers import output_kind
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
    batches = (chunk_records for f in files for chunk_records in _records(f))
    write_output(args.output, output_kind(args.output), batches, selector)
    return 0


def _records(path: str):
    for chunk in open_input(path).chunks(0, None, 1024):
        yield [row.value for row in chunk]
