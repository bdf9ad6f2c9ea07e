"""Which queries run together: a call's layout, decided once, and each pass's trie.

The backend hands the planner a call's distinct token lists and a layout; the planner
returns a `CallPlan` that the runner executes pass by pass:

    packed   causal LM: the tokens every query starts with (the prefix) come from a
             cache; the rest of the queries form token tries (`trie.py`), several
             per pass laid out one after the other in one row (no padding; CPU)
    rows     the same tries, one right-padded row each (GPU: wide products beat packing)
    padded   one left-padded row per query, nothing shared, in length-sorted batches:
             the reference the shared layouts are checked against, the fallback for
             a model they do not reproduce, and (right-padded) the seq2seq layout

Every trie is built here, once per pass; the runner only turns it into tensors. The
padded batches use no trie code at all, so the reference stays independent of what it
checks.
"""
from __future__ import annotations

from dataclasses import dataclass

from .trie import Packed, common_prefix_len, concat, pack, shared_len

# Queries merge into one block of a trie only when they share at least this many
# tokens (after the call's prefix): texts that merely start with the same word would
# otherwise make one big block, whose attention costs more than the word.
MIN_SHARED = 8
LAYOUTS = ("packed", "rows", "padded")


@dataclass
class Pass:
    """One forward pass.

    Attributes:
        queries: the call's query indices, in the order the runner returns their values.
        tries: packed: one trie holding every query; rows: one trie per row, the
            queries row by row; padded: empty (each query is a row of its own).
    """

    queries: list[int]
    tries: list[Packed]


@dataclass
class CallPlan:
    """A call's passes. `tails[q]` is query q after the shared `prefix` (the whole
    query in the padded layout, whose prefix is empty)."""

    layout: str
    prefix: list[int]
    tails: list[list[int]]
    passes: list[Pass]
    min_shared: int = MIN_SHARED

    def split(self, p: Pass) -> tuple[Pass, Pass]:
        """`p` in two halves (after running out of memory): by rows or blocks, or by
        queries where it is a single block."""
        if self.layout == "padded":
            half = len(p.queries) // 2
            return Pass(p.queries[:half], []), Pass(p.queries[half:], [])
        groups = self._groups(p)
        if len(groups) == 1:
            half = len(groups[0]) // 2
            groups = [groups[0][:half], groups[0][half:]]
        half = len(groups) // 2
        return self._pass(groups[:half]), self._pass(groups[half:])

    def _groups(self, p: Pass) -> list[list[int]]:
        """The query indices of each block (packed) or row (rows) of `p`."""
        if self.layout == "rows":
            sizes = [len(t.ends) for t in p.tries]
        else:
            sizes = [len(_block_ends(p.tries[0], a, b)) for a, b in p.tries[0].blocks]
        groups, at = [], 0
        for n in sizes:
            groups.append(p.queries[at:at + n])
            at += n
        return groups

    def _pass(self, groups: list[list[int]]) -> Pass:
        tries = [pack([self.tails[q] for q in g], self.min_shared) for g in groups]
        queries = [q for g in groups for q in g]
        return Pass(queries, tries if self.layout == "rows" else [concat(tries)])


def plan_call(seqs: list[list[int]], layout: str, budget: int, max_queries: int,
              min_shared: int = MIN_SHARED, cached: list[int] | None = None) -> CallPlan:
    """The passes that score `seqs` (non-empty token lists) in `layout`.

    A pass holds at most `max_queries` queries (rows, where rows are padded) and
    `budget` tokens (rows x the longest row, where rows are padded); a single longer
    query is a pass of its own.

    The queries' common prefix is computed once and cached (`cached`: the prefix the
    cache holds now, if known), except in a packed call of one pass whose prefix is
    not cached: there it is computed in that pass, as the head of its trie (once per
    block), which saves a separate pass that would read every weight once more (on a
    CPU, a pass of a few hundred tokens costs about as much as one of ten).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if layout == "padded":
        passes = [Pass(batch, []) for batch in length_batches([len(s) for s in seqs], budget, max_queries)]
        return CallPlan(layout, [], seqs, passes, min_shared)
    plan = _plan_shared(seqs, layout, budget, max_queries, min_shared, common_prefix(seqs))
    if layout == "packed" and cached is not None and plan.prefix and plan.prefix != cached \
            and len(plan.passes) == 1:
        inline = _plan_shared(seqs, layout, budget, max_queries, min_shared, [])
        if len(inline.passes) == 1:
            return inline
    return plan


def _plan_shared(seqs: list[list[int]], layout: str, budget: int, max_queries: int, min_shared: int,
                 prefix: list[int]) -> CallPlan:
    """`plan_call` of a shared layout with `prefix` cached."""
    tails = [seq[len(prefix):] for seq in seqs]
    # a padded row is one block, whose queries are bounded by the budget alone
    groups = _blocks(tails, budget, max_queries if layout == "packed" else budget, min_shared)
    tries = [pack([tails[q] for q in g], min_shared) for g in groups]
    sizes = [len(t) for t in tries]
    if layout == "packed":
        runs = _fill_row(sizes, [len(g) for g in groups], budget, max_queries)
    else:
        runs = length_batches(sizes, budget, max_queries)
    passes = []
    for run in runs:
        run_tries = [tries[i] for i in run]
        passes.append(Pass([q for i in run for q in groups[i]], run_tries if layout == "rows" else [concat(run_tries)]))
    return CallPlan(layout, prefix, tails, passes, min_shared)


def length_batches(lengths: list[int], budget: int, max_rows: int) -> list[list[int]]:
    """Indices in batches of padded rows: longest first (out-of-memory errors show at
    once), at most `max_rows` rows and rows x the first (longest) row <= `budget`."""
    batches: list[list[int]] = []
    for q in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        batch = batches[-1] if batches else None
        if batch is not None and len(batch) < max_rows and (len(batch) + 1) * lengths[batch[0]] <= budget:
            batch.append(q)
        else:
            batches.append([q])
    return batches


def common_prefix(seqs: list[list[int]]) -> list[int]:
    """Longest common prefix, leaving at least one token of every sequence after it."""
    first = seqs[0]
    n = min(min(common_prefix_len(first, s), len(s) - 1) for s in seqs)
    return first[:max(n, 0)]


def _fill_row(sizes: list[int], counts: list[int], budget: int, max_queries: int) -> list[list[int]]:
    """Consecutive blocks (by index) gathered into packed passes of <= `budget` tokens
    and <= `max_queries` queries."""
    runs: list[list[int]] = []
    tokens = queries = 0
    for i, (size, count) in enumerate(zip(sizes, counts)):
        if not runs or tokens + size > budget or queries + count > max_queries:
            runs.append([])
            tokens = queries = 0
        runs[-1].append(i)
        tokens += size
        queries += count
    return runs


def _blocks(seqs: list[list[int]], budget: int, max_queries: int, min_shared: int) -> list[list[int]]:
    """Sorted query indices grouped into trie blocks: a block ends where a query shares
    fewer than `min_shared` tokens with the one before it, or where it would outgrow
    `budget` trie tokens or `max_queries` queries (its parts then each compute the
    tokens they share)."""
    blocks: list[list[int]] = []
    size = 0
    prev: list[int] = []
    for q in sorted(range(len(seqs)), key=seqs.__getitem__):
        seq = seqs[q]
        shared = shared_len(seq, prev, min_shared)
        new = len(seq) - shared
        if not blocks or shared == 0 or size + new > budget or len(blocks[-1]) >= max_queries:
            blocks.append([q])
            size = len(seq)
        else:
            blocks[-1].append(q)
            size += new
        prev = seq
    return blocks


def _block_ends(trie: Packed, a: int, b: int) -> list[int]:
    return [e for e in trie.ends if a <= e < b]
