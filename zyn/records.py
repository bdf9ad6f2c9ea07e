"""Reading and writing record files (JSONL, CSV) for the command line.

Every line is parsed before anything is scored, so a malformed line is reported
with its line number up front and the caller decides what to do with it.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from .errors import InputError


@dataclass(frozen=True)
class BadLine:
    line: int      # 1-based line number in the input (for CSV: the data row's line)
    reason: str


def input_format(path: str) -> str:
    """"csv" or "jsonl", from the file name ("-" is JSONL on standard input)."""
    return "csv" if str(path).lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".xz").endswith(".csv") \
        else "jsonl"


def read_records(path: str, field: str = "text") -> tuple[list[tuple[int, dict]], list[BadLine]]:
    """Parse a JSONL or CSV file into (line number, record) pairs and bad lines.

    A record is good when it is a JSON object (CSV rows always are) and has `field`
    as a string, or "completion" (with optional "prompt"), or chat "messages".
    """
    text = _read_text(path)
    rows = _csv_rows(text) if input_format(path) == "csv" else _jsonl_rows(text)
    good: list[tuple[int, dict]] = []
    bad: list[BadLine] = []
    for line, row in rows:
        reason = row if isinstance(row, str) else check_record(row, field)
        if reason:
            bad.append(BadLine(line, reason))
        else:
            good.append((line, row))
    return good, bad


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input: no such file {path!r}")
    data = _decompressed(p.read_bytes(), path)
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is not part of the text
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"input: {path} is not UTF-8 text (line {line}, byte {e.start}: "
                         f"{data[e.start:e.start + 1]!r}); convert it, e.g. with iconv -t UTF-8") from None


def _decompressed(data: bytes, path: str) -> bytes:
    """`data` as it is, or decompressed when it is gzip, bzip2 or xz (known by its first bytes)."""
    import bz2
    import gzip
    import lzma

    from .corpus.readers import compression

    packed = compression(data[:10])
    if packed is None:
        return data
    unpack = {"gzip": gzip.decompress, "bzip2": bz2.decompress, "xz": lzma.decompress}.get(packed)
    if unpack is None:
        raise InputError(f"input: {path} is {packed}-compressed; decompress it first (gzip, bzip2 and xz files "
                         "are read as they are)")
    try:
        return unpack(data)
    except (EOFError, OSError, lzma.LZMAError) as e:
        raise InputError(f"input: {path}: its {packed} data is damaged or cut short ({e}); check the file") from None


def _jsonl_rows(text: str) -> Iterable[tuple[int, Any]]:
    for n, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            yield n, json_record(raw)


def _csv_rows(text: str) -> Iterable[tuple[int, Any]]:
    yield from csv_records(io.StringIO(text))


def json_record(line: str) -> Any:
    """One JSONL line's record, or why it is not one (a string: the reason)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return "JSON nested too deeply"
    if not isinstance(value, dict):
        return f"expected a JSON object such as {{\"text\": ...}}, got a JSON {type(value).__name__}"
    return value


CSV_FIELD_LIMIT = 64 * 2**20  # characters in one CSV cell (the csv module's default is 131,072)


def csv_records(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, record or the reason it is not one) of CSV text with a header row;
    a row with more or fewer cells than the header is a reason, not a record."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(lines, restkey=_EXTRA, restval=_MISSING)
    try:
        for row in reader:
            header = len(reader.fieldnames or ())
            if _EXTRA in row:
                yield reader.line_num, f"has {header + len(row[_EXTRA])} cells, more than the header's {header}"
            elif any(v is _MISSING for v in row.values()):
                cells = sum(v is not _MISSING for v in row.values())
                yield reader.line_num, f"has {cells} cell{'s' * (cells != 1)}, fewer than the header's {header}"
            else:
                yield reader.line_num, dict(row)
    except csv.Error as e:
        raise InputError(f"input: CSV line {reader.line_num}: {e}") from None


_EXTRA, _MISSING = "\0zyn-extra-cells", object()


def check_record(row: Any, field: str) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if field in row:
        return None if isinstance(row[field], str) else f"field {field!r} is not a string"
    if "completion" in row or "messages" in row:
        return None
    return f"no {field!r} field (nor completion/messages); keys: {sorted(row)[:8]}"


def as_input(record: dict, field: str) -> dict:
    """The record as the prompt set reads it: `field`'s value under "text"."""
    if field != "text" and field in record:
        return {**record, "text": record[field]}
    return record


def check_output(output: str, input_path: str) -> None:
    """Refuse an output that would destroy the input or cannot be a file."""
    if output == "-":
        return
    out = Path(output)
    if out.is_dir():
        raise InputError(f"output: {output} is a directory; give a file name inside it")
    if not out.parent.is_dir():
        raise InputError(f"output: the folder {str(out.parent)!r} does not exist")
    if input_path != "-" and out.exists() and os.path.samefile(out, input_path):
        raise InputError(f"output: {output} is the input file; write to another file (it is replaced "
                         "only when the run succeeds)")


def is_special_file(path: str) -> bool:
    """Whether `path` exists and is neither a regular file nor a folder: a device such as
    /dev/null, a named pipe, a socket. Such an output is written in place, never renamed over."""
    p = Path(path)
    return p.exists() and not p.is_file() and not p.is_dir()


def _new_file_mode(target: Path) -> int:
    """The mode a file created at `target` would get: the old file's, else 0666 less the umask."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o777
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary file name next to `path`, renamed over `path` when the block ends
    without an error (the caller writes and closes the file inside the block). The file
    gets the mode a plain ``open(path, "w")`` would give it (mkstemp's is 0600). A
    `path` that is a device or a pipe (`is_special_file`) is written in place; one that
    is a symlink keeps pointing where it did, at the new file."""
    if is_special_file(path):
        yield path
        return
    target = Path(os.path.realpath(path))  # a symlink stays one: its target is what gets replaced
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.fchmod(fd, _new_file_mode(target))
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[IO[str]]:
    """A text file that appears at `path` only when the block ends without an error.

    It is written next to `path` under a temporary name, flushed to disk, then renamed
    over `path` in one step: an error, Ctrl-C or a crash leaves any previous file at
    `path` as it was. "-" writes straight to standard output.
    """
    if path == "-":
        yield sys.stdout
        return
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        yield f
