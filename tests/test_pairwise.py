"""Pairwise judging: both orders, exact complementarity, round-robin and pointwise ranking."""
import math
import re

import pytest

from zyn import PromptError, ZeroShotRewardModel
from zyn.pairwise import PairwiseJudge, best_of_n, rank, round_robin


class PositionBiasedBackend:
    """Reads "quality=q" of A and B from the pairwise prompt: log-odds = qA - qB + 1.5,
    so the judge always leans towards answering Yes (a position bias of +1.5)."""

    name = "fake-pairwise"

    def logodds(self, groups, yes, no):
        out = []
        for g in groups:
            row = []
            for q in g:
                qa, qb = (float(x) for x in re.findall(r"quality=(-?[\d.]+)", q.user))
                row.append(qa - qb + 1.5)
            out.append(row)
        return out


def cands(*qs):
    return [f"answer with quality={q}" for q in qs]


@pytest.fixture
def judge():
    return PairwiseJudge(PositionBiasedBackend())


def test_both_orders_sum_to_one_and_cancel_position_bias(judge):
    a, b = cands(2.0, 1.0)
    p_ab, p_ba = judge.raw([(a, b)])
    # raw readings are biased: both orders say "Yes" more often than not
    assert p_ab[0] > 0.5 and p_ba[0] > 0.5
    # debiased: (sigmoid(2.5) + 1 - sigmoid(0.5)) / 2, and the two directions sum to 1
    expected = (1 / (1 + math.exp(-2.5)) + 1 - 1 / (1 + math.exp(-0.5))) / 2
    assert judge.compare(a, b) == pytest.approx(expected, abs=1e-12)
    assert judge.compare(a, b) + judge.compare(b, a) == pytest.approx(1.0, abs=1e-12)
    # two identical candidates: exactly 1/2 although the raw judge says ~0.82
    assert judge.compare(a, a) == pytest.approx(0.5, abs=1e-12)


def test_round_robin_and_best_of_n(judge):
    c = cands(0.5, 3.0, 1.0, 2.0)
    wins = round_robin(judge, c)
    for i in range(4):
        assert wins[i][i] == 0.5
        for j in range(4):
            assert wins[i][j] + wins[j][i] == pytest.approx(1.0, abs=1e-12)
    r = judge.rank(c)
    # ranking follows quality: 3.0 (index 1), 2.0 (3), 1.0 (2), 0.5 (0)
    assert r.order == [1, 3, 2, 0] and r.method == "pairwise"
    assert best_of_n(c, judge) == c[1] == judge.best_of_n(c)
    # one candidate: nothing to compare, it wins
    assert rank(c[:1], judge).order == [0]


def test_a_bare_string_or_a_malformed_pair_is_refused_not_read_letter_by_letter(judge):
    from zyn.errors import InputError

    with pytest.raises(InputError, match="candidates: expected a list of texts, got str; wrap a single one"):
        judge.rank("abc")
    with pytest.raises(InputError, match="candidates: expected a list of texts, got str"):
        best_of_n("abc", judge=judge)
    with pytest.raises(InputError, match="pairs: expected a list of \\(a, b\\) pairs of texts, got str"):
        judge.compare_many("ab")
    with pytest.raises(InputError, match=r"pairs: item 1: expected a pair \(a, b\) of texts, got tuple \('x', 'y', 'z'\)"):
        judge.compare_many([("a", "b"), ("x", "y", "z")])


def test_pointwise_ranking_uses_the_reward_model():
    class Pointwise:
        def score(self, inputs):
            return [float(re.search(r"quality=(-?[\d.]+)", x if isinstance(x, str) else x["text"]).group(1)) / 10
                    for x in inputs]

    c = cands(0.5, 3.0, 1.0)
    r = rank(c, pointwise=Pointwise())
    assert r.order == [1, 2, 0] and r.method == "pointwise" and r.wins == []
    # with a question, the reward model sees question + candidate as a prompt/completion record
    r = rank(c, pointwise=Pointwise(), question="Which is best?")
    assert r.best == 1


def test_pairwise_prompt_set_needs_a_and_b():
    with pytest.raises(PromptError, match="a and b"):
        PairwiseJudge(PositionBiasedBackend(), prompt="sentiment")


def test_question_field_is_rendered(judge):
    rec = judge._record("x", "y", "What is 2+2?")
    (query,) = judge.prompt_set.render(rec)
    assert "What is 2+2?" in query.user and "Response A:\nx" in query.user
    # without a question the optional block is left out entirely
    (query,) = judge.prompt_set.render(judge._record("x", "y", None))
    assert query.user.startswith("Response A:\nx") and "Question" not in query.user


@pytest.mark.parametrize("fixture", ["tiny_causal", "tiny_seq2seq"])
def test_tiny_models_sum_to_one(fixture, request):
    model, tok = request.getfixturevalue(fixture)
    rm = ZeroShotRewardModel(model, tokenizer=tok, prompt="sentiment")
    judge = PairwiseJudge(rm)  # shares the loaded model
    pairs = [("good film", "bad film"), ("amazing", "awful plot"), ("okay", "okay")]
    fwd = judge.compare_many(pairs, question="Which review is kinder?")
    bwd = judge.compare_many([(b, a) for a, b in pairs], question="Which review is kinder?")
    for f, b in zip(fwd, bwd):
        assert 0.0 <= f <= 1.0
        assert abs(f + b - 1.0) < 1e-6
    # identical candidates are a coin toss whatever the model's position bias
    assert fwd[2] == pytest.approx(0.5, abs=1e-6)
    assert judge.rank(["good film", "bad film", "fine"]).order.__len__() == 3


def test_a_pair_the_judge_cannot_compare_costs_neither_candidate_its_other_wins():
    class Judge:  # x beats z (0.9), y loses to z (0.2), x vs y unscorable (NaN)
        def compare_many(self, pairs, question=None):
            table = {("x", "y"): float("nan"), ("x", "z"): 0.9, ("y", "z"): 0.2}
            return [table[p] for p in pairs]

    r = rank(["x", "y", "z"], judge=Judge())
    assert r.scores == pytest.approx([0.9, 0.2, 0.45]) and r.order == [0, 2, 1]
