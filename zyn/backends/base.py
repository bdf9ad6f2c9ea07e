"""What a backend receives and returns: rendered queries in, answer log-odds out."""
from __future__ import annotations

from dataclasses import dataclass
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


@runtime_checkable
class Backend(Protocol):
    """Reads the log-odds of the yes answers against the no answers."""

    name: str

    def logodds(self, groups: list[list[Query]], yes: Sequence[str], no: Sequence[str]) -> list[list[float]]:
        """log P(yes set) - log P(no set) at the first answer position of each query.

        Args:
            groups: one group per sample, holding that sample's queries (one per
                question); a backend may share work within a group.
            yes, no: answer words.

        Returns:
            The same nesting as `groups`; NaN where a query cannot be scored.
        """
        ...
