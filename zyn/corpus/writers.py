"""Outputs written a batch of records at a time: JSONL, CSV or Parquet, by extension."""
from __future__ import annotations

import csv
import json
import math
from typing import IO

from ..errors import InputError


def output_kind(path: str) -> str:
    """"parquet", "csv" or "jsonl" from the output's name ("-" is JSONL)."""
    low = str(path).lower()
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv" if low.endswith(".csv") else "jsonl"


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
    """CSV with the header taken from the first non-empty batch."""

    def __init__(self, out: IO[str]):
        self.out = out
        self._csv: csv.DictWriter | None = None

    def write(self, records: list[dict]) -> None:
        if self._csv is None and records:
            header = list(dict.fromkeys(k for r in records for k in r))
            self._csv = csv.DictWriter(self.out, fieldnames=header, extrasaction="ignore")
            self._csv.writeheader()
        if self._csv is not None:
            self._csv.writerows({k: _cell(v) for k, v in r.items()} for r in records)

    def close(self) -> None:
        self.out.flush()


class ParquetWriter:
    """One Parquet file; its schema is the first batch's, later batches are cast to it."""

    def __init__(self, path: str):
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError as e:
            raise InputError("writing Parquet needs pyarrow: pip install 'zyn[corpus]'") from e
        self.path = path
        self._writer = None
        self.rows = 0

    def write(self, records: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not records:
            return
        try:
            table = pa.Table.from_pylist(records)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise InputError(f"output: rows {self.rows + 1}-{self.rows + len(records)} mix types in a column "
                             f"({e}); Parquet needs one type per column (write .jsonl instead)") from None
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self._writer.schema:
            table = self._conform(table)
        self._writer.write_table(table)
        self.rows += len(records)

    def _conform(self, table):
        import pyarrow as pa

        schema = self._writer.schema
        extra = [n for n in table.schema.names if n not in schema.names]
        if extra:
            raise InputError(f"output: column(s) {extra} first appear after row {self.rows}; "
                             "Parquet needs one schema (write .jsonl instead)")
        cols = [table[n] if n in table.schema.names else pa.nulls(len(table), f.type)
                for n, f in zip(schema.names, schema)]
        try:
            return pa.Table.from_arrays(cols, names=schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InputError(f"output: a column changes type after row {self.rows} ({e}); "
                             "Parquet needs one schema (write .jsonl instead)") from None

    def close(self) -> None:
        if self._writer is None:  # no rows: still a valid, empty file
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}), self.path)
        else:
            self._writer.close()
