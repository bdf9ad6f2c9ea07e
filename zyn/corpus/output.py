"""The final output: scored rows, selected, written under a temporary name and renamed."""
from __future__ import annotations

from typing import Iterable

from ..errors import InputError
from ..records import atomic_output, atomic_path, check_record
from .parts import WorkFolder
from .readers import Row
from .select import Selector
from .writers import LATE_FIELD_FIX, CsvWriter, JsonlWriter, ParquetWriter, arrow_table, widened


def write_output(output: str, fmt: str, batches: Iterable[list[dict]], selector: Selector, *,
                 fields: Iterable[str] = (), schema=None, fix: str = LATE_FIELD_FIX) -> int:
    """Write the selected rows of `batches` to `output` in one rename; the number written.

    `fields` (CSV) or `schema` (Parquet) fix the columns before the first row, where the
    caller knows every field the rows will have; else the first batch fixes them, and a
    field first seen later is an error that says `fix`.
    """
    written = 0
    with atomic_path(output) as tmp:
        if fmt == "parquet":
            writer = ParquetWriter(tmp, schema, fix)
            out = None
        else:
            out = open(tmp, "w", encoding="utf-8", newline="")
            writer = CsvWriter(out, fields, fix) if fmt == "csv" else JsonlWriter(out)
        try:
            for batch in batches:
                rows = selector.feed(batch)
                writer.write(rows)
                written += len(rows)
            rows = selector.finish()
            writer.write(rows)
            written += len(rows)
            writer.close()
        finally:
            if out is not None:
                out.close()
    return written


def join_parts(folder: WorkFolder, output: str, fmt: str, selector: Selector) -> None:
    """Join the committed parts into `output`; JSONL parts with nothing to select are copied as bytes.

    A CSV or Parquet output gets the columns of every part, read before its first row
    (pairs have their own columns), so a field that only later rows hold is kept.
    """
    if fmt == "jsonl" and folder.fmt == "jsonl" and selector.is_plain:
        with atomic_output(output) as out:
            folder.copy_jsonl(out)
        return
    columns = {}
    if fmt == "csv" and not selector.pairs:
        columns = {"fields": folder.fields()}
    elif fmt == "parquet" and not selector.pairs:
        columns = {"schema": folder.schema()}
    write_output(output, fmt, folder.batches(), selector, **columns)


def check_parquet_types(chunks: Iterable[list[Row]], field: str) -> None:
    """Refuse, before any scoring, JSONL rows whose fields Parquet cannot hold in one type
    per column ({"x": 1} in a row, {"x": "a"} in another): the output would fail only when
    written, after every row was scored. Rows that scoring will skip as bad are left out;
    nulls and absent fields fit any type, and whole numbers fit among fractional ones."""
    import pyarrow as pa

    seen: dict[str, tuple] = {}  # field -> (its Arrow type so far, the first line with a value of it)
    for chunk in chunks:
        good = [row for row in chunk if isinstance(row.value, dict) and check_record(row.value, field) is None]
        if not good:
            continue
        table = arrow_table([row.value for row in good], [row.number for row in good], "input: line")
        for f in table.schema:
            old, since = seen.get(f.name, (pa.null(), None))
            if f.type == old:
                continue
            merged = widened(old, f.type)
            if merged is None:
                line, kind = next((row.number, t) for row in good
                                  if widened(old, t := pa.array([row.value.get(f.name)]).type) is None)
                raise InputError(f"input: line {line}: field {f.name!r} holds {kind} where line {since} holds "
                                 f"{old}; Parquet needs one type per column: write .jsonl instead, or make the "
                                 "field one type")
            if since is None:
                since = next((row.number for row in good if row.value.get(f.name) is not None), None)
            seen[f.name] = (merged, since)
