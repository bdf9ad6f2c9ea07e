"""Content-free and Platt calibration: the fitting maths, and the round trip through a model."""
import math
import re

import numpy as np
import pytest

from zyn import ZeroShotRewardModel, load_prompt_set
from zyn.calibration import (MIN_SCALE, apply_calibration, calibrated_prompt_set, content_free_calibration,
                             content_free_records, content_free_shift, fit_platt, fit_platt_per_question,
                             oriented_labels, platt_calibration, platt_cross_fitted, raw_logodds)
from zyn.evaluation import auroc, expected_calibration_error, sigmoid, two_folds

TWO_QUESTIONS = {
    "name": "two", "answers": {"yes": ["Yes"], "no": ["No"]}, "combine": "mean",
    "questions": [
        {"name": "pos", "template": "T: {{ text }}\nGood?", "reward_answer": "yes"},
        {"name": "neg", "template": "T: {{ text }}\nBad?", "reward_answer": "no"},
    ],
}


class FakeBackend:
    """Log-odds read from the text: "v=1.5" gives 1.5 for "Good?" and -1.5 - 1 for "Bad?".
    Content-free texts: "N/A" -> 1, "" -> 3, "[MASK]" -> 2 (mean 2) before the question offset."""

    name = "fake"

    def __init__(self):
        self.calls = 0

    def value(self, user: str) -> float:
        text = user.split("T: ", 1)[1].rsplit("\n", 1)[0] if "T: " in user else user
        m = re.search(r"v=(-?[\d.]+)", text)
        base = float(m.group(1)) if m else {"N/A": 1.0, "": 3.0, "[MASK]": 2.0}.get(text.strip(), 0.0)
        return -base - 1.0 if user.endswith("Bad?") else base

    def logodds(self, groups, yes, no):
        self.calls += 1
        return [[self.value(q.user) for q in g] for g in groups]


@pytest.fixture
def fake_rm():
    return ZeroShotRewardModel(FakeBackend(), prompt=TWO_QUESTIONS)


def test_content_free_shift_is_minus_the_mean():
    # mean of 1, 2, 3 is 2 -> shift -2; NaN readings are ignored
    assert content_free_shift([1.0, 2.0, 3.0, float("nan")]) == -2.0
    with pytest.raises(ValueError):
        content_free_shift([float("nan")])


def test_content_free_calibration_centres_content_free_inputs(fake_rm):
    # "Good?": cf readings 1, 3, 2 -> shift -2; "Bad?": -2, -4, -3 -> shift +3; scale stays 1
    cal = content_free_calibration(fake_rm)
    assert cal == {"pos": (1.0, -2.0), "neg": (1.0, 3.0)}
    # after calibration the mean content-free log-odds of every question is 0 (p = 0.5)
    rm = fake_rm.with_prompt(calibrated_prompt_set(fake_rm.prompt_set, cal))
    lo = rm.score_detailed(content_free_records(rm.prompt_set)).logodds
    assert all(abs(np.mean(v)) < 1e-12 for v in lo.values())


def test_content_free_records_fill_declared_fields():
    # a pairwise-style set gets the content-free string in a and b too
    ps = load_prompt_set("pairwise")
    recs = content_free_records(ps, ("N/A",))
    assert recs[0]["a"] == recs[0]["b"] == recs[0]["text"] == "N/A"
    ps.render(recs[0])  # renders without a missing-field error


def test_raw_logodds_ignores_existing_calibration(fake_rm):
    # a set that already carries (2, 5) still yields the raw readings for fitting
    rm = fake_rm.with_prompt(fake_rm.prompt_set.with_calibration({"pos": (2.0, 5.0)}))
    raw = raw_logodds(rm, ["v=1.5"])
    assert raw["pos"].tolist() == [1.5] and raw["neg"].tolist() == [-2.5]


def test_platt_recovers_known_parameters():
    # labels drawn from sigmoid(0.5 x - 1): an unregularised fit on 20k points lands near (0.5, -1)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < sigmoid(0.5 * x - 1.0)).astype(int)
    a, b = fit_platt(x, y, reg=0.0, smooth_targets=False)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(-1.0, abs=0.05)


def test_platt_identity_when_already_calibrated():
    # labels drawn from sigmoid(x) itself: the fit stays near the identity (1, 0)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < sigmoid(x)).astype(int)
    a, b = fit_platt(x, y)
    assert a == pytest.approx(1.0, abs=0.05) and b == pytest.approx(0.0, abs=0.05)


def test_platt_never_changes_the_ranking_of_one_question():
    # overconfident, shifted log-odds: Platt changes the probabilities but not the order
    rng = np.random.default_rng(2)
    x = rng.normal(3, 6, 300)
    y = (rng.random(300) < sigmoid(0.3 * x - 1.5)).astype(int)
    ps = load_prompt_set({"name": "one", "questions": [{"name": "q", "template": "{{ text }}?"}]})
    fit = fit_platt_per_question({"q": x}, y, ps)
    assert fit["q"][0] > 0
    before, _ = apply_calibration({"q": x}, ps)
    after, _ = apply_calibration({"q": x}, ps, fit)
    assert np.array_equal(np.argsort(before["q"], kind="stable"), np.argsort(after["q"], kind="stable"))
    assert auroc(after["q"], y) == auroc(before["q"], y)
    # ... and it does fix the calibration
    assert expected_calibration_error(after["q"], y) < expected_calibration_error(before["q"], y)


def test_platt_separable_and_backwards_data_stay_finite_and_positive():
    # perfectly separated: Platt's targets (0.2 and 0.8 here) + L2 keep the fit finite; symmetric data -> shift 0
    a, b = fit_platt([-3, -2, -1, 1, 2, 3], [0, 0, 0, 1, 1, 1])
    assert 0 < a < 5 and b == pytest.approx(0.0, abs=1e-9)
    # a question that ranks backwards cannot be fixed: the scale is held at MIN_SCALE (> 0)
    a, b = fit_platt([-3, -2, -1, 1, 2, 3], [1, 1, 1, 0, 0, 0])
    assert a == MIN_SCALE
    with pytest.raises(ValueError, match="both"):
        fit_platt([1.0, 2.0], [1, 1])


def test_platt_orients_no_questions(fake_rm):
    # "Bad?" has reward_answer no: its yes-log-odds fall as the label rises, yet its fitted scale is positive
    texts = [f"v={v}" for v in (-3, -2, -1, -0.5, 0.5, 1, 2, 3)]
    labels = [0, 0, 0, 1, 0, 1, 1, 1]
    cal = platt_calibration(fake_rm, texts, labels)
    assert cal["neg"][0] > 0.1 and cal["pos"][0] > 0.1
    assert platt_calibration(fake_rm, (t for t in texts), labels) == cal  # a generator is read once, as a list


def test_offline_recombination_matches_the_model_path(fake_rm):
    # apply_calibration on raw log-odds gives exactly the numbers of scoring with the calibrated set
    texts = ["v=-2", "v=0.3", "v=1.7", "N/A"]
    cal = {"pos": (0.7, -0.2), "neg": (1.3, 0.4)}
    per_q, combined = apply_calibration(raw_logodds(fake_rm, texts), fake_rm.prompt_set, cal)
    scores = fake_rm.with_prompt(calibrated_prompt_set(fake_rm.prompt_set, cal)).score_detailed(texts)
    assert combined.tolist() == scores.p_yes
    # per question both are P(yes), not oriented, even for "neg", which rewards "no"
    assert {k: v.tolist() for k, v in per_q.items()} == scores.per_question


def test_apply_calibration_per_question_is_p_yes_of_a_no_question():
    # "neg" rewards no: raw 0 shifted by log 3 gives P(yes) 0.75; combined is the mean of P(yes) of
    # "pos" (0.5) and P(no) of "neg" (0.25)
    ps = load_prompt_set(TWO_QUESTIONS)
    per_q, combined = apply_calibration({"pos": [0.0], "neg": [0.0]}, ps, {"neg": (1.0, math.log(3))})
    assert per_q["neg"].tolist() == [pytest.approx(0.75)] and per_q["pos"].tolist() == [0.5]
    assert combined.tolist() == [pytest.approx(0.375)]
    with pytest.raises(ValueError, match="unequal lengths"):
        apply_calibration({"pos": [0.0, 1.0], "neg": [0.0]}, ps)


def test_platt_cross_fitted_scores_each_half_with_the_other_halfs_fit():
    # every row's numbers equal apply_calibration under the fit on the rows of the other fold
    rng = np.random.default_rng(3)
    labels = np.array([0, 1] * 10)
    raw = {"pos": rng.normal(0, 2, 20) + 2 * labels, "neg": rng.normal(0, 2, 20) - 2 * labels}
    ps = load_prompt_set(TWO_QUESTIONS)
    per_q, combined = platt_cross_fitted(raw, ps, labels, seed=5)
    for test in two_folds(labels, 5):
        train = np.setdiff1d(np.arange(20), test)
        fit = fit_platt_per_question({k: v[train] for k, v in raw.items()}, labels[train], ps)
        pq, comb = apply_calibration({k: v[test] for k, v in raw.items()}, ps, fit)
        assert combined[test].tolist() == comb.tolist()
        assert per_q["neg"][test].tolist() == pq["neg"].tolist()
    # "neg" reports P(yes): it ranks the oriented labels, not the labels
    assert auroc(per_q["neg"], oriented_labels(labels, "no")) > 0.5 > auroc(per_q["neg"], labels)


def test_calibration_survives_yaml(tmp_path, fake_rm):
    # the fitted (scale, shift) are written into the YAML and read back unchanged
    cal = {"pos": (0.8125, -0.25), "neg": (1.5, 0.125)}
    calibrated_prompt_set(fake_rm.prompt_set, cal).to_yaml(tmp_path / "cal.yaml")
    back = load_prompt_set(str(tmp_path / "cal.yaml"))
    assert {q.name: q.calibration for q in back.questions} == cal
    with pytest.raises(ValueError):
        calibrated_prompt_set(fake_rm.prompt_set, {"pos": (-1.0, 0.0)})


def test_calibration_on_a_tiny_model(tiny_causal):
    # plumbing on a real (random) transformer: both methods give finite, positive-scale maps
    model, tok = tiny_causal
    rm = ZeroShotRewardModel(model, tokenizer=tok, prompt="sentiment")
    cf = content_free_calibration(rm)
    assert cf["positive"][0] == 1.0 and math.isfinite(cf["positive"][1])
    texts = ["great film", "awful plot", "good acting", "bad story", "amazing", "dull"]
    pl = platt_calibration(rm, texts, [1, 0, 1, 0, 1, 0])
    assert pl["positive"][0] > 0 and math.isfinite(pl["positive"][1])


def test_a_bare_string_is_refused_not_scored_letter_by_letter(tiny_causal):
    from zyn import ZeroShotRewardModel
    from zyn.calibration import content_free_calibration, raw_logodds
    from zyn.errors import InputError

    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    with pytest.raises(InputError, match="inputs: expected a list of texts or records, got str"):
        raw_logodds(rm, "good")
    with pytest.raises(InputError, match="texts: expected a list of texts, got str"):
        content_free_calibration(rm, "N/A")


def test_apply_calibration_reproduces_the_models_own_scores(tiny_causal):
    """Unnamed questions keep the prompt set's own calibration, as `calibrated_prompt_set`
    keeps it: the raw log-odds of a calibrated set re-scored as given are its model's scores."""
    from zyn import ZeroShotRewardModel
    from zyn.calibration import apply_calibration, calibrated_prompt_set, raw_logodds

    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")  # calibration (1, -1.5)
    texts = ["good", "bad", "fine"]
    raw = raw_logodds(rm, texts)
    assert apply_calibration(raw, rm.prompt_set)[1].tolist() == pytest.approx(rm.score(texts), abs=1e-6)
    two = rm.with_prompt("sentiment_ensemble")
    name = two.prompt_set.questions[0].name
    fitted = calibrated_prompt_set(two.prompt_set, {name: (2.0, 0.5)})
    assert apply_calibration(raw_logodds(two, texts), two.prompt_set, {name: (2.0, 0.5)})[1].tolist() == \
        pytest.approx(two.with_prompt(fitted).score(texts), abs=1e-6)


def test_apply_calibration_refuses_what_a_prompt_set_would():
    from zyn.calibration import apply_calibration
    from zyn.prompts import load_prompt_set

    ps = load_prompt_set({"name": "one", "questions": [{"name": "q", "template": "{{ text }}?"}]})
    with pytest.raises(ValueError, match=r"calibration names \['qq'\], not questions of 'one' \(q\)"):
        apply_calibration({"q": [0.0]}, ps, {"qq": (1.0, 0.0)})
    with pytest.raises(ValueError, match="a negative scale would reverse"):
        apply_calibration({"q": [0.0]}, ps, {"q": (-1.0, 0.0)})
