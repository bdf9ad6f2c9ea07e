"""Token tries and the planner's passes: pure index arithmetic, checked by hand and against brute force."""
import random

import pytest
import torch

from zyn.backends.hf.planner import MIN_SHARED, common_prefix, plan_call
from zyn.backends.hf.trie import attention_mask, common_prefix_len, concat, pack


def test_docstring_example():
    tree = pack([[1, 2, 3, 9], [4, 5, 9], [1, 2, 3, 8]])
    # sorted: 1238, 1239, 459 -> the 8 and the 9 hang off the shared 3
    assert tree.tokens == [1, 2, 3, 8, 9, 4, 5, 9]
    assert tree.parents == [-1, 0, 1, 2, 2, -1, 5, 6]
    assert tree.depths == [0, 1, 2, 3, 3, 0, 1, 2]
    assert tree.ends == [4, 7, 3]  # in the order given
    assert tree.blocks == [(0, 5), (5, 8)]


def test_a_query_inside_another_is_read_there():
    tree = pack([[1, 2, 3], [1, 2], [7]])
    assert tree.tokens == [1, 2, 3, 7] and tree.ends == [2, 1, 3]


def test_identical_queries_share_every_token():
    tree = pack([[5, 6], [5, 6]])
    assert tree.tokens == [5, 6] and tree.ends == [1, 1]


def test_empty_query_is_refused():
    with pytest.raises(ValueError, match="at least one token"):
        pack([[1], []])


def _ancestors(parents, i):
    out = {i}
    while parents[i] >= 0:
        i = parents[i]
        out.add(i)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_allowed_is_ancestors_and_self_and_paths_spell_the_queries(seed):
    rng = random.Random(seed)
    seqs = [[rng.randint(0, 3) for _ in range(rng.randint(1, 7))] for _ in range(12)]
    tree = pack(seqs)
    allowed = tree.allowed()
    for i in range(len(tree)):
        assert set(torch.nonzero(allowed[i]).flatten().tolist()) == _ancestors(tree.parents, i)
        assert tree.depths[i] == len(_ancestors(tree.parents, i)) - 1
    for q, seq in enumerate(seqs):
        path = sorted(_ancestors(tree.parents, tree.ends[q]))
        assert [tree.tokens[i] for i in path] == seq
    # blocks tile the row, and no token attends across a block boundary
    assert tree.blocks[0][0] == 0 and tree.blocks[-1][1] == len(tree)
    for (a, b), (c, _) in zip(tree.blocks, tree.blocks[1:]):
        assert b == c and not allowed[c:, a:b].any()


def test_trie_is_never_larger_than_the_queries():
    seqs = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6], [9]]
    assert len(pack(seqs)) == 4 + 1 + 1 + 1


def _passes(seqs, layout, budget, max_queries, min_shared=1):
    plan = plan_call(seqs, layout, budget, max_queries, min_shared)
    assert plan.prefix == common_prefix(seqs) and plan.tails == [s[len(plan.prefix):] for s in seqs]
    return plan


@pytest.mark.parametrize("budget, max_queries", [(5, 100), (8, 2), (1000, 3), (1000, 1000)])
def test_packed_passes_cover_each_query_once_within_limits(budget, max_queries):
    rng = random.Random(budget + max_queries)
    seqs = [[9] + [rng.randint(0, 2) for _ in range(rng.randint(1, 6))] for _ in range(30)]
    plan = _passes(seqs, "packed", budget, max_queries)
    flat = [q for p in plan.passes for q in p.queries]
    assert sorted(flat) == list(range(30))
    for p in plan.passes:
        (tree,) = p.tries
        assert len(p.queries) <= max_queries
        assert len(tree) <= budget or len(p.queries) == 1
        # the trie built by the planner is the trie of the pass's queries, ends in pass order
        for q, end in zip(p.queries, tree.ends):
            path = sorted(_ancestors(tree.parents, end))
            assert [tree.tokens[i] for i in path] == plan.tails[q]


def test_rows_keep_rows_times_width_within_budget():
    rng = random.Random(3)
    seqs = [[rng.randint(0, 5) for _ in range(rng.randint(1, 12))] for _ in range(40)]
    plan = _passes(seqs, "rows", budget=30, max_queries=4)
    assert sorted(q for p in plan.passes for q in p.queries) == list(range(40))
    widths = []
    for p in plan.passes:
        rows = [len(t) for t in p.tries]
        assert len(rows) <= 4 and (len(rows) * max(rows) <= 30 or len(rows) == 1)
        assert sum(len(t.ends) for t in p.tries) == len(p.queries)
        widths.append(max(rows))
    assert widths == sorted(widths, reverse=True)  # longest first


def test_padded_plan_shares_nothing():
    seqs = [[1, 2, 3], [1, 2, 4, 5], [1, 2]]
    plan = plan_call(seqs, "padded", budget=100, max_queries=8)
    assert plan.prefix == [] and plan.tails == seqs and [p.queries for p in plan.passes] == [[1, 0, 2]]
    assert all(p.tries == [] for p in plan.passes)


@pytest.mark.parametrize("layout", ["packed", "rows", "padded"])
def test_split_halves_a_pass_and_keeps_its_queries(layout):
    rng = random.Random(5)
    seqs = [[rng.randint(0, 3) for _ in range(rng.randint(1, 9))] for _ in range(12)]
    plan = plan_call(seqs, layout, budget=1000, max_queries=64, min_shared=1)
    (p,) = plan.passes
    first, second = plan.split(p)
    assert sorted(first.queries + second.queries) == sorted(p.queries) and first.queries and second.queries
    if layout == "packed":  # each half carries the trie of its own queries
        for half in (first, second):
            assert len(half.tries[0].ends) == len(half.queries)


def test_concat_shifts_indices():
    a, b = pack([[1, 2], [1, 3]]), pack([[4]])
    both = concat([a, b])
    assert both.tokens == [1, 2, 3, 4] and both.parents == [-1, 0, 0, -1]
    assert both.ends == [1, 2, 3] and both.blocks == [(0, 3), (3, 4)]


def test_attention_mask_sees_the_past_and_what_is_allowed():
    allowed = torch.tensor([[True, False], [True, True]])
    mask = attention_mask(allowed, past=2, dtype=torch.float32)
    low = torch.finfo(torch.float32).min
    assert mask.tolist() == [[0, 0, 0, low], [0, 0, 0, 0]]


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2


def test_min_shared_splits_queries_that_merely_start_alike():
    seqs = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [1, 7, 8]]
    assert pack(seqs).blocks == [(0, 8)]  # all three share the 1
    tree = pack(seqs, min_shared=3)
    assert tree.tokens == [1, 2, 3, 4, 5, 6, 1, 7, 8] and tree.blocks == [(0, 6), (6, 9)]
    plan = plan_call([[0] + s for s in seqs] + [[0, 9]], "packed", 100, 100, min_shared=3)
    (p,) = plan.passes
    assert plan.prefix == [0] and p.tries[0].blocks == [(0, 6), (6, 9), (9, 10)]


def test_one_pass_computes_an_uncached_prefix_in_the_pass():
    """A packed call of one pass whose prefix is not cached has no separate prefix pass; a
    cached prefix, a call of several passes, the rows layout and an unknown cache keep it."""
    head = list(range(100, 120))
    seqs = [head + [1, 2, 3], head + [1, 2, 4], head + [7, 8]]
    inline = plan_call(seqs, "packed", budget=512, max_queries=64, cached=[])
    assert inline.prefix == [] and inline.tails == seqs and len(inline.passes) == 1
    (tree,) = inline.passes[0].tries
    assert len(tree) == len(pack(seqs, MIN_SHARED)) < sum(map(len, seqs))  # the prefix once, in the trie
    assert plan_call(seqs, "packed", 512, 64, cached=[5, 6]).prefix == []  # another prefix is cached
    assert plan_call(seqs, "packed", 512, 64, cached=head).prefix == head
    assert plan_call(seqs, "packed", 512, 64).prefix == head  # cache unknown
    assert plan_call(seqs, "rows", 512, 64, cached=[]).prefix == head
    several = plan_call(seqs, "packed", budget=4, max_queries=64, cached=[])
    assert several.prefix == head and len(several.passes) > 1
    # one pass with the prefix cached, but not once it is in every tail: the cache stays
    tight = plan_call(seqs, "packed", budget=len(pack([s[20:] for s in seqs], MIN_SHARED)), max_queries=64,
                      cached=[])
    assert tight.prefix == head and len(tight.passes) == 1
