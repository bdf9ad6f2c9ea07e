"""What a model name points at, classified without loading anything (`resolve`)."""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path

from ..errors import ModelNotFoundError
from .presets import PRESETS, Preset


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
