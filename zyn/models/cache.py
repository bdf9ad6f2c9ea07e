"""The cache of converted checkpoints: where it lives, whether a folder in it is current, and
how a folder gets into it.

A cached name is a symbolic link to a versioned folder (``.NAME.v-*``). A build writes a new
versioned folder under an ``fcntl`` lock (concurrent builders end with one good copy), then
swaps the link in one atomic step, so a reader sees the old or the new copy, never a missing
one; the previous version is kept until the next build for readers still loading it.

Each cached folder holds ``zyn-manifest.json``: the cache format, the record of the source it
was built from, each file's size and sha256, and the versions of the libraries that built it.
``zyn-verified.json`` records each file's identity (inode, size, modification and change
times) when its content was last checked against the manifest: a load compares identities
(cheap) and re-hashes any file whose identity changed, so changed weights are never loaded
unnoticed, even at the same size and with the modification time put back.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ModelError

try:  # POSIX; elsewhere concurrent prepares are not serialised (the atomic rename still holds)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = 2  # bump when the cached folder's layout or contents change; older caches are rebuilt
# 2: config.json names the model class (`architectures`), which trainers read to rebuild a reference model
MANIFEST = "zyn-manifest.json"
VERIFIED = "zyn-verified.json"
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
        deep: re-hash every file against the manifest (slow: reads gigabytes); otherwise only
            files whose identity changed since they were last verified are re-hashed.

    Returns:
        None when valid, else a short reason.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "not prepared"
    except (OSError, ValueError):
        return "unreadable manifest"
    files = _manifest_files(manifest)
    if files is None:
        return "malformed manifest"
    if manifest.get("format") != CACHE_FORMAT:
        return f"cache format {manifest.get('format')} (current {CACHE_FORMAT})"
    if not isinstance(manifest.get("source"), dict) or any(manifest["source"].get(k) != v
                                                           for k, v in source.items()):
        return "built from a different source file"
    verified = {} if deep else _read_verified(folder)
    for name, (size, digest) in files.items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != size:
            return f"{name} missing or truncated"
        if verified.get(name) != _identity(f) and sha256_file(f) != digest:
            return f"{name} corrupted (its sha256 differs from the manifest)"
    if verified != {name: _identity(folder / name) for name in files}:
        _write_verified(folder, files)  # every file was just checked: remember their identities
    return None


def checkpoint_id(folder: Path) -> str | None:
    """A digest of what the cached folder holds (every file's name, size and sha256, from its
    manifest), or None if it has no readable manifest. Two folders with the same id hold the
    same weights, config and tokenizer; `check_cache` has verified the manifest against the
    files before a load. Keys what is measured once per model (`backends.hf.checks`)."""
    try:
        files = _manifest_files(json.loads((Path(folder) / MANIFEST).read_text()))
    except (OSError, ValueError):
        return None
    if files is None:
        return None
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _manifest_files(manifest) -> dict[str, tuple[int, str]] | None:
    """{file name: (size, sha256)} of a manifest, or None if it does not have that shape."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        return None
    out = {}
    for name, info in files.items():
        ok = (isinstance(name, str) and "/" not in name and name not in ("", ".", "..") and isinstance(info, dict)
              and isinstance(info.get("size"), int) and isinstance(info.get("sha256"), str))
        if not ok:
            return None
        out[name] = (info["size"], info["sha256"])
    return out


def _identity(path: Path) -> list[int]:
    """What changes whenever a file's content does: any write updates the change time,
    which, unlike the modification time, cannot be set back."""
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_verified(folder: Path) -> dict:
    try:
        data = json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_verified(folder: Path, files) -> None:
    """Record the files' identities, atomically; skipped where the cache is read-only."""
    record = {name: _identity(folder / name) for name in files}
    with contextlib.suppress(OSError):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{VERIFIED}.")
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / VERIFIED)


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
        reason = None if force else check_cache(target, source, deep=deep)
        if not force and reason is None:
            return target
        if reason not in (None, "not prepared"):
            warnings.warn(f"zyn: the cached copy {target} is not usable ({reason}); rebuilding it", stacklevel=3)
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            _write_manifest(tmp, source)
            _publish(tmp, target)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            # disk full, permissions (safetensors' writer reports a full disk as its own error, not an
            # OSError): say which cache, as a zyn error
            if isinstance(e, OSError) or "No space left" in str(e) or type(e).__name__ == "SafetensorError":
                raise ModelError(f"preparing {target.name} in {target.parent} failed: {e}") from e
            raise
    return target


def _remove_leftovers(target: Path) -> None:
    """Temporary folders of builds that crashed, and versions older than the current one;
    safe to delete while holding the lock."""
    current = os.readlink(target) if target.is_symlink() else None
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*", f".{target.name}.v-*"):
        for stale in target.parent.glob(pattern):
            if stale.name != current:
                shutil.rmtree(stale, ignore_errors=True)


def _write_manifest(folder: Path, source: dict) -> None:
    files = {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(folder.iterdir())
             if f.is_file() and f.name != VERIFIED and not f.name.startswith(".")}
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
    """Make the finished folder the cached copy: rename it to a versioned name, then point the
    link `target` at it in one atomic step (readers see the old or the new copy, never none)."""
    for f in tmp.iterdir():  # data must reach the disk before the rename makes it visible
        if not f.is_file():
            continue
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        f.chmod(0o644)  # safetensors writes 0600; a cache is readable like any other
    tmp.chmod(0o755)  # mkdtemp makes 0700
    version = tmp.with_name(tmp.name.replace(".tmp-", ".v-", 1))
    os.rename(tmp, version)
    if target.exists() and not target.is_symlink():  # a cache from before versioned folders
        os.rename(target, target.with_name(f".{target.name}.old-{os.getpid()}"))
    link = target.with_name(f".{target.name}.link-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.symlink(version.name, link)
    os.replace(link, target)
    _write_verified(version, _manifest_files(json.loads((version / MANIFEST).read_text())))
