"""Pure maths of yes/no rewards: logits -> log-odds -> P(yes) -> shaped rewards.

Everything here works on numbers, never on models or files, and imports nothing
of zyn. The central quantity is the log-odds of the rewarded answer,

    lo = logsumexp(logits[yes_ids]) - logsumexp(logits[no_ids])
    P(yes) = softmax([l_yes, l_no])[0] = sigmoid(lo)

which is the two-way renormalisation of the ZYN paper, extended to sets of
answer tokens ("Yes", " Yes", "yes", ...).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

SHAPES = ("prob", "logodds", "zyn", "logprob")
COMBINES = ("mean", "mean_logodds", "min")


def answer_logodds(logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> torch.Tensor:
    """Log-odds of the yes set against the no set at one position.

    Args:
        logits: (B, V) next-token logits.
        yes_ids, no_ids: token ids of the two answer sets (disjoint, non-empty).

    Returns:
        (B,) float32 tensor: logsumexp(logits[:, yes]) - logsumexp(logits[:, no]).

    >>> answer_logodds(torch.tensor([[2.0, 0.0, 1.0]]), [0], [1]).tolist()
    [2.0]
    """
    logits = logits.float()  # bf16 logsumexp loses ~2 digits; the slice is tiny
    yes = torch.logsumexp(logits[:, list(yes_ids)], dim=-1)
    no = torch.logsumexp(logits[:, list(no_ids)], dim=-1)
    return yes - no


def log_sigmoid(x: float) -> float:
    """log(sigmoid(x)) without overflow for large |x|."""
    if math.isnan(x):
        return x
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    """P(yes) from log-odds, stable for any finite or infinite x."""
    if math.isnan(x):
        return x
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def logit(p: float) -> float:
    """Inverse of `sigmoid`: log(p / (1 - p)); +-inf at 1 and 0."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)


def shape_reward(logodds: float, shape: str) -> float:
    """Turn the log-odds of the rewarded answer into a reward.

    Args:
        logodds: log(p / (1 - p)) of the combined answer.
        shape: ``prob`` (p), ``logodds`` (log(p/(1-p))), ``zyn`` ((p - 0.5) * 10, the
            paper code's Eq. 3) or ``logprob`` (log p).

    >>> shape_reward(0.0, "zyn"), shape_reward(0.0, "prob")
    (0.0, 0.5)
    """
    if shape == "prob":
        return sigmoid(logodds)
    if shape == "logodds":
        return logodds
    if shape == "zyn":
        return (sigmoid(logodds) - 0.5) * 10.0
    if shape == "logprob":
        return log_sigmoid(logodds)
    raise ValueError(f"unknown reward shape {shape!r}; use one of {', '.join(SHAPES)}")


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    if math.isinf(m):
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))


def combine_logodds(logodds: Sequence[float], weights: Sequence[float], mode: str) -> float:
    """Combine the rewarded-answer log-odds of several questions into one.

    Args:
        logodds: one log-odds per question, already oriented so that larger means
            the rewarded answer (a "no" question contributes -lo, i.e. P(no)).
        weights: positive weights, one per question.
        mode: ``mean`` — weighted mean of probabilities (the paper's Eq. 4);
            ``mean_logodds`` — weighted mean of log-odds; ``min`` — the least
            satisfied question.

    Returns:
        The combined log-odds (so that P = sigmoid of it); NaN if any input is NaN.

    >>> round(sigmoid(combine_logodds([0.0, math.inf], [1, 1], "mean")), 6)
    0.75
    """
    if any(math.isnan(x) for x in logodds):
        return math.nan
    total = float(sum(weights))
    if mode == "mean_logodds":
        return sum(w * x for w, x in zip(weights, logodds)) / total
    if mode == "min":
        return min(logodds)
    if mode == "mean":
        # log p = logsumexp(log w_i + log p_i) - log W, likewise for 1 - p: exact in
        # log space, so p close to 0 or 1 keeps its digits.
        logw = [math.log(w) for w in weights]
        log_p = _logsumexp([a + log_sigmoid(x) for a, x in zip(logw, logodds)])
        log_q = _logsumexp([a + log_sigmoid(-x) for a, x in zip(logw, logodds)])
        return log_p - log_q
    raise ValueError(f"unknown combine mode {mode!r}; use one of {', '.join(COMBINES)}")
