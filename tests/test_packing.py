"""Token-trie layout: pure index arithmetic, checked by hand and against brute force."""
import random

import pytest
import torch

from zyn.packing import attention_mask, common_prefix_len, pack, plan, plan_rows


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


@pytest.mark.parametrize("budget, max_queries", [(5, 100), (8, 2), (1000, 3), (1000, 1000)])
def test_plan_covers_each_query_once_within_limits(budget, max_queries):
    rng = random.Random(budget + max_queries)
    seqs = [[rng.randint(0, 2) for _ in range(rng.randint(1, 6))] for _ in range(30)]
    passes = plan(seqs, budget, max_queries)
    flat = [q for p in passes for block in p for q in block]
    assert sorted(flat) == list(range(30))
    for p in passes:
        queries = [q for block in p for q in block]
        assert len(queries) <= max_queries
        assert len(pack([seqs[q] for q in queries])) <= budget or len(queries) == 1


def test_plan_rows_keeps_rows_times_width_within_budget():
    rng = random.Random(3)
    seqs = [[rng.randint(0, 5) for _ in range(rng.randint(1, 12))] for _ in range(40)]
    passes = plan_rows(seqs, budget=30, max_rows=4)
    assert sorted(q for p in passes for b in p for q in b) == list(range(40))
    widths = []
    for p in passes:
        rows = [len(pack([seqs[q] for q in block])) for block in p]
        assert len(rows) <= 4 and (len(rows) * max(rows) <= 30 or len(rows) == 1)
        widths.append(max(rows))
    assert widths == sorted(widths, reverse=True)  # longest first


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
    assert [len(b) for p in plan(seqs, 100, 100, min_shared=3) for b in p] == [2, 1]
