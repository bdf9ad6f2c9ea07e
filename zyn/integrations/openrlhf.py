"""OpenRLHF: a ``reward_func`` file for ``--remote_rm_url`` (``--reward.remote_url``).

Given a path ending in ``.py``, OpenRLHF's ``SingleTurnAgentExecutor``
(openrlhf/utils/agent.py) loads the file's ``reward_func`` and calls it from a worker
thread (``asyncio.to_thread``), one sample per call, many samples at once::

    reward_func([query], [prompt], [label])

where query = ``decode(prompt_ids + response_ids)`` with special tokens kept. It reads
``rewards`` (advantages), ``scores`` (dynamic filtering; falls back to rewards) and
``extra_logs`` and builds tensors from every value, so nothing may be None or NaN and
an exception loses the sample's reward. This returns tensors, as OpenRLHF's own
example does: ``{"rewards", "scores": P(rewarded answer), "extra_logs": {"p_yes",
"zyn/failed", "p_yes/<question>"}}``; an unscorable item gets $ZYN_FAILURE_REWARD.

Each label reaches the judge as the ``reference`` field (the one answer_grader reads) and,
as given, as ``label``. OpenRLHF sends "" as the label when ``--data.label_key`` (formerly
``--label_key``) is not set, so "" and None are no reference: a prompt set that needs one
raises `MissingFieldError` instead of grading against "".

The judge reads the policy's prompt and response as plain turns (`split_query`):
set ZYN_CHAT_FORMAT (chatml, llama3, gemma, none; default: guessed from the markers)
or ZYN_POLICY_TOKENIZER (the policy's tokenizer folder or id, whose chat template is
read). The reward model comes from ZYN_* variables (`zyn.integrations.shared`)::

    ZYN_MODEL=Qwen/Qwen2.5-1.5B-Instruct ZYN_PROMPT=sentiment \\
      python -m openrlhf.cli.train_ppo_ray ... --remote_rm_url $(python -m zyn.integrations.openrlhf)

This file uses absolute imports only: OpenRLHF loads it by path.
"""
from __future__ import annotations

import math
import os
import threading
from typing import Any, Sequence

from zyn.errors import InputError, MissingFieldError, ZynError
from zyn.integrations.chatformat import ChatFormat, resolve_chat_format, split_query
from zyn.integrations.shared import failure_reward, score_each, set_reference, shared_reward_model, with_advice
from zyn.model import ZeroShotRewardModel, as_batch

__all__ = ["OpenRLHFReward", "reward_func", "openrlhf_records", "label_fields", "split_query", "ADVICE"]

#: How OpenRLHF's data reaches the judge, for a `MissingFieldError` (here and in the server's /get_reward).
ADVICE = ("OpenRLHF hands the judge only the query, the prompt and the label, the label as 'reference' (and "
          "'label'): set --data.label_key (formerly --label_key) to the dataset's reference-answer column (without "
          "it OpenRLHF sends empty labels, which are no reference), or use a prompt set without the field")

_lock = threading.Lock()
_policy_tokenizers: dict[str, Any] = {}


class OpenRLHFReward:
    """OpenRLHF's ``reward_func(queries, prompts, labels)`` over one reward model.

    Args:
        rm: the reward model; None = the process's shared one (ZYN_* variables).
        chat_format: the policy's chat format (see `split_query`); None = from
            ZYN_POLICY_TOKENIZER or ZYN_CHAT_FORMAT, else guessed per query.
        failure: the reward of an unscorable item (default $ZYN_FAILURE_REWARD).
    """

    def __init__(self, rm: ZeroShotRewardModel | None = None, chat_format: Any = None, failure: float | None = None):
        self.rm = rm
        self.chat_format = chat_format
        self.failure = failure

    def __call__(self, queries: Sequence[str], prompts: Sequence[str] | None = None,
                 labels: Sequence[Any] | None = None) -> dict[str, Any]:
        import torch

        rm = self.rm or shared_reward_model()
        fmt = self.chat_format if self.chat_format is not None else env_chat_format()
        items = openrlhf_records(queries, prompts, labels, fmt)
        fail = failure_reward() if self.failure is None else self.failure
        names = [q.name for q in rm.prompt_set.questions]
        try:
            rows = score_each(rm, items)  # (reward, p_yes, {question: p_yes}) or None per item
        except MissingFieldError as e:  # the data and the prompt set do not match: every sample would fail
            raise with_advice(e, ADVICE) from None
        failed = [row is None or not math.isfinite(row[0]) for row in rows]

        def column(get, bad: float) -> "torch.Tensor":
            values = [bad if f else get(row) for row, f in zip(rows, failed)]
            return torch.tensor([v if math.isfinite(v) else bad for v in values], dtype=torch.float32)

        p_yes = column(lambda r: r[1], 0.5)
        logs = {"p_yes": p_yes, "zyn/failed": torch.tensor(failed, dtype=torch.float32)}
        if len(names) > 1:
            logs.update({f"p_yes/{n}": column(lambda r, n=n: r[2][n], 0.5) for n in names})
        return {"rewards": column(lambda r: r[0], fail), "scores": p_yes, "extra_logs": logs}


def openrlhf_records(queries: Sequence[str], prompts: Sequence[str] | None, labels: Sequence[Any] | None,
                     chat_format: Any = None) -> list[dict]:
    """One zyn record per query: `split_query` of each, plus its label's fields (`label_fields`)."""
    queries = as_batch("queries", queries, "strings")
    prompts = as_batch("prompts", prompts, "strings") if prompts is not None else [None] * len(queries)
    labels = as_batch("labels", labels, "labels") if labels is not None else None
    for name, values in (("queries", queries), ("prompts", prompts)):
        bad = next((i for i, v in enumerate(values)
                    if not isinstance(v, str) and not (name == "prompts" and v is None)), None)
        if bad is not None:
            raise InputError(f"{name}: item {bad}: expected a string (the policy's decoded text), got "
                             f"{type(values[bad]).__name__}")
    if len(prompts) != len(queries) or (labels is not None and len(labels) != len(queries)):
        raise InputError(f"queries ({len(queries)}), prompts ({len(prompts)}) and labels "
                         f"({'-' if labels is None else len(labels)}) differ in length")
    records = [split_query(q, p, chat_format) for q, p in zip(queries, prompts)]
    if labels is not None:
        for record, label in zip(records, labels):
            record.update(label_fields(label))
    return records


def label_fields(label: Any) -> dict:
    """The template fields of one OpenRLHF label: ``reference`` (as text, the field the
    shipped prompt sets read) and ``label`` (as sent). None is no label; "" is what
    OpenRLHF sends without a label key, so a blank label is kept as ``label`` but is no
    reference.

    >>> label_fields("4"), label_fields(4), label_fields(""), label_fields(None)
    ({'label': '4', 'reference': '4'}, {'label': 4, 'reference': '4'}, {'label': ''}, {})
    """
    if label is None:
        return {}
    return set_reference({"label": label}, None if isinstance(label, str) and not label.strip() else label)


def env_chat_format() -> ChatFormat | str | None:
    """The policy's chat format from ZYN_POLICY_TOKENIZER (loaded once) or ZYN_CHAT_FORMAT."""
    path = os.environ.get("ZYN_POLICY_TOKENIZER")
    if path:
        with _lock:
            if path not in _policy_tokenizers:
                from transformers import AutoTokenizer

                from zyn.models import hub

                only = {"local_files_only": True} if not os.path.isdir(path) and hub.unreachable() else {}
                try:
                    tokenizer = AutoTokenizer.from_pretrained(path, **only)
                except (OSError, ValueError) as e:
                    raise ZynError(f"ZYN_POLICY_TOKENIZER={path!r}: cannot load a tokenizer there "
                                   f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); give the policy's "
                                   "folder or hub id, or set ZYN_CHAT_FORMAT instead") from None
                _policy_tokenizers[path] = resolve_chat_format(tokenizer)
            return _policy_tokenizers[path]
    return os.environ.get("ZYN_CHAT_FORMAT") or None


reward_func = OpenRLHFReward()

if __name__ == "__main__":  # print this file's path, for --remote_rm_url
    print(os.path.abspath(__file__))
