"""trlx (archived; not on the package registry): ``reward_fn`` and ``metric_fn``.

trlx's PPO trainer calls (trlx/trainer/accelerate_ppo_trainer.py, ``make_experience``)::

    reward_fn(samples=list[str], prompts=list[str], outputs=list[str], tokenizer=tok, **metadata)

with samples = prompt + output and metadata the prompt dataset's other keys, and turns
each returned value into a tensor; evaluation (accelerate_base_trainer.py, ``evaluate``)
calls ``metric_fn(samples=, prompts=, outputs=, **metadata)`` and logs each key of the
returned ``dict[str, list[float]]`` as ``metrics/<key>``. Both contracts live on
`ZeroShotRewardModel` itself (``rm(...)``, ``rm.metric_fn(...)``); these wrappers add
what a training loop needs on top: a name, and a number in place of NaN.

>>> trlx.train(reward_fn=TrlxReward(rm), metric_fn=TrlxMetrics(rm), prompts=..., config=...)  # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..model import ZeroShotRewardModel
from .shared import failure_reward


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
        return [r if math.isfinite(r) else fail for r in self.rm(samples=samples, prompts=prompts, outputs=outputs,
                                                                 **kwargs)]


class TrlxMetrics:
    """trlx ``metric_fn``: ``p_yes``, ``reward`` and ``p_yes/<question>`` lists
    (`ZeroShotRewardModel.metric_fn`), logged by trlx as ``metrics/<key>``."""

    def __init__(self, rm: ZeroShotRewardModel):
        self.rm = rm
        self.__name__ = f"zyn_{rm.prompt_set.name}_metrics"

    def __call__(self, samples: Sequence[str] | None = None, prompts: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, **kwargs: Any) -> dict[str, list[float]]:
        return self.rm.metric_fn(samples=samples, prompts=prompts, outputs=outputs, **kwargs)
