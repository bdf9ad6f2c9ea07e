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
from dataclasses import dataclass, field
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
    _masks: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, spans: list[tuple[int, int]], mask: torch.Tensor) -> "Blocks":
        """From the blocks' (start, end) spans and the packed row's (1, 1, S, past + S) mask."""
        past = mask.shape[-1] - mask.shape[-2]
        return cls([(a, b, torch.cat([mask[..., a:b, :past], mask[..., a:b, past + a:past + b]], dim=-1))
                    for a, b in spans])

    def mask(self, i: int, dtype: torch.dtype, group: int = 1) -> torch.Tensor:
        """Block `i`'s mask in `dtype`, its rows repeated `group` times (the rows of the
        `group` query heads that share one key head, stacked); made once per pass, not per layer."""
        key = (i, dtype, group)
        if key not in self._masks:
            self._masks[key] = self.spans[i][2].to(dtype).repeat(1, 1, group, 1)
        return self._masks[key]


# A block whose attention scores (heads x n x past + n) number at most this many is computed
# as two float32 products and a softmax; a larger one by torch's fused kernel, which never
# holds all its scores at once. On the blocks of a batch of short texts (~50 queries
# against ~80 keys) the products run 1.2-1.4x faster than the kernel at either precision
# (benchmarks/RESULTS.md, "Attention of short blocks").
SMALL_BLOCK = 1 << 22  # 16 MB of float32 scores


def small_blocks(heads: int, past: int, blocks: Blocks) -> list[bool]:
    """Which blocks go through the products (at most `SMALL_BLOCK` scores), not the fused kernel."""
    return [heads * (b - a) * (past + b - a) <= SMALL_BLOCK for a, b, _ in blocks.spans]


def block_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                    zyn_blocks: Blocks | None = None, **kwargs):
    """transformers attention-interface function: per block when given `zyn_blocks`.

    query (1, H, S, D); key, value (1, Hkv, past + S, D), the cached prefix first.
    Returns (1, S, H, D) as transformers' own attention functions do. Each block is
    computed in float32 whatever the model's precision: a small one as two products and a
    softmax, a large one by torch's fused kernel, which accumulates in float32 (plain bf16
    products would round the scores to 8 bits; see benchmarks/RESULTS.md).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kwargs.pop("zyn_kv_only", False):
        raise _KVStored
    if (zyn_blocks is None or query.shape[0] != 1 or module.training or kwargs.get("softcap")
            or kwargs.get("sliding_window")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    _, heads, n_query, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    out = query.new_empty(n_query, heads, dim)
    past = key.shape[2] - n_query
    scale = scaling if scaling is not None else dim ** -0.5
    small = small_blocks(heads, past, zyn_blocks)
    if any(small):  # float32 copies once per layer, not once per block
        qf, kf, vf = query[0].float(), key[0].float(), value[0].float()
    for i, (a, b, _) in enumerate(zyn_blocks.spans):
        n = b - a
        if small[i]:
            # the `group` query heads that share a key head go in as the rows of one head:
            # keys and values are not repeated per query head, and the products are larger
            q = qf[:, a:b].reshape(kv_heads, group * n, dim)
            k = torch.cat([kf[:, :past], kf[:, past + a:past + b]], dim=1)  # (Hkv, past + n, D)
            v = torch.cat([vf[:, :past], vf[:, past + a:past + b]], dim=1)
            mask = zyn_blocks.mask(i, torch.float32, group)[0]  # (group * n, past + n), for every key head
            scores = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale)
            o = torch.bmm(torch.softmax(scores, dim=-1), v).view(heads, n, dim)
        else:
            k = torch.cat([key[:, :, :past], key[:, :, past + a:past + b]], dim=2)
            v = torch.cat([value[:, :, :past], value[:, :, past + a:past + b]], dim=2)
            o = F.scaled_dot_product_attention(query[:, :, a:b], k, v, attn_mask=zyn_blocks.mask(i, query.dtype),
                                               scale=scale, enable_gqa=group > 1)[0]
        out[a:b] = o.transpose(0, 1)  # cast to the model's precision on the way
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
