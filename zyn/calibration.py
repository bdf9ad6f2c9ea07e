"""Calibrating yes/no log-odds: content-free (Zhao et al. 2021) and Platt scaling.

Both methods produce, per question, an affine map of the question's raw yes-vs-no
log-odds, ``lo' = scale * lo + shift``, which a prompt set stores in its questions'
``calibration`` field (``PromptSet.with_calibration``) and the scoring path applies
before questions are combined. With a positive scale the map is monotone, so it
never changes how a single question ranks texts; it changes the probabilities
(and the ensemble, whose members it puts on a common footing).

* Content-free ("Calibrate Before Use", Zhao et al. 2021): render inputs with no
  content ("N/A", "", "[MASK]") through each question and set
  ``shift = -mean(content-free log-odds)``, scale 1, so a content-free input sits
  at p = 0.5. Needs no labels; removes the model's prior lean towards "Yes" or "No".
* Platt scaling (Platt 1999): fit (scale, shift) on labelled data by minimising the
  log-loss of ``sigmoid(scale * lo + shift)``, with Platt's smoothed targets and a
  mild L2 pull towards the identity (1, 0), by Newton's method. Fit it on data
  you do not report on.

The fitting functions are pure numpy; the `*_calibration(model, ...)` helpers run
a ZeroShotRewardModel (anything with ``prompt_set``, ``with_prompt`` and
``score_detailed``) to get the log-odds.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .evaluation import as_binary_labels, sigmoid, two_folds
from .scoring import combine

CONTENT_FREE_TEXTS = ("N/A", "", "[MASK]")
MIN_SCALE = 1e-3

Calibration = dict  # {question_name: (scale, shift)}


# ----------------------------------------------------------------------------- pure fitting

def content_free_shift(content_free_logodds: Sequence[float]) -> float:
    """The shift that puts the mean content-free log-odds at 0 (p = 0.5); NaN readings are ignored.

    >>> content_free_shift([1.0, 3.0, float("nan")])
    -2.0
    """
    x = np.asarray(content_free_logodds, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no finite content-free log-odds to calibrate on")
    return float(-x.mean())


def fit_platt(logodds: Sequence[float], labels: Sequence, reg: float = 1e-3,
              smooth_targets: bool = True, max_iter: int = 100, tol: float = 1e-10) -> tuple[float, float]:
    """Fit ``P(label = 1) = sigmoid(scale * logodds + shift)``.

    Minimises the mean log-loss plus ``reg / 2 * ((scale - 1)^2 + shift^2)`` by
    damped Newton steps. With ``smooth_targets`` the 0/1 targets become Platt's
    1 / (N- + 2) and (N+ + 1) / (N+ + 2), which, like `reg`, keeps the fit finite
    on perfectly separated data. The scale is kept >= MIN_SCALE (a question that
    ranks backwards cannot be fixed by calibration; it gets a near-flat map).
    Non-finite log-odds are ignored.

    Returns:
        (scale, shift)

    >>> scale, shift = fit_platt([-3, -2, -1, 1, 2, 3], [0, 0, 0, 1, 1, 1])   # symmetric: no shift
    >>> scale > 0, abs(shift) < 1e-9
    (True, True)
    """
    x = np.asarray(logodds, dtype=float).ravel()
    y = as_binary_labels(labels)
    if x.shape != y.shape:
        raise ValueError(f"{len(x)} log-odds but {len(y)} labels")
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    if x.size == 0:
        raise ValueError("no finite log-odds to fit on")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("Platt scaling needs both positive and negative examples")
    t = y.astype(float)
    if smooth_targets:
        t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(a: float, b: float) -> float:
        z = a * x + b
        # log(1 + e^z) - t z, stable
        return float(np.mean(np.logaddexp(0.0, z) - t * z) + reg / 2 * ((a - 1.0) ** 2 + b ** 2))

    def newton(a: float, b: float, fit_scale: bool) -> tuple[float, float]:
        f = loss(a, b)
        for _ in range(max_iter):
            p = sigmoid(a * x + b)
            r, w = p - t, p * (1.0 - p)
            gb = r.mean() + reg * b
            hbb = w.mean() + reg
            if fit_scale:
                ga = (r * x).mean() + reg * (a - 1.0)
                haa, hab = (w * x * x).mean() + reg, (w * x).mean()
                det = haa * hbb - hab * hab
                if det <= 0:
                    break
                da, db = -(hbb * ga - hab * gb) / det, -(haa * gb - hab * ga) / det
            else:
                da, db = 0.0, -gb / hbb
            step = 1.0
            while step > 1e-8:  # backtracking: accept the first step that does not increase the loss
                na, nb = a + step * da, b + step * db
                if fit_scale:
                    na = max(na, MIN_SCALE)
                nf = loss(na, nb)
                if nf <= f + 1e-15:
                    break
                step /= 2
            else:
                break
            moved = abs(na - a) + abs(nb - b)
            a, b, f = na, nb, nf
            if moved < tol:
                break
        return a, b

    a, b = newton(1.0, 0.0, fit_scale=True)
    if a <= MIN_SCALE:
        a, b = newton(MIN_SCALE, b, fit_scale=False)
    return float(a), float(b)


# ----------------------------------------------------------------------------- applying

def oriented_labels(labels: Sequence, reward_answer: str) -> np.ndarray:
    """Labels for a question's *yes* probability: flipped for a question whose
    rewarded answer is "no" (a positive text should get the answer "no").

    >>> oriented_labels([1, 0, 1], "no").tolist()
    [0, 1, 0]
    """
    y = as_binary_labels(labels)
    return y if reward_answer == "yes" else 1 - y


def apply_calibration(raw_logodds: Mapping[str, Sequence[float]], prompt_set,
                      calibration: Mapping[str, tuple[float, float]] | None = None,
                      penalty: Sequence[float] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Re-score from raw (uncalibrated) yes-vs-no log-odds without running a model.

    Goes through `zyn.scoring.combine`, the model's own path, so the numbers are
    those a model with the calibrated prompt set returns.

    Args:
        raw_logodds: {question name: raw log-odds per item}.
        prompt_set: gives each question's reward_answer and weight and the combine mode.
        calibration: {question: (scale, shift)}; questions not named keep the prompt
            set's own calibration (None: the prompt set as given, as its model scores).
        penalty: log-odds the prompt set's penalties take off each item
            (`PromptSet.penalty` of the same items); None for none.

    Returns:
        ({question: P(yes) per item}, combined P(rewarded answer) per item). Per
        question is P(yes) of that question's own yes answer, calibrated, not
        oriented (`Scores.per_question`); evaluate a question rewarding "no" against
        `oriented_labels`. NaN stays NaN.

    >>> from zyn.prompts import load_prompt_set
    >>> ps = load_prompt_set({"name": "two", "questions": [{"name": "good", "template": "{{ text }} good?"},
    ...     {"name": "bad", "template": "{{ text }} bad?", "reward_answer": "no"}]})
    >>> per_q, combined = apply_calibration({"good": [0.0], "bad": [0.0]}, ps, {"bad": (1.0, math.log(3))})
    >>> per_q["bad"].round(12).tolist(), combined.round(12).tolist()   # P(yes) 0.75; (0.5 + 0.25) / 2
    ([0.75], [0.375])
    """
    calibration = calibration or {}
    qs = prompt_set.questions
    unknown = sorted(set(calibration) - {q.name for q in qs})
    if unknown:
        raise ValueError(f"calibration names {unknown}, not questions of {prompt_set.name!r} "
                         f"({', '.join(q.name for q in qs)})")
    for name, (scale, shift) in calibration.items():
        if not (math.isfinite(scale) and scale > 0 and math.isfinite(shift)):
            raise ValueError(f"calibration of {name!r}: needs a finite positive scale and a finite shift, got "
                             f"({scale!r}, {shift!r}); a negative scale would reverse the question's ranking")
    columns = [np.asarray(raw_logodds[q.name], dtype=float).ravel().tolist() for q in qs]
    if len({len(col) for col in columns}) > 1:
        raise ValueError(f"raw log-odds of unequal lengths: {[len(col) for col in columns]}")
    c = combine(list(zip(*columns)), [calibration.get(q.name, q.calibration) for q in qs],
                [q.reward_answer for q in qs], [q.weight for q in qs], prompt_set.combine,
                penalty=None if penalty is None else [float(x) for x in np.asarray(penalty, dtype=float).ravel()])
    return {q.name: np.array(p, dtype=float) for q, p in zip(qs, c.p_yes)}, np.array(c.p_rewarded, dtype=float)


def platt_cross_fitted(raw_logodds: Mapping[str, np.ndarray], prompt_set, labels: Sequence, seed: int = 0,
                       reg: float = 1e-3, penalty: Sequence[float] | None = None
                       ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every item scored under a Platt fit on the other half (2-fold cross-fitting).

    The items are split into two stratified halves (`zyn.evaluation.two_folds`);
    each half is scored (`apply_calibration`) with the per-question fit
    (`fit_platt_per_question`) on the other half, so figures computed from the
    result are out of sample.

    Args:
        raw_logodds: {question name: raw log-odds per item}.
        prompt_set: the questions, their reward answers, weights and combine mode.
        labels: 0/1 per item, 1 = the rewarded property holds; each half needs both
            classes, so at least 2 items of each.
        seed: seed of the split.

    Returns:
        As `apply_calibration`, for every item: ({question: P(yes)}, combined P).

    >>> from zyn.prompts import load_prompt_set
    >>> ps = load_prompt_set({"name": "one", "questions": [{"name": "q", "template": "{{ text }}?"}]})
    >>> per_q, combined = platt_cross_fitted({"q": np.array([-2.0, -1.0, 1.0, 2.0])}, ps, [0, 0, 1, 1])
    >>> bool(np.all(np.diff(combined) > 0)), bool(np.array_equal(per_q["q"], combined))
    (True, True)
    """
    raw = {k: np.asarray(v, dtype=float) for k, v in raw_logodds.items()}
    y = as_binary_labels(labels)
    n = len(y)
    per_q = {q.name: np.full(n, np.nan) for q in prompt_set.questions}
    combined = np.full(n, np.nan)
    for test in two_folds(y, seed):
        train = np.setdiff1d(np.arange(n), test)
        fit = fit_platt_per_question({k: v[train] for k, v in raw.items()}, y[train], prompt_set, reg=reg)
        pq, comb = apply_calibration({k: v[test] for k, v in raw.items()}, prompt_set, fit,
                                     None if penalty is None else np.asarray(penalty, dtype=float)[test])
        combined[test] = comb
        for k in per_q:
            per_q[k][test] = pq[k]
    return per_q, combined


def fit_platt_per_question(raw_logodds: Mapping[str, Sequence[float]], labels: Sequence, prompt_set,
                           reg: float = 1e-3) -> Calibration:
    """Platt-fit every question of `prompt_set` on its raw log-odds; labels are the
    set's labels (1 = the rewarded property holds), oriented per question."""
    return {q.name: fit_platt(raw_logodds[q.name], oriented_labels(labels, q.reward_answer), reg=reg)
            for q in prompt_set.questions}


# ----------------------------------------------------------------------------- with a model

def uncalibrated(prompt_set):
    """A copy of `prompt_set` with every question's calibration reset to (1, 0)."""
    return prompt_set.with_calibration({q.name: (1.0, 0.0) for q in prompt_set.questions})


def raw_logodds(model, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """Uncalibrated yes-vs-no log-odds of every question of `model`'s prompt set."""
    from .model import as_batch

    raw = model.with_prompt(uncalibrated(model.prompt_set))
    lo = raw.score_detailed(as_batch("inputs", inputs)).logodds
    return {k: np.asarray(v, dtype=float) for k, v in lo.items()}


def content_free_records(prompt_set, texts: Sequence[str] = CONTENT_FREE_TEXTS) -> list[dict]:
    """One record per content-free string, with that string in every variable the
    prompt set's templates can use (text, completion and each declared field)."""
    return [{"text": t, "prompt": "", "completion": t, **{f: t for f in prompt_set.fields}} for t in texts]


def content_free_calibration(model, texts: Sequence[str] = CONTENT_FREE_TEXTS) -> Calibration:
    """{question: (1.0, shift)} with shift = -mean raw log-odds of the content-free inputs."""
    from .model import as_batch

    lo = raw_logodds(model, content_free_records(model.prompt_set, as_batch("texts", texts, "texts")))
    return {name: (1.0, content_free_shift(v)) for name, v in lo.items()}


def platt_calibration(model, inputs: Sequence[Any], labels: Sequence, reg: float = 1e-3) -> Calibration:
    """{question: (scale, shift)} Platt-fitted on labelled `inputs` (1 = the
    rewarded property holds)."""
    from .model import as_batch

    inputs = as_batch("inputs", inputs)  # a generator is read once, a string or a record refused
    labels = as_binary_labels(labels)
    if len(labels) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    return fit_platt_per_question(raw_logodds(model, inputs), labels, model.prompt_set, reg=reg)


def calibrated_prompt_set(prompt_set, calibration: Mapping[str, tuple[float, float]]):
    """`prompt_set` carrying `calibration` (save it with ``.to_yaml(path)``)."""
    clean = {k: (float(a), float(b)) for k, (a, b) in calibration.items()}
    for k, (a, b) in clean.items():
        if not (a > 0 and math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"question {k!r}: calibration needs a positive finite scale and finite shift")
    return prompt_set.with_calibration(clean)
