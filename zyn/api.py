"""The contract the rest of zyn is built on: what a backend is given and what it returns.

    text --render (prompts)--> Query --backend--> LogOdds --scoring--> Scores

Nothing here knows a model, a file format or a server: `prompts` builds `Query`
objects, a backend (transformers in-process, or a remote engine) turns them into
`LogOdds`, and `model` turns those into `Scores`. Any object with a ``name`` and a
``logodds`` method of this shape can be passed as the model of a reward model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Query:
    """One rendered yes/no question about one text.

    Attributes:
        segments: the user message as (piece, cuttable) pairs; cuttable pieces are
            the caller's text and may be shortened to fit the model's context, the
            rest (question, answer cue) never is.
        system: optional system message.
        chat: "auto" (use the model's chat template if it has one), "always", "never".
    """

    segments: tuple[tuple[str, bool], ...]
    system: str | None = None
    chat: str = "auto"

    @property
    def user(self) -> str:
        return "".join(piece for piece, _ in self.segments)


@dataclass(frozen=True)
class LogOdds:
    """What a backend returns for one call.

    Attributes:
        values: log P(yes set) - log P(no set) per query, in the nesting of the groups
            it was given; NaN where a query cannot be scored.
        truncated: how many queries were longer than the model's context and were cut
            inside their text (counted per call, so concurrent calls do not mix).
        context: the context length, in tokens, they were cut to (None if unknown).
    """

    values: list[list[float]]
    truncated: int = 0
    context: int | None = None

    @classmethod
    def of(cls, result: "LogOdds | Sequence[Sequence[float]]") -> "LogOdds":
        """A backend's result as `LogOdds`; a simple backend may return plain nested lists."""
        if isinstance(result, LogOdds):
            return result
        return cls([list(map(float, row)) for row in result])


@runtime_checkable
class Backend(Protocol):
    """Reads the log-odds of the yes answers against the no answers."""

    name: str

    def logodds(self, groups: list[list[Query]], yes: Sequence[str], no: Sequence[str]) -> LogOdds:
        """log P(yes set) - log P(no set) at the first answer position of each query.

        Args:
            groups: one group per sample, holding that sample's queries (one per
                question); a backend may share work within a group and across groups.
            yes, no: answer words.

        Must be safe to call from several threads at once.
        """
        ...


@runtime_checkable
class Formats(Protocol):
    """A backend that can show the exact string its model reads for a query."""

    def format(self, query: Query) -> str:
        ...


@dataclass
class Scores:
    """Scores of a list of inputs, in the caller's order.

    Attributes:
        p_yes: combined probability of the rewarded answers (the paper's Eq. 4 by default).
        rewards: `p_yes` shaped by the reward shape (prob, logodds, zyn, logprob).
        per_question: P(yes) of each question's own "yes" answer, by question name
            (calibrated, not oriented: a question rewarding "no" still reports P(yes)).
        logodds: calibrated log-odds yes vs no of each question, by question name.
        penalty: log-odds the prompt set's penalties took off each combined value
            (empty for a set without penalties).
        truncated: how many of the call's queries were longer than the model's context
            and were cut inside their text (each such call also warns, `TruncationWarning`).
        flags: how a remote judge read each question's value, by question name (one of
            ``zyn.backends.remote.FLAGS``: "ok", or a bound, or why it is NaN); empty for an
            in-process judge, whose values are all read exactly.
    """

    p_yes: list[float]
    rewards: list[float]
    per_question: dict[str, list[float]] = field(default_factory=dict)
    logodds: dict[str, list[float]] = field(default_factory=dict)
    penalty: list[float] = field(default_factory=list)
    truncated: int = 0
    flags: dict[str, list[str]] = field(default_factory=dict)

    def inexact(self, i: int) -> list[str]:
        """Input `i`'s flags other than "ok" (its questions', each once, in order); empty
        where every value was read exactly.

        >>> Scores([0.5], [0.0], flags={"a": ["yes_bound"], "b": ["ok"]}).inexact(0)
        ['yes_bound']
        """
        return list(dict.fromkeys(f[i] for f in self.flags.values() if f[i] != "ok"))
