"""The pure maths: hand-computed cases with exact expected values."""
import math

import pytest
import torch

from zyn.scoring import answer_logodds, combine_logodds, logit, shape_reward, sigmoid


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
