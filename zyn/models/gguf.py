"""GGUF files into transformers checkpoints: transformers de-quantises them to float32, and
this module saves the result (which ``save_pretrained`` refuses for a GGUF-loaded model),
reloads it and requires identical weights and logits before the cache accepts it.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelDependencyError, ModelError
from .cache import WEIGHTS, Progress
from .presets import MODELS_EXTRA


def require_support() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelDependencyError(f"loading GGUF weights needs {' and '.join(missing)}: "
                                   f"{MODELS_EXTRA} (or: pip install {' '.join(missing)})")


def convert(gguf: Path, out: Path, progress: Progress | None) -> None:
    """De-quantise `gguf` with transformers and save a float32 checkpoint into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    # The header tells the model family; asking AutoConfig would parse the whole vocabulary once
    # more (~15 s for a 150k-token GGUF) before from_pretrained parses it again.
    cls = AutoModelForSeq2SeqLM if architecture(gguf) in _GGUF_SEQ2SEQ else AutoModelForCausalLM
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


def architecture(path: Path) -> str | None:
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


def auto_class(config: Any):
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

    original = getattr(mod, "tqdm", None)

    def counted(iterable, *args, **kwargs):
        items = list(iterable)
        for i, item in enumerate(items):
            yield item
            if progress:
                progress("convert", i + 1, len(items))

    if original is not None:
        mod.tqdm = counted
    try:
        with hidden_progress_bars():
            yield
    finally:
        if original is not None:
            mod.tqdm = original


@contextlib.contextmanager
def hidden_progress_bars() -> Iterator[None]:
    """transformers' progress bars (one per weight load) hidden for the duration; restored after."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _save_checkpoint(model: Any, tokenizer: Any, out: Path) -> None:
    """Save what ``save_pretrained`` refuses to save for a GGUF-loaded model, piece by piece."""
    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    # The weights are plain float32 now; a leftover GGUF quantization_config would send the reload
    # looking for the .gguf file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF-loaded config names no class; TRL rebuilds a reference policy (KL term) from this folder
    # by `architectures`, as transformers' own save_pretrained would have written it.
    if not getattr(config, "architectures", None):
        config.architectures = [type(model).__name__]
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

    reloaded = auto_class(model.config).from_pretrained(out, dtype=torch.float32)
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
