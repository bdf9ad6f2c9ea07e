"""Token trees: queries that start alike share those tokens, and nothing is padded.

A causal LM's state at a token depends only on the tokens before it, so queries that
begin with the same tokens (an ensemble's questions after a shared text, completions
of one prompt, templates' common heads) can share those tokens' computation. Sorting
the queries makes shared beginnings adjacent; merging each query with the one before
it builds a trie, laid out depth-first:

    queries (after the cached prefix)        packed tokens (one row)
      A B C x                                  A B C x y D E x
      A B C y                         parent  -1 0 1 2 2 -1 5 6
      D E x                            depth   0 1 2 3 3 0 1 2

Each token attends to the cached prefix, its ancestors and itself; a query's answer
is read at its last token. A root and its descendants form a *block*: a contiguous run
that attends to nothing outside itself and the prefix, so attention can be computed
block by block. Everything here is pure layout (token lists in, index lists out);
`attention_mask` turns a layout into the additive mask a model reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    """One forward pass's worth of queries, as a flattened token trie.

    Attributes:
        tokens: new token ids, depth-first.
        parents: index of each token's predecessor in its query, -1 for a root.
        depths: each token's position counted from the end of the cached prefix.
        ends: index of each query's last token, in the order the queries were given.
        blocks: (start, end) runs of tokens, each a root with all its descendants.
    """

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    ends: list[int]
    blocks: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.tokens)

    def allowed(self) -> torch.Tensor:
        """(S, S) bool: token i may attend to token j (j is i or one of its ancestors).

        In depth-first order j is an ancestor of i exactly when j <= i < j + size(j),
        with size(j) the number of tokens in j's subtree.
        """
        n = len(self.tokens)
        size = [1] * n
        for i in range(n - 1, -1, -1):
            if self.parents[i] >= 0:
                size[self.parents[i]] += size[i]
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        return (j <= i) & (i < j + torch.tensor(size)[None, :])


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pack(seqs: list[list[int]], min_shared: int = 1) -> Packed:
    """The trie of `seqs` (non-empty token lists, in any order), flattened depth-first.

    Queries are merged in sorted order, so shared beginnings meet; `ends` follows the
    order of `seqs`. A query that is a prefix of another is read inside the longer one.
    A query sharing fewer than `min_shared` tokens with the one before it starts a
    block of its own: computing a few tokens twice is cheaper than attention over one
    big block of unrelated queries that merely start with the same word.
    """
    if any(not s for s in seqs):
        raise ValueError("pack: every query needs at least one token")
    order = sorted(range(len(seqs)), key=seqs.__getitem__)
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    blocks: list[tuple[int, int]] = []
    ends = [0] * len(seqs)
    prev: list[int] = []
    path: list[int] = []  # token index of each depth along the previous query
    for q in order:
        seq = seqs[q]
        shared = _shared(seq, prev, min_shared)
        if shared == 0 and tokens:
            blocks.append((blocks[-1][1] if blocks else 0, len(tokens)))
        del path[shared:]
        for depth in range(shared, len(seq)):
            parents.append(path[-1] if path else -1)
            depths.append(depth)
            tokens.append(seq[depth])
            path.append(len(tokens) - 1)
        ends[q] = path[len(seq) - 1]
        prev = seq
    if tokens:
        blocks.append((blocks[-1][1] if blocks else 0, len(tokens)))
    return Packed(tokens, parents, depths, ends, blocks)


def plan(seqs: list[list[int]], budget: int, max_queries: int, min_shared: int = 1) -> list[list[list[int]]]:
    """Cut queries into forward passes laid out as one packed row.

    Returns passes, each a list of blocks, each a list of query indices. A pass holds
    at most `budget` trie tokens (a single longer query is a pass of its own) and
    `max_queries` queries; a block that would not fit is cut, and the tokens its parts
    share are then computed once in each part.
    """
    passes: list[list[list[int]]] = []
    tokens = queries = 0
    for members, size in _blocks(seqs, budget, max_queries, min_shared):
        if not passes or tokens + size > budget or queries + len(members) > max_queries:
            passes.append([])
            tokens = queries = 0
        passes[-1].append(members)
        tokens += size
        queries += len(members)
    return passes


def plan_rows(seqs: list[list[int]], budget: int, max_rows: int, min_shared: int = 1) -> list[list[list[int]]]:
    """Like `plan`, for a layout of one padded row per block: blocks sorted longest
    first (out-of-memory errors show at once), a pass holding at most `max_rows` rows
    and rows x its longest row <= `budget` tokens. With `min_shared` longer than any
    query, every query is a row of its own: plain length-sorted padded batches."""
    passes: list[list[list[int]]] = []
    width = 0
    for members, size in sorted(_blocks(seqs, budget, budget, min_shared), key=lambda b: -b[1]):
        if passes and len(passes[-1]) < max_rows and (len(passes[-1]) + 1) * width <= budget:
            passes[-1].append(members)
        else:
            passes.append([members])
            width = size  # longest first: a pass's first row is its widest
    return passes


def _blocks(seqs: list[list[int]], budget: int, max_queries: int, min_shared: int) -> list[tuple[list[int], int]]:
    """Sorted queries grouped into blocks (query indices, trie tokens): a block ends
    where a query shares no token with the one before it, or where it would outgrow
    `budget` tokens or `max_queries` queries."""
    blocks: list[tuple[list[int], int]] = []
    prev: list[int] = []
    for q in sorted(range(len(seqs)), key=seqs.__getitem__):
        seq = seqs[q]
        shared = _shared(seq, prev, min_shared)
        new = len(seq) - shared
        if not blocks or shared == 0 or blocks[-1][1] + new > budget or len(blocks[-1][0]) >= max_queries:
            blocks.append(([q], len(seq)))
        else:
            blocks[-1][0].append(q)
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + new)
        prev = seq
    return blocks


def _shared(seq: list[int], prev: list[int], min_shared: int) -> int:
    n = common_prefix_len(seq, prev)
    return n if n >= min_shared else 0


def attention_mask(allowed: torch.Tensor, past: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (..., S, past + S) from a (..., S, S) bool `allowed`: every token
    sees the `past` cached tokens and the tokens `allowed` says, nothing else."""
    lead = allowed.shape[:-1]
    full = torch.cat([torch.ones(*lead, past, dtype=torch.bool), allowed], dim=-1)
    mask = torch.zeros(full.shape, dtype=dtype)
    return mask.masked_fill_(~full, torch.finfo(dtype).min)
