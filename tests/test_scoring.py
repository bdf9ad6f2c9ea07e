"""The pure maths: hand-computed cases with exact expected values."""
import math

import pytest
import torch

from zyn.scoring import SHAPES, answer_logodds, combine, combine_logodds, logit, logsumexp, shape_reward, sigmoid


def test_answer_logodds_single_ids():
    # l_yes = 3, l_no = 1: log-odds 2, P(yes) = sigmoid(2)
    logits = torch.tensor([[3.0, 1.0, 0.0]])
    assert answer_logodds(logits, [0], [1]).item() == pytest.approx(2.0)


def test_answer_logodds_sets_use_logsumexp():
    # yes set {0, 1} both at log 1 -> mass 2; no set {2} at 0 -> mass 1: log-odds log 2
    logits = torch.tensor([[0.0, 0.0, 0.0, 5.0]])
    assert answer_logodds(logits, [0, 1], [2]).item() == pytest.approx(math.log(2))


def test_answer_logodds_stable_for_huge_logits():
    # a naive softmax overflows here; the difference of logsumexps does not
    logits = torch.tensor([[1000.0, 990.0]])
    assert answer_logodds(logits, [0], [1]).item() == pytest.approx(10.0)


def test_answer_logodds_bf16_input_computed_in_float32():
    logits = torch.tensor([[2.0, -1.0]], dtype=torch.bfloat16)
    out = answer_logodds(logits, [0], [1])
    assert out.dtype == torch.float32 and out.item() == 3.0


def test_sigmoid_logit_roundtrip_and_extremes():
    for x in (-15.0, -1.0, 0.0, 2.5, 15.0):
        assert logit(sigmoid(x)) == pytest.approx(x, rel=1e-6)
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    assert logit(0.0) == -math.inf and logit(1.0) == math.inf


@pytest.mark.parametrize("lo", [-4.0, -0.3, 0.0, 1.7, 6.0])
def test_shapes_agree_with_p(lo):
    p = sigmoid(lo)
    assert shape_reward(lo, "prob") == pytest.approx(p)
    assert shape_reward(lo, "zyn") == pytest.approx((p - 0.5) * 10)
    assert shape_reward(lo, "logodds") == pytest.approx(math.log(p / (1 - p)))
    assert shape_reward(lo, "logprob") == pytest.approx(math.log(p))


def test_logprob_shape_stable_far_out():
    # log(sigmoid(-800)) = -800 exactly in the limit; naive log(0) would be -inf
    assert shape_reward(-800.0, "logprob") == pytest.approx(-800.0)


def test_unknown_shape():
    with pytest.raises(ValueError, match="unknown reward shape"):
        shape_reward(0.0, "banana")


def test_combine_mean_of_probabilities():
    # P = 0.5 and 0.9 -> mean 0.7 (Eq. 4)
    lo = combine_logodds([0.0, logit(0.9)], [1.0, 1.0], "mean")
    assert sigmoid(lo) == pytest.approx(0.7)


def test_combine_weighted_mean():
    # weights 3:1 of P = 0.2 and 0.6 -> 0.3
    lo = combine_logodds([logit(0.2), logit(0.6)], [3.0, 1.0], "mean")
    assert sigmoid(lo) == pytest.approx(0.3)


def test_combine_mean_logodds_and_min():
    assert combine_logodds([1.0, 3.0], [1.0, 1.0], "mean_logodds") == pytest.approx(2.0)
    assert combine_logodds([1.0, -3.0], [1.0, 1.0], "min") == -3.0


def test_combine_mean_keeps_digits_near_one():
    # both questions near certain: 1 - p is 1e-20, which float p alone cannot hold
    lo = combine_logodds([46.0, 46.0], [1.0, 1.0], "mean")
    assert lo == pytest.approx(46.0)


def test_combine_nan_propagates():
    assert math.isnan(combine_logodds([1.0, math.nan], [1.0, 1.0], "mean"))


def test_logsumexp_of_floats():
    # log(e^0 + e^0) = log 2; shifting by the max keeps 1000 from overflowing
    assert logsumexp([0.0, 0.0]) == pytest.approx(math.log(2))
    assert logsumexp([1000.0, 1000.0]) == pytest.approx(1000.0 + math.log(2))
    # no mass at all is -inf, not NaN; a single +inf is +inf
    assert logsumexp([-math.inf, -math.inf]) == -math.inf
    assert logsumexp([0.0, math.inf]) == math.inf


IDENTITY = (1.0, 0.0)


def test_combine_rows_become_question_columns():
    # rows (inputs) [1, 2] and [3, 4]: question 1 reads 1 then 3, question 2 reads 2 then 4
    c = combine([[1.0, 2.0], [3.0, 4.0]], [IDENTITY] * 2, ["yes", "yes"], [1.0, 1.0], "mean_logodds", "logodds")
    assert c.logodds == [[1.0, 3.0], [2.0, 4.0]]
    assert c.p_yes == [[sigmoid(1.0), sigmoid(3.0)], [sigmoid(2.0), sigmoid(4.0)]]
    # mean of log-odds: (1 + 2) / 2 and (3 + 4) / 2
    assert c.combined_logodds == [1.5, 3.5] and c.rewards == [1.5, 3.5]
    assert c.p_rewarded == [sigmoid(1.5), sigmoid(3.5)]


def test_combine_no_question_reports_p_yes_but_combines_p_no():
    # P(yes) 0.5 and 0.75; the second rewards "no": per question stays 0.75, the mean uses P(no) 0.25
    c = combine([[0.0, math.log(3)]], [IDENTITY] * 2, ["yes", "no"], [1.0, 1.0], "mean", "prob")
    assert c.p_yes[1] == [pytest.approx(0.75)]
    assert c.p_rewarded == [pytest.approx(0.375)] and c.rewards == c.p_rewarded


def test_combine_calibrates_before_orienting():
    # raw 1 under (scale 2, shift -1) is 1; the question rewards "no", so the combined log-odds is -1
    c = combine([[1.0]], [(2.0, -1.0)], ["no"], [1.0], "mean", "logodds")
    assert c.logodds == [[1.0]] and c.p_yes == [[sigmoid(1.0)]]
    assert c.combined_logodds == [pytest.approx(-1.0)] and c.rewards == c.combined_logodds


def test_combine_weights():
    # weights 3:1 of P(yes) 0.2 and P(no) = 1 - 0.4 = 0.6: (3 * 0.2 + 0.6) / 4 = 0.3
    c = combine([[logit(0.2), logit(0.4)]], [IDENTITY] * 2, ["yes", "no"], [3.0, 1.0], "mean", "prob")
    assert c.p_rewarded == [pytest.approx(0.3)]
    # as mean_logodds the same weights give (3 * logit(0.2) - logit(0.4)) / 4
    c = combine([[logit(0.2), logit(0.4)]], [IDENTITY] * 2, ["yes", "no"], [3.0, 1.0], "mean_logodds", "logodds")
    assert c.rewards == [pytest.approx((3 * logit(0.2) - logit(0.4)) / 4)]


def test_combine_min_takes_the_least_satisfied_question():
    # oriented log-odds 1 (yes) and -3 (a "no" question reading +3): min -3, zyn reward (sigmoid(-3) - 0.5) * 10
    c = combine([[1.0, 3.0]], [IDENTITY] * 2, ["yes", "no"], [1.0, 5.0], "min", "zyn")
    assert c.combined_logodds == [-3.0]
    assert c.rewards == [pytest.approx((sigmoid(-3.0) - 0.5) * 10)]


def test_combine_mean_logodds_balanced_to_zero():
    # calibrated 2 * 1 + 1 = 3 (yes) and 3 (no -> -3): mean 0, P 0.5, zyn reward 0
    c = combine([[1.0, 3.0]], [(2.0, 1.0), IDENTITY], ["yes", "no"], [1.0, 1.0], "mean_logodds", "zyn")
    assert c.combined_logodds == [0.0] and c.p_rewarded == [0.5] and c.rewards == [0.0]


@pytest.mark.parametrize("shape", SHAPES)
def test_combine_nan_stays_in_its_row(shape):
    # row 1 has an unscorable question: its combined values are NaN, its other question keeps P(yes);
    # row 2 is untouched: mean of P(yes) 0.5 and 0.5
    c = combine([[1.0, math.nan], [0.0, 0.0]], [IDENTITY] * 2, ["yes", "no"], [1.0, 1.0], "mean", shape)
    assert c.p_yes[0] == [sigmoid(1.0), 0.5] and math.isnan(c.p_yes[1][0])
    assert math.isnan(c.combined_logodds[0]) and math.isnan(c.p_rewarded[0]) and math.isnan(c.rewards[0])
    assert c.p_rewarded[1] == pytest.approx(0.5)


def test_combine_no_rows():
    # nothing to score: one empty column per question
    c = combine([], [IDENTITY] * 2, ["yes", "no"], [1.0, 1.0])
    assert c.logodds == [[], []] and c.p_yes == [[], []] and c.p_rewarded == [] and c.rewards == []


@pytest.mark.parametrize("args,message", [
    (([[1.0]], [IDENTITY] * 2, ["yes", "yes"], [1.0, 1.0]), "row 0 has 1 log-odds for 2 questions"),
    (([[1.0]], [IDENTITY], ["yes", "no"], [1.0]), "give one of each per question"),
    (([[1.0]], [IDENTITY], ["maybe"], [1.0]), "unknown reward answer 'maybe'"),
    (([], [IDENTITY], ["yes"], [1.0], "mean", "banana"), "unknown reward shape 'banana'"),
    (([], [IDENTITY], ["yes"], [1.0], "max"), "unknown combine mode 'max'"),
])
def test_combine_rejects_mismatched_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        combine(*args)
