"""Pure maths of yes/no rewards: logits -> log-odds -> P(yes) -> shaped rewards.

Everything here works on numbers, never on models or files, and imports nothing
of zyn. The central quantity is the log-odds of yes against no,

    lo = logsumexp(logits[yes_ids]) - logsumexp(logits[no_ids])
    P(yes) = softmax([l_yes, l_no])[0] = sigmoid(lo)

which is the two-way renormalisation of the ZYN paper, extended to sets of
answer tokens ("Yes", " Yes", "yes", ...). `combine` is the one path from the
raw log-odds of a prompt set's questions to P and rewards: calibrate, orient,
combine, shape. The model's scoring and offline re-scoring both go through it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

#: reward shape -> its formula in p, the combined P(rewarded answer)
SHAPE_FORMULAS = {"prob": "p", "logodds": "log(p / (1 - p))", "zyn": "(p - 0.5) * 10", "logprob": "log p"}
SHAPES = tuple(SHAPE_FORMULAS)
COMBINES = ("mean", "mean_logodds", "min")
ANSWERS = ("yes", "no")


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
    """log(sigmoid(x)) without overflow for large |x|.

    >>> log_sigmoid(0.0) == -math.log(2), log_sigmoid(-800.0)
    (True, -800.0)
    """
    if math.isnan(x):
        return x
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    """P(yes) from log-odds, 1 / (1 + e^-x), stable for any finite or infinite x.

    (`zyn.evaluation.sigmoid` is its elementwise twin for numpy arrays.)

    >>> sigmoid(0.0), sigmoid(-math.inf), sigmoid(math.log(3))
    (0.5, 0.0, 0.75)
    """
    if math.isnan(x):
        return x
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def logit(p: float) -> float:
    """Inverse of `sigmoid`: log(p / (1 - p)); +-inf at 1 and 0.

    >>> logit(0.5), logit(0.0), logit(1.0)
    (0.0, -inf, inf)
    """
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)


def shape_reward(logodds: float, shape: str) -> float:
    """Turn the log-odds of the rewarded answer into a reward.

    Args:
        logodds: log(p / (1 - p)) of the combined answer.
        shape: one of SHAPES, with the formulas of SHAPE_FORMULAS: ``prob`` (p),
            ``logodds`` (log(p/(1-p))), ``zyn`` ((p - 0.5) * 10, the paper code's
            Eq. 3) or ``logprob`` (log p, computed without forming p).

    Returns:
        The reward; NaN for NaN log-odds.

    >>> shape_reward(0.0, "zyn"), shape_reward(0.0, "prob"), shape_reward(0.0, "logprob") == math.log(0.5)
    (0.0, 0.5, True)
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


def logsumexp(xs: Sequence[float]) -> float:
    """log(sum(exp(x) for x in xs)) for a non-empty list of floats, without overflow.

    Computed as m + log(sum(exp(x - m))) with m = max(xs); -inf when every x is
    -inf (no mass), +inf when any x is +inf.

    >>> logsumexp([0.0, 0.0]) == math.log(2), logsumexp([1000.0, 1000.0]) == 1000.0 + math.log(2)
    (True, True)
    >>> logsumexp([-math.inf, -math.inf])
    -inf
    """
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
        log_p = logsumexp([a + log_sigmoid(x) for a, x in zip(logw, logodds)])
        log_q = logsumexp([a + log_sigmoid(-x) for a, x in zip(logw, logodds)])
        return log_p - log_q
    raise ValueError(f"unknown combine mode {mode!r}; use one of {', '.join(COMBINES)}")


@dataclass(frozen=True)
class Combined:
    """What `combine` returns for N rows (inputs) of Q questions.

    Attributes:
        logodds: (Q, N) calibrated log-odds yes vs no, per question (not oriented).
        p_yes: (Q, N) sigmoid(logodds): P(yes) of each question's own yes answer.
        combined_logodds: (N,) combined log-odds of the rewarded answers.
        p_rewarded: (N,) sigmoid(combined_logodds): combined P(rewarded answer).
        rewards: (N,) combined_logodds shaped by the reward shape.
    """

    logodds: list[list[float]]
    p_yes: list[list[float]]
    combined_logodds: list[float]
    p_rewarded: list[float]
    rewards: list[float]


def combine(raw: Sequence[Sequence[float]], calibration: Sequence[tuple[float, float]],
            reward_answers: Sequence[str], weights: Sequence[float], mode: str = "mean",
            shape: str = "prob", penalty: Sequence[float] | None = None) -> Combined:
    """Calibrate, orient, combine and shape the raw log-odds of Q questions about N inputs.

    For each row, with question j's (scale_j, shift_j):

        lo_j = scale_j * raw_j + shift_j                 calibrate
        o_j  = lo_j if j rewards "yes" else -lo_j        orient (a "no" question gives P(no))
        c    = combine_logodds(o, weights, mode)         combine (Eq. 4 for "mean")
        c    = c - penalty                               penalise (a prompt set's `penalties`)
        p    = sigmoid(c),  reward = shape_reward(c, shape)

    "Per question" means one thing throughout zyn: P(yes) of that question's own
    yes answer, calibrated, not oriented, i.e. sigmoid(lo_j); a question that
    rewards "no" still reports P(yes). `Scores.per_question`, the ``p_yes/<question>``
    metrics and `zyn.calibration.apply_calibration` all hold this. Only the combined
    values are oriented: P of the rewarded answers. A NaN anywhere in a row makes
    that row's combined values NaN; its other questions keep their numbers.

    Args:
        raw: (N, Q) raw log-odds yes vs no, a row per input, a column per question.
        calibration: Q (scale, shift) pairs; (1.0, 0.0) leaves a question as it is.
        reward_answers: Q answers, each "yes" or "no": the answer a question rewards.
        weights: Q positive weights.
        mode: how questions combine, one of COMBINES (see `combine_logodds`).
        shape: the reward shape, one of SHAPES (see `shape_reward`).
        penalty: N non-negative log-odds to take off the combined values (read off
            the texts themselves, `zyn.prompts.PromptSet.penalty`); None for none.
            The per-question values do not carry it.

    Returns:
        A `Combined` of per-question (Q, N) and combined (N,) values.

    >>> c = combine([[2.0, 1.0]], [(1.0, 0.0), (2.0, -2.0)], ["yes", "no"], [1.0, 1.0], "mean_logodds", "logodds")
    >>> c.logodds, c.p_yes[1]      # question 2: 2 * 1 - 2 = 0, P(yes) 0.5
    ([[2.0], [0.0]], [0.5])
    >>> c.combined_logodds, c.rewards   # oriented (2, -0), mean 1
    ([1.0], [1.0])
    >>> c = combine([[0.0, math.log(3)]], [(1.0, 0.0)] * 2, ["yes", "no"], [1.0, 1.0])
    >>> round(c.p_rewarded[0], 12)   # mean of P(yes) 0.5 and P(no) 0.25
    0.375
    >>> combine([[1.0], [1.0]], [(1.0, 0.0)], ["yes"], [1.0], "mean", "logodds", penalty=[0.0, 3.0]).rewards
    [1.0, -2.0]
    """
    n_q = len(calibration)
    if not len(reward_answers) == len(weights) == n_q:
        raise ValueError(f"{n_q} calibrations, {len(reward_answers)} reward answers and {len(weights)} weights; "
                         "give one of each per question")
    _check_choice("reward answer", reward_answers, ANSWERS)
    _check_choice("reward shape", [shape], SHAPES)
    _check_choice("combine mode", [mode], COMBINES)
    signs = [1.0 if a == "yes" else -1.0 for a in reward_answers]
    calibrated = [_calibrate_row(row, calibration, i) for i, row in enumerate(raw)]  # (N, Q)
    combined = [combine_logodds([s * lo for s, lo in zip(signs, row)], weights, mode) for row in calibrated]
    if penalty is not None:
        if len(penalty) != len(combined):
            raise ValueError(f"{len(penalty)} penalties for {len(combined)} rows; give one per row")
        combined = [c - float(x) for c, x in zip(combined, penalty)]
    columns = [[row[j] for row in calibrated] for j in range(n_q)]  # (Q, N)
    return Combined(
        logodds=columns,
        p_yes=[[sigmoid(lo) for lo in col] for col in columns],
        combined_logodds=combined,
        p_rewarded=[sigmoid(lo) for lo in combined],
        rewards=[shape_reward(lo, shape) for lo in combined],
    )


def _calibrate_row(row: Sequence[float], calibration: Sequence[tuple[float, float]], i: int) -> list[float]:
    if len(row) != len(calibration):
        raise ValueError(f"row {i} has {len(row)} log-odds for {len(calibration)} questions")
    return [a * lo + b for (a, b), lo in zip(calibration, row)]


def _check_choice(what: str, values: Sequence[str], choices: Sequence[str]) -> None:
    for v in values:
        if v not in choices:
            raise ValueError(f"unknown {what} {v!r}; use one of {', '.join(choices)}")
