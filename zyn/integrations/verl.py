"""verl: ``compute_score`` hooks for ``custom_reward_function``.

verl loads the function named by ``custom_reward_function.path`` and ``.name``
(``verl.trainer.ppo.reward.get_custom_reward_fn``) and its reward manager calls it
once per response, with keywords only::

    compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)

from a thread pool (``loop.run_in_executor``), or awaits it when the function is an
``async def`` (checked with ``inspect.iscoroutinefunction``, so an async hook must be a
plain coroutine function, not an object with an async ``__call__``). ``solution_str`` is
the decoded response only; the prompt reaches the judge only if the dataset put it
in ``extra_info`` ("prompt", or "question" as verl's example datasets do).

Configure with ZYN_* variables (`zyn.integrations.shared`) or reward kwargs, then::

    custom_reward_function.path=pkg://zyn.integrations.verl custom_reward_function.name=compute_score
    # or the file itself (older verl): path=$(python -c "import zyn.integrations.verl as m; print(m.__file__)")
    # async: name=compute_score_async;  +custom_reward_function.reward_kwargs.prompt=answer_grader

With ``reward_model.reward_manager=batch`` verl calls it once per batch instead
(``data_sources=, solution_strs=, ground_truths=, extra_infos=``), and it returns a list.

``ground_truth`` reaches the judge as the ``reference`` field (the one answer_grader reads);
a None ground truth is no reference, so a prompt set that needs one raises
`MissingFieldError`, as for any field the data lacks, instead of grading against "".

Each item's result is ``{"score": reward, "p_yes": P(rewarded answer), "failed": 0.0 or 1.0}``;
verl takes "score" as the reward and logs the other keys. An item that cannot be
scored gets $ZYN_FAILURE_REWARD (never NaN, which would poison the batch's advantages).

This file uses absolute imports only, so verl can load it by path as well as by name.
"""
from __future__ import annotations

import asyncio
import difflib
import math
from typing import Any

from zyn.errors import MissingFieldError, ZynError
from zyn.integrations.shared import (REFERENCE, failure_reward, score_each, set_reference, shared_reward_model,
                                     with_advice)
from zyn.model import ZeroShotRewardModel, as_batch

# reward_kwargs that choose the reward model rather than describe the item
MODEL_KWARGS = ("model", "prompt", "reward")
# keywords verl's reward loop adds for its own reward-model servers (unused here)
VERL_KWARGS = ("reward_router_address", "reward_model_tokenizer")
# the batch reward manager's keywords (verl/workers/reward_manager/batch.py), in verl_record's order
BATCH_KWARGS = ("data_sources", "solution_strs", "ground_truths", "extra_infos")
# record keys verl_record sets itself, which extra_info cannot replace
_RESERVED = {"prompt", "completion", "reference", "data_source", "messages", "text"}


class VerlReward:
    """A verl ``compute_score`` over one reward model (picklable; safe from many threads).

    Called per response (the naive, dapo and reward-loop managers) it returns one dict;
    called with the ``batch`` manager's plural keywords (``data_sources=, solution_strs=,
    ground_truths=, extra_infos=``) it scores them together and returns a list of dicts.

    Args:
        rm: the reward model; None = the process's shared one (ZYN_* variables, or the
            ``model``/``prompt``/``reward`` reward kwargs of each call).
        failure: the score of an item that cannot be scored (default $ZYN_FAILURE_REWARD).

    A keyword that is neither verl's nor one of ``model``, ``prompt``, ``reward`` (a typo
    in ``custom_reward_function.reward_kwargs``) is an error, as is a template field that
    the data lacks (every item would fail alike): neither becomes a failure score.

    >>> compute_score = VerlReward(ZeroShotRewardModel(judge, tok, prompt="answer_grader"))  # doctest: +SKIP
    >>> compute_score(data_source="gsm8k", solution_str="42", ground_truth="42",
    ...               extra_info={"question": "6 * 7?"})  # doctest: +SKIP
    {'score': 0.93, 'p_yes': 0.93, 'failed': 0.0}
    """

    def __init__(self, rm: ZeroShotRewardModel | None = None, failure: float | None = None):
        self.rm = rm
        self.failure = failure

    def __call__(self, data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                 extra_info: dict | None = None, **kwargs: Any) -> "dict[str, float] | list[dict[str, float]]":
        batch = {k: kwargs.pop(k) for k in BATCH_KWARGS if k in kwargs}
        unknown = sorted(set(kwargs) - set(MODEL_KWARGS) - set(VERL_KWARGS))
        if unknown:
            near = {k: difflib.get_close_matches(k, MODEL_KWARGS, n=1) for k in unknown}
            hints = "; ".join(f"did you mean {near[k][0]!r} for {k!r}?" for k in unknown if near[k])
            raise ZynError(f"compute_score: unknown keyword(s) {unknown} (custom_reward_function.reward_kwargs?); "
                           f"zyn reads {', '.join(MODEL_KWARGS)}" + (f"; {hints}" if hints else ""))
        chosen = {k: kwargs[k] for k in MODEL_KWARGS if k in kwargs}
        if self.rm is not None and chosen:  # a hook built on one reward model cannot switch it per call
            raise ZynError(f"compute_score: {sorted(chosen)} given to a VerlReward built on a reward model "
                           f"({self.rm.prompt_set.name!r}); build it with that model or prompt set "
                           "(rm.with_prompt(...)), or use zyn.integrations.verl.compute_score, which reads them")
        rm = self.rm or shared_reward_model(**chosen)
        if batch:
            if "solution_strs" not in batch:
                raise ZynError(f"compute_score: the batch form needs solution_strs=, got {sorted(batch)}")
            n = len(as_batch("solution_strs", batch["solution_strs"], "strings"))
            columns = [as_batch(k, batch[k]) if k in batch else [None] * n for k in BATCH_KWARGS]
            lengths = {k: len(c) for k, c in zip(BATCH_KWARGS, columns)}
            if len(set(lengths.values())) > 1:
                raise ZynError(f"compute_score: the batch keywords differ in length: {lengths}")
            records = [verl_record(ds, sol, gt, ei) for ds, sol, gt, ei in zip(*columns)]
            return [self.result(row) for row in self.score(rm, records)]
        (row,) = self.score(rm, [verl_record(data_source, solution_str, ground_truth, extra_info)])
        return self.result(row)

    @staticmethod
    def score(rm: ZeroShotRewardModel, records: list[dict]) -> list:
        try:
            return score_each(rm, records)
        except MissingFieldError as e:
            raise with_advice(e, verl_advice(rm, records)) from None

    def result(self, row: Any) -> dict[str, float]:
        """verl's dict for one scored item (`score_each`'s row, None if unscorable)."""
        if row is None or not math.isfinite(row[0]):
            return self.failed()
        return {"score": row[0], "p_yes": row[1], "failed": 0.0}

    async def score_async(self, **kwargs: Any) -> "dict[str, float] | list[dict[str, float]]":
        """The same, awaited: scores in a worker thread so the event loop stays free."""
        return await asyncio.to_thread(self, **kwargs)

    def failed(self) -> dict[str, float]:
        score = failure_reward() if self.failure is None else self.failure
        return {"score": score, "p_yes": 0.5, "failed": 1.0}


def verl_advice(rm: ZeroShotRewardModel, records: list[dict]) -> str:
    """How verl's data reaches the judge, for a `MissingFieldError`: a missing reference
    is a None ground truth, any other field belongs in extra_info."""
    if REFERENCE in rm.prompt_set.fields and any(REFERENCE not in r for r in records):
        return ("verl hands the judge ground_truth as 'reference', and it was None: set reward_model.ground_truth "
                "in the dataset, or use a prompt set without a reference (other fields come from extra_info)")
    return ("verl hands the judge extra_info's keys as fields (and ground_truth as 'reference', data_source as "
            "'data_source'): add it to the dataset's extra_info, or use a prompt set without it")


def verl_record(data_source: Any, solution_str: str, ground_truth: Any, extra_info: dict | None) -> dict:
    """The zyn record for one verl item: the response as the completion, the prompt from
    ``extra_info`` when it is there (text or chat messages), the ground truth as the
    ``reference`` field (as the answer_grader prompt set reads it; absent when it is None),
    and extra_info's other keys as template fields.

    >>> verl_record("gsm8k", "42", "42", {"question": "6 * 7?", "index": 3})
    {'prompt': '6 * 7?', 'completion': '42', 'reference': '42', 'data_source': 'gsm8k', 'question': '6 * 7?', 'index': 3}
    >>> verl_record("chat", "Hi!", None, {"prompt": [{"role": "user", "content": "Hello"}]})["messages"]
    [{'role': 'user', 'content': 'Hello'}, {'role': 'assistant', 'content': 'Hi!'}]
    """
    extra = extra_info if isinstance(extra_info, dict) else {}
    prompt = extra.get("prompt", extra.get("question"))
    completion = "" if solution_str is None else str(solution_str)
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        record: dict[str, Any] = {"messages": [dict(m) for m in prompt] + [{"role": "assistant",
                                                                             "content": completion}]}
    else:
        record = {"prompt": "" if prompt is None else str(prompt), "completion": completion}
    set_reference(record, ground_truth)  # None: no reference, so the field stays absent
    if data_source is not None:
        record["data_source"] = str(data_source)
    record.update({k: v for k, v in extra.items() if isinstance(k, str) and k not in _RESERVED})
    return record


_default = VerlReward()


def compute_score(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                  extra_info: dict | None = None, **kwargs: Any) -> dict[str, float]:
    """verl's ``compute_score`` over the process's shared reward model (see module doc)."""
    return _default(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth,
                    extra_info=extra_info, **kwargs)


async def compute_score_async(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                              extra_info: dict | None = None, **kwargs: Any) -> dict[str, float]:
    """`compute_score` as a coroutine function: verl awaits it on its reward loop while
    the scoring runs in a worker thread (the shape verl needs for an async hook)."""
    return await asyncio.to_thread(compute_score, data_source, solution_str, ground_truth, extra_info, **kwargs)
