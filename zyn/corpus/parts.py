"""The work folder of a run, OUTPUT.parts/: scored row ranges committed one at a time.

    manifest.json                  what the run scores (input, its size and mtime, model,
                                   prompt, row range, ...); --resume must match it
    rows-000000000000-000000001024.jsonl   the scored rows of input rows [0, 1024)
    rows-000000000000-000000001024.bad.json  the rows of that range that were skipped

A part is written under a temporary name, flushed to disk and renamed: the rename
commits it, together with its bad-row list (written just before). So after a crash,
`kill -9` or Ctrl-C every part present is whole, and the next chunk to score is the
end of the committed ranges. Part files sort by name in input order.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import IO, Iterator

from ..errors import InputError
from .writers import json_line, merge_fields, unify

MANIFEST = "manifest.json"
_PART = re.compile(r"^rows-(\d{12})-(\d{12})\.(jsonl|parquet)$")
STOPPED_ON_BAD_ROWS = "bad rows"


def parts_dir(output: str) -> Path:
    return Path(f"{output}.parts")


def part_name(start: int, end: int, fmt: str) -> str:
    return f"rows-{start:012d}-{end:012d}.{fmt}"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class WorkFolder:
    """The parts of one output. `fmt` is "jsonl" or "parquet" (the parts' own format)."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = Path(path), fmt

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, output: str, fmt: str, run: dict, *, resume: bool, notes: list[str]) -> "WorkFolder":
        """The folder for `output`, new or resumed.

        Args:
            run: what the parts depend on; a resumed folder must have been written with the same.
            resume: continue an existing folder (else an existing folder is an error,
                unless its run stopped on bad rows: then it is started again).
            notes: lines for the user are appended here.
        """
        folder = cls(parts_dir(output), fmt)
        if folder.path.exists():
            old = folder._manifest()
            if not resume and old.get("stopped") == STOPPED_ON_BAD_ROWS:
                notes.append(f"starting again: {folder.path} was left by a run stopped on bad rows "
                             "(pass --resume to continue it instead)")
                folder.remove()
            elif not resume:
                raise InputError(f"{folder.path} holds an unfinished run ({folder.committed_rows()} rows "
                                 "committed): pass --resume to continue it, or delete the folder to start again")
            else:
                folder._check_same(old.get("run", {}), run)
                folder._drop_uncommitted()
                notes.append(f"resuming: {folder.committed_rows()} rows already committed in {folder.path}")
                return folder
        elif resume:
            notes.append(f"nothing to resume ({folder.path} does not exist): starting")
        folder.path.mkdir()
        write_atomically(folder.path / MANIFEST, json.dumps({"run": run}, indent=1))
        return folder

    def _manifest(self) -> dict:
        try:
            return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(f"{self.path} exists but has no readable {MANIFEST}: it is not a zyn work "
                             "folder, or was cut before its first commit; delete it to start again") from None

    def _check_same(self, old: dict, new: dict) -> None:
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise InputError(f"cannot resume {self.path}: it was written with {key} = {old.get(key)!r}, "
                                 f"this run has {new.get(key)!r}; rerun as before, or delete the folder "
                                 "to start again")

    def _drop_uncommitted(self) -> None:
        """Remove temporary files and bad-row lists whose part never landed."""
        names = {p.name for p in self.path.iterdir()}
        for name in names:
            stem = name[:-len(".bad.json")] if name.endswith(".bad.json") else None
            if name.endswith(".tmp") or (stem and f"{stem}.{self.fmt}" not in names):
                (self.path / name).unlink()

    def mark_stopped(self, reason: str) -> None:
        manifest = self._manifest()
        manifest["stopped"] = reason
        write_atomically(self.path / MANIFEST, json.dumps(manifest, indent=1))

    def remove(self) -> None:
        shutil.rmtree(self.path)

    # ------------------------------------------------------------------ committed parts
    def parts(self) -> list[tuple[int, int, Path]]:
        found = []
        for p in self.path.iterdir():
            m = _PART.match(p.name)
            if m and m.group(3) == self.fmt:
                found.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(found)

    def committed_rows(self) -> int:
        return sum(end - start for start, end, _ in self.parts())

    def resume_point(self, start: int) -> int:
        """The end of the committed ranges that run on without a gap from `start`."""
        for lo, hi, _ in self.parts():
            if lo != start:
                raise InputError(f"{self.path}: rows {start}..{lo} are missing before {part_name(lo, hi, self.fmt)}; "
                                 "delete the folder to start again")
            start = hi
        return start

    def commit(self, start: int, end: int, records: list[dict], bad: list[tuple[int, str]]) -> None:
        """Commit the scored `records` and the skipped `bad` rows (number, reason) of rows [start, end)."""
        final = self.path / part_name(start, end, self.fmt)
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            self._write_part(tmp, records)
            sidecar = final.with_name(final.name[:-len(self.fmt) - 1] + ".bad.json")
            if bad:
                write_atomically(sidecar, json.dumps(bad))
            os.replace(tmp, final)  # the commit
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(self.path)

    def _write_part(self, tmp: Path, records: list[dict]) -> None:
        if self.fmt == "parquet":
            from .writers import ParquetWriter

            w = ParquetWriter(str(tmp))
            w.write(records)
            w.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            return
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write("".join(json_line(r) for r in records))
            f.flush()
            os.fsync(f.fileno())

    def bad_rows(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for p in sorted(self.path.glob("*.bad.json")):
            out.extend((int(n), reason) for n, reason in json.loads(p.read_text(encoding="utf-8")))
        return out

    def batches(self, size: int = 1024) -> Iterator[list[dict]]:
        """The committed records in input order, `size` at a time."""
        for _, _, path in self.parts():
            yield from read_part(path, size)

    def fields(self) -> list[str]:
        """Every field of the committed records, in order (`merge_fields`): the header of a
        CSV output, known before its first row. Reads every part."""
        fields: list[str] = []
        for batch in self.batches():
            fields = merge_fields(fields, batch)
        return fields

    def schema(self):
        """One Arrow schema for every committed Parquet part, read from their footers alone
        (None without parts): a field that some chunks lack or hold only nulls in gets
        the type the others give it."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schemas = [pq.read_schema(path) for _, _, path in self.parts()]
        if not schemas:
            return None
        unified = unify(schemas)
        order = merge_fields((), (dict.fromkeys(s.names) for s in schemas))
        return pa.schema([unified.field(name) for name in order])

    def copy_jsonl(self, out: IO[str]) -> None:
        """Concatenate JSONL parts into `out` as they are (no parsing)."""
        for _, _, path in self.parts():
            with open(path, encoding="utf-8") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def read_part(path: Path, size: int = 1024) -> Iterator[list[dict]]:
    """Records of a JSONL or Parquet file, `size` at a time."""
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
            yield batch.to_pylist()
        return
    batch: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
