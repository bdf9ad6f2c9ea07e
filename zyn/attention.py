"""Attention over a packed row, computed block by block.

A packed row (see `zyn.packing`) holds many independent blocks of tokens after a
shared cached prefix. Any attention that honours a 4D mask computes it exactly, but
as one (S x prefix+S) product, mostly masked out: S = 512 packed tokens cost ~3x the
attention of the blocks alone. `blockwise` lets a model compute each block against the
prefix and itself only, with the same mask entries, so the numbers are unchanged:
it registers an attention function with transformers and switches the model to it
for the duration of a forward pass that passes ``zyn_blocks=``. Any other call (and
any model whose attention was not sdpa to begin with) goes through unchanged.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

NAME = "zyn_blocks"


@dataclass
class Blocks:
    """The blocks of a packed row (batch 1) and their slices of its (1, 1, S, past+S) mask."""

    spans: list[tuple[int, int]]
    masks: list[torch.Tensor]  # each (1, 1, n, past + n)

    @classmethod
    def of(cls, spans: list[tuple[int, int]], mask: torch.Tensor) -> "Blocks":
        past = mask.shape[-1] - mask.shape[-2]
        masks = [torch.cat([mask[..., a:b, :past], mask[..., a:b, past + a:past + b]], dim=-1) for a, b in spans]
        return cls(spans, masks)


def block_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                    zyn_blocks: Blocks | None = None, **kwargs):
    """transformers attention-interface function: per block when given `zyn_blocks`.

    query (1, H, S, D); key, value (1, Hkv, past + S, D), the cached prefix first.
    Returns (1, S, H, D) as transformers' own attention functions do.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if zyn_blocks is None or query.shape[0] != 1 or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    past = key.shape[2] - query.shape[2]
    gqa = query.shape[1] != key.shape[1]
    out = torch.empty_like(query)
    for (a, b), mask in zip(zyn_blocks.spans, zyn_blocks.masks):
        k = torch.cat([key[:, :, :past], key[:, :, past + a:past + b]], dim=2)
        v = torch.cat([value[:, :, :past], value[:, :, past + a:past + b]], dim=2)
        out[:, :, a:b] = F.scaled_dot_product_attention(query[:, :, a:b], k, v, attn_mask=mask.to(query.dtype),
                                                        scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


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
