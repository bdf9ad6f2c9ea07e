"""A query as the token ids a remote model reads: chat template applied, cut to fit.

Exact scoring (vLLM's /generative_scoring) is sent token ids, so zyn decides the
tokens, as the local backend does:

* `LocalTokens`: a local tokenizer of the served model applies the chat template
  and tokenizes here (no requests), by the local backend's rules
  (`zyn.backends.tokens`): special-token strings in the user message are plain text;
* `ServerTokens`: the server's own ``POST /tokenize``, with ``messages`` for a query
  that wants the chat template and ``prompt`` for one that does not.

A query longer than the server takes is cut inside its text as the local backend
cuts it (`zyn.backends.tokens.fit`): the longest cuttable piece loses tokens from its
middle, question and answer cue kept. The limit is ``max_model_len - 1``: vLLM keeps
one position for the answer and cuts a longer prompt at its end, where the question is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...api import Query
from ...errors import ZynError
from .errors import RemoteStatusError
from ..tokens import MARK, caller_spans, encode, fit, shorten
from .protocols import Tokenized, chat_messages, plain_prompt, tokenize_chat_body, tokenize_prompt_body

@dataclass(frozen=True)
class Encoded:
    """A query's token ids, whether they were cut, and the limit they were cut to."""

    ids: list[int]
    cut: bool
    limit: int | None


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
        # Special-token strings in the user message are read as plain text (`zyn.backends.tokens`).
        user = query.user if user is None else user
        text = self.text(query, user)
        spans = caller_spans(text, user, lambda other: self.text(query, other))
        return encode(self.tokenizer, text, spans, add_special_tokens=not self.uses_chat(query.chat))

    def shorten(self, text: str, drop: int) -> str:
        return shorten(self.tokenizer, text, drop)

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
