"""Outputs written a batch of records at a time: JSONL, CSV or Parquet, by extension.

JSONL keeps each record's own fields. CSV and Parquet fix their columns before the
first row is written: from the fields they are given (every field the rows will have,
when the caller knows them), else from the first batch, taking every field of every
record in it (absent from a record: empty or null). A field first seen after that is
an error naming it, never a column silently dropped.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import IO, Iterable, Sequence

from ..errors import InputError

EXTENSIONS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip")
# what to do about a field or type the columns lack, unless the caller knows better
LATE_FIELD_FIX = "write .jsonl instead"


def output_kind(path: str) -> str:
    """"parquet", "csv" or "jsonl" from the output's extension ("-", standard output, is JSONL;
    so is a device or pipe without one, such as /dev/null); another extension is an error."""
    from ..records import is_special_file

    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    if path == "-" or (not ext and is_special_file(path)):
        return "jsonl"
    if os.path.isdir(path):
        raise InputError(f"output: {path} is a directory; give a file name inside it")
    supported = ", ".join(EXTENSIONS)
    if ext in COMPRESSED:
        inner = path[:-len(ext)]
        plain = inner if os.path.splitext(inner)[1].lower() in EXTENSIONS else f"{inner}.jsonl"
        raise InputError(f"output: {path}: compressed output is not supported; write {plain} and compress it "
                         f"afterwards (Parquet compresses its columns itself)")
    raise InputError(f"output: {path}: unknown extension {ext or '(none)'!r}; name the output with one of "
                     f"{supported} (JSONL, CSV or Parquet), or - for standard output")


def merge_fields(fields: Iterable[str], records: Iterable[dict]) -> list[str]:
    """`fields` followed by the fields of `records` it lacks, each placed after the field it
    follows in its record, so a field that only later records have sits where they have it
    (["text", "p_yes"] and {"text", "score", "p_yes"} give ["text", "score", "p_yes"])."""
    out = list(fields)
    known = set(out)
    for record in records:
        if known.issuperset(record):
            continue
        before = None
        for name in record:
            if name not in known:
                out.insert(out.index(before) + 1 if before is not None else 0, name)
                known.add(name)
            before = name
    return out


def _late_field(names: set, records: list[dict], first_row: int, columns: str, fix: str) -> InputError:
    """The error for fields of `records` (rows first_row, first_row+1, ...) outside the columns."""
    i, record = next((i, r) for i, r in enumerate(records) if not names.issuperset(r))
    extra = [k for k in record if k not in names]
    return InputError(f"output: field(s) {extra} first appear in row {first_row + i}, after the {columns} "
                      f"was fixed from the rows before it; {fix}")


def json_line(record: dict) -> str:
    """One JSONL line. NaN and infinities (a score a remote engine left undefined, a NaN
    in the input) become null: JSON has no such numbers, and readers refuse them. Dates
    and decimals (Parquet inputs) become strings."""
    try:
        return json.dumps(record, ensure_ascii=False, default=_bytes_or_str, allow_nan=False) + "\n"
    except ValueError:  # a non-finite float somewhere
        return json.dumps(_finite(record), ensure_ascii=False, default=_bytes_or_str, allow_nan=False) + "\n"


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _bytes_or_str(value):
    """What JSON lacks: bytes as text when they are UTF-8 (else base64), the rest as str."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            import base64

            return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _cell(value):
    """A CSV cell: nested values as JSON (not Python's repr), NaN as empty."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_finite(value), ensure_ascii=False, default=_bytes_or_str)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


class JsonlWriter:
    def __init__(self, out: IO[str]):
        self.out = out

    def write(self, records: list[dict]) -> None:
        self.out.write("".join(json_line(r) for r in records))

    def close(self) -> None:
        self.out.flush()


class CsvWriter:
    """CSV with the header `fields` (plus any field the first batch adds), else the first
    non-empty batch's fields; a field outside the header later is an error (`fix` says what to do)."""

    def __init__(self, out: IO[str], fields: Iterable[str] = (), fix: str = LATE_FIELD_FIX):
        self.out, self.fields, self.fix = out, list(fields), fix
        self._csv: csv.DictWriter | None = None
        self._names: set = set()
        self.rows = 0

    def write(self, records: list[dict]) -> None:
        if self._csv is None and records:
            header = merge_fields(self.fields, records)
            self._csv = csv.DictWriter(self.out, fieldnames=header)
            self._names = set(header)
            self._csv.writeheader()
        if self._csv is not None:
            if not all(self._names.issuperset(r) for r in records):
                raise _late_field(self._names, records, self.rows + 1, "CSV header", self.fix)
            self._csv.writerows({k: _cell(v) for k, v in r.items()} for r in records)
            self.rows += len(records)

    def close(self) -> None:
        self.out.flush()


def arrow_table(records: list[dict], numbers: Sequence[int], where: str = "output: row"):
    """`records` as an Arrow table with a column per field of any of them (null where a
    record lacks it). A field whose values mix types is an error naming the first value
    that breaks the type, by its number in `numbers` ("output: row 7", "input: line 7")."""
    import pyarrow as pa

    columns = {}
    for name in merge_fields((), records):
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            i = _first_misfit(values)
            raise InputError(f"{where} {numbers[i]}: field {name!r} holds {values[i]!r:.40}, of another type than "
                             f"in the rows before it ({e}); Parquet needs one type per column: write .jsonl "
                             "instead") from None
    return pa.table(columns)


def _first_misfit(values: list) -> int:
    """The index of the first value that does not fit one Arrow type with those before it
    (found by halving: a prefix that fails stays failing when it grows)."""
    import pyarrow as pa

    lo, hi = 0, len(values)  # values[:lo + 1] fit ... values[:hi] do not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pa.array(values[:mid])
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            hi = mid
    return hi - 1


def unify(schemas: list):
    """One schema for tables of `schemas`, a field's types merged the way Arrow widens them
    (null to any type, int64 to double, ...); a field whose types cannot merge is an error."""
    import pyarrow as pa

    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"output: {e}; Parquet needs one type per column: write .jsonl instead") from None


def widened(a, b):
    """The Arrow type that holds values of types `a` and `b`, as Arrow widens them (null
    to any type, int64 to double, a struct to one with the fields of both); None if none does."""
    import pyarrow as pa

    try:
        return pa.unify_schemas([pa.schema([("x", a)]), pa.schema([("x", b)])], promote_options="permissive").field(0).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


class ParquetWriter:
    """One Parquet file. Its schema is `schema` when given, else the first batch's (every
    field of its records); later batches are fitted to it: a missing field is null, a type
    is widened as Arrow widens it, and a field outside the schema is an error (`fix` says
    what to do)."""

    def __init__(self, path: str, schema=None, fix: str = LATE_FIELD_FIX):
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError as e:
            raise InputError("writing Parquet needs pyarrow: pip install 'zyn[corpus]'") from e
        self.path, self.schema, self.fix = path, schema, fix
        self._writer = None
        self.rows = 0

    def write(self, records: list[dict]) -> None:
        import pyarrow.parquet as pq

        if not records:
            return
        table = arrow_table(records, range(self.rows + 1, self.rows + len(records) + 1))
        if self._writer is None:
            self.schema = table.schema if self.schema is None else self.schema
            self._writer = pq.ParquetWriter(self.path, self.schema)
        if table.schema != self.schema:
            table = self._conform(table, records)
        self._writer.write_table(table)
        self.rows += len(records)

    def _conform(self, table, records: list[dict]):
        import pyarrow as pa

        names = set(self.schema.names)
        if not names.issuperset(table.schema.names):
            raise _late_field(names, records, self.rows + 1, "Parquet schema", self.fix)
        cols = [self._column(table, field) for field in self.schema]
        return pa.Table.from_arrays(cols, schema=self.schema)

    def _column(self, table, field):
        """`table`'s column `field` as the schema has it: nulls when absent, else widened to its type."""
        import pyarrow as pa

        if field.name not in table.schema.names:
            return pa.nulls(len(table), field.type)
        col = table[field.name]
        if col.type == field.type:
            return col
        if widened(field.type, col.type) != field.type:  # only null, or int64 into double, ...: never text into numbers
            before = ("was empty in every row before them, which made its column null-typed" if field.type == pa.null()
                      else f"its column holds {field.type} (from the rows before them)")
            raise InputError(f"output: field {field.name!r} holds {col.type} values in rows {self.rows + 1}-"
                             f"{self.rows + len(table)}, and {before}; Parquet needs one type per column: {self.fix}")
        return col.cast(field.type)

    def close(self) -> None:
        if self._writer is None:  # no rows: still a valid, empty file
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}) if self.schema is None else self.schema.empty_table(), self.path)
        else:
            self._writer.close()
