"""`zyn score`: add P(yes) and reward columns to every record of a JSONL, CSV or Parquet
file or a `datasets` dataset, at any size (and, from a remote judge, a `flags` field on
the rows whose values were not all read exactly: a bound, or why one is NaN).

Streaming: the input is read and scored CHUNK rows at a time (--chunk-rows), so memory
does not grow with the number of rows; the output is JSONL, CSV or Parquet, by its
extension.

Resumable: each scored chunk is committed to OUTPUT.parts/ (a file per row range,
written under a temporary name and renamed), and when every chunk is in, the parts
are joined into OUTPUT in one rename and the folder removed. After a crash, kill or
Ctrl-C, rerun with --resume: no row is scored twice and none is lost. Without
--resume an unfinished OUTPUT.parts/ is an error.

Sharded: --shard I/N (set by itself under `accelerate launch` or torchrun, one shard
per process, on cuda:LOCAL_RANK) scores the I-th of N contiguous row ranges into
STEM-0000I-of-0000N.EXT next to OUTPUT; `zyn merge OUTPUT SHARDS...` joins them in
input order.

Selection: --group-by FIELD with --keep best (best of n) or --pairs (TRL preference
pairs with their margin), and --min-p P, run over the scored rows in one streaming
pass; a group's rows must be adjacent.

Checked before the model loads: the output's extension (.jsonl, .csv, .parquet or .pq),
the fields that --field and --group-by name (against the first records), and, for a
Parquet output of a JSONL file, that every field holds one type throughout. A CSV or
Parquet output keeps every field of every row: its columns are gathered from all the
scored rows before the first is written (absent from a row: empty, or null).

Bad records: each row is checked and rendered through the prompt set before the
model sees its chunk, and a record that still fails while scoring is found by
scoring its chunk in halves. By default a bad record stops the run and the bad lines
of its chunk are listed with their numbers (exit 2); nothing of that chunk is
committed and OUTPUT is untouched. With --skip-bad the good rows are scored and the
bad ones listed on standard error (exit 0; exit 2 where every row was bad, with no output
written). The output may not be the input.
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..corpus.output import check_parquet_types, join_parts
from ..corpus.parts import STOPPED_ON_BAD_ROWS, WorkFolder
from ..corpus.readers import Row, input_kind, open_input
from ..corpus.select import Selector
from ..corpus.shards import local_device, parse_shard, shard_from_env, shard_path, shard_range
from ..corpus.writers import output_kind
from ..errors import InputError, ZynError
from ..records import as_input, check_output, check_record, is_special_file
from .common import add_model_options, load_reward_model, probability

CHUNK = 1024  # rows per commit and per scoring call: bounds memory and the work a crash loses
PEEK = 100  # records read before the model loads, to check the fields that options name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score every record of a JSONL/CSV/Parquet file or dataset",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, "prompt-set name, YAML path or a question (one: its p_yes and reward columns; "
                         "zyn eval compares several)")
    p.add_argument("--input", required=True, help="FILE.jsonl, FILE.csv, FILE.parquet, a folder saved by "
                   "datasets' save_to_disk, hf:NAME[:SPLIT], or - (JSONL on standard input)")
    p.add_argument("--field", default="text", help="the field holding the text to judge (default: text)")
    p.add_argument("--output", default="-", help="output file (.jsonl, .csv or .parquet); default standard output")
    p.add_argument("--skip-bad", action="store_true", help="score the good rows and list the bad ones")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in OUTPUT.parts/")
    p.add_argument("--shard", metavar="I/N", help="score only the I-th of N contiguous row ranges "
                   "(default under accelerate/torchrun: RANK/WORLD_SIZE)")
    p.add_argument("--chunk-rows", type=int, default=CHUNK, help=f"rows per commit (default {CHUNK})")
    add_selection_options(p)
    p.set_defaults(func=run)


def add_selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-by", metavar="FIELD", help="adjacent rows with equal FIELD form a group")
    p.add_argument("--keep", choices=["best"], help="keep the highest-reward row of each group (best of n)")
    p.add_argument("--pairs", action="store_true", help="write one chosen/rejected pair per group "
                   "(TRL preference format: prompt, chosen, rejected, margin)")
    p.add_argument("--min-p", type=probability, metavar="P", help="drop rows whose P(yes) is below P")


def selector_of(args: argparse.Namespace) -> Selector:
    return Selector(group_by=args.group_by, keep=args.keep, pairs=args.pairs, min_p=args.min_p,
                    field=getattr(args, "field", "text"))


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    selector = selector_of(args)  # option errors before anything is read
    if args.chunk_rows < 1:
        raise InputError("--chunk-rows must be at least 1")
    output_kind(args.output)  # an extension that is not .jsonl, .csv, .parquet or .pq: an error now
    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    if shard and args.group_by:
        raise InputError("--group-by with shards: a group may cross a shard's edge; "
                         "pass it to `zyn merge` instead")
    if args.device is None and shard:
        args.device = local_device()
    if args.output == "-" or is_special_file(args.output):  # standard output, /dev/null, a pipe: streamed
        if shard or args.resume:
            raise InputError("--shard and --resume need --output FILE (a regular file)")
        if args.output != "-" and output_kind(args.output) == "parquet":
            raise InputError(f"output: {args.output} is not a regular file; Parquet is written to files only")
        return _to_stream(args, selector, err)
    if shard and args.input == "-":
        raise InputError("--shard needs --input FILE: the rows are counted to split them")
    if args.resume and args.input == "-":
        raise InputError("--resume needs --input FILE: standard input cannot be checked to be the same stream")
    output = shard_path(args.output, *shard) if shard else args.output
    check_output(output, args.input)
    reader = open_input(args.input)
    total = None if args.input == "-" else reader.count()
    start, end = shard_range(*shard, total) if shard else (0, total)
    fmt = output_kind(output)
    _check_fields(args, reader, start)
    if fmt == "parquet" and input_kind(args.input) == "jsonl" and args.input != "-":
        check_parquet_types(reader.chunks(start, end, CHUNK), args.field)
    rm = load_reward_model(args)
    notes: list[str] = []
    folder = WorkFolder.open(output, "parquet" if fmt == "parquet" else "jsonl",
                             _run_key(args, reader, start, end, rm), resume=args.resume, notes=notes)
    for note in notes:
        err.print(note, markup=False)
    done = folder.resume_point(start)
    try:
        _score_into(folder, rm, reader, done, end, args, err, total=None if end is None else end - start,
                    done=done - start)
    except KeyboardInterrupt:
        err.print(f"{folder.committed_rows()} rows committed in {folder.path}: rerun with --resume to continue",
                  markup=False)
        raise
    except ZynError:
        if not folder.committed_rows():  # nothing to resume (a stop on bad rows included): no folder left
            folder.remove()
        raise
    bad = folder.bad_rows()
    scored = folder.committed_rows() - len(bad)
    if bad and not scored:
        folder.remove()
        _report_skipped(err, bad, reader.unit, scored)
        raise InputError(_all_bad(bad, reader.unit, f"{output} was not written"))
    join_parts(folder, output, fmt, selector)
    folder.remove()
    _report_skipped(err, bad, reader.unit, scored)
    return 0


def _all_bad(bad: list[tuple[int, str]], unit: str, outcome: str) -> str:
    """--skip-bad's message when no row at all could be scored: a wrong --field or prompt set
    is likelier than a file of bad rows, and an empty output would hide it."""
    return (f"every one of the {len(bad)} {unit}(s) was bad, nothing was scored and {outcome}; the first: "
            f"{unit} {bad[0][0]}: {bad[0][1]} (check --field and the fields the prompt set reads)")


def _run_key(args, reader, start: int, end: int | None, rm) -> dict:
    """What the committed parts depend on: a resumed run must match it, down to the
    prompt set's contents (its YAML may be edited between runs) and the weights of a
    model zyn loaded from its cache or a folder."""
    import hashlib
    import json

    prompt_set = json.dumps(rm.prompt_set.to_dict(), sort_keys=True, default=str)
    model = getattr(getattr(rm.backend, "model", None), "zyn_checkpoint", None) or _folder_identity(args.model)
    return {"input": reader.identity(), "input_kind": input_kind(args.input), "field": args.field,
            "model": args.model, "prompt": args.prompt, "reward": args.reward, "dtype": args.dtype,
            "max_length": args.max_length, "rows": [start, end], "chunk_rows": args.chunk_rows,
            "prompt_set": hashlib.sha256(prompt_set.encode()).hexdigest()[:16], "weights": model}


def _folder_identity(spec: str) -> str | None:
    """Names, sizes and modification times of a model folder's files (None for other models)."""
    import hashlib
    import os

    if not os.path.isdir(spec):
        return None
    entries = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in os.scandir(spec) if f.is_file())
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]


def _check_fields(args: argparse.Namespace, reader, start: int) -> None:
    """--field and --group-by against the first records, before the model loads: a misspelt
    field would otherwise stop the run (or skip every row) once the first chunk is scored.
    Standard input is not checked: it cannot be read twice."""
    if args.input == "-":
        return
    records = [(row.number, row.value) for row in reader.rows(start, start + PEEK) if isinstance(row.value, dict)]
    if not records:
        return
    if not any(args.field in r or "completion" in r or "messages" in r for _, r in records):
        number, first = records[0]
        raise InputError(f"--field {args.field}: none of the first {len(records)} records has such a field, nor "
                         f"completion or messages; {_did_you_mean(args.field, first)}{reader.unit} {number}'s "
                         f"fields: {_names(first)}; pass --field with the one holding the text to judge")
    good = next(((n, r) for n, r in records if check_record(r, args.field) is None), None)
    if args.group_by and good and args.group_by not in good[1]:
        number, first = good
        raise InputError(f"--group-by {args.group_by}: {reader.unit} {number} has no such field; "
                         f"{_did_you_mean(args.group_by, first)}its fields: {_names(first)}")


def _did_you_mean(name: str, record: dict) -> str:
    from ..prompts import closest

    near = closest(name, [k for k in record if isinstance(k, str)])
    return f"did you mean {near!r}? " if near else ""


def _names(record: dict) -> str:
    names = ", ".join(repr(k) for k in list(record)[:10])
    return names + (f" and {len(record) - 10} more" if len(record) > 10 else "")


def _progress(err: Console, total: int | None, done: int, chunk: int) -> Progress:
    return Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeRemainingColumn(),
                    console=err, transient=True, disable=total is not None and total - done <= chunk)


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:,.1f} rows/s" if task.speed else "- rows/s")


def _score_into(folder: WorkFolder, rm, reader, start: int, end: int | None, args, err, *, total, done) -> None:
    """Score rows [start, end) chunk by chunk, committing each chunk to `folder`."""
    names = [q.name for q in rm.prompt_set.questions]
    with _progress(err, total, done, args.chunk_rows) as progress:
        task = progress.add_task("scoring", total=total, completed=done)
        for chunk in reader.chunks(start, end, args.chunk_rows):
            rows, bad = score_rows(rm, chunk, args.field, names)
            if bad and not args.skip_bad:
                folder.mark_stopped(STOPPED_ON_BAD_ROWS)
                _stop(bad, args, reader.unit, kept=folder.committed_rows(), folder=folder)
            folder.commit(chunk[0].index, chunk[-1].index + 1, rows, bad)
            progress.advance(task, len(chunk))


def _to_stream(args, selector: Selector, err: Console) -> int:
    """Stream scored rows to standard output, or into an output that is not a regular
    file (a device such as /dev/null, a named pipe), written in place: no parts, no
    resume (renaming a finished file over it would replace the device or the pipe)."""
    import sys

    from ..corpus.writers import CsvWriter, JsonlWriter

    reader = open_input(args.input)
    _check_fields(args, reader, 0)
    rm = load_reward_model(args)
    names = [q.name for q in rm.prompt_set.questions]
    if args.output == "-":
        stream, csv = sys.stdout, input_kind(args.input) == "csv"
    else:
        stream, csv = open(args.output, "w", encoding="utf-8", newline=""), output_kind(args.output) == "csv"
    # a stream's CSV header is written from the first chunk: a field that only later rows hold cannot join it
    fix = ("write to a regular file (its columns are gathered from every row first), or to .jsonl, or raise "
           "--chunk-rows so that the first chunk holds the field")
    try:
        return _write_stream(args, selector, err, reader, rm, names,
                             CsvWriter(stream, fix=fix) if csv else JsonlWriter(stream))
    finally:
        if stream is not sys.stdout:
            stream.close()


def _write_stream(args, selector: Selector, err: Console, reader, rm, names, writer) -> int:
    all_bad: list[tuple[int, str]] = []
    scored = written = 0
    for chunk in reader.chunks(0, None, args.chunk_rows):
        rows, bad = score_rows(rm, chunk, args.field, names)
        if bad and not args.skip_bad:
            _stop(bad, args, reader.unit, streamed=written)
        all_bad += bad
        scored += len(rows)
        kept = selector.feed(rows)
        writer.write(kept)
        written += len(kept)
    writer.write(selector.finish())
    writer.close()
    _report_skipped(err, all_bad, reader.unit, scored)
    if all_bad and not scored:
        raise InputError(_all_bad(all_bad, reader.unit, "no row was written"))
    return 0


# ----------------------------------------------------------------------------- one chunk

def score_rows(rm, chunk: list[Row], field: str, names: list[str]) -> tuple[list[dict], list[tuple[int, str]]]:
    """The annotated records of `chunk` and its bad rows as (number, reason), in input order.

    Each row is parsed, checked and rendered first; the rest are scored together, and
    where scoring raises, in halves down to single records.
    """
    bad: list[tuple[int, str]] = []
    ok: list[tuple[int, dict]] = []
    for row in chunk:
        reason = row.value if isinstance(row.value, str) else check_record(row.value, field)
        if reason is None:
            try:
                rm.prompt_set.render(as_input(row.value, field))
            except ZynError as e:
                reason = _reason(e)
        if reason is None:
            ok.append((row.number, row.value))
        else:
            bad.append((row.number, reason))
    rows = _score_chunk(rm, ok, field, names, bad)
    bad.sort()
    return rows, bad


def _score_chunk(rm, chunk: list[tuple[int, dict]], field: str, names: list[str],
                 bad: list[tuple[int, str]]) -> list[dict]:
    """Annotated records of `chunk`; where scoring raises, halves are scored apart down
    to single records, and those that still fail join `bad` with their line."""
    if not chunk:
        return []
    try:
        scores = rm.score_detailed([as_input(r, field) for _, r in chunk])
    except Exception as e:  # noqa: BLE001 - a record fails alone, whatever it raises
        if _not_the_records(e):
            raise
        if len(chunk) == 1:
            bad.append((chunk[0][0], _reason(e)))
            return []
        half = len(chunk) // 2
        return (_score_chunk(rm, chunk[:half], field, names, bad)
                + _score_chunk(rm, chunk[half:], field, names, bad))
    return [_annotate(r, i, scores, names) for i, (_, r) in enumerate(chunk)]


def _not_the_records(e: Exception) -> bool:
    """Failures of the machine or the server, not of a record: the run stops (resumable)
    instead of blaming every row of the chunk."""
    import sys

    from ..errors import AnswerError

    if isinstance(e, (OSError, MemoryError, AnswerError)) or "OutOfMemory" in type(e).__name__:
        return True  # AnswerError: the prompt set's answers and the model's tokens do not fit, for every row
    remote = sys.modules.get("zyn.backends.remote.errors")  # loaded when a remote backend is in use
    if remote is None or not isinstance(e, remote.RemoteError):
        return False
    return not (isinstance(e, remote.RemoteStatusError) and 400 <= e.status < 500)


def _stop(bad: list[tuple[int, str]], args: argparse.Namespace, unit: str, kept: int = 0, folder=None,
          streamed: int = 0) -> None:
    lines = "\n".join(f"  {unit} {n}: {reason}" for n, reason in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    after = (f"\n  ({kept} rows scored before them are kept in {folder.path}: "
             "--resume --skip-bad continues from there)" if kept else "")
    written = (f"stopped after writing {streamed} row(s) to {args.output if args.output != '-' else 'standard output'}"
               if streamed else "nothing written")
    raise InputError(f"{len(bad)} bad record(s) in {args.input}, {written} "
                     f"(fix them or pass --skip-bad):\n{lines}{more}{after}")


def _report_skipped(err: Console, bad: list[tuple[int, str]], unit: str, scored: int | None) -> None:
    for n, reason in sorted(bad):
        err.print(f"skipped {unit} {n}: {reason}", markup=False)
    if bad:
        head = f"{scored} rows scored, " if scored is not None else ""
        err.print(f"{head}{len(bad)} bad {unit}(s) skipped", markup=False)


def _reason(e: BaseException) -> str:
    """An error as it reads for a line: zyn's own messages without their "item N: "."""
    text = str(e)
    if isinstance(e, ZynError) and text.startswith("item "):
        text = text.split(": ", 1)[-1]
    return text if isinstance(e, ZynError) else f"{type(e).__name__}: {text}"


def _annotate(record: dict, i: int, scores, names: list[str]) -> dict:
    out = dict(record)
    out["p_yes"] = scores.p_yes[i]
    out["reward"] = scores.rewards[i]
    if scores.penalty:  # what the prompt set's penalties took off the log-odds
        out["penalty"] = scores.penalty[i]
    if len(names) > 1:
        for name in names:
            out[f"p_yes/{name}"] = scores.per_question[name][i]
    inexact = scores.inexact(i)
    if inexact:  # a remote judge read a value as a bound, or not at all (protocols.FLAGS)
        out["flags"] = ",".join(inexact)
    return out
