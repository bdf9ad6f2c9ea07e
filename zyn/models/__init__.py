"""Resolve and load model names: hub ids, local folders, .gguf files, offline presets.

A model name is one of

- a preset (``qwen2.5-coder-0.5b-instruct``, ``gemma-3-270m``, ``smollm2-135m-instruct``): real
  weights shipped as GGUF files inside package-registry packages, so they work without a model hub;
- a local folder (a transformers checkpoint, or a folder holding one ``.gguf`` file);
- a ``.gguf`` file;
- a remote server, ``openai+http(s)://host:port/v1`` or ``vllm+http(s)://...`` (only classified
  here; the OpenAI backend talks to it);
- otherwise a model-hub id (``google/flan-t5-large``), loaded by transformers as usual. Where
  the hub does not answer (asked once per process, `hub`), it loads from the local hub cache
  or fails at once with the reason, instead of after transformers' ~23 s of retries.

GGUF weights are de-quantised once into a cache folder (``$ZYN_CACHE``, default
``$XDG_CACHE_HOME/zyn`` or ``~/.cache/zyn``) as a plain transformers checkpoint: float32
``model.safetensors``, ``config.json``, ``generation_config.json`` and the tokenizer files, plus
``zyn-manifest.json`` recording the source's sha256 and the cache format. Later loads read that
folder, which takes seconds instead of the minute a GGUF de-quantisation takes. A load in
bfloat16 or float16 uses a 16-bit copy of that checkpoint (``<folder>@bfloat16``), made once
on first use, so it maps half the bytes.

Cache writes are atomic (a temporary folder beside the target, renamed into place) and serialised
by an ``fcntl`` file lock, so concurrent ``prepare`` calls end with one good copy. This package
never prints; long steps report through an optional ``progress(stage, done, total)`` callback.

The package, one concept per module: `sources` (what a name points at), `presets` (the
offline presets and their integrity), `cache` (the converted-checkpoint cache), `gguf`
(GGUF to checkpoint), `hub` (whether the model hub answers), `loading` (prepare and load any name).
"""
from ..errors import ModelDependencyError, ModelError, ModelIntegrityError, ModelNotFoundError
from .cache import CACHE_FORMAT, Progress, cache_root, check_cache
from .loading import load_pretrained, load_tokenizer, prepare
from .presets import DEFAULT_JUDGE, DEFAULT_POLICY, PRESETS, Part, Preset, PresetStatus, assemble, preset_status
from .sources import ModelSource, resolve

__all__ = [
    "CACHE_FORMAT", "DEFAULT_JUDGE", "DEFAULT_POLICY", "PRESETS", "ModelError", "ModelNotFoundError",
    "ModelIntegrityError", "ModelDependencyError", "ModelSource", "Preset", "Part", "PresetStatus", "Progress",
    "cache_root", "resolve", "load_pretrained", "load_tokenizer", "prepare", "assemble", "preset_status", "check_cache",
]
