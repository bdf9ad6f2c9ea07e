"""Prepare and load any model name: presets and GGUF files are converted into the cache
once (`prepare`), then every kind loads through transformers' Auto classes (`load_pretrained`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..errors import ModelError, ModelNotFoundError
from . import gguf, hub
from .cache import (MANIFEST, VERIFIED, WEIGHTS, Progress, build_cached, cache_root, check_cache, checkpoint_id,
                    sha256_file)
from .presets import PRESETS, Preset, assemble, part_paths, preset_dir, preset_source, verify_single
from .sources import resolve


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
    source = preset_source(preset)
    target = preset_dir(preset)
    if not force and check_cache(target, source, deep=deep) is None:
        return target
    paths = part_paths(preset)  # fail fast, before taking the lock, on missing packages
    gguf.require_support()

    def build(tmp: Path) -> None:
        if len(paths) == 1:  # one shipped file: verify it in place, no copy needed
            verify_single(preset, paths[0], progress)
            gguf.convert(paths[0], tmp, progress)
            return
        src_dir = tmp / "source"
        src_dir.mkdir()
        assembled = assemble(preset.name, src_dir / preset.filename, progress=progress)
        gguf.convert(assembled, tmp, progress)
        shutil.rmtree(src_dir)  # the GGUF is not needed once converted

    return build_cached(target, source, build, force=force, deep=deep, progress=progress)


def _prepare_gguf_file(path: Path, *, force: bool, deep: bool, progress: Progress | None) -> Path:
    target, source = _gguf_dir(path)
    if not force and check_cache(target, source, deep=deep) is None:
        return target
    gguf.require_support()
    earlier = _earlier_conversions(target, path)

    def build(tmp: Path) -> None:
        source["sha256"] = sha256_file(path, progress)  # recorded for provenance; no pinned value to match
        same = None if force else next((f for f, sha in earlier if sha == source["sha256"]), None)
        if same is not None:  # the same bytes under a new time (touched, copied back): linked, not converted
            for f in same.resolve().iterdir():
                if f.is_file() and f.name not in (MANIFEST, VERIFIED):
                    _link_or_copy(f, tmp / f.name)
            return
        gguf.convert(path, tmp, progress)

    folder = build_cached(target, source, build, force=force, deep=deep, progress=progress)
    for old, _ in earlier:  # superseded: the file at this path has changed since (1 GB each, else kept forever)
        _remove_cached(old)
    return folder


def _earlier_conversions(target: Path, path: Path) -> list[tuple[Path, str | None]]:
    """Cached conversions of the same .gguf path made when it had another size or time,
    with the sha256 of the file they were made from."""
    found = []
    for folder in target.parent.glob(f"{path.stem}-*"):
        if folder == target or folder.name.startswith("."):
            continue
        try:
            source = json.loads((folder / MANIFEST).read_text())["source"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(source, dict) and source.get("path") == str(path):
            found.append((folder, source.get("sha256")))
    return found


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _remove_cached(folder: Path) -> None:
    """A cached conversion: its link and the versioned folder it points at."""
    real = folder.resolve()
    if folder.is_symlink():
        folder.unlink(missing_ok=True)
    shutil.rmtree(real, ignore_errors=True)


def _gguf_dir(path: Path) -> tuple[Path, dict]:
    """Cache folder and source record for a user's GGUF file, keyed by path, size and mtime so a
    warm load needs no hashing; a changed file gets a new key and is converted again."""
    st = path.stat()
    source = {"kind": "gguf", "path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{path.stem}-{key}", source


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
    if device is not None and device_map is None:  # checked before anything is prepared or read
        from ..backends.hf.precision import resolve_device
        from ..errors import ZynError

        try:
            device = resolve_device(device)
        except ZynError as e:
            raise ModelError(str(e)) from None
    src, folder = _source_folder(name)
    wanted = _torch_dtype(dtype)
    if src.kind in ("preset", "gguf") and wanted in _reduced():
        try:
            folder = str(_precision_copy(Path(folder), wanted))
        except ModelError as e:  # a read-only or full cache: the float32 copy, converted while loading
            warnings.warn(f"zyn: no {str(wanted).removeprefix('torch.')} copy in the cache ({e}); loading the "
                          "float32 copy and converting it, which takes more memory", stacklevel=2)
    offline = hub.unreachable() if src.kind == "hub" else None  # asked once: no ~23 s of retries
    try:
        model, tokenizer = _load_folder(folder, device=device, dtype=dtype, device_map=device_map,
                                        local_files_only=offline is not None)
    except OSError as e:  # transformers' way of saying "no such model / no network"
        if src.kind == "local":
            raise ModelNotFoundError(f"cannot load the folder {folder}: {e}") from e
        why = (f"it is not in the local hub cache and {offline}" if offline
               else str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise ModelNotFoundError(f"could not load {src.name!r}: {why}. Without model-hub access use an "
                                 f"offline preset: {', '.join(PRESETS)}") from e
    except ValueError as e:  # e.g. "Unrecognized model": a folder without a usable config.json
        if src.kind != "local" or isinstance(e, ModelError):
            raise
        raise ModelError(f"cannot load the folder {folder}: it is not a transformers model folder "
                         f"({str(e).splitlines()[0]}); it needs config.json, the weights and the tokenizer "
                         "(save_pretrained writes them)") from e
    if src.kind in ("preset", "gguf"):
        # The cached checkpoint's identity: what the backend's checks measure once per
        # model is kept under it (`backends.hf.checks`). Hub ids and local folders have
        # none (their files are not pinned), so they are checked in every process.
        model.zyn_checkpoint = checkpoint_id(Path(folder))
    return model, tokenizer


def load_tokenizer(name: str | os.PathLike) -> Any:
    """The tokenizer of any model name `load_pretrained` takes, without its weights (a
    preset or .gguf file is prepared into the cache first, once): for a remote judge
    served from the same model, so that zyn applies its chat template and counts tokens here.

    Raises:
        ModelNotFoundError, ModelIntegrityError, ModelDependencyError, ModelError.
    """
    from transformers import AutoTokenizer

    src, folder = _source_folder(name)
    offline = hub.unreachable() if src.kind == "hub" else None
    only = {"local_files_only": True} if offline is not None else {}
    try:
        return AutoTokenizer.from_pretrained(folder, **_added_tokens(Path(folder)), **only)
    except (OSError, ValueError) as e:
        why = (f"it is not in the local hub cache and {offline}" if offline
               else str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise ModelNotFoundError(f"could not load the tokenizer of {src.name!r}: {why}") from e


def _source_folder(name: str | os.PathLike) -> tuple[Any, str]:
    """What `name` points at, and the folder (or hub id) transformers loads it from."""
    src = resolve(name)
    if src.kind == "remote":
        raise ModelError(f"{src.name!r} is a remote server; it is scored through the OpenAI backend, "
                         "not loaded here")
    return src, str(prepare(src.location)) if src.kind in ("preset", "gguf") else src.location


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

    return build_cached(folder.with_name(f"{folder.name}@{name}"), source, build, force=False, deep=False,
                         progress=None)


def _load_folder(folder: str, *, device: Any, dtype: Any, device_map: Any,
                 local_files_only: bool = False) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    only = {"local_files_only": True} if local_files_only else {}
    config = AutoConfig.from_pretrained(folder, **only)
    kwargs: dict[str, Any] = {"config": config, "dtype": _torch_dtype(dtype), **only}
    if local_files_only:  # the Auto classes' adapter lookup does not pass it on (transformers 5.x)
        kwargs["adapter_kwargs"] = only
    if device_map is not None:
        kwargs["device_map"] = device_map
    with gguf.hidden_progress_bars():  # the library never prints
        model = gguf.auto_class(config).from_pretrained(folder, **kwargs)
    if device is not None and device_map is None:
        model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, **_added_tokens(Path(folder)), **only)
    return model.eval(), tokenizer


def _added_tokens(folder: Path) -> dict:
    """``added_tokens_decoder`` for the tokenizer, read from the head of tokenizer.json, where
    transformers would read it itself (a tokenizer_config.json without it, no
    special_tokens_map.json or added_tokens.json): the same tokens, without a second full
    parse of the 11 MB file in Python (0.5 s of a 0.5B judge's start; transformers still
    parses it once, for the vocabulary). Empty (transformers' own way) where any of that
    does not hold."""
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "added_tokens_decoder" in config \
                or (folder / "special_tokens_map.json").exists() or (folder / "added_tokens.json").exists():
            return {}
        added = _head_value(folder / "tokenizer.json", "added_tokens")
    except (OSError, ValueError, KeyError, IndexError):
        return {}
    if not isinstance(added, list) or not all(isinstance(t, dict) and type(t.get("id")) is int
                                              and isinstance(t.get("content"), str) for t in added):
        return {}
    return {"added_tokens_decoder": {t["id"]: {k: v for k, v in t.items() if k != "id"} for t in added}}


def _head_value(path: Path, key: str, head: int = 1 << 16):
    """`_top_level_value` of the JSON file `path`, reading only its first `head` bytes
    where the value ends inside them (``added_tokens`` leads a tokenizer.json of 11 MB)."""
    with open(path, "rb") as f:
        start = f.read(head)
        if len(start) == head:
            try:
                return _top_level_value(start.decode("utf-8"), key)
            except (ValueError, IndexError):  # cut inside the value or a character, or the key is further on
                pass
        return _top_level_value((start + f.read()).decode("utf-8"), key)


def _top_level_value(text: str, key: str):
    """The value of `key` in the JSON object `text`, parsing only the members before it."""
    decoder, i = json.JSONDecoder(), _skip_space(text, 0)
    if text[i] != "{":
        raise ValueError("not a JSON object")
    i += 1
    while True:
        i = _skip_space(text, i)
        name, i = decoder.raw_decode(text, i)
        i = _skip_space(text, i)
        if not isinstance(name, str) or text[i] != ":":
            raise ValueError("not a JSON object")
        value, i = decoder.raw_decode(text, _skip_space(text, i + 1))
        if name == key:
            return value
        i = _skip_space(text, i)
        if text[i] != ",":
            raise KeyError(key)
        i += 1


def _skip_space(text: str, i: int) -> int:
    while text[i] in " \t\n\r":
        i += 1
    return i


def _reduced() -> tuple:
    import torch

    return (torch.bfloat16, torch.float16)


def _torch_dtype(dtype: Any) -> Any:
    """The dtype to load in: None is float32 (explicit: transformers' own default may
    follow the checkpoint), "auto" is left to transformers, a name goes through zyn's
    one precision resolver."""
    import torch

    from ..backends.hf.precision import parse_dtype
    from ..errors import ZynError

    if dtype is None:
        return torch.float32
    if dtype == "auto":
        return dtype
    if dtype == "fast":  # on the CPU, where zyn loads a model by name without a device: measured
        from ..backends.hf.precision import fastest_cpu_dtype

        return fastest_cpu_dtype()
    try:
        return parse_dtype(dtype)
    except ZynError as e:
        raise ModelError(str(e)) from None
