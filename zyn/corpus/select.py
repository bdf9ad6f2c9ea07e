"""Selections over scored rows, in one streaming pass: a P(yes) floor, best-of-n, DPO pairs.

Groups are runs of adjacent rows with the same value of the group field (the usual
layout of n completions per prompt); a value that comes back after another group
is an error, since sorting would need the whole corpus. Only the current group and
an 8-byte digest per group already seen are held.

Pairs follow TRL's preference format: ``prompt``, ``chosen``, ``rejected`` (strings,
or message lists for chat records), plus ``margin`` = reward(chosen) - reward(rejected)
and both rewards (``score_chosen``, ``score_rejected``, as in UltraFeedback-binarized).

>>> rows = [{"q": "a", "text": "x", "p_yes": .9, "reward": 4.0}, {"q": "a", "text": "y", "p_yes": .2, "reward": -3.0},
...         {"q": "b", "text": "z", "p_yes": .6, "reward": 1.0}]
>>> s = Selector(group_by="q", keep="best"); [r["text"] for r in s.feed(rows) + s.finish()]
['x', 'z']
>>> s = Selector(group_by="q", pairs=True); s.feed(rows) + s.finish()
[{'prompt': 'a', 'chosen': 'x', 'rejected': 'y', 'margin': 7.0, 'score_chosen': 4.0, 'score_rejected': -3.0}]
>>> [r["text"] for r in Selector(min_p=0.5).feed(rows)]
['x', 'z']
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from ..errors import InputError


class Selector:
    """Feed scored rows in order with `feed`; call `finish` once at the end.

    Args:
        group_by: the field whose adjacent equal values form a group (None: no groups).
        keep: "best" keeps each group's highest-reward row (the first of ties).
        pairs: emit one (best, worst) preference pair per group, when their rewards differ.
        min_p: drop rows whose P(yes) is below this (or NaN) before grouping.
        field: the field holding the judged text (else "completion", else chat "messages").
    """

    def __init__(self, group_by: str | None = None, keep: str | None = None, pairs: bool = False,
                 min_p: float | None = None, field: str = "text"):
        if (keep or pairs) and not group_by:
            raise InputError("--keep best and --pairs need --group-by FIELD")
        if keep and pairs:
            raise InputError("choose one of --keep best and --pairs")
        if keep not in (None, "best"):
            raise InputError(f"--keep {keep!r}: only 'best' is known")
        self.group_by, self.keep, self.pairs, self.min_p, self.field = group_by, keep, pairs, min_p, field
        self._group: list[dict] = []
        self._key: str | None = None
        self._seen: set[bytes] = set()
        self._rows = 0

    @property
    def is_plain(self) -> bool:
        """Whether every row passes through unchanged."""
        return self.group_by is None and self.min_p is None

    def feed(self, rows: list[dict]) -> list[dict]:
        out: list[dict] = []
        for row in rows:
            self._rows += 1
            if self.min_p is not None and not _number(row.get("p_yes")) >= self.min_p:  # unscored (null): dropped
                continue
            if not self.group_by:
                out.append(row)
                continue
            key = self._key_of(row)
            if key != self._key:
                out += self._close_group()
                digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
                if digest in self._seen:
                    raise InputError(f"--group-by {self.group_by}: the group {key} comes back at scored row "
                                     f"{self._rows} after other groups; groups must be adjacent rows: sort "
                                     f"the input by {self.group_by!r} first")
                self._seen.add(digest)
                self._key = key
            self._group.append(row)
        return out

    def finish(self) -> list[dict]:
        return self._close_group() if self.group_by else []

    def _key_of(self, row: dict) -> str:
        if self.group_by not in row:
            raise InputError(f"--group-by {self.group_by}: scored row {self._rows} has no such field; "
                             f"keys: {sorted(row)[:8]}")
        return json.dumps(row[self.group_by], sort_keys=True, ensure_ascii=False, default=str)

    def _close_group(self) -> list[dict]:
        group, self._group = self._group, []
        if not group:
            return []
        ranked = sorted(group, key=_reward, reverse=True)  # stable: the first of ties stays first
        if self.keep == "best":
            return [ranked[0]]
        if self.pairs:
            return self._pair(ranked[0], ranked[-1])
        return group

    def _pair(self, best: dict, worst: dict) -> list[dict]:
        margin = _reward(best) - _reward(worst)
        if not margin > 0 or math.isinf(margin):  # one row, ties, or NaN rewards: no preference
            return []
        prompt, chosen = self._prompt_and_answer(best)
        _, rejected = self._prompt_and_answer(worst)
        return [{"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin,
                 "score_chosen": best["reward"], "score_rejected": worst["reward"]}]

    def _prompt_and_answer(self, row: dict) -> tuple[Any, Any]:
        if self.field in row or "completion" in row:
            answer = row[self.field] if self.field in row else row["completion"]
            return row.get("prompt", row[self.group_by]), answer
        messages = row["messages"]  # chat: the last message answers the ones before it
        return messages[:-1], messages[-1:]


def _number(value) -> float:
    """A score as a float; NaN for a missing or null one (a row the judge left unscored)."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _reward(row: dict) -> float:
    r = row.get("reward")
    return -math.inf if r is None or r != r else float(r)
