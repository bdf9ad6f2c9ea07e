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
`attention_mask` turns a layout into the additive mask a model reads; the planner
(`planner.py`) decides which queries share a row.
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
        shared = shared_len(seq, prev, min_shared)
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


def shared_len(seq: list[int], prev: list[int], min_shared: int) -> int:
    """Tokens `seq` shares with `prev` in a trie: their common prefix, or 0 if shorter
    than `min_shared`."""
    n = common_prefix_len(seq, prev)
    return n if n >= min_shared else 0


def concat(tries: list[Packed]) -> Packed:
    """Tries laid one after the other in one row: their tokens, blocks and `ends`
    in the order given (indices shifted, each trie still attending only to itself)."""
    out = Packed([], [], [], [], [])
    for t in tries:
        at = len(out.tokens)
        out.tokens += t.tokens
        out.parents += [p + at if p >= 0 else -1 for p in t.parents]
        out.depths += t.depths
        out.ends += [e + at for e in t.ends]
        out.blocks += [(a + at, b + at) for a, b in t.blocks]
    return out


def attention_mask(allowed: torch.Tensor, past: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (..., S, past + S) from a (..., S, S) bool `allowed`: every token
    sees the `past` cached tokens and the tokens `allowed` says, nothing else."""
    lead = allowed.shape[:-1]
    full = torch.cat([torch.ones(*lead, past, dtype=torch.bool), allowed], dim=-1)
    mask = torch.zeros(full.shape, dtype=dtype)
    return mask.masked_fill_(~full, torch.finfo(dtype).min)
