"""Inputs as numbered rows, read a chunk at a time.

A row is every non-blank line of JSONL, every data record of CSV, every row of a
Parquet file or `datasets` dataset. Rows are indexed from 0 (the index names the
row ranges of parts and shards) and carry the number a person would look up: the
line of a JSONL or CSV file, the 1-based row of a Parquet file or dataset.

A JSONL or CSV file compressed with gzip, bzip2 or xz (known by its first bytes, not
its name) is read as it is: decompressed as it streams, so counting it, and reaching a
shard's or a resumed run's first row, reads it from the start.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..records import csv_records, json_record

FORMATS = ("jsonl", "csv", "parquet", "dataset")
COMPRESSED = (".gz", ".bz2", ".xz")  # a name such as in.csv.gz is CSV
# a compressed file's first bytes, its format's name, and how to open it (None: not read)
_MAGIC = ((b"\x1f\x8b", "gzip", gzip.open), (b"\xfd7zXZ\x00", "xz", lzma.open), (b"BZh", "bzip2", bz2.open),
          (b"\x28\xb5\x2f\xfd", "zstd", None), (b"PK\x03\x04", "zip", None))


@dataclass(frozen=True)
class Row:
    index: int   # 0-based position among the input's rows
    number: int  # the line (JSONL, CSV) or 1-based row (Parquet, dataset) to report
    value: Any   # the parsed record, or a str saying why the row could not be parsed


def input_kind(spec: str) -> str:
    """"jsonl", "csv", "parquet" or "dataset", from the input's name ("-" is JSONL on stdin).

    A folder is a dataset saved with `datasets.Dataset.save_to_disk`; ``hf:NAME`` or
    ``hf:NAME:SPLIT`` is a dataset on a hub.
    """
    low = str(spec).lower()
    if low.startswith("hf:") or (spec != "-" and Path(spec).is_dir()):
        return "dataset"
    low = low.removesuffix(os.path.splitext(low)[1]) if low.endswith(COMPRESSED) else low
    if low.endswith(".csv"):
        return "csv"
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    return "jsonl"


def open_input(spec: str) -> "Reader":
    kind = input_kind(spec)
    if kind == "dataset":
        return DatasetReader(spec)
    if spec != "-" and not Path(spec).is_file():
        raise InputError(f"input: no such file {spec!r}")
    if spec != "-":
        with open(spec, "rb") as f:
            packed = compression(f.read(10))
        if packed and kind == "parquet":
            raise InputError(f"input: {spec} is {packed}-compressed; decompress it first (Parquet compresses "
                             "its columns itself)")
        if packed and not _opener(packed):
            raise InputError(f"input: {spec} is {packed}-compressed; decompress it first (zyn reads JSONL and "
                             "CSV files compressed with gzip, bzip2 or xz as they are)")
    return {"jsonl": JsonlReader, "csv": CsvReader, "parquet": ParquetReader}[kind](spec)


class Reader:
    """Rows of one input. `rows(start, stop)` streams; `count()` may read the whole input."""

    unit = "line"

    def __init__(self, spec: str):
        self.spec = spec

    def count(self) -> int:
        return sum(1 for _ in self.rows())

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[Row]:
        raise NotImplementedError

    def identity(self) -> dict:
        """What says the input is unchanged since a run began (size and modification time)."""
        if self.spec == "-":
            return {}
        st = os.stat(self.spec)
        return {"path": os.path.abspath(self.spec), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def chunks(self, start: int, stop: int | None, size: int) -> Iterator[list[Row]]:
        chunk: list[Row] = []
        for row in self.rows(start, stop):
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def compression(head: bytes) -> str | None:
    """"gzip", "xz", "bzip2", "zstd" or "zip" when `head`, a file's first bytes, starts one."""
    for magic, name, _ in _MAGIC:
        if head.startswith(magic) and (name != "bzip2" or head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")):
            return name  # bzip2: "BZh", a level, then a block or end-of-stream marker (not text starting "BZh")
    return None


def _opener(name: str):
    return next(open_ for _, n, open_ in _MAGIC if n == name)


def _raw_lines(spec: str) -> Iterator[bytes]:
    """The lines of a file as bytes, decompressed if it is gzip, bzip2 or xz, or of standard input."""
    if spec == "-":
        yield from sys.stdin.buffer
        return
    with open(spec, "rb") as f:
        packed = compression(f.read(10))
    if not packed:
        with open(spec, "rb") as f:
            yield from f
        return
    try:
        with _opener(packed)(spec, "rb") as f:
            yield from f
    except (EOFError, OSError, lzma.LZMAError) as e:
        raise InputError(f"input: {spec}: its {packed} data is damaged or cut short ({e}); check the file, "
                         "e.g. by decompressing it") from None


def _decoded_lines(spec: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file or stdin; a byte that is not UTF-8 is an InputError."""
    lines = _raw_lines(spec)
    offset = 0
    try:
        for n, raw in enumerate(lines, start=1):
            if n == 1 and spec == "-" and compression(raw[:10]):
                raise InputError(f"input: standard input is {compression(raw[:10])}-compressed; decompress it in "
                                 "the pipe (e.g. gzip -dc FILE | zyn score --input - ...), or give the file itself")
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark (Excel's "CSV UTF-8")
                raw, offset = raw[3:], 3
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                name = "standard input" if spec == "-" else spec
                raise InputError(f"input: {name} is not UTF-8 text (line {n}, byte {offset + e.start}: "
                                 f"{raw[e.start:e.start + 1]!r}); convert it, e.g. with iconv -t UTF-8") from None
            offset += len(raw)
    finally:
        lines.close()


class JsonlReader(Reader):
    def count(self) -> int:
        # a counting pass need not parse JSON; bytes suffice (every non-blank line is a row)
        if self.spec == "-":
            raise InputError("standard input cannot be counted; give a file")
        return sum(1 for raw in _raw_lines(self.spec) if raw.strip())

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[Row]:
        index = 0
        for n, text in _decoded_lines(self.spec):
            if not text.strip():
                continue
            if stop is not None and index >= stop:
                return
            if index >= start:  # without its line break, which json would count as a line of its own
                yield Row(index, n, json_record(text.rstrip("\r\n")))
            index += 1


class CsvReader(Reader):
    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[Row]:
        records = csv_records(text for _, text in _decoded_lines(self.spec))
        for index, (line, record) in enumerate(records):
            if stop is not None and index >= stop:
                return
            if index >= start:
                yield Row(index, line, record)


class _ArrowRows(Reader):
    """Rows of Arrow record batches, numbered from 1."""

    unit = "row"

    def _batches(self, start: int, stop: int | None):
        raise NotImplementedError

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[Row]:
        index = start
        for batch in self._batches(start, stop):
            for record in batch.to_pylist():
                yield Row(index, index + 1, record)
                index += 1


class ParquetReader(_ArrowRows):
    def _file(self):
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError as e:
            raise InputError("reading Parquet needs pyarrow: pip install 'zyn[corpus]'") from e
        return pq.ParquetFile(self.spec)

    def count(self) -> int:
        return self._file().metadata.num_rows  # no pass over the data

    def _batches(self, start: int, stop: int | None):
        f = self._file()
        stop = f.metadata.num_rows if stop is None else stop
        # skip whole row groups before `start` through the metadata, then slice
        first, seen = 0, 0
        while first < f.num_row_groups and seen + f.metadata.row_group(first).num_rows <= start:
            seen += f.metadata.row_group(first).num_rows
            first += 1
        pos = seen
        groups = list(range(first, f.num_row_groups))
        if not groups:
            return
        for batch in f.iter_batches(batch_size=1024, row_groups=groups):
            lo, hi = max(start - pos, 0), min(stop - pos, batch.num_rows)
            if hi > lo:
                yield batch.slice(lo, hi - lo)
            pos += batch.num_rows
            if pos >= stop:
                return


class DatasetReader(_ArrowRows):
    """A `datasets` dataset: a folder saved with save_to_disk, or ``hf:NAME[:SPLIT]`` on a hub."""

    def _dataset(self):
        import datasets

        if self.spec.lower().startswith("hf:"):
            name, _, split = self.spec[3:].partition(":")
            from ..models import hub

            try:
                with hub.datasets_offline_if_unreachable():  # no ~23 s of retries on an offline machine
                    return datasets.load_dataset(name, split=split or "train")
            except Exception as e:  # noqa: BLE001 - no network, no such dataset or split: one line, not a traceback
                offline = hub.unreachable()
                why = (f"it is not in the local datasets cache and {offline}" if offline
                       else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                raise InputError(f"input: {self.spec}: the dataset could not be loaded ({why}); save it with "
                                 "Dataset.save_to_disk and give the folder, or check the name and split") from None
        ds = datasets.load_from_disk(self.spec)  # memory-mapped Arrow: rows stay on disk
        if isinstance(ds, datasets.DatasetDict):
            if len(ds) != 1:
                raise InputError(f"input: {self.spec} holds splits {sorted(ds)}; give the split's folder")
            ds = next(iter(ds.values()))
        return ds

    def count(self) -> int:
        return len(self._dataset())

    def identity(self) -> dict:
        return {"dataset": self.spec, "fingerprint": getattr(self._dataset(), "_fingerprint", None)}

    def _batches(self, start: int, stop: int | None):
        ds = self._dataset().with_format("arrow")  # slices are pyarrow Tables
        stop = len(ds) if stop is None else min(stop, len(ds))
        for lo in range(start, stop, 1024):
            yield ds[lo:min(lo + 1024, stop)]
