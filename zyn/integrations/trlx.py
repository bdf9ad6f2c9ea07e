"""trlx (archived; not on the package registry): ``reward_fn`` and ``metric_fn``.

trlx's PPO trainer calls (trlx/trainer/accelerate_ppo_trainer.py, ``make_experience``)::

    reward_fn(samples=list[str], prompts=list[str], outputs=list[str], tokenizer=tok, **metadata)

with samples = prompt + output and metadata the prompt dataset's other keys, and turns
each returned value into a tensor; evaluation (accelerate_base_trainer.py, ``evaluate``)
calls ``metric_fn(samples=, prompts=, outputs=, **metadata)`` and logs each key of the
returned ``dict[str, list[float]]`` as ``metrics/<key>``. Both contracts live on
`ZeroShotRewardModel` itself (``rm(...)``, ``rm.metric_fn(...)``); these wrappers add
what a training loop needs on top: a name, a number in place of NaN, and the prompt
dataset's reference answer where the shipped prompt sets read it (a ``reference`` key,
else ``solution``; a None one is no reference: `trlx_metadata`).

>>> trlx.train(reward_fn=TrlxReward(rm), metric_fn=TrlxMetrics(rm), prompts=..., config=...)  # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import MissingFieldError
from ..model import ZeroShotRewardModel, as_column
from ..prompts import is_missing
from .shared import REFERENCE, SOLUTION, failure_reward, scores_each, with_advice

ADVICE = ("trlx hands the judge the prompt dataset's other keys by name: add a key of that name to each prompt's "
          "dict (the reference answer: 'reference' or 'solution'), or use a prompt set without the field")


class TrlxReward:
    """trlx ``reward_fn``: one shaped reward per sample (`ZeroShotRewardModel.__call__`),
    with $ZYN_FAILURE_REWARD (or `failure`) where the judge could not score, since
    trlx has no notion of a missing reward and a NaN would reach the advantages."""

    def __init__(self, rm: ZeroShotRewardModel, failure: float | None = None):
        self.rm = rm
        self.failure = failure
        self.__name__ = f"zyn_{rm.prompt_set.name}"

    def __call__(self, samples: Sequence[str] | None = None, prompts: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        fail = failure_reward() if self.failure is None else self.failure
        try:
            metadata = trlx_metadata(kwargs, self.rm.prompt_set.fields)
            records = self.rm._trlx_records(samples, prompts, outputs, metadata)
            rewards = scores_each(self.rm, records, strict=True)[0].rewards  # a row that cannot be scored: NaN, then `fail`
        except MissingFieldError as e:  # every batch would fail alike: the data and the prompt set differ
            raise with_advice(e, ADVICE) from None
        return [r if math.isfinite(r) else fail for r in rewards]


class TrlxMetrics:
    """trlx ``metric_fn``: ``p_yes``, ``reward`` and ``p_yes/<question>`` lists
    (`ZeroShotRewardModel.metric_fn`), logged by trlx as ``metrics/<key>``."""

    def __init__(self, rm: ZeroShotRewardModel):
        self.rm = rm
        self.__name__ = f"zyn_{rm.prompt_set.name}_metrics"

    def __call__(self, samples: Sequence[str] | None = None, prompts: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, **kwargs: Any) -> dict[str, list[float]]:
        try:
            return self.rm.metric_fn(samples=samples, prompts=prompts, outputs=outputs,
                                     **trlx_metadata(kwargs, self.rm.prompt_set.fields))
        except MissingFieldError as e:  # every batch would fail alike: the data and the prompt set differ
            raise with_advice(e, ADVICE) from None


def trlx_metadata(metadata: dict, fields: Sequence[str]) -> dict:
    """trlx's metadata columns with the reference answer where the shipped prompt sets read
    it: ``reference``, else ``solution``. A sample whose reference is None has none: if the
    prompt set's `fields` hold it, that is a `MissingFieldError` (as for a missing key), not "None".

    >>> trlx_metadata({"solution": ["4"], "split": ["train"]}, fields=("reference",))
    {'solution': ['4'], 'split': ['train'], 'reference': ['4']}
    """
    columns = dict(metadata)
    reference, solution = as_column(columns.get(REFERENCE)), as_column(columns.get(SOLUTION))
    if solution is not None and (reference is None or len(reference) == len(solution)):
        # row by row, as TRL and ms-swift read them: a row's reference, else its solution
        columns[REFERENCE] = [s if reference is None or is_missing(reference[i]) else reference[i]
                              for i, s in enumerate(solution)]
    references = as_column(columns.get(REFERENCE))
    absent = [i for i, r in enumerate(references) if is_missing(r)] if references is not None else []
    if REFERENCE in fields and absent:
        raise MissingFieldError(f"item {absent[0]}: missing field(s) ['reference'] that the prompt set's templates use")
    return columns
