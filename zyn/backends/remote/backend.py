"""Score through a remote OpenAI-compatible server (vLLM, SGLang, llama.cpp server, ...).

Two modes (the wire protocols are in `protocols`):

* ``"vllm"``: exact. Every query, chat or not, is turned into token ids (chat
  template from a local ``tokenizer`` if given, else the server's /tokenize with
  ``messages``), cut to the server's ``max_model_len`` inside its text, and sent
  to vLLM's /generative_scoring, a prefill-only pass that gives P(yes set) over
  P(yes set + no set) exactly, whatever the answers' rank. If the server has no such
  route (a 404 that is not about the model name, or 405), the backend falls back
  to ``"logprobs"`` for good, with a warning.
* ``"logprobs"``: the first position's top-k logprobs from /v1/completions (plain
  text; also every query when a local tokenizer applies the chat template) or
  /v1/chat/completions (the server applies the template). Answers outside the
  top k are bounded or NaN, never zero (see `protocols`). Several plain prompts go
  in one request (``completion_batch``) unless the server refuses lists
  (llama-cpp-python's does): then one per request, for good, with a warning.

Long queries, in top-k mode: the limit is the least of ``max_length`` and the
server's context less the answer's position (``max_model_len`` of /v1/models, or
the context a refusal names). A query over it is cut inside its text as the local
backend cuts it (`zyn.backends.tokens.fit`), counted by the local ``tokenizer`` if
given (before sending; exact), else by the server's tokenize route (vLLM's,
llama.cpp's, llama-cpp-python's): before sending where ``max_length`` asks for it,
else once the server refused the query as too long. The cut text is sent as text,
as every top-k query is: llama-cpp-python's server takes no token ids, and the text
is what the counted ids were read from. A query that cannot be cut to fit (no way
to count it, nothing left to cut, or refused again) gets NaN, flag ``"too_long"``;
the call's other queries are scored. `RemoteLogOdds.truncated` counts the cut
queries, so `zyn.scoring` warns with `zyn.TruncationWarning` as for the local backend.

Every value comes with a flag (``protocols.FLAGS``): `RemoteLogOdds.flags` per call,
``backend.counts`` a running tally; a call with any flag but ``"ok"`` logs one
warning. A model name the server does not serve raises `RemoteModelError` naming
the served models.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from ...api import LogOdds, Query
from ...errors import ZynError
from . import protocols as wire
from .encoding import Encoded, LocalTokens, ServerTokens
from .errors import RemoteError, RemoteModelError, RemoteStatusError
from .http import HttpClient

log = logging.getLogger(__name__)

MODES = ("auto", "logprobs", "vllm")
# summed label probabilities may exceed 1 by rounding; more than this is not a probability
_SUM_SLACK = 1e-6
# tokens a text may have beyond its UTF-8 bytes (every token reads at least one byte, but
# BOS and a SentencePiece word mark): a text this much under the limit is not counted
_UNREAD_TOKENS = 4
_UNKNOWN = object()


@dataclass(frozen=True)
class RemoteLogOdds(LogOdds):
    """`LogOdds` with a flag per value (same nesting), one of `protocols.FLAGS`."""

    flags: list[list[str]] = field(default_factory=list)


class _NoRoute(RemoteError):
    """The server has no such route: not vLLM, or generation is not served."""


class OpenAIBackend:
    """A zyn Backend scoring through an OpenAI-compatible or vLLM HTTP server.

    Args:
        base_url: the server's OpenAI base, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name sent with each request; default: the first of ``GET /models``.
        mode: ``"vllm"`` (exact generative scoring), ``"logprobs"`` (top-k),
            ``"auto"`` (= logprobs).
        top_k: how many top logprobs to request (OpenAI allows 20 on chat, vLLM's
            default --max-logprobs is 20).
        chat_auto: whether ``chat: auto`` queries use the server's chat template when
            no local tokenizer says whether the model has one (default True).
        tokenizer: a local tokenizer of the served model (in a URL, ``?tokenizer=NAME``: a
            preset, folder or hub id whose tokenizer is loaded): applies the chat template
            here (then /v1/completions gets every query as plain text) and gives
            token ids for generative scoring.
        api_key: bearer token; default ``$ZYN_REMOTE_API_KEY`` or ``$OPENAI_API_KEY``.
        concurrency: requests in flight at once.
        timeout: seconds one HTTP request may take in all (a deadline, not a read timeout).
        retries, backoff, max_backoff: see `zyn.backends.remote.http`.
        completion_batch: prompts per /v1/completions or /generative_scoring request.
        max_length: most tokens of a query; longer ones are cut inside their text
            (default: the server's context less one, where it says it).
        scoring_path: path of the generative-scoring route, relative to the server root.
        extra_body: extra JSON fields merged into each completion/chat request
            (e.g. ``{"chat_template_kwargs": {"enable_thinking": False}}``).
        transport: an httpx async transport (tests use ``httpx.MockTransport``).
    """

    def __init__(self, base_url: str, model: str | None = None, *, mode: str = "auto",
                 top_k: int = 20, chat_auto: bool = True, tokenizer=None,
                 api_key: str | None = None, concurrency: int = 8, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.5, max_backoff: float = 20.0,
                 completion_batch: int = 1, max_length: int | None = None,
                 scoring_path: str = "/generative_scoring", extra_body: dict | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if top_k < 1 or concurrency < 1 or completion_batch < 1:
            raise ValueError("top_k, concurrency and completion_batch must be >= 1")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 1):
            raise ZynError(f"max_length: expected a positive whole number of tokens, got {max_length!r}")
        self.max_length = max_length
        self.base_url = base_url.rstrip("/")
        self.root_url = wire.root_of(self.base_url)
        self.mode = "logprobs" if mode == "auto" else mode
        self.top_k, self.chat_auto, self.tokenizer = int(top_k), chat_auto, tokenizer
        self.completion_batch = int(completion_batch)
        self.scoring_path = "/" + scoring_path.lstrip("/")
        self.extra_body = dict(extra_body or {})
        key = api_key or os.environ.get("ZYN_REMOTE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.http = HttpClient(headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=timeout,
                               retries=retries, backoff=backoff, max_backoff=max_backoff,
                               concurrency=concurrency, transport=transport)
        self._model = model
        self._served: list[wire.ServedModel] | None = None
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="zyn-remote")
        self._lock = threading.Lock()
        self._label_ids: dict[tuple, tuple[list[int], list[int]]] = {}
        self._server_tokens: dict[wire.TokenizeRoute, ServerTokens] = {}
        self._route: Any = _UNKNOWN  # the server's tokenize route, probed once when needed
        self._refused_limit: int | None = None  # the context a length refusal named, less one
        self._lists: bool | None = None  # whether /v1/completions takes a list of prompts
        self._probe_lock = threading.Lock()  # one probe of what the server takes at a time
        self.counts: Counter = Counter()
        self.last_flags: list[list[str]] = []

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_url(cls, url: str, **kw) -> "OpenAIBackend":
        """Build from a model string ``openai+http://host:port/v1`` or ``vllm+http://...``
        (no path: ``/v1``).

        Query parameters set constructor options (``?model=NAME&top_k=10``); keyword
        arguments win over them.
        """
        scheme, sep, rest = url.partition("+")
        if not sep or scheme not in ("openai", "vllm") or not rest.startswith(("http://", "https://")):
            raise ValueError(f"remote model {url!r}: expected openai+http(s)://HOST:PORT/v1 "
                             "or vllm+http(s)://HOST:PORT/v1")
        parts = urlsplit(rest)
        opts: dict[str, Any] = _url_options(cls, parse_qsl(parts.query))
        opts.setdefault("mode", "vllm" if scheme == "vllm" else "logprobs")
        if scheme == "vllm":
            opts.setdefault("completion_batch", 32)
        opts.update(kw)
        path = parts.path.rstrip("/") or "/v1"  # vllm+http://host:8000 as the trainers' docs write it
        return cls(urlunsplit((parts.scheme, parts.netloc, path, "", "")), **opts)

    @property
    def name(self) -> str:
        from ...model import public_name  # no user or password in logs

        return f"{self.mode}:{public_name(self.base_url)}#{self._model or '?'}"

    @property
    def retry_count(self) -> int:
        """How many HTTP attempts were retried, over the backend's life."""
        return self.http.retry_count

    @property
    def model(self) -> str:
        """The served model's name (the first of ``GET /models`` if not given)."""
        if self._model is None:
            served = self.served_models()
            if not served:
                raise RemoteError(f"{self.base_url}/models lists no model; pass model=")
            self._model = served[0].id
        return self._model

    def served_models(self) -> list[wire.ServedModel]:
        """What ``GET /models`` lists (asked once)."""
        if self._served is None:
            self._served = wire.parse_models(self.http.request("GET", f"{self.base_url}/models"))
        return self._served

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------- Backend protocol
    def logodds(self, groups: list[list[Query]], yes: Sequence[str], no: Sequence[str]) -> RemoteLogOdds:
        """log(P(yes words) / P(no words)) per query, flagged; NaN where it cannot be read."""
        flat = [q for g in groups for q in g]
        if not flat:
            return RemoteLogOdds([[] for _ in groups])
        _ = self.model  # resolve the model name once, before the worker threads
        scored = None
        if self.mode == "vllm":
            try:
                scored = self._score_exact(flat, yes, no)
            except _NoRoute as e:
                log.warning("%s; using top-k logprobs from now on", e)
                self.mode = "logprobs"
        if scored is None:
            scored = self._score_top_k(flat, yes, no)
        return self._regroup(groups, *scored)

    def _regroup(self, groups, values, flags, truncated=0, context=None) -> RemoteLogOdds:
        out, out_flags, k = [], [], 0
        for g in groups:
            out.append(values[k:k + len(g)])
            out_flags.append(flags[k:k + len(g)])
            k += len(g)
        tally = Counter(flags)
        with self._lock:
            self.last_flags = out_flags
            self.counts.update(tally)
        bad = {f: tally[f] for f in wire.FLAGS[1:] if tally[f]}
        if bad:
            why = []
            if set(bad) - {"too_long"}:
                why.append(f"bounds used for answers outside the top {self.top_k}, NaN where both were missing or "
                           "the server sent an invalid number")
            if "too_long" in bad:
                why.append("NaN where the server refused a query as longer than its context and it could not be cut "
                           "to fit" + ("" if self.tokenizer is not None else
                                       " (give the served model's tokenizer, tokenizer= or ?tokenizer=NAME in "
                                       "the URL, to cut it here)"))
            if tally["missing"] == len(flags) and self._split([q for g in groups for q in g])[1]:  # all missing
                why.append("every answer was missing: if the server's model has no chat template, its chat route "
                           "answers in a format of its own; give its tokenizer (tokenizer= or ?tokenizer=NAME) or "
                           "add ?chat_auto=false to the URL")
            log.warning("remote scoring: %d of %d queries not read exactly (%s); %s", sum(bad.values()), len(flags),
                        ", ".join(f"{k}={v}" for k, v in bad.items()), "; ".join(why))
        return RemoteLogOdds(out, truncated, context, out_flags)

    # ----------------------------------------------------------------- requests
    def _call(self, method: str, url: str, body: dict | None = None, *, route_may_lack: bool = False,
              fail_fast: Collection[int] = ()) -> Any:
        """One request; a 404 naming the model becomes RemoteModelError, and with
        `route_may_lack` a missing route becomes _NoRoute. `fail_fast`: statuses not retried."""
        try:
            return self.http.request(method, url, body, fail_fast=fail_fast)
        except RemoteStatusError as e:
            if e.status == 404 and wire.names_unknown_model(e.body):
                raise self._unknown_model(e) from None
            if route_may_lack and e.status in (404, 405):
                raise _NoRoute(f"{url} answered HTTP {e.status} (no such route)") from None
            raise

    def _unknown_model(self, e: RemoteStatusError) -> RemoteModelError:
        try:
            served = ", ".join(m.id for m in self.served_models()) or "none listed"
        except RemoteError as why:
            served = f"unknown ({self.base_url}/models failed: {why})"
        return RemoteModelError(f"model {self.model!r} is not served by {self.root_url} ({e.url} answered 404: "
                                f"{str(e.body)[:200]}); it serves: {served}. Pass one of them as model= "
                                f"(or ?model=NAME in the URL)")

    # ----------------------------------------------------------------- exact: vLLM generative scoring
    def _score_exact(self, flat: list[Query], yes, no) -> tuple[list[float], list[str], int, int | None]:
        yes_ids, no_ids = self.label_ids(yes, no)
        encoded = self._encode(flat)
        unique: dict[tuple[int, ...], int] = {}  # identical token lists are scored once
        slots = [unique.setdefault(tuple(e.ids), len(unique)) for e in encoded]
        side, yes_side = (yes_ids, True) if len(yes_ids) <= len(no_ids) else (no_ids, False)
        p_side = self._generative([list(ids) for ids in unique], side, yes_ids + no_ids)
        scored = [_logodds_of_share(p, yes_side) for p in p_side]
        limits = {e.limit for e in encoded if e.limit is not None}
        return ([scored[s][0] for s in slots], [scored[s][1] for s in slots],
                sum(e.cut for e in encoded), min(limits) if limits else None)

    def _encode(self, flat: list[Query]) -> list[Encoded]:
        if self.tokenizer is not None:
            limit = self._limit()
            local = LocalTokens(self.tokenizer)
            return [local.encode(q, limit) for q in flat]
        tokens = self._tokens_from_server()  # each answer says max_model_len
        return list(self._pool.map(lambda q: tokens.encode(q, self.max_length), flat))

    def _limit(self) -> int | None:
        """Most tokens a query may have: the least of max_length, the served context
        less one (/v1/models), and the context a length refusal named less one."""
        known = [n for n in (self.max_length, self._served_limit(), self._refused_limit) if n is not None]
        return min(known, default=None)

    def _served_limit(self) -> int | None:
        """max_model_len - 1 of the model from /v1/models, if it says (vLLM does)."""
        try:
            served = self.served_models()
        except RemoteStatusError:  # no /v1/models: the server does not say
            served = self._served = []
        for m in served:
            if m.id == self.model and m.max_model_len is not None:
                return m.max_model_len - 1
        return None

    def _tokens_from_server(self, route: wire.TokenizeRoute = wire.VLLM_TOKENIZE) -> ServerTokens:
        if route not in self._server_tokens:
            def tokenize(body: dict) -> wire.Tokenized:
                return wire.parse_tokenize(self._call("POST", f"{self.root_url}{route.path}", body,
                                                      route_may_lack=True))
            self._server_tokens.setdefault(route, ServerTokens(tokenize, self.model, self.chat_auto, route))
        return self._server_tokens[route]

    def _generative(self, seqs: list[list[int]], side: list[int], labels: list[int]) -> list[float]:
        """P(side set) / P(all labels) per sequence; NaN where the server's numbers are invalid.

        The server's score is P(first label) over the labels, so one pass per id of
        the side, each with that id first, summed, gives the side's share exactly.
        """
        chunks = [seqs[s:s + self.completion_batch] for s in range(0, len(seqs), self.completion_batch)]
        jobs = [[self._pool.submit(self._generative_pass, chunk, [t] + [u for u in labels if u != t])
                 for t in side] for chunk in chunks]
        out: list[float] = []
        with _cancelled_on_failure([job for passes in jobs for job in passes]):
            for passes in jobs:
                per_pass = [job.result() for job in passes]
                out += [_checked_sum(scores) for scores in zip(*per_pass)]
        return out

    def _generative_pass(self, items: list[list[int]], labels: list[int]) -> list[float]:
        body = wire.generative_body(self.model, items, labels)
        answer = self._call("POST", f"{self.root_url}{self.scoring_path}", body, route_may_lack=True)
        return wire.parse_generative(answer, len(items))

    def label_ids(self, yes: Sequence[str], no: Sequence[str]) -> tuple[list[int], list[int]]:
        """Single-token ids of the answer words: from the local tokenizer if given,
        else from the server's /tokenize (cached)."""
        key = (tuple(yes), tuple(no))
        if key not in self._label_ids:
            if self.tokenizer is not None:
                from ...answers import resolve_answer_ids

                ids = resolve_answer_ids(self.tokenizer, yes, no)
                self._label_ids[key] = (list(ids.yes), list(ids.no))
            else:
                y, n = self._remote_word_ids(yes), self._remote_word_ids(no)
                y, n = y - n, n - y
                if not y or not n:
                    raise RemoteError(f"no single-token ids for answers {list(yes)} / {list(no)} via /tokenize; "
                                      "give the model's tokenizer (tokenizer= or ?tokenizer=NAME in the URL) or "
                                      "choose single-token answer words")
                self._label_ids[key] = (sorted(y), sorted(n))
        return self._label_ids[key]

    def _remote_word_ids(self, words: Sequence[str]) -> set[int]:
        ids: set[int] = set()
        for word in words:
            w = word.strip()
            for variant in dict.fromkeys([w, w.lower(), w.capitalize(), w.upper()]):
                for text in (variant, " " + variant):
                    body = wire.tokenize_prompt_body(self.model, text, add_special_tokens=False)
                    tokens = wire.parse_tokenize(self._call("POST", f"{self.root_url}/tokenize", body,
                                                            route_may_lack=True)).tokens
                    if len(tokens) == 1:
                        ids.add(tokens[0])
        return ids

    # ----------------------------------------------------------------- top-k logprobs
    def _score_top_k(self, flat: list[Query], yes, no) -> tuple[list[float], list[str], int, int | None]:
        plain, chat = self._split(flat)
        batch = self.completion_batch if self._lists is not False else 1  # a server that refuses lists: one each
        jobs = [self._pool.submit(self._score_plain, [(i, flat[i]) for i in plain[s:s + batch]], yes, no)
                for s in range(0, len(plain), batch)]
        jobs += [self._pool.submit(self._score_chat, i, flat[i], yes, no) for i in chat]
        values, flags, truncated = [math.nan] * len(flat), ["missing"] * len(flat), 0
        with _cancelled_on_failure(jobs):
            for job in jobs:
                for i, value, flag, cut in job.result():
                    values[i], flags[i] = value, flag
                    truncated += cut
        return values, flags, truncated, self._limit() if truncated else None

    def _split(self, flat: list[Query]) -> tuple[list[int], list[int]]:
        """Indices of the queries sent as plain text, and those sent as chat."""
        plain, chat = [], []
        for i, q in enumerate(flat):
            wants_chat = q.chat == "always" or (q.chat == "auto" and self.chat_auto)
            (chat if wants_chat and self.tokenizer is None else plain).append(i)
        return plain, chat

    def _text(self, query: Query, user: str | None = None) -> str:
        if self.tokenizer is None:
            return wire.plain_prompt(query, user)
        local = LocalTokens(self.tokenizer)
        text = local.text(query, user)
        # The server tokenises with its special tokens (BOS); a template that writes
        # BOS itself would otherwise give two.
        bos = getattr(self.tokenizer, "bos_token", None)
        chat = local.uses_chat(query.chat)
        return text[len(bos):] if chat and bos and text.startswith(bos) else text

    def _score_plain(self, items: list[tuple[int, Query]], yes, no) -> list[tuple[int, float, str, bool]]:
        """Plain queries, in one request; after a length refusal of the list, each alone."""
        fitted = [(i, q, self._fitted(q, chat=False)) for i, q in items]
        send = [(i, q, f) for i, q, f in fitted if f is not None]
        out = [(i, math.nan, "too_long", False) for i, _, f in fitted if f is None]
        if len(send) > 1:
            try:
                tops = self._complete([self._text(q, f.user) for _, q, f in send])
                return out + [(i, *wire.logodds_from_top(top, yes, no), f.cut) for (i, _, f), top in zip(send, tops)]
            except RemoteStatusError as e:
                if not self._refused_as_too_long(e):
                    raise
        return out + [self._score_one(i, q, False, f, yes, no) for i, q, f in send]

    def _score_chat(self, i: int, query: Query, yes, no) -> list[tuple[int, float, str, bool]]:
        return [self._score_one(i, query, True, self._fitted(query, chat=True), yes, no)]

    def _score_one(self, i: int, query: Query, chat: bool, fitted: Encoded | None, yes, no
                   ) -> tuple[int, float, str, bool]:
        """One query, sent as `fitted` says; after a length refusal, cut to the limit the
        server named and sent once more. NaN flagged too_long where it cannot be cut to
        fit or is refused again."""
        for attempt in range(2):
            if fitted is None:
                break
            try:
                top = self._top(query, fitted.user, chat)
                return (i, *wire.logodds_from_top(top, yes, no), fitted.cut)
            except RemoteStatusError as e:
                if not self._refused_as_too_long(e):
                    raise
            if attempt == 0:
                refit = self._fitted(query, chat, refused=True)
                fitted = refit if refit is not None and refit.user != fitted.user else None  # not the same again
        return i, math.nan, "too_long", False

    def _top(self, query: Query, user: str, chat: bool) -> list[tuple[str, Any]]:
        """The first position's top-k of the query with this user message."""
        if chat:
            body = wire.chat_body(self.model, wire.chat_messages(query, user), self.top_k, self.extra_body)
            return wire.parse_chat_top(self._call("POST", f"{self.base_url}/chat/completions", body))
        return self._complete([self._text(query, user)])[0]

    # ----------------------------------------------------------------- long queries (top-k)
    def _fitted(self, query: Query, chat: bool, refused: bool = False) -> Encoded | None:
        """The query's user message to send, cut to `_limit` where it is over it (an
        `Encoded`; its ids are not sent); None where no cut of it fits.

        Counted before sending where counting is free (a local tokenizer) or asked for
        (max_length), else only once the server refused the query (`refused`). With a
        local tokenizer the cut is the local backend's exactly, and the server reads the
        cut text into the ids counted here (special-token strings in the text aside: see
        `zyn.backends.tokens`).
        """
        uncut = Encoded([], False, None, query.user)
        if not (refused or self.tokenizer is not None or self.max_length is not None):
            return uncut
        limit = self._limit()
        if limit is None:  # a refusal that named no context, and no max_length
            return None if refused else uncut
        counter = self._counter(chat)
        if counter is None:
            if refused:
                return None
            raise ZynError(f"max_length={self.max_length}: {self._why_uncountable(chat)}")
        if not chat and len(self._text(query).encode("utf-8")) + _UNREAD_TOKENS <= limit:
            return uncut  # shorter in bytes than the limit: no need to count
        encoded = counter.encode(query, limit)
        return encoded if encoded.user is not None else None

    def _counter(self, chat: bool) -> LocalTokens | ServerTokens | None:
        """What counts a query's tokens: the local tokenizer, else the server's tokenize
        route; None where neither can (no route, or one without the chat template for a
        query the server's chat template formats)."""
        if self.tokenizer is not None:
            return LocalTokens(self.tokenizer)
        route = self._tokenize_route()
        return None if route is None or (chat and not route.chat) else self._tokens_from_server(route)

    def _why_uncountable(self, chat: bool) -> str:
        route = self._tokenize_route()
        if route is None:
            return (f"{self.root_url} has no tokenize route (vLLM's or llama.cpp's /tokenize, llama-cpp-python's "
                    "/extras/tokenize) to count a query's tokens with; give the served model's tokenizer: "
                    "tokenizer= in Python, ?tokenizer=NAME (a preset, folder or hub id) in the URL")
        return (f"{self.root_url}{route.path} ({route.dialect}) cannot apply the chat template, so a query sent "
                "to /chat/completions cannot be counted; give the served model's tokenizer (tokenizer= in Python, "
                "?tokenizer=NAME in the URL), or add ?chat_auto=false to the URL to send chat: auto queries as "
                "plain text")

    def _tokenize_route(self) -> wire.TokenizeRoute | None:
        """The server's tokenize route, probed once (`protocols.PROBED_ROUTES`)."""
        with self._probe_lock:
            if self._route is _UNKNOWN:
                self._route = None
                for route in wire.PROBED_ROUTES:
                    body = route.text_body(self.model, wire.PROBE_TEXT, add_special=False)
                    try:
                        answer = self.http.request("POST", f"{self.root_url}{route.path}", body)
                    except RemoteStatusError:  # no such route, or one that reads another body
                        continue
                    self._route = wire.tokenize_dialect(route, answer)
                    break
            return self._route

    def _refused_as_too_long(self, e: RemoteStatusError) -> bool:
        """Whether `e` refuses a prompt as longer than the server's context; the
        context it names (less one) becomes a limit."""
        refusal = wire.too_long(e.status, e.body if e.body is not None else str(e))
        if refusal is not None and refusal.limit is not None:
            with self._lock:
                self._refused_limit = min(refusal.limit, self._refused_limit or refusal.limit)
        return refusal is not None

    # ----------------------------------------------------------------- lists of prompts
    def _complete(self, texts: list[str]) -> list[list[tuple[str, Any]]]:
        """The first position's top-k of each text, in order: one /v1/completions
        request for them all where the server takes a list of prompts, else one each."""
        if len(texts) > 1 and self._lists is None:
            with self._probe_lock:
                if self._lists is None:
                    return self._probe_lists(texts)
        if len(texts) > 1 and self._lists:
            return self._completions(texts)
        return [top for t in texts for top in self._completions([t])]

    def _completions(self, texts: list[str], fail_fast: Collection[int] = ()) -> list[list[tuple[str, Any]]]:
        body = wire.completion_body(self.model, texts, self.top_k, self.extra_body)
        answer = self._call("POST", f"{self.base_url}/completions", body, fail_fast=fail_fast)
        return [wire.parse_completion_top(answer, k) for k in range(len(texts))]

    def _probe_lists(self, texts: list[str]) -> list[list[tuple[str, Any]]]:
        """The first list of prompts. A server that refuses lists answers `LIST_REFUSAL`
        (llama-cpp-python's: an assertion), so that status is not retried here: the
        first prompt goes alone (a failing server fails it too, after its retries, as
        before), then the list once more; refused again, the server takes one prompt
        per request, for good."""
        refusal = {wire.LIST_REFUSAL}
        try:
            out = self._completions(texts, refusal)
        except RemoteStatusError as e:
            if e.status != wire.LIST_REFUSAL:
                raise
            first = self._completions(texts[:1])
            try:
                out = self._completions(texts, refusal)
            except RemoteStatusError as again:
                if again.status != wire.LIST_REFUSAL:
                    raise
                self._lists = False
                log.warning("%s/completions answered a list of %d prompts with HTTP %d twice and one prompt alone "
                            "with 200: it takes one prompt per request (llama-cpp-python's server does); sending "
                            "one per request from now on", self.base_url, len(texts), again.status)
                return first + [top for t in texts[1:] for top in self._completions([t])]
        self._lists = True
        return out


def _url_options(cls: type, query: list[tuple[str, str]]) -> dict[str, Any]:
    """The constructor options a remote model URL's query sets, each checked as a keyword would be."""
    import difflib
    import inspect

    from ...errors import ZynError

    known = sorted(n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "base_url"))
    parse = {**dict.fromkeys(("top_k", "concurrency", "retries", "completion_batch", "max_length"),
                             (int, "a whole number")),
             **dict.fromkeys(("timeout", "backoff", "max_backoff"), (float, "a number"))}
    opts: dict[str, Any] = {}
    for key, value in query:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ZynError(f"remote model URL: ?{key}= is not an option{hint} (the options are {', '.join(known)})")
        if key in parse:
            kind, need = parse[key]
            try:
                value = kind(value)
            except ValueError:
                raise ZynError(f"remote model URL: ?{key}={value!r}: expected {need}") from None
        elif key == "tokenizer":  # a model name (preset, folder, hub id): its tokenizer, loaded here
            from ...models import ModelError, load_tokenizer

            try:
                value = load_tokenizer(value)
            except ModelError as e:
                raise ZynError(f"remote model URL: ?tokenizer={value!r}: {e}") from None
        elif key in ("transport", "extra_body"):
            raise ZynError(f"remote model URL: ?{key}= cannot be given in a URL; pass {key}= in Python")
        elif key == "chat_auto":
            if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ZynError(f"remote model URL: ?chat_auto={value!r}: expected true or false")
            value = value.lower() in ("1", "true", "yes")
        opts[key] = value
    return opts


@contextlib.contextmanager
def _cancelled_on_failure(jobs: list):
    """Within the block, a failure cancels the call's jobs not yet started: a dead server
    would otherwise keep the pool busy with their retries, and the next call would wait
    behind them."""
    try:
        yield
    except BaseException:
        for job in jobs:
            job.cancel()
        raise


def _checked_sum(scores: Sequence[float]) -> float:
    """The sum of one sequence's pass scores as a probability; NaN if any is NaN or the
    sum exceeds 1 by more than rounding."""
    total = math.fsum(scores)  # NaN stays NaN
    if total > 1.0 + _SUM_SLACK:
        return math.nan
    return min(total, 1.0)


def _logodds_of_share(p: float, yes_side: bool) -> tuple[float, str]:
    """(log-odds yes vs no, flag) from the share p of one side; +-inf at 0 and 1."""
    if math.isnan(p):
        return math.nan, "invalid"
    if p <= 0.0:
        lo = -math.inf
    elif p >= 1.0:
        lo = math.inf
    else:
        lo = math.log(p) - math.log1p(-p)
    return (lo if yes_side else -lo), "ok"
