"""ms-swift (GRPO): an ORM plugin and a reward-model plugin.

ms-swift builds each ``--reward_funcs NAME`` as ``orms[NAME](args=grpo_args)`` and calls
it as ``reward_func(completions, **rows)`` (swift/rl_core/grpo_algorithm.py,
``compute_rewards_per_func``): completions positional, every dataset column batched in
rows, ``messages`` the full conversation ending with the completion, and
``trainer_state``. It wants one float per completion (None reads as NaN) and logs it
under the class name. A ``--reward_model`` is wrapped by ``rm_plugins[NAME](model=,
template=)`` and called as ``plugin(inputs=rows, **rows)``.

Dataset columns become template fields by name; the reference answer is the
``reference`` column, else ``solution`` (the column swift's accuracy ORM reads). A row whose
column holds no value for a field the prompt set reads gets None, swift's "does not apply"
(multi-task datasets); a column the dataset lacks raises `MissingFieldError`
(`zyn.integrations.shared.judged_rows`).

Register in a plugin file (``--external_plugins zyn_plugin.py``)::

    from zyn.integrations.swift import register
    register("zyn_sentiment", prompt="sentiment")        # ZYN_MODEL names the judge
    # swift rlhf --rlhf_type grpo --reward_funcs zyn_sentiment --external_plugins zyn_plugin.py
    register_rm_plugin("zyn", prompt="sentiment")        # --reward_model JUDGE --reward_model_plugin zyn
"""
from __future__ import annotations

import math
import sys
from typing import Any, Sequence

from ..api import Scores
from ..errors import InputError, MissingFieldError
from ..model import ZeroShotRewardModel, add_columns, as_batch
from .shared import (columns_read, judged_rows, reference_from_columns, scores_each, shared_reward_model,
                     with_advice)

ADVICE = ("ms-swift hands the judge the dataset's columns by name: add a column of that name (the reference answer: "
          "'reference', or 'solution' as swift's accuracy ORM names it), or use a prompt set without the field")


class ZynORM:
    """ms-swift outcome reward over a zyn reward model (shared per process, loaded on first call).

    Class attributes ``model``, ``prompt``, ``reward`` choose it (None = the ZYN_*
    variables); `register` makes a named subclass per registration, so each logs under
    its own name.
    """

    model: str | None = None
    prompt: str | None = None
    reward: str | None = None

    def __init__(self, args: Any = None, rm: ZeroShotRewardModel | None = None, **kwargs: Any):
        self.args = args  # swift's GRPOConfig; unused
        self.rm = rm

    def __call__(self, completions: Sequence[str], **rows: Any) -> list[float | None]:
        completions = as_batch("completions", completions, "completions")
        rm = self.rm or shared_reward_model(self.model, self.prompt, self.reward)
        return swift_rewards(rm, swift_records(completions, rows, rm.prompt_set.fields), rows)


class ZynRMPlugin:
    """ms-swift reward-model plugin: reads yes/no log-odds from the ``--reward_model``
    swift loaded (an instruction-tuned causal LM) with its template's tokenizer.

    Built by swift as ``plugin(model=, template=)``; ``prompt``/``reward`` class
    attributes (or ZYN_PROMPT/ZYN_REWARD) choose the questions.
    """

    prompt: str | None = None
    reward: str | None = None

    def __init__(self, model: Any, template: Any):
        import os

        tokenizer = getattr(template, "tokenizer", None) or getattr(template, "processor", None)
        self.rm = ZeroShotRewardModel(model, tokenizer, prompt=self.prompt or os.environ.get("ZYN_PROMPT") or
                                      "sentiment", reward=self.reward or os.environ.get("ZYN_REWARD") or None)

    def __call__(self, inputs: Sequence[dict], **kwargs: Any) -> list[float | None]:
        completions = [row["messages"][-1]["content"] for row in inputs]
        rows = {k: [row.get(k) for row in inputs] for k in inputs[0]} if inputs else {}
        return swift_rewards(self.rm, swift_records(completions, rows, self.rm.prompt_set.fields), rows)


def swift_rewards(rm: ZeroShotRewardModel, records: list[dict], rows: dict) -> list[float | None]:
    """One reward per record: None where the judge could not score it, or where the
    record's column holds no value for a field the prompt set reads (`judged_rows`)."""
    kept = judged_rows(records, rm.prompt_set.fields, rows)
    rewards: list[float | None] = [None] * len(records)
    for i, r in zip(kept, swift_score(rm, [records[i] for i in kept]).rewards):
        rewards[i] = None if math.isnan(r) else r
    return rewards


def swift_score(rm: ZeroShotRewardModel, records: list[dict]) -> Scores:
    """The judge's scores (NaN for a row that could not be scored, `scores_each`); a field
    the dataset lacks is raised with ms-swift's advice."""
    try:
        return scores_each(rm, records, strict=True)[0]
    except MissingFieldError as e:  # every batch would fail alike: the dataset and the prompt set differ
        raise with_advice(e, ADVICE) from None


def swift_records(completions: Sequence[str], rows: dict, fields: Sequence[str] = ()) -> list[dict]:
    """One zyn record per completion: the conversation when ``messages`` ends with it,
    else the completion alone; the other columns become template fields (a ``solution``
    is the ``reference`` too, unless there is one).

    >>> (record,) = swift_records(["Hi!"], {"messages": [[{"role": "user", "content": "Hello"},
    ...                                                   {"role": "assistant", "content": "Hi!"}]], "solution": ["x"]})
    >>> record["messages"][-1], record["solution"], record["reference"]
    ({'role': 'assistant', 'content': 'Hi!'}, 'x', 'x')
    """
    conversations = rows.get("messages") or [None] * len(completions)
    if len(conversations) != len(completions):
        raise InputError(f"messages: {len(conversations)} conversations for {len(completions)} completions; ms-swift "
                         "passes one per completion")
    records = []
    for completion, messages in zip(completions, conversations, strict=True):
        if _ends_with(messages, completion):
            records.append({"messages": [{"role": m.get("role", "user"), "content": m["content"]} for m in messages]})
        else:
            records.append({"completion": completion})
    add_columns(records, rows, columns_read(fields))
    return reference_from_columns(records)


def register(name: str = "zyn", model: str | None = None, prompt: str | None = None,
             reward: str | None = None) -> type[ZynORM]:
    """Register a `ZynORM` as ``orms[name]`` (when ms-swift is installed) and return its class.

    The class is named after `name` (the metric swift logs) and lives in this module,
    so it pickles.
    """
    cls = _named(ZynORM, name, model=model, prompt=prompt, reward=reward)
    try:
        from swift.rewards import orms
    except ImportError:
        return cls
    orms[name] = cls
    return cls


def register_rm_plugin(name: str = "zyn", prompt: str | None = None, reward: str | None = None) -> type[ZynRMPlugin]:
    """Register a `ZynRMPlugin` as ``rm_plugins[name]`` (when ms-swift is installed)."""
    cls = _named(ZynRMPlugin, name, prompt=prompt, reward=reward)
    try:
        from swift.rewards import rm_plugins
    except ImportError:
        return cls
    rm_plugins[name] = cls
    return cls


def _named(base: type, name: str, **attrs: Any) -> type:
    cls_name = "".join(ch if ch.isalnum() else "_" for ch in name)
    taken = getattr(sys.modules[__name__], cls_name, None)
    if not cls_name.isidentifier() or cls_name == base.__name__ or \
            (taken is not None and not (isinstance(taken, type) and issubclass(taken, base))):
        cls_name = f"{base.__name__}_{cls_name}"  # never shadow this module's own names
    cls = type(cls_name, (base,), {**attrs, "__module__": __name__, "__qualname__": cls_name})
    setattr(sys.modules[__name__], cls_name, cls)  # found by pickle, by name
    return cls


def _ends_with(messages: Any, completion: str) -> bool:
    return (isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict)
            and messages[-1].get("content") == completion
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages))
