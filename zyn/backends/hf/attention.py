"""Attention over a packed row: block by block, and the last layer at the answers only.

A packed row (see `trie.py`) holds many independent blocks of tokens after a shared
cached prefix. Any attention that honours a 4D mask computes it exactly, but as one
(S x prefix+S) product, mostly masked out. `blockwise` lets a model compute each block
against the prefix and itself only, with the same mask entries, so the numbers are
unchanged up to rounding: it registers an attention function with transformers and switches the
model to it for the duration of a forward pass that passes ``zyn_blocks=`` (a change
of model state, scoped by the context manager; the backend's lock keeps other calls
out meanwhile). Any other call (and any model whose attention was not sdpa to begin
with) goes through unchanged.

The last decoder layer's output is read at the answer positions only, yet every
token runs through it. `last_layer_at` runs it in two parts: every other token only
as far as its keys and values (stored in the cache; the attention function stops the
layer there), then the answer tokens in full against them, so ~95% of the last
layer's work on the other tokens is skipped (1/L of the model). It swaps the layer in
the model's layer list for the duration of the context manager only.

Whether either reproduces a given architecture is checked once per model (`checks.py`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

NAME = "zyn_blocks"


class _KVStored(Exception):
    """Raised by the attention function to stop a layer once its keys and values are cached."""


@dataclass
class Blocks:
    """The blocks of a packed row (batch 1), as attention computes them: each block's
    (start, end) in the row and its (1, 1, n, past + n) mask against the cached prefix
    and itself."""

    spans: list[tuple[int, int, torch.Tensor]]

    @classmethod
    def of(cls, spans: list[tuple[int, int]], mask: torch.Tensor) -> "Blocks":
        """From the blocks' (start, end) spans and the packed row's (1, 1, S, past + S) mask."""
        past = mask.shape[-1] - mask.shape[-2]
        return cls([(a, b, torch.cat([mask[..., a:b, :past], mask[..., a:b, past + a:past + b]], dim=-1))
                    for a, b in spans])


def block_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                    zyn_blocks: Blocks | None = None, **kwargs):
    """transformers attention-interface function: per block when given `zyn_blocks`.

    query (1, H, S, D); key, value (1, Hkv, past + S, D), the cached prefix first.
    Returns (1, S, H, D) as transformers' own attention functions do. Each block goes
    through torch's fused kernel, which accumulates in float32 whatever the precision
    (plain bf16 products would round the scores to 8 bits; see benchmarks/RESULTS.md).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kwargs.pop("zyn_kv_only", False):
        raise _KVStored
    if (zyn_blocks is None or query.shape[0] != 1 or module.training or kwargs.get("softcap")
            or kwargs.get("sliding_window")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    out = query.new_empty(query.shape[2], query.shape[1], query.shape[3])  # (S, H, D)
    past = key.shape[2] - query.shape[2]
    gqa = query.shape[1] != key.shape[1]
    for a, b, mask in zyn_blocks.spans:
        k = torch.cat([key[:, :, :past], key[:, :, past + a:past + b]], dim=2)
        v = torch.cat([value[:, :, :past], value[:, :, past + a:past + b]], dim=2)
        o = F.scaled_dot_product_attention(query[:, :, a:b], k, v, attn_mask=mask.to(query.dtype), scale=scaling,
                                           enable_gqa=gqa)
        out[a:b] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


@contextlib.contextmanager
def blockwise(model) -> Iterator[bool]:
    """Within the block, `model` computes attention per block when called with
    ``zyn_blocks=``; yields whether it does (only models running sdpa are switched)."""
    from transformers import AttentionInterface

    config = model.config
    before = getattr(config, "_attn_implementation", None)
    if before != "sdpa":
        yield False
        return
    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, block_attention)
    config._attn_implementation = NAME
    try:
        yield True
    finally:
        config._attn_implementation = before


class _LastLayerAt(nn.Module):
    """Stands in for a decoder layer during one packed pass (batch 1): outputs the
    layer at positions `keep` only, (1, K, D), having cached every position's keys
    and values. The cache of this layer then holds [past, other tokens, kept tokens],
    and the kept tokens' mask rows are permuted to match."""

    def __init__(self, layer: nn.Module, keep: torch.Tensor, index: int):
        super().__init__()
        self.layer = layer
        self.keep = keep
        self.index = index  # the layer's place in the cache

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, position_ids=None, **kwargs):
        n, keep = hidden_states.shape[1], self.keep
        kwargs.pop("zyn_blocks", None)
        rest = torch.ones(n, dtype=torch.bool, device=keep.device)
        rest[keep] = False
        rest = rest.nonzero().flatten()
        cos, sin = position_embeddings
        if len(rest):
            # the cache comes as ``cache`` (transformers >= 5.24) or ``past_key_values``
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            idx = self.index
            cached = cache.get_seq_length(idx) if cache is not None else None
            try:
                self.layer(hidden_states[:, rest], attention_mask=None, position_ids=position_ids[:, rest],
                           position_embeddings=(cos[:, rest], sin[:, rest]), zyn_kv_only=True, **kwargs)
            except _KVStored:
                pass
            else:
                raise RuntimeError("the layer ran past its attention: keys and values were not cached first")
            if cached is not None and cache.get_seq_length(idx) != cached + len(rest):
                raise RuntimeError("the layer did not cache its keys and values before attention")
        past = attention_mask.shape[-1] - n
        cols = torch.cat([torch.arange(past, device=keep.device), past + rest, past + keep])
        mask = attention_mask[:, :, keep][..., cols]
        return self.layer(hidden_states[:, keep], attention_mask=mask, position_ids=position_ids[:, keep],
                          position_embeddings=(cos[:, keep], sin[:, keep]), **kwargs)


@contextlib.contextmanager
def last_layer_at(body: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """Within the block, `body` (a decoder with a ``layers`` list, switched by
    `blockwise`) returns hidden states at positions `keep` only: (1, K, D)."""
    layers = body.layers
    last = layers[-1]
    layers[-1] = _LastLayerAt(last, keep, len(layers) - 1)
    try:
        yield
    finally:
        layers[-1] = last


def can_trim(body: nn.Module) -> bool:
    """Whether `last_layer_at` applies: a decoder whose layers sit in ``body.layers``."""
    return isinstance(getattr(body, "layers", None), nn.ModuleList) and len(body.layers) > 0
