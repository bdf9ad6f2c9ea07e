"""TRL (GRPOTrainer, RLOOTrainer): reward functions over a ZeroShotRewardModel.

TRL calls each reward as ``f(prompts=, completions=, completion_ids=, **kw)`` where
kw holds every other dataset column (one value per completion) and ``trainer_state``,
``log_metric``, ``log_extra``; it wants one float per completion (None reads as NaN)
and names the logged metric after ``__name__``. A reward whose ``__call__`` is
``async def`` is awaited together with the other async rewards on TRL's event loop
(``trl.trainer.utils.is_async_callable``, ``GRPOTrainer._calculate_rewards``).

Dataset columns become template fields by name; the reference answer is the
``reference`` column, else ``solution`` (the column TRL's ``accuracy_reward`` reads). A row
whose column holds no value for a field the prompt set reads (None, NaN) is not judged:
its reward is None, which TRL reads as "this reward does not apply" (a multi-task
dataset's rows of another task, as ``accuracy_reward`` does for a row without a usable
solution); a column the dataset lacks altogether raises `MissingFieldError`
(`zyn.integrations.shared.judged_rows`).

Neither class is an ``nn.Module`` (TRL would treat it as a sequence classifier), and
both pickle (a model loaded by name is reloaded by name).

>>> rm = ZeroShotRewardModel("qwen2.5-0.5b-instruct", prompt="sentiment")  # doctest: +SKIP
>>> GRPOTrainer(model=policy, reward_funcs=[rm.as_trl_reward()], ...)      # doctest: +SKIP
>>> GRPOTrainer(..., reward_funcs=[rm.as_trl_reward(async_=True)])        # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import math
from typing import Any, Callable, Sequence

from ..api import Scores
from ..errors import MissingFieldError
from ..model import ZeroShotRewardModel, add_columns, as_batch, same_length
from .shared import columns_read, judged_rows, reference_from_columns, scores_each, with_advice

ADVICE = ("TRL hands the judge the dataset's columns by name: add a column of that name (the reference answer: "
          "'reference', or 'solution' as TRL's accuracy_reward names it), or use a prompt set without the field")


class TRLReward:
    """TRL reward function over a ZeroShotRewardModel.

    Called as ``f(prompts=, completions=, completion_ids=, **columns)``; plain prompts
    are strings, conversational ones are message lists and each completion is
    ``[{"role": "assistant", "content": ...}]``. Dataset columns become template fields.

    Returns:
        one shaped reward per completion, None where the judge could not score.
        With several questions, ``log_metric`` gets ``<name>/p_yes_<question>`` means.
    """

    def __init__(self, rm: ZeroShotRewardModel):
        self.rm = rm
        self.__name__ = f"zyn_{rm.prompt_set.name}"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 **kwargs: Any) -> list[float | None]:
        records = self.records(prompts, completions, kwargs)
        kept = judged_rows(records, self.rm.prompt_set.fields, kwargs)
        return self.finish(self.score([records[i] for i in kept]), kept, len(records), kwargs)

    def records(self, prompts: Sequence[Any], completions: Sequence[Any], columns: dict) -> list[dict]:
        """One zyn record per completion, with the dataset columns as template fields."""
        prompts, completions = as_batch("prompts", prompts, "prompts"), as_batch("completions", completions,
                                                                              "completions")
        same_length(prompts=prompts, completions=completions)
        records = [trl_record(p, c) for p, c in zip(prompts, completions)]
        add_columns(records, columns, columns_read(self.rm.prompt_set.fields))
        return reference_from_columns(records)

    def score(self, records: list[dict]) -> Scores:
        """The judge's scores (NaN for a row that could not be scored, `scores_each`); a
        field the dataset lacks is raised with TRL's advice."""
        try:
            return scores_each(self.rm, records, strict=True)[0]
        except MissingFieldError as e:  # every batch would fail alike: the dataset and the prompt set differ
            raise with_advice(e, ADVICE) from None

    def finish(self, scores: Scores, kept: list[int], n: int, kwargs: dict) -> list[float | None]:
        """The rewards of all `n` completions, those of rows `kept` from `scores` (NaN
        becomes None) and None for the others; per-question means go to TRL's ``log_metric``."""
        log_metric: Callable | None = kwargs.get("log_metric")
        if log_metric is not None and kept and len(self.rm.prompt_set.questions) > 1:
            for name, values in scores.per_question.items():
                log_metric(f"{self.__name__}/p_yes_{name}", nanmean(values))
        rewards: list[float | None] = [None] * n
        for i, r in zip(kept, scores.rewards):
            rewards[i] = None if math.isnan(r) else r
        return rewards


class AsyncTRLReward(TRLReward):
    """`TRLReward` that TRL awaits: the blocking scoring runs in a worker thread, so
    several async rewards (or a remote judge's HTTP round trips) overlap instead of
    queueing on TRL's event loop. ``log_metric`` is still called on the loop."""

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                       **kwargs: Any) -> list[float | None]:
        records = self.records(prompts, completions, kwargs)
        kept = judged_rows(records, self.rm.prompt_set.fields, kwargs)
        scores = await asyncio.to_thread(self.score, [records[i] for i in kept])
        return self.finish(scores, kept, len(records), kwargs)


def trl_record(prompt: Any, completion: Any) -> dict:
    """A zyn record from one TRL prompt and completion (plain strings or message lists).

    >>> trl_record("Review: ", "loved it")
    {'prompt': 'Review: ', 'completion': 'loved it'}
    >>> trl_record([{"role": "user", "content": "Hi"}], [{"role": "assistant", "content": "Hello"}])["messages"][-1]
    {'role': 'assistant', 'content': 'Hello'}
    """
    if isinstance(completion, list):  # conversational: message lists
        history = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        return {"messages": history + list(completion)}
    return {"prompt": prompt if isinstance(prompt, str) else "" if prompt is None else str(prompt),
            "completion": completion}


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are numbers; NaN if none is.

    >>> nanmean([1.0, float("nan"), 3.0])
    2.0
    """
    good = [v for v in values if not math.isnan(v)]
    return sum(good) / len(good) if good else math.nan
