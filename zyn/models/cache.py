"""The cache of converted checkpoints: where it lives, whether a folder in it is current, and
how a folder gets into it (built in a temporary folder, published by an atomic rename, under
an ``fcntl`` lock so concurrent builders end with one good copy).

Each cached folder holds ``zyn-manifest.json``: the cache format, the record of the source it
was built from, each file's size and sha256, and the versions of the libraries that built it.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ModelError

try:  # POSIX; elsewhere concurrent prepares are not serialised (the atomic rename still holds)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = 1  # bump when the cached folder's layout or contents change; older caches are rebuilt
MANIFEST = "zyn-manifest.json"
WEIGHTS = "model.safetensors"
BLOCK = 8 << 20  # bytes per read when streaming weight files

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: wait, hash, assemble, read, convert, tokenizer, save, check.
``total`` is 0 when unknown."""


def cache_root() -> Path:
    """The zyn cache folder: ``$ZYN_CACHE``, else ``$XDG_CACHE_HOME/zyn``, else ``~/.cache/zyn``."""
    if env := os.environ.get("ZYN_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "zyn"


def check_cache(folder: Path, source: dict, *, deep: bool = False) -> str | None:
    """Why the cached folder cannot be used, or None if it can.

    Args:
        folder: a cache folder.
        source: the source record it must have been built from (compared key by key).
        deep: also re-hash every file against the manifest (slow: reads gigabytes).

    Returns:
        None when valid, else a short reason.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "not prepared"
    except (OSError, ValueError):
        return "unreadable manifest"
    if manifest.get("format") != CACHE_FORMAT:
        return f"cache format {manifest.get('format')} (current {CACHE_FORMAT})"
    if any(manifest.get("source", {}).get(k) != v for k, v in source.items()):
        return "built from a different source file"
    for name, info in manifest.get("files", {}).items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != info["size"]:
            return f"{name} missing or truncated"
        if deep and sha256_file(f) != info["sha256"]:
            return f"{name} corrupted (sha256 differs from the manifest)"
    return None


def file_digest(path: Path, algorithm: str = "sha256", progress: Progress | None = None, stage: str = "hash"):
    """The hashlib digest of a file, read block by block (never whole into memory)."""
    digest, done, total = hashlib.new(algorithm), 0, path.stat().st_size
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(stage, done, total)
    return digest


def sha256_file(path: Path, progress: Progress | None = None, stage: str = "hash") -> str:
    return file_digest(path, "sha256", progress, stage).hexdigest()


@contextlib.contextmanager
def _locked(target: Path, progress: Progress | None) -> Iterator[None]:
    """Hold an exclusive lock for building `target`. The lock file is never deleted: removing it
    would let a waiter and a newcomer lock different inodes."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fh = open(target.parent / f".{target.name}.lock", "a")
    except OSError as e:
        raise ModelError(f"cannot write to the zyn cache ({e}); set ZYN_CACHE to a writable folder") from e
    with fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if progress:
                    progress("wait", 0, 0)
                fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def build_cached(target: Path, source: dict, build: Callable[[Path], None], *, force: bool, deep: bool,
                  progress: Progress | None) -> Path:
    """Return `target`, building it with `build(tmp_folder)` unless a valid copy exists.

    The build writes into a temporary folder next to `target`, which is renamed into place only
    when complete, so readers never see half a cache; the lock makes concurrent callers wait and
    then reuse the first one's result.
    """
    with _locked(target, progress):
        # checked again under the lock: another process may have finished it while we waited
        if not force and check_cache(target, source, deep=deep) is None:
            return target
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            _write_manifest(tmp, source)
            _publish(tmp, target)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):  # disk full, permissions: say which cache, as a zyn error
                raise ModelError(f"preparing {target.name} in {target.parent} failed: {e}") from e
            raise
    return target


def _remove_leftovers(target: Path) -> None:
    """Temporary folders of builds that crashed; safe to delete while holding the lock."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for stale in target.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _write_manifest(folder: Path, source: dict) -> None:
    files = {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)}
             for f in sorted(folder.iterdir()) if f.is_file()}
    manifest = {"format": CACHE_FORMAT, "source": source, "files": files, "versions": _versions()}
    with open(folder / MANIFEST, "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("transformers", "torch", "gguf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def _publish(tmp: Path, target: Path) -> None:
    """Move the finished folder into place. A stale copy is first renamed aside (a folder cannot be
    renamed over a non-empty one); processes still reading it keep their open files."""
    for f in tmp.iterdir():  # data must reach the disk before the rename makes it visible
        if not f.is_file():
            continue
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        f.chmod(0o644)  # safetensors writes 0600; a cache is readable like any other
    tmp.chmod(0o755)  # mkdtemp makes 0700
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)
