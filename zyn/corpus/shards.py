"""Which contiguous row range a process scores, and how shard files are named.

Shard i of n holds rows [i*T//n, (i+1)*T//n) of T rows: contiguous, in input
order, sizes differing by at most one. Shard files are named
``STEM-00003-of-00008.EXT`` beside the output ``STEM.EXT``, so that reading the
shard folder in name order gives the rows in input order.

>>> shard_range(1, 3, 10)
(3, 6)
>>> parse_shard("2/8")
(2, 8)
>>> shard_path("out/scored.parquet", 2, 8)
'out/scored-00002-of-00008.parquet'
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError

_SHARD_FILE = re.compile(r"^(?P<stem>.*)-(?P<i>\d{5})-of-(?P<n>\d{5})(?P<ext>\.[^.]+)?$")


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise InputError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def shard_from_env(env=os.environ) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) under `accelerate launch` or torchrun with more than one process."""
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if world > 1 and 0 <= rank < world else None


def local_device(env=os.environ) -> str | None:
    """cuda:LOCAL_RANK when CUDA is present and LOCAL_RANK is set, else None (the default device)."""
    if "LOCAL_RANK" not in env:
        return None
    import torch

    return f"cuda:{int(env['LOCAL_RANK'])}" if torch.cuda.is_available() else None


def shard_range(i: int, n: int, total: int) -> tuple[int, int]:
    return i * total // n, (i + 1) * total // n


def shard_path(output: str, i: int, n: int) -> str:
    folder, base = os.path.split(output)
    stem, ext = os.path.splitext(base)
    return os.path.join(folder, f"{stem}-{i:05d}-of-{n:05d}{ext}")


def order_shards(paths: list[str]) -> list[str]:
    """Shard files in input order, checked complete: one set of 0..n-1 of the same n.

    A folder stands for the shard files in it.
    """
    files: list[str] = []
    for p in paths:
        if Path(p).is_dir():
            files += [str(f) for f in sorted(Path(p).iterdir()) if f.is_file() and _SHARD_FILE.match(f.name)]
        else:
            files.append(p)
    if not files:
        raise InputError(f"merge: no shard files (NAME-00000-of-0000N.EXT) in {', '.join(paths)}")
    found: dict[tuple[str, int], dict[int, str]] = {}
    for f in files:
        m = _SHARD_FILE.match(Path(f).name)
        if not m:
            raise InputError(f"merge: {f} is not named like a shard (NAME-00000-of-0000N.EXT)")
        found.setdefault((m["stem"], int(m["n"])), {})[int(m["i"])] = f
    if len(found) > 1:
        raise InputError(f"merge: shards of different runs: {sorted(f'{s}-*-of-{n:05d}' for s, n in found)}")
    (stem, n), by_index = next(iter(found.items()))
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        raise InputError(f"merge: shard(s) {missing[:10]} of {n} missing for {stem}: finish them first")
    return [by_index[i] for i in range(n)]
