"""A query as the token ids a remote model reads: chat template applied, cut to fit.

Exact scoring (vLLM's /generative_scoring) is sent token ids, so zyn decides the
tokens, as the local backend does:

* `LocalTokens`: a local tokenizer of the served model applies the chat template
  and tokenizes here (no requests);
* `ServerTokens`: the server's own ``POST /tokenize``, with ``messages`` for a query
  that wants the chat template and ``prompt`` for one that does not.

A query longer than the server takes is cut inside its text as the local backend
cuts it (`fit`): the longest cuttable piece loses tokens from its middle, question
and answer cue kept. Unlike the local backend's cut, the tokens of the ``" … "``
put in their place are paid for, so a tokenizer that spells it in several tokens
still converges. The limit is ``max_model_len - 1``: vLLM keeps one position
for the answer and cuts a longer prompt at its end, where the question is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...api import Query
from ...errors import ZynError
from .errors import RemoteStatusError
from .protocols import Tokenized, chat_messages, plain_prompt, tokenize_chat_body, tokenize_prompt_body

_RETRIES = 4  # re-tokenising a cut text can merge tokens differently: a few more cuts
MARK = " … "  # put where a text was cut


@dataclass(frozen=True)
class Encoded:
    """A query's token ids, whether they were cut, and the limit they were cut to."""

    ids: list[int]
    cut: bool
    limit: int | None


def fit(query: Query, tokenize: Callable[[Query, str | None], list[int]],
        shorten: Callable[[str, int], str], limit: int | None) -> tuple[list[int], bool]:
    """Token ids of `query`, cut inside its cuttable text to at most `limit` tokens.

    Args:
        query: the query.
        tokenize: (query, user text or None for the query's own) -> token ids.
        shorten: (text, n) -> the text with about n tokens dropped from its middle.
        limit: most tokens allowed; None for no limit.

    Returns:
        (ids, whether they were cut). With nothing cuttable left, the last `limit`
        tokens are kept: the question and the answer cue are at the end.
    """
    ids = tokenize(query, None)
    if limit is None or len(ids) <= limit:
        return ids, False
    segments = list(query.segments)
    for _ in range(_RETRIES):
        over = len(ids) - limit
        cuttable = [i for i, (_, cuttable) in enumerate(segments) if cuttable]
        if over <= 0 or not cuttable:
            break
        longest = max(cuttable, key=lambda i: len(segments[i][0]))
        segments[longest] = (shorten(segments[longest][0], over + 2), True)
        ids = tokenize(query, "".join(piece for piece, _ in segments))
    return ids[-limit:], True


class LocalTokens:
    """Token ids from a local tokenizer of the served model (the local backend's rules)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def uses_chat(self, mode: str) -> bool:
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if mode == "always" and not has_template:
            raise ZynError("prompt set says chat_template: always, but the tokenizer given for the remote "
                           "model has no chat template; set chat_template: auto or never")
        return has_template and mode != "never"

    def text(self, query: Query, user: str | None = None) -> str:
        """The exact string the model reads for `query`."""
        if self.uses_chat(query.chat):
            return self.tokenizer.apply_chat_template(chat_messages(query, user), tokenize=False,
                                                      add_generation_prompt=True)
        return plain_prompt(query, user)

    def tokenize(self, query: Query, user: str | None = None) -> list[int]:
        # A chat template writes its own special tokens; a plain prompt gets the tokenizer's (BOS).
        special = not self.uses_chat(query.chat)
        return list(self.tokenizer(self.text(query, user), add_special_tokens=special)["input_ids"])

    def shorten(self, text: str, drop: int) -> str:
        """Drop `drop` tokens from the middle of `text`, keeping its head and tail, and
        as many more as the ``" … "`` put in their place costs."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        marker = len(self.tokenizer(MARK, add_special_tokens=False)["input_ids"])
        keep = max(len(ids) - drop - marker, 0)
        if keep == 0:
            return ""
        head, tail = ids[: keep // 2], ids[len(ids) - (keep - keep // 2):]
        return self.tokenizer.decode(head) + MARK + self.tokenizer.decode(tail)

    def encode(self, query: Query, limit: int | None) -> Encoded:
        ids, cut = fit(query, self.tokenize, self.shorten, limit)
        return Encoded(ids, cut, limit)


class ServerTokens:
    """Token ids from the server's /tokenize.

    Args:
        tokenize: a /tokenize request body -> the parsed answer.
        model: the served model's name.
        chat_auto: whether ``chat: auto`` queries use the chat template. A server
            that answers 400 naming the chat template has none: ``auto`` queries then
            go as plain text (as the local backend does for a model without one).
    """

    def __init__(self, tokenize: Callable[[dict], Tokenized], model: str, chat_auto: bool = True):
        self._tokenize, self.model, self.chat_auto = tokenize, model, chat_auto
        self.has_template: bool | None = None  # unknown until a chat request answers
        self._marker: int | None = None  # tokens of MARK

    def encode(self, query: Query, limit: int | None) -> Encoded:
        """Token ids of `query`; `limit` is used where /tokenize does not say max_model_len."""
        first = self._ask(query, None)
        if first.max_model_len is not None:
            limit = first.max_model_len - 1

        def tokenize(q: Query, user: str | None) -> list[int]:
            return first.tokens if user is None else self._ask(q, user).tokens

        ids, cut = fit(query, tokenize, self.shorten, limit)
        return Encoded(ids, cut, limit)

    def _ask(self, query: Query, user: str | None) -> Tokenized:
        if self._wants_chat(query.chat):
            try:
                return self._tokenize(tokenize_chat_body(self.model, chat_messages(query, user)))
            except RemoteStatusError as e:
                if not (e.status == 400 and "chat template" in str(e.body).lower() and query.chat == "auto"):
                    raise
                self.has_template = False
        return self._tokenize(tokenize_prompt_body(self.model, plain_prompt(query, user), add_special_tokens=True))

    def _wants_chat(self, mode: str) -> bool:
        return mode == "always" or (mode == "auto" and self.chat_auto and self.has_template is not False)

    def shorten(self, text: str, drop: int) -> str:
        """Drop about `drop` tokens (and what ``" … "`` costs) from the middle of `text`:
        the server tokenizes, so the cut is made in characters, in proportion to the
        text's token count."""
        n = self._count(text)
        if self._marker is None:
            self._marker = self._count(MARK)
        keep = int(len(text) * max(n - drop - self._marker, 0) / n) if n else 0
        if keep == 0:
            return ""
        return text[: keep // 2] + MARK + text[len(text) - (keep - keep // 2):]

    def _count(self, text: str) -> int:
        return len(self._tokenize(tokenize_prompt_body(self.model, text, add_special_tokens=False)).tokens)
