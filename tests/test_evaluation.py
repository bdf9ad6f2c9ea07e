"""Metrics against values computed by hand (the arithmetic is in each comment)."""
import math

import numpy as np
import pytest

from zyn import scoring
from zyn.evaluation import (accuracy, as_binary_labels, auroc, best_threshold, brier_score, evaluate,
                            evaluate_many, expected_calibration_error, log_loss, reliability_curve, sigmoid)


def test_auroc_perfect_and_reversed():
    # every positive (0.8, 0.9) above every negative (0.1, 0.2): 4 of 4 pairs won
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    # every positive below every negative: 0 of 4 pairs won
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0


def test_auroc_partial():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35>0.1 yes, 0.35>0.4 no, 0.8 beats both -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75


def test_auroc_ties_count_half():
    # positive 0.5 vs negatives 0.2 (win) and 0.5 (tie = 1/2); positive 0.9 wins both -> 3.5/4
    assert auroc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == 0.875
    # all scores equal: every pair is a tie -> 1/2
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5


def test_auroc_any_real_scores_and_one_class():
    # log-odds work too: positives 3, 1 vs negatives -2, 2: 3 beats both, 1 beats -2 only -> 3/4
    assert auroc([3.0, 1.0, -2.0, 2.0], [1, 1, 0, 0]) == 0.75
    # only positives: no pair to compare -> NaN
    assert math.isnan(auroc([0.1, 0.9], [1, 1]))


def test_accuracy_at_half():
    # predictions (>= 0.5): 0.2->0, 0.5->1, 0.7->1, 0.4->0 vs labels 0,1,0,1: right, right, wrong, wrong -> 0.5
    assert accuracy([0.2, 0.5, 0.7, 0.4], [0, 1, 0, 1]) == 0.5


def test_best_threshold():
    # sorted: 0.1(0) 0.2(0) 0.3(1) 0.6(1) 0.9(1): t = 0.3 separates perfectly -> (0.3, 1.0)
    assert best_threshold([0.1, 0.3, 0.6, 0.2, 0.9], [0, 1, 1, 0, 1]) == (0.3, 1.0)
    # all negatives: only t = +inf (everything predicted 0) is always right -> (inf, 1.0)
    assert best_threshold([0.9, 0.8], [0, 0]) == (math.inf, 1.0)
    # reversed pair: t=0.2 -> 1/2, t=0.8 -> 0/2, t=inf -> 1/2; tie goes to the smallest -> (0.2, 0.5)
    assert best_threshold([0.2, 0.8], [1, 0]) == (0.2, 0.5)
    # tied scores move together: t=0.2 -> 2/4; t=0.5 -> 0.2(0), 0.5(1), 0.9(1) right, 0.5(0) wrong -> 3/4;
    # t=0.9 -> 0.2(0), 0.5(0), 0.9(1) right -> 3/4; t=inf -> 2/4; smallest best -> (0.5, 0.75)
    assert best_threshold([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == (0.5, 0.75)


def test_brier():
    # squared errors (1-1)^2, (0-0)^2, (0.5-1)^2, (0.8-0)^2 = 0, 0, 0.25, 0.64 -> 0.89 / 4
    assert brier_score([1.0, 0.0, 0.5, 0.8], [1, 0, 1, 0]) == pytest.approx(0.2225, abs=1e-15)


def test_log_loss():
    # p = 0.5 for both: -log(0.5) each -> log 2
    assert log_loss([0.5, 0.5], [1, 0]) == pytest.approx(math.log(2))


def test_ece_two_bins():
    # bin [0, .5): preds 0.1, 0.3 (mean 0.2), labels 0, 1 (rate 0.5) -> |0.5 - 0.2| * 2/4 = 0.15
    # bin [.5, 1]: preds 0.6, 0.9 (mean 0.75), labels 1, 1 (rate 1.0) -> |1 - 0.75| * 2/4 = 0.125; total 0.275
    assert expected_calibration_error([0.1, 0.3, 0.6, 0.9], [0, 1, 1, 1], n_bins=2) == pytest.approx(0.275)


def test_ece_ten_bins_default():
    # each prediction alone in its bin: |0 - .1| + |1 - .3| + |1 - .6| + |1 - .9| = 1.3, over 4 items -> 0.325
    assert expected_calibration_error([0.1, 0.3, 0.6, 0.9], [0, 1, 1, 1]) == pytest.approx(0.325)


def test_ece_perfect_and_edge():
    # p = 0.25 for four items with one positive: rate 0.25 = mean prediction -> ECE 0
    assert expected_calibration_error([0.25] * 4, [1, 0, 0, 0]) == 0.0
    # p = 1.0 lands in the last bin [0.9, 1.0] (not an 11th bin) and is right -> 0
    bins = reliability_curve([1.0], [1])
    assert bins[-1].count == 1 and len(bins) == 10
    assert expected_calibration_error([1.0], [1]) == 0.0


def test_reliability_curve_values():
    # 2 bins; [0, .5): 0.1, 0.3 -> mean 0.2, rate 0.5; [.5, 1]: 0.6, 0.9 -> mean 0.75, rate 1.0
    lo, hi = reliability_curve([0.1, 0.3, 0.6, 0.9], [0, 1, 1, 1], n_bins=2)
    assert (lo.lower, lo.upper, lo.count) == (0.0, 0.5, 2)
    assert lo.mean_predicted == pytest.approx(0.2) and lo.fraction_positive == 0.5
    assert hi.mean_predicted == pytest.approx(0.75) and hi.fraction_positive == 1.0
    # an empty bin has count 0 and NaN means
    empty = reliability_curve([0.1], [0], n_bins=2)[1]
    assert empty.count == 0 and math.isnan(empty.mean_predicted)


def test_evaluate_drops_nan_and_reports_all():
    # the NaN row is dropped; remaining: 0.1(0) 0.2(0) 0.8(1) 0.9(1) -> AUROC 1, acc 1,
    # Brier (.01 + .04 + .04 + .01) / 4 = 0.025
    m = evaluate([0.1, float("nan"), 0.2, 0.8, 0.9], [0, 1, 0, 1, 1])
    assert (m.n, m.n_positive, m.n_dropped) == (4, 2, 1)
    assert m.auroc == 1.0 and m.accuracy == 1.0 and m.best_accuracy == 1.0 and m.best_threshold == 0.8
    assert m.brier == pytest.approx(0.025)
    # per-bin: |0 - .1| + |0 - .2| + |1 - .8| + |1 - .9| = 0.6 over 4 -> 0.15
    assert m.ece == pytest.approx(0.15)
    assert set(m.as_dict()) >= {"auroc", "accuracy", "best_accuracy", "best_threshold", "brier", "ece", "n"}


def test_evaluate_logodds_has_no_probability_metrics():
    # log-odds outside [0, 1]: ranking metrics only; probability metrics are NaN
    m = evaluate([-2.0, 3.0], [0, 1])
    assert m.auroc == 1.0 and m.best_accuracy == 1.0
    assert math.isnan(m.brier) and math.isnan(m.ece) and math.isnan(m.accuracy)


def test_evaluate_many_keeps_order():
    # two score lists against the same labels: the perfect one and the reversed one
    out = evaluate_many({"combined": [0.1, 0.9], "q2": [0.9, 0.1]}, [0, 1])
    assert list(out) == ["combined", "q2"]
    assert out["combined"].auroc == 1.0 and out["q2"].auroc == 0.0


def test_labels_validation():
    # booleans and 0.0/1.0 are labels; 2 or words are not
    assert as_binary_labels([True, False]).tolist() == [1, 0]
    assert as_binary_labels([1.0, 0.0]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="0/1"):
        as_binary_labels([0, 2])
    with pytest.raises(ValueError, match="0/1"):
        as_binary_labels(["pos", "neg"])
    with pytest.raises(ValueError, match="scores but"):
        auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier_score([1.5, 0.2], [1, 0])


def test_auroc_matches_pair_counting_on_random_data():
    # brute-force pair counting on data with many ties agrees with the rank formula
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60) / 4
    y = rng.integers(0, 2, 60)
    pos, neg = s[y == 1], s[y == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(s, y) == pytest.approx(brute, abs=1e-12)


def test_sigmoid_is_the_elementwise_twin_of_scoring_sigmoid():
    # the same formula branch for branch: equal to the last bit, infinities and NaN included
    x = [-800.0, -36.5, -1.0, -0.0, 0.0, 1e-9, 2.5, 40.0, math.inf, -math.inf, math.nan]
    got = sigmoid(np.array(x)).tolist()
    want = [scoring.sigmoid(v) for v in x]
    assert got[:-1] == want[:-1] and math.isnan(got[-1]) and math.isnan(want[-1])


def test_saturated_probabilities_rank_by_their_log_odds():
    """sigmoid rounds to exactly 1.0 from log-odds ~37 up (a question scaled by 20 gets
    there from raw log-odds ~1.9): the log-odds still rank, and AUROC reads them."""
    from zyn.evaluation import evaluate

    logodds = [38.0, 40.0, 45.0, 60.0]
    p = [1 / (1 + math.exp(-x)) for x in logodds]
    assert len(set(p)) == 1  # all exactly 1.0
    assert evaluate(p, [0, 0, 1, 1]).auroc == 0.5
    assert evaluate(p, [0, 0, 1, 1], tiebreak=logodds).auroc == 1.0
    assert evaluate([0.2, 0.2, 0.9], [0, 1, 1], tiebreak=[1.0, 1.0, 5.0]).auroc == 0.75  # true ties stay ties


def test_two_folds_of_a_plain_list_split_every_class():
    from zyn.evaluation import two_folds

    folds = two_folds([0, 0, 1, 1])  # a list compared with a class was one bool: two empty folds
    assert sorted(int(i) for fold in folds for i in fold) == [0, 1, 2, 3] and all(len(f) == 2 for f in folds)


def test_nan_and_infinite_scores_are_told_apart():
    from zyn.evaluation import auroc, evaluate

    with pytest.raises(ValueError, match="scores contain NaN; drop them first"):
        auroc([0.1, float("nan"), 0.9], [0, 1, 1])
    with pytest.raises(ValueError, match="scores contain infinite values"):  # evaluate drops NaN, not inf
        evaluate([0.1, float("inf"), 0.9], [0, 1, 1])


def test_a_tiebreak_of_another_length_is_named():
    from zyn.evaluation import auroc, evaluate

    for fn in (auroc, evaluate):
        with pytest.raises(ValueError, match="2 tiebreak values for 3 scores"):
            fn([0.5, 0.5, 0.5], [0, 1, 1], tiebreak=[1, 2])
