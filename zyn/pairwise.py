"""Pairwise judging and best-of-n selection on top of a ZeroShotRewardModel.

A pairwise prompt set asks "Is response A better than response B?" with the two
candidates in the template fields ``a`` and ``b`` (and an optional ``question``).
LMs prefer one position over the other, so every pair is scored in both orders
and the two readings are averaged:

    p(A > B) = (p_AB + (1 - p_BA)) / 2

where p_AB is P(yes) with A shown first and p_BA with B shown first. Then
p(A > B) + p(B > A) = 1 exactly, and a pure position bias cancels out.

`rank` and `best_of_n` pick among candidates for rejection sampling: by a
round-robin tournament (each candidate's mean p(win) against every other), or, if
a pointwise reward model is given, by its scores (n forward passes instead of
n (n - 1)). Comparing two texts is harder than judging one: measure a judge's
pairwise accuracy before relying on it (the 0.5B default judge is near chance
pairwise, benchmarks/EVAL.md; rank pointwise with it).
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import InputError, PromptError

DEFAULT_PROMPT = "pairwise"


@dataclass
class Ranking:
    """Candidates ordered best first.

    Attributes:
        order: candidate indices, best first (ties keep the input order).
        scores: per candidate (input order): mean p(win) over its pairings in a
            round-robin, or the pointwise reward model's P(yes).
        wins: pairwise matrix, wins[i][j] = p(candidate i beats j) (diagonal 0.5);
            empty when ranked pointwise.
        method: "pairwise" or "pointwise".
    """

    order: list[int]
    scores: list[float]
    wins: list[list[float]] = field(default_factory=list)
    method: str = "pairwise"

    @property
    def best(self) -> int:
        return self.order[0]


class PairwiseJudge:
    """P(A better than B) from a yes/no LM, position-debiased.

    Args:
        model: a ZeroShotRewardModel (its loaded model is shared, not reloaded), or
            anything ZeroShotRewardModel accepts (model name, loaded model, backend).
        prompt: a prompt set whose templates use the fields ``a`` and ``b`` (and
            optionally ``question``); default: the shipped ``pairwise`` set.
        tokenizer, **kwargs: passed to ZeroShotRewardModel when `model` is not one.
    """

    def __init__(self, model: Any, prompt: Any = DEFAULT_PROMPT, tokenizer: Any = None, **kwargs: Any):
        from .model import ZeroShotRewardModel

        if isinstance(model, ZeroShotRewardModel):
            self.rm = model.with_prompt(prompt)
        else:
            self.rm = ZeroShotRewardModel(model, tokenizer=tokenizer, prompt=prompt, **kwargs)
        missing = {"a", "b"} - set(self.rm.prompt_set.fields)
        if missing:
            raise PromptError(f"{self.rm.prompt_set.source}: a pairwise prompt set must declare the fields a and b "
                              f"(missing {sorted(missing)}) and use them in its templates")

    @property
    def prompt_set(self):
        return self.rm.prompt_set

    def _record(self, a: str, b: str, question: str | None) -> dict:
        if not isinstance(a, str) or not isinstance(b, str):
            raise InputError("pairwise: candidates must be strings")
        rec = {"text": "", "a": a, "b": b}
        if "question" in self.prompt_set.fields:
            # None, not "": templates test it with {% if question %}, and None stays falsy
            # through rendering (an empty string is swapped for a non-empty marker there)
            rec["question"] = question or None
        elif question:
            raise PromptError(f"{self.prompt_set.source}: a question was given but the prompt set "
                              "has no `question` field")
        return rec

    def raw(self, pairs: Sequence[tuple[str, str]], question: str | None = None) -> tuple[list[float], list[float]]:
        """(p_AB, p_BA) for each pair: P(yes) with the first candidate shown as A,
        and with it shown as B. Both orders go in one batch."""
        from .model import as_batch

        pairs = as_batch("pairs", pairs, "(a, b) pairs of texts")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InputError(f"pairs: item {i}: expected a pair (a, b) of texts, got {type(pair).__name__} "
                                 f"{pair!r:.60}")
        records = [self._record(a, b, question) for a, b in pairs] + [self._record(b, a, question) for a, b in pairs]
        p = self.rm.score(records)
        n = len(pairs)
        return p[:n], p[n:]

    def compare_many(self, pairs: Sequence[tuple[str, str]], question: str | None = None) -> list[float]:
        """Debiased p(first better than second) for each (first, second) pair. NaN
        where the backend could not score one of the two orders."""
        p_ab, p_ba = self.raw(pairs, question)
        return [(x + (1.0 - y)) / 2.0 for x, y in zip(p_ab, p_ba)]

    def compare(self, a: str, b: str, question: str | None = None) -> float:
        """Debiased p(a better than b); compare(b, a) == 1 - compare(a, b)."""
        return self.compare_many([(a, b)], question)[0]

    __call__ = compare

    def rank(self, candidates: Sequence[str], question: str | None = None, pointwise: Any = None) -> Ranking:
        """Rank candidates best first.

        Args:
            candidates: the texts to choose among.
            question: the prompt they answer, if the prompt set uses one.
            pointwise: optional ZeroShotRewardModel; when given, candidates are
                ranked by its P(yes) (with the question as the record's prompt).
        """
        return rank(candidates, judge=self, question=question, pointwise=pointwise)

    def best_of_n(self, candidates: Sequence[str], question: str | None = None, pointwise: Any = None) -> str:
        """The best candidate (see `rank`)."""
        return best_of_n(candidates, judge=self, question=question, pointwise=pointwise)


def round_robin(judge: PairwiseJudge, candidates: Sequence[str], question: str | None = None) -> list[list[float]]:
    """wins[i][j] = debiased p(candidate i beats j), every unordered pair scored once
    in both orders (n (n - 1) queries in one batch); wins[j][i] = 1 - wins[i][j]."""
    n = len(candidates)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    probs = judge.compare_many([(candidates[i], candidates[j]) for i, j in pairs], question) if pairs else []
    wins = [[0.5] * n for _ in range(n)]
    for (i, j), p in zip(pairs, probs):
        wins[i][j], wins[j][i] = p, 1.0 - p
    return wins


def _order(scores: Sequence[float]) -> list[int]:
    # NaN scores rank last; ties keep input order (sorted is stable)
    return sorted(range(len(scores)), key=lambda i: (scores[i] != scores[i], -scores[i] if scores[i] == scores[i] else 0))


def pointwise_record(candidate: str, question: str | None) -> dict | str:
    """What a pointwise reward model judges: the candidate, after the question if any."""
    if not question:
        return candidate
    return {"prompt": question, "completion": candidate, "question": question,
            "text": f"{question}\n\n{candidate}"}


def rank(candidates: Sequence[str], judge: PairwiseJudge | None = None, question: str | None = None,
         pointwise: Any = None) -> Ranking:
    """Rank `candidates` best first, pairwise (round-robin mean p(win)) with `judge`
    or pointwise with the reward model `pointwise`."""
    from .model import as_batch

    candidates = as_batch("candidates", candidates, "texts")
    if not candidates:
        raise InputError("rank: no candidates")
    if pointwise is not None:
        scores = pointwise.score([pointwise_record(c, question) for c in candidates])
        return Ranking(_order(scores), list(scores), [], "pointwise")
    if judge is None:
        raise InputError("rank: give a pairwise judge or a pointwise reward model")
    n = len(candidates)
    wins = round_robin(judge, candidates, question)
    scores = [_mean_scored([row[j] for j in range(n) if j != i]) if n > 1 else 0.5 for i, row in enumerate(wins)]
    return Ranking(_order(scores), scores, wins, "pairwise")


def _mean_scored(values: list[float]) -> float:
    """The mean p(win) over the pairs that were scored (NaN: the judge could not compare
    that pair); NaN only when none was."""
    scored = [v for v in values if v == v]
    return sum(scored) / len(scored) if scored else math.nan


def best_of_n(candidates: Sequence[str], judge: PairwiseJudge | None = None, question: str | None = None,
              pointwise: Any = None) -> str:
    """The top candidate of `rank` (rejection sampling: generate n, keep the best)."""
    from .model import as_batch

    candidates = as_batch("candidates", candidates, "texts")
    return candidates[rank(candidates, judge, question, pointwise).best]
