"""Reward quality you can measure: ranking, accuracy and calibration metrics.

Pure maths on numbers (numpy only, nothing of zyn): give it scores and binary
labels, get back how well the scores rank (AUROC), classify (accuracy at 0.5 and
at the best threshold) and how honest they are as probabilities (Brier score,
expected calibration error, reliability-curve data).

Conventions, used by every function here:
  * labels are 0/1 (bools and the floats 0.0/1.0 are accepted); 1 is the positive class;
  * a score predicts the positive class when ``score >= threshold``;
  * probability metrics (accuracy at 0.5, Brier, ECE, log-loss, reliability) need
    scores in [0, 1]; AUROC and best-threshold accuracy work for any real scores.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

DEFAULT_BINS = 10
_EPS = 1e-12


def _arrays(scores: Sequence[float], labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    y = as_binary_labels(labels)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if s.size == 0:
        raise ValueError("no scores to evaluate")
    if np.any(np.isnan(s)):
        raise ValueError("scores contain NaN; drop them first (`evaluate` does, and reports how many)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain infinite values, which no metric here reads: P(yes) lies in [0, 1] "
                         "(an infinite log-odds is P 0 or 1)")
    return s, y


def _probabilities(s: np.ndarray) -> np.ndarray:
    if s.min() < 0.0 or s.max() > 1.0:
        raise ValueError(f"probability metrics need scores in [0, 1]; got range [{s.min():g}, {s.max():g}]")
    return s


def as_binary_labels(labels: Sequence) -> np.ndarray:
    """Labels as an int array of 0/1; raises ValueError on anything else.

    >>> as_binary_labels([True, False]).tolist(), as_binary_labels([1.0, 0.0]).tolist()
    ([1, 0], [1, 0])
    """
    y = np.asarray(labels)
    if y.dtype == bool:
        return y.astype(int).ravel()
    try:
        yf = y.astype(float).ravel()
    except (TypeError, ValueError):
        raise ValueError("labels must be 0/1 (or booleans)") from None
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0/1; found {sorted(set(y.ravel()[bad].tolist()))[:5]}")
    return yf.astype(int)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=float)
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(x)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2.0  # mean of ranks a+1 .. b
    return ranks


def auroc(scores: Sequence[float], labels: Sequence, tiebreak: Sequence[float] | None = None) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg)).

    The probability that a random positive scores above a random negative, a tie
    counting one half. NaN when only one class is present. `tiebreak` (e.g. the
    log-odds the scores are the sigmoid of) orders items whose scores are equal: a
    probability rounds to exactly 1.0 from log-odds of ~37 up, where log-odds still
    rank.

    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])   # 0.35 loses to 0.4, the other 3 pairs are won
    0.75
    >>> auroc([1.0, 1.0, 1.0], [0, 1, 1], tiebreak=[40.0, 41.0, 50.0])
    1.0
    """
    s, y = _arrays(scores, labels)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    if tiebreak is not None:  # rank by (score, tiebreak): the tiebreak only splits equal scores
        t = np.asarray(tiebreak, dtype=float).ravel()
        if t.shape != s.shape:
            raise ValueError(f"{len(t)} tiebreak values for {len(s)} scores")
        order = np.lexsort((t, s))
        key = np.stack([s[order], t[order]], axis=1)
        distinct = np.concatenate([[True], np.any(key[1:] != key[:-1], axis=1)])
        s = np.empty(len(s))
        s[order] = np.cumsum(distinct)  # equal (score, tiebreak) pairs share a value: still half a win
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def accuracy(scores: Sequence[float], labels: Sequence, threshold: float = 0.5) -> float:
    """Fraction classified correctly when ``score >= threshold`` predicts 1.

    >>> accuracy([0.2, 0.5, 0.7], [0, 0, 1])   # 0.5 counts as positive: 2 of 3 right
    0.6666666666666666
    """
    s, y = _arrays(scores, labels)
    return float(np.mean((s >= threshold).astype(int) == y))


def best_threshold(scores: Sequence[float], labels: Sequence) -> tuple[float, float]:
    """The threshold with the highest accuracy, and that accuracy.

    Candidates are every distinct score (``score >= t`` is positive) and +inf (all
    negative). Ties go to the smallest threshold. This is an optimistic, in-sample
    figure: it shows how separable the scores are, not what a threshold fitted
    elsewhere would achieve.

    >>> best_threshold([0.2, 0.5, 0.7], [0, 0, 1])
    (0.7, 1.0)
    """
    s, y = _arrays(scores, labels)
    order = np.argsort(s, kind="mergesort")
    ss, ys = s[order], y[order]
    n = len(s)
    # Threshold = ss[i] (the first index of a run of equal values): items i.. are
    # positive. Correct = negatives below i + positives from i on.
    neg_before = np.r_[0, np.cumsum(1 - ys)]      # negatives among the first i items
    pos_from = ys.sum() - np.r_[0, np.cumsum(ys)]  # positives among items i..n-1
    correct = neg_before + pos_from                 # index i = 0..n (n: t = +inf)
    starts = np.r_[0, np.flatnonzero(ss[1:] != ss[:-1]) + 1, n]
    cand = correct[starts]
    k = int(np.argmax(cand))  # first maximum = smallest threshold
    thr = float(ss[starts[k]]) if starts[k] < n else math.inf
    return thr, float(cand[k] / n)


def brier_score(probs: Sequence[float], labels: Sequence) -> float:
    """Mean squared error between probabilities and 0/1 labels (0 is perfect).

    >>> brier_score([0.5, 1.0], [1, 1])   # (0.25 + 0) / 2
    0.125
    """
    p, y = _arrays(probs, labels)
    _probabilities(p)
    return float(np.mean((p - y) ** 2))


def log_loss(probs: Sequence[float], labels: Sequence, eps: float = _EPS) -> float:
    """Mean negative log-likelihood of the labels (probabilities clipped to [eps, 1-eps])."""
    p, y = _arrays(probs, labels)
    p = np.clip(_probabilities(p), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width bin [lower, upper) of predicted probability (the last one is closed)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float  # NaN when the bin is empty
    fraction_positive: float  # NaN when the bin is empty


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def reliability_curve(probs: Sequence[float], labels: Sequence, n_bins: int = DEFAULT_BINS) -> list[ReliabilityBin]:
    """Reliability-diagram data: for each of `n_bins` equal-width bins of [0, 1],
    how many predictions fell there, their mean, and the observed positive rate.
    A probability exactly 1.0 goes into the last bin."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    p, y = _arrays(probs, labels)
    idx = _bin_index(_probabilities(p), n_bins)
    out = []
    for b in range(n_bins):
        m = idx == b
        c = int(m.sum())
        out.append(ReliabilityBin(b / n_bins, (b + 1) / n_bins, c,
                                  float(p[m].mean()) if c else math.nan,
                                  float(y[m].mean()) if c else math.nan))
    return out


def expected_calibration_error(probs: Sequence[float], labels: Sequence, n_bins: int = DEFAULT_BINS) -> float:
    """ECE with `n_bins` equal-width bins: sum over bins of (bin size / N) *
    |observed positive rate - mean predicted probability|. 0 is perfect.

    >>> expected_calibration_error([0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1], n_bins=2)   # |0 - .25| and |1 - .75|
    0.25
    """
    bins = reliability_curve(probs, labels, n_bins)
    n = sum(b.count for b in bins)
    return float(sum(b.count / n * abs(b.fraction_positive - b.mean_predicted) for b in bins if b.count))


@dataclass(frozen=True)
class Metrics:
    """Every metric of one score list against the labels."""

    n: int               # scored items used
    n_positive: int
    n_dropped: int       # items dropped because their score was NaN
    auroc: float
    accuracy: float      # at threshold 0.5 (NaN if scores are not probabilities)
    best_accuracy: float
    best_threshold: float
    brier: float         # NaN if scores are not probabilities
    ece: float           # NaN if scores are not probabilities
    log_loss: float      # NaN if scores are not probabilities
    n_bins: int

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(scores: Sequence[float], labels: Sequence, n_bins: int = DEFAULT_BINS,
             tiebreak: Sequence[float] | None = None) -> Metrics:
    """All metrics for one score list. NaN scores (items a backend could not score)
    are dropped and counted in `n_dropped`; probability metrics are NaN when the
    scores are not all in [0, 1] (e.g. log-odds). `tiebreak` orders equal scores for
    AUROC (see `auroc`)."""
    s = np.asarray(scores, dtype=float).ravel()
    y = as_binary_labels(labels)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    keep = ~np.isnan(s)
    if tiebreak is not None and np.asarray(tiebreak).size != s.size:
        raise ValueError(f"{np.asarray(tiebreak).size} tiebreak values for {len(s)} scores")
    t = None if tiebreak is None else np.nan_to_num(np.asarray(tiebreak, dtype=float).ravel()[keep])
    s, y = s[keep], y[keep]
    dropped = int((~keep).sum())
    if s.size == 0:
        raise ValueError("no scored items to evaluate (all scores are NaN)")
    thr, best = best_threshold(s, y)
    is_prob = bool(s.min() >= 0.0 and s.max() <= 1.0)
    nan = math.nan
    return Metrics(
        n=int(s.size), n_positive=int(y.sum()), n_dropped=dropped,
        auroc=auroc(s, y, t),
        accuracy=accuracy(s, y, 0.5) if is_prob else nan,
        best_accuracy=best, best_threshold=thr,
        brier=brier_score(s, y) if is_prob else nan,
        ece=expected_calibration_error(s, y, n_bins) if is_prob else nan,
        log_loss=log_loss(s, y) if is_prob else nan,
        n_bins=n_bins)


def evaluate_many(scores: Mapping[str, Sequence[float]], labels: Sequence,
                  n_bins: int = DEFAULT_BINS) -> dict[str, Metrics]:
    """`evaluate` each named score list (e.g. per question and combined) against
    the same labels, keeping the mapping's order."""
    return {name: evaluate(vals, labels, n_bins) for name, vals in scores.items()}


# --------------------------------------------------------------------- helpers for fitting

def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function 1 / (1 + e^-x), stable for large |x|, NaN kept.

    The vectorised twin of `zyn.scoring.sigmoid` (same formula, branch for branch)
    for the numpy maths of fitting; this module imports nothing of zyn.

    >>> sigmoid(np.array([-np.inf, 0.0, np.log(3)])).tolist()
    [0.0, 0.5, 0.75]
    """
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def two_folds(labels: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Two stratified halves of the row indices (each class split evenly), for
    fitting a calibration on one half and reporting on the other.

    >>> [len(half) for half in two_folds(np.array([0, 0, 0, 1, 1]))]   # 1 + 1 and 2 + 1
    [2, 3]
    """
    labels = np.asarray(labels)  # a list compared with a class is one bool, not a mask
    rng = np.random.default_rng(seed)
    a, b = [], []
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        a.extend(idx[: len(idx) // 2])
        b.extend(idx[len(idx) // 2:])
    return [np.sort(np.array(a, dtype=int)), np.sort(np.array(b, dtype=int))]
