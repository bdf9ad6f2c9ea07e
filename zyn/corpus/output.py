"""The final output: scored rows, selected, written under a temporary name and renamed."""
from __future__ import annotations

from typing import Iterable

from ..records import atomic_output, atomic_path
from .parts import WorkFolder
from .select import Selector
from .writers import CsvWriter, JsonlWriter, ParquetWriter


def write_output(output: str, fmt: str, batches: Iterable[list[dict]], selector: Selector) -> int:
    """Write the selected rows of `batches` to `output` in one rename; the number written."""
    written = 0
    with atomic_path(output) as tmp:
        if fmt == "parquet":
            writer = ParquetWriter(tmp)
            out = None
        else:
            out = open(tmp, "w", encoding="utf-8", newline="")
            writer = CsvWriter(out) if fmt == "csv" else JsonlWriter(out)
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
    """Join the committed parts into `output`; JSONL parts with nothing to select are copied as bytes."""
    if fmt == "jsonl" and folder.fmt == "jsonl" and selector.is_plain:
        with atomic_output(output) as out:
            folder.copy_jsonl(out)
        return
    write_output(output, fmt, folder.batches(), selector)
