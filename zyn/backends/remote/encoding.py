"""A query as the token ids a remote model reads: chat template applied, cut to fit.

Exact scoring (vLLM's /generative_scoring) is sent token ids, so zyn decides the
tokens, as the local backend does:

* `LocalTokens`: a local tokenizer of the served model applies the chat template
  and tokenizes here (no requests), by the local backend's rules
  (`zyn.backends.tokens`): special-token strings in the user message are plain text;
* `ServerTokens`: the server's own tokenize route (`protocols.TokenizeRoute`): vLLM's
  ``POST /tokenize``, with ``messages`` for a query that wants the chat template and
  ``prompt`` for one that does not; llama.cpp's and llama-cpp-python's, plain text only.

Top-k scoring sends text, so it uses `Encoded.user`: the user message the ids are of,
cut where they were cut.

A query longer than the server takes is cut inside its text as the local backend
cuts it (`zyn.backends.tokens.fit`): the longest cuttable piece loses tokens from its
middle, question and answer cue kept. The limit is ``max_model_len - 1`` (or the
caller's ``max_length`` if less): vLLM keeps one position for the answer and cuts a
longer prompt at its end, where the question is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...api import Query
from ...errors import ZynError
from ..tokens import MARK, caller_spans, encode, fit, shorten
from .errors import RemoteStatusError
from .protocols import VLLM_TOKENIZE, TokenizeRoute, Tokenized, chat_messages, plain_prompt


@dataclass(frozen=True)
class Encoded:
    """A query's token ids, whether they were cut, the limit they were cut to, and the
    user message they are of (cut where they were); `user` is None where no cut of the
    message fits (the ids are then the query's last tokens, which no text gives)."""

    ids: list[int]
    cut: bool
    limit: int | None
    user: str | None = None


def _fitted(query: Query, tokenize: Callable[[Query, str | None], list[int]],
            shorten: Callable[[str, int], str], limit: int | None) -> Encoded:
    """`zyn.backends.tokens.fit`, and the user message of the ids it chose."""
    tried: list[tuple[str, list[int]]] = []

    def recorded(q: Query, user: str | None) -> list[int]:
        ids = tokenize(q, user)
        tried.append((q.user if user is None else user, ids))
        return ids

    ids, cut = fit(query, recorded, shorten, limit)
    # fit returns the ids of the first text that fits, else the last `limit` ids of one that does not
    user = next((u for u, tried_ids in tried if tried_ids == ids), None)
    return Encoded(ids, cut, limit, user)


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
        return _fitted(query, self.tokenize, self.shorten, limit)


class ServerTokens:
    """Token ids from the server's tokenize route.

    Args:
        tokenize: a request body for `route` -> the parsed answer.
        model: the served model's name.
        chat_auto: whether ``chat: auto`` queries use the chat template. A server
            that answers 400 naming the chat template has none: ``auto`` queries then
            go as plain text (as the local backend does for a model without one).
        route: the route `tokenize` posts to; one without the chat template
            (`TokenizeRoute.chat`) counts plain text only.
    """

    def __init__(self, tokenize: Callable[[dict], Tokenized], model: str, chat_auto: bool = True,
                 route: TokenizeRoute = VLLM_TOKENIZE):
        self._tokenize, self.model, self.chat_auto, self.route = tokenize, model, chat_auto, route
        self.has_template: bool | None = None  # unknown until a chat request answers
        self._marker: int | None = None  # tokens of MARK

    def encode(self, query: Query, limit: int | None) -> Encoded:
        """Token ids of `query`, cut to the least of `limit` and the max_model_len
        - 1 that vLLM's /tokenize says."""
        first = self._ask(query, None)
        if first.max_model_len is not None:
            served = first.max_model_len - 1
            limit = served if limit is None else min(limit, served)

        def tokenize(q: Query, user: str | None) -> list[int]:
            return first.tokens if user is None else self._ask(q, user).tokens

        return _fitted(query, tokenize, self.shorten, limit)

    def _ask(self, query: Query, user: str | None) -> Tokenized:
        if self._wants_chat(query.chat):
            try:
                return self._tokenize(self.route.chat_body(self.model, chat_messages(query, user)))
            except RemoteStatusError as e:
                if not (e.status == 400 and "chat template" in str(e.body).lower() and query.chat == "auto"):
                    raise
                self.has_template = False
        return self._tokenize(self.route.text_body(self.model, plain_prompt(query, user), add_special=True))

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
        return len(self._tokenize(self.route.text_body(self.model, text, add_special=False)).tokens)
