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
else ``solution``, row by row; a None one is no reference: `trlx_records`).

>>> trlx.train(reward_fn=TrlxReward(rm), metric_fn=TrlxMetrics(rm), prompts=..., config=...)  # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import MissingFieldError
from ..model import ZeroShotRewardModel
from .shared import failure_reward, reference_from_columns, scores_each, with_advice

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
            records = trlx_records(self.rm, samples, prompts, outputs, kwargs)
            rewards = scores_each(self.rm, records, strict=True)[0].rewards  # unscorable: NaN, then `fail`
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
            return self.rm.metrics(self.rm.score_detailed(trlx_records(self.rm, samples, prompts, outputs, kwargs)))
        except MissingFieldError as e:  # every batch would fail alike: the data and the prompt set differ
            raise with_advice(e, ADVICE) from None


def trlx_records(rm: ZeroShotRewardModel, samples: Any, prompts: Any, outputs: Any, metadata: dict) -> list[dict]:
    """One zyn record per sample, trlx's metadata columns as template fields, and the
    reference answer where the shipped prompt sets read it: a row's ``reference``, else its
    ``solution`` (`reference_from_columns`, as for TRL and ms-swift). A None one is none: a
    prompt set that reads it raises `MissingFieldError`, never grades against "None"."""
    return reference_from_columns(rm._trlx_records(samples, prompts, outputs, metadata))