"""Score through a remote OpenAI-compatible server (vLLM, SGLang, llama.cpp server, ...).

Three wire protocols, chosen per query:

* ``/v1/completions`` with ``max_tokens: 1, logprobs: k``: the rendered prompt is
  sent as plain text and ``choices[0].logprobs.top_logprobs[0]`` (token string ->
  logprob) is read. Used for queries that do not want the chat template
  (``Query.chat == "never"``), or for every query when a local ``tokenizer`` is
  given (the chat template is then applied here, as the local backend does).
* ``/v1/chat/completions`` with ``logprobs: true, top_logprobs: k``: the server
  applies the model's chat template. ``Query.system`` is the system message and the
  joined ``Query.segments`` the user message; the first generated position's
  ``top_logprobs`` list is read.
* vLLM's ``/generative_scoring`` (``{model, query, items, label_token_ids,
  apply_softmax}``), mode ``"vllm"``: a prefill-only pass that returns the exact
  probability of chosen token ids, so nothing is ever missing. It needs token ids:
  from the local ``tokenizer`` if given, else from the server's ``/tokenize``.
  A chat query without a local tokenizer still goes to the chat endpoint (the
  scoring endpoint applies no template). If the server has no such route (404),
  the backend falls back to the logprobs endpoints for good.

Token strings are matched to the answer words ignoring case, surrounding
whitespace and the SentencePiece/byte-BPE word-start marks, so "Yes", " Yes",
"yes" and "▁Yes" all count for the word "Yes"; the mass of each side is the
logsumexp of its matching entries.

**Answers missing from the top k** (a documented, bounded fallback; never a silent 0):

* both sides present: exact log-odds over the returned variants (flag ``"ok"``);
* one side missing: its mass is bounded by the smallest returned top-k logprob
  (every token outside the top k is at most that likely), so the log-odds is an
  upper bound (yes missing, flag ``"yes_bound"``) or a lower bound (no missing,
  flag ``"no_bound"``). The bound is per token: several unseen variants of a word
  could together exceed it;
* both missing: ``NaN`` (flag ``"missing"``).

``backend.last_flags`` holds the flags of the last ``logodds`` call (same nesting as
its result) and ``backend.counts`` a running tally by flag; every call with a
non-``"ok"`` query logs one warning with the counts.

Transport: a thread pool of ``concurrency`` requests in flight, each with
``timeout`` seconds, retried ``retries`` times with exponential backoff (plus
jitter, honouring ``Retry-After`` up to ``max_backoff``) on connection errors,
timeouts, 429 and 5xx. Other 4xx answers raise `RemoteError` at once.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

log = logging.getLogger(__name__)

MODES = ("auto", "logprobs", "vllm")
FLAGS = ("ok", "yes_bound", "no_bound", "missing")
_MARKS = "▁Ġ"  # SentencePiece and byte-level BPE word-start marks
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RemoteError(RuntimeError):
    """The remote server failed or answered something that cannot be read."""


# --------------------------------------------------------------------------- pure helpers

def normalise_token(token: str) -> str:
    """A token string as compared with answer words: no marks, no spaces, lower case."""
    return token.strip().lstrip(_MARKS).strip().lower()


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    if math.isinf(m):
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))


def logodds_from_top(top: Iterable[tuple[str, float]], yes: Sequence[str],
                     no: Sequence[str]) -> tuple[float, str]:
    """Log-odds of the yes words against the no words from one top-k list.

    Args:
        top: (token string, logprob) pairs of one position.
        yes, no: answer words.

    Returns:
        (log-odds, flag), flag one of FLAGS; see the module docstring for the bounds.

    >>> logodds_from_top([(" Yes", -1.0), ("No", -2.0), ("yes", -3.0)], ["Yes"], ["No"])[1]
    'ok'
    >>> logodds_from_top([("Maybe", -0.1), ("No", -2.0), ("x", -5.0)], ["Yes"], ["No"])
    (-3.0, 'yes_bound')
    """
    yes_set = {w.strip().lower() for w in yes}
    no_set = {w.strip().lower() for w in no}
    entries = [(normalise_token(t), float(lp)) for t, lp in top if lp is not None]
    finite = [lp for _, lp in entries if not math.isinf(lp) and not math.isnan(lp)]
    y = [lp for t, lp in entries if t in yes_set and t not in no_set]
    n = [lp for t, lp in entries if t in no_set and t not in yes_set]
    if y and n:
        return _logsumexp(y) - _logsumexp(n), "ok"
    if not y and not n or not finite:
        return math.nan, "missing"
    floor = min(finite)
    if not y:
        return floor - _logsumexp(n), "yes_bound"
    return _logsumexp(y) - floor, "no_bound"


def _parse_top_logprobs(top: Any) -> list[tuple[str, float]]:
    """Top-k entries in either wire form: {token: logprob} (completions) or
    [{token, logprob}, ...] (chat)."""
    if isinstance(top, dict):
        return [(str(t), lp) for t, lp in top.items()]
    if isinstance(top, list):
        return [(str(e.get("token", "")), e.get("logprob")) for e in top if isinstance(e, dict)]
    raise RemoteError(f"cannot read top_logprobs of type {type(top).__name__}")


def parse_completion_top(body: dict, index: int = 0) -> list[tuple[str, float]]:
    """The first position's top-k of choice `index` of a /v1/completions answer."""
    try:
        choice = _choice(body, index)
        return _parse_top_logprobs(choice["logprobs"]["top_logprobs"][0])
    except (KeyError, IndexError, TypeError) as e:
        raise RemoteError(f"/v1/completions answer has no logprobs.top_logprobs[0] ({e!r}); "
                          "does the server support `logprobs`?") from None


def parse_chat_top(body: dict) -> list[tuple[str, float]]:
    """The first generated position's top-k of a /v1/chat/completions answer."""
    try:
        return _parse_top_logprobs(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"])
    except (KeyError, IndexError, TypeError) as e:
        raise RemoteError(f"/v1/chat/completions answer has no logprobs.content[0].top_logprobs ({e!r}); "
                          "does the server support `logprobs`/`top_logprobs`?") from None


def _choice(body: dict, index: int) -> dict:
    choices = body["choices"]
    for c in choices:
        if c.get("index") == index:
            return c
    return choices[index]


def plain_prompt(query) -> str:
    """The text sent to /v1/completions for a query without a chat template."""
    return f"{query.system}\n\n{query.user}" if query.system else query.user


def chat_messages(query) -> list[dict]:
    """Chat messages for a query: the optional system message, then the user message."""
    msgs = [{"role": "system", "content": query.system}] if query.system else []
    return msgs + [{"role": "user", "content": query.user}]


def _root_of(base_url: str) -> str:
    """http://h:p/v1 -> http://h:p (vLLM serves /tokenize and /generative_scoring there)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


# --------------------------------------------------------------------------- backend

class OpenAIBackend:
    """A zyn Backend scoring through an OpenAI-compatible HTTP server.

    Args:
        base_url: the server's OpenAI base, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name sent with each request; default: the first of ``GET /models``.
        mode: ``"logprobs"`` (completions/chat top-k), ``"vllm"`` (generative scoring,
            exact; falls back to logprobs on 404), ``"auto"`` (= logprobs).
        top_k: how many top logprobs to request (OpenAI allows 20 on chat, vLLM's
            default --max-logprobs is 20).
        chat_auto: how ``chat: auto`` queries are treated without a local tokenizer:
            True (default) sends them to the chat endpoint, False as plain text.
        tokenizer: optional local tokenizer of the served model: applies the chat
            template locally (then every query goes as plain text) and gives token
            ids for generative scoring.
        api_key: bearer token; default ``$ZYN_REMOTE_API_KEY`` or ``$OPENAI_API_KEY``.
        concurrency, timeout, retries, backoff, max_backoff: transport (see module doc).
        completion_batch: prompts per /v1/completions request (servers such as vLLM
            accept a list; 1 is the safe default).
        scoring_path: path of the generative-scoring route, relative to the server root.
        extra_body: extra JSON fields merged into each completion/chat request
            (e.g. ``{"chat_template_kwargs": {"enable_thinking": False}}``).
        transport: an httpx transport (tests use ``httpx.MockTransport``).
    """

    def __init__(self, base_url: str, model: str | None = None, *, mode: str = "auto",
                 top_k: int = 20, chat_auto: bool = True, tokenizer=None,
                 api_key: str | None = None, concurrency: int = 8, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.5, max_backoff: float = 20.0,
                 completion_batch: int = 1, scoring_path: str = "/generative_scoring",
                 extra_body: dict | None = None, transport: httpx.BaseTransport | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if top_k < 1 or concurrency < 1 or retries < 0 or completion_batch < 1:
            raise ValueError("top_k, concurrency and completion_batch must be >= 1 and retries >= 0")
        self.base_url = base_url.rstrip("/")
        self.root_url = _root_of(self.base_url)
        self.mode = "logprobs" if mode == "auto" else mode
        self.top_k, self.chat_auto, self.tokenizer = int(top_k), chat_auto, tokenizer
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.completion_batch = int(completion_batch)
        self.scoring_path = "/" + scoring_path.lstrip("/")
        self.extra_body = dict(extra_body or {})
        self._model = model
        key = api_key or os.environ.get("ZYN_REMOTE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport,
                                    limits=httpx.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="zyn-remote")
        self._lock = threading.Lock()
        self._label_ids: dict[tuple, tuple[list[int], list[int]]] = {}
        self.counts: Counter = Counter()
        self.last_flags: list[list[str]] = []
        self.retry_count = 0

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_url(cls, url: str, **kw) -> "OpenAIBackend":
        """Build from a model string ``openai+http://host:port/v1`` or ``vllm+http://...``.

        Query parameters set constructor options (``?model=NAME&top_k=10``); keyword
        arguments win over them.
        """
        scheme, sep, rest = url.partition("+")
        if not sep or scheme not in ("openai", "vllm") or not rest.startswith(("http://", "https://")):
            raise ValueError(f"remote model {url!r}: expected openai+http(s)://HOST:PORT/v1 "
                             "or vllm+http(s)://HOST:PORT/v1")
        parts = urlsplit(rest)
        opts: dict[str, Any] = dict(parse_qsl(parts.query))
        for key in ("top_k", "concurrency", "retries", "completion_batch"):
            if key in opts:
                opts[key] = int(opts[key])
        for key in ("timeout", "backoff", "max_backoff"):
            if key in opts:
                opts[key] = float(opts[key])
        if "chat_auto" in opts:
            opts["chat_auto"] = opts["chat_auto"].lower() in ("1", "true", "yes")
        opts.setdefault("mode", "vllm" if scheme == "vllm" else "logprobs")
        if scheme == "vllm":
            opts.setdefault("completion_batch", 32)
        opts.update(kw)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(base, **opts)

    @property
    def name(self) -> str:
        return f"{self.mode}:{self.base_url}#{self._model or '?'}"

    @property
    def model(self) -> str:
        """The served model's name (asked from ``GET /models`` once if not given)."""
        if self._model is None:
            body = self._request("GET", f"{self.base_url}/models")
            try:
                self._model = body["data"][0]["id"]
            except (KeyError, IndexError, TypeError):
                raise RemoteError(f"{self.base_url}/models lists no model; pass model=") from None
        return self._model

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------- Backend protocol
    def logodds(self, groups: list[list[Any]], yes: Sequence[str], no: Sequence[str]) -> list[list[float]]:
        """log(P(yes words) / P(no words)) per query; NaN where neither side is in the top k."""
        flat = [q for g in groups for q in g]
        if flat:
            _ = self.model  # resolve the model name once, before the worker threads
        values: list[float] = [math.nan] * len(flat)
        flags: list[str] = ["missing"] * len(flat)
        plain, chat = self._split(flat)
        jobs = []
        if plain and self.mode == "vllm":
            plain = self._generative(plain, flat, values, flags, yes, no)
        for i in range(0, len(plain), self.completion_batch):
            jobs.append(self._pool.submit(self._score_plain, plain[i:i + self.completion_batch],
                                          flat, yes, no))
        jobs += [self._pool.submit(self._score_chat, i, flat[i], yes, no) for i in chat]
        for job in jobs:
            for i, value, flag in job.result():
                values[i], flags[i] = value, flag
        return self._regroup(groups, values, flags)

    def _split(self, flat: list) -> tuple[list[int], list[int]]:
        """Indices of the queries sent as plain text, and those sent as chat."""
        plain, chat = [], []
        for i, q in enumerate(flat):
            wants_chat = q.chat == "always" or (q.chat == "auto" and self._auto_is_chat())
            (chat if wants_chat and self.tokenizer is None else plain).append(i)
        return plain, chat

    def _auto_is_chat(self) -> bool:
        if self.tokenizer is not None:
            return getattr(self.tokenizer, "chat_template", None) is not None
        return self.chat_auto

    def _text(self, query) -> str:
        wants_chat = query.chat == "always" or (query.chat == "auto" and self._auto_is_chat())
        if self.tokenizer is not None and wants_chat:
            text = self.tokenizer.apply_chat_template(chat_messages(query), tokenize=False,
                                                      add_generation_prompt=True)
            # The server tokenises with its special tokens (BOS); a template that
            # writes BOS itself would otherwise give two.
            bos = getattr(self.tokenizer, "bos_token", None)
            return text[len(bos):] if bos and text.startswith(bos) else text
        return plain_prompt(query)

    def _regroup(self, groups, values, flags) -> list[list[float]]:
        out, out_flags, k = [], [], 0
        for g in groups:
            out.append(values[k:k + len(g)])
            out_flags.append(flags[k:k + len(g)])
            k += len(g)
        tally = Counter(flags)
        with self._lock:
            self.last_flags = out_flags
            self.counts.update(tally)
        bad = {f: tally[f] for f in FLAGS[1:] if tally[f]}
        if bad:
            log.warning("remote scoring: %d of %d queries had an answer outside the top %d "
                        "(%s); bounds used, NaN where both were missing",
                        sum(bad.values()), len(flags), self.top_k,
                        ", ".join(f"{k}={v}" for k, v in bad.items()))
        return out

    # ----------------------------------------------------------------- wire protocols
    def _score_plain(self, idx: list[int], flat, yes, no) -> list[tuple[int, float, str]]:
        prompts = [self._text(flat[i]) for i in idx]
        body = {"model": self.model, "prompt": prompts if len(prompts) > 1 else prompts[0],
                "max_tokens": 1, "temperature": 0.0, "logprobs": self.top_k, **self.extra_body}
        answer = self._request("POST", f"{self.base_url}/completions", body)
        out = []
        for k, i in enumerate(idx):
            value, flag = logodds_from_top(parse_completion_top(answer, k), yes, no)
            out.append((i, value, flag))
        return out

    def _score_chat(self, i: int, query, yes, no) -> list[tuple[int, float, str]]:
        body = {"model": self.model, "messages": chat_messages(query), "max_tokens": 1,
                "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_k, **self.extra_body}
        answer = self._request("POST", f"{self.base_url}/chat/completions", body)
        value, flag = logodds_from_top(parse_chat_top(answer), yes, no)
        return [(i, value, flag)]

    def _generative(self, idx: list[int], flat, values, flags, yes, no) -> list[int]:
        """Score `idx` by generative scoring; returns the indices left for the
        logprobs path (all of them if the server has no scoring route)."""
        try:
            yes_ids, no_ids = self.label_ids(yes, no)
        except RemoteError as e:
            log.warning("generative scoring off (%s); using top-k logprobs", e)
            self.mode = "logprobs"
            return idx
        prompts = [self._text(flat[i]) for i in idx]
        # score = P(first label) / P(all labels): one pass per yes id with that id first,
        # summed, gives P(yes set) / P(yes set + no set) exactly.
        chunks = [(s, prompts[s:s + self.completion_batch]) for s in range(0, len(prompts), self.completion_batch)]
        futures = [(s, self._pool.submit(self._generative_chunk, chunk, yes_ids, no_ids))
                   for s, chunk in chunks]
        try:
            for s, fut in futures:
                for k, p in enumerate(fut.result()):
                    i = idx[s + k]
                    values[i] = math.log(p) - math.log1p(-p) if 0 < p < 1 else (math.inf if p >= 1 else -math.inf)
                    flags[i] = "ok"
        except _NoRoute:
            log.warning("%s%s not found; using top-k logprobs from now on", self.root_url, self.scoring_path)
            self.mode = "logprobs"
            return idx
        return []

    def _generative_chunk(self, prompts: list[str], yes_ids: list[int], no_ids: list[int]) -> list[float]:
        total = [0.0] * len(prompts)
        for y in yes_ids:
            labels = [y] + [t for t in yes_ids if t != y] + list(no_ids)
            body = {"model": self.model, "query": "", "items": prompts, "label_token_ids": labels,
                    "apply_softmax": True}
            answer = self._request("POST", f"{self.root_url}{self.scoring_path}", body, no_route_ok=True)
            try:
                data = sorted(answer["data"], key=lambda d: d["index"])
                scores = [float(d["score"]) for d in data]
            except (KeyError, TypeError, ValueError) as e:
                raise RemoteError(f"cannot read the generative scoring answer ({e!r})") from None
            if len(scores) != len(prompts):
                raise RemoteError(f"generative scoring returned {len(scores)} scores for {len(prompts)} items")
            total = [a + b for a, b in zip(total, scores)]
        return total

    def label_ids(self, yes: Sequence[str], no: Sequence[str]) -> tuple[list[int], list[int]]:
        """Single-token ids of the answer words: from the local tokenizer if given,
        else from the server's /tokenize (cached)."""
        key = (tuple(yes), tuple(no))
        if key not in self._label_ids:
            if self.tokenizer is not None:
                from ..answers import resolve_answer_ids
                ids = resolve_answer_ids(self.tokenizer, yes, no)
                self._label_ids[key] = (list(ids.yes), list(ids.no))
            else:
                y, n = self._remote_word_ids(yes), self._remote_word_ids(no)
                y, n = y - n, n - y
                if not y or not n:
                    raise RemoteError(f"no single-token ids for answers {list(yes)} / {list(no)} via /tokenize")
                self._label_ids[key] = (sorted(y), sorted(n))
        return self._label_ids[key]

    def _remote_word_ids(self, words: Sequence[str]) -> set[int]:
        ids: set[int] = set()
        for word in words:
            w = word.strip()
            for variant in dict.fromkeys([w, w.lower(), w.capitalize(), w.upper()]):
                for text in (variant, " " + variant):
                    body = {"model": self.model, "prompt": text, "add_special_tokens": False}
                    answer = self._request("POST", f"{self.root_url}/tokenize", body, no_route_ok=True)
                    tokens = answer.get("tokens") if isinstance(answer, dict) else None
                    if isinstance(tokens, list) and len(tokens) == 1:
                        ids.add(int(tokens[0]))
        return ids

    # ----------------------------------------------------------------- transport
    def _request(self, method: str, url: str, body: dict | None = None, *, no_route_ok: bool = False) -> Any:
        """One JSON request with retries; raises RemoteError (or _NoRoute on 404 when
        `no_route_ok`)."""
        last = ""
        for attempt in range(self.retries + 1):
            wait = None
            try:
                resp = self._client.request(method, url, json=body)
            except httpx.TransportError as e:  # connect/read errors and timeouts
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code < 400:
                    try:
                        return resp.json()
                    except ValueError:
                        raise RemoteError(f"{url}: answer is not JSON: {resp.text[:200]!r}") from None
                if resp.status_code in (404, 405) and no_route_ok:
                    raise _NoRoute(url)
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in _RETRY_STATUS:
                    raise RemoteError(f"{method} {url} failed: {last}")
                wait = _retry_after(resp)
            if attempt < self.retries:
                delay = wait if wait is not None else self.backoff * (2 ** attempt) * (0.5 + random.random())
                with self._lock:
                    self.retry_count += 1
                time.sleep(min(delay, self.max_backoff))
        raise RemoteError(f"{method} {url} failed after {self.retries + 1} attempts: {last}")


class _NoRoute(RemoteError):
    """The server has no such route (404/405)."""


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def from_url(url: str, **kw) -> OpenAIBackend:
    """``openai+http://host:port/v1`` or ``vllm+http://...`` -> OpenAIBackend."""
    return OpenAIBackend.from_url(url, **kw)


def is_remote_url(model: Any) -> bool:
    """True for model strings that name a remote server (``openai+http...``, ``vllm+http...``)."""
    return isinstance(model, str) and model.startswith(("openai+http://", "openai+https://",
                                                        "vllm+http://", "vllm+https://"))


# --------------------------------------------------------------------------- a local peer

@contextlib.contextmanager
def llama_cpp_server(gguf: str, *, host: str = "127.0.0.1", port: int = 0, n_ctx: int = 2048,
                     n_threads: int | None = None, startup_timeout: float = 300.0,
                     log_path: str | None = None) -> Iterator[str]:
    """Run ``llama_cpp.server`` (llama-cpp-python[server]) on a GGUF file; yields its
    OpenAI base URL (``http://host:port/v1``) and stops the server on exit.

    ``logits_all`` is switched on: the server refuses ``logprobs`` without it.

    Raises:
        RemoteError: the package is missing, or the server did not answer in time.
    """
    import importlib.util
    import socket
    import subprocess
    import sys

    if importlib.util.find_spec("llama_cpp") is None:
        raise RemoteError("llama_cpp_server needs llama-cpp-python[server]: pip install 'llama-cpp-python[server]'")
    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", host, "--port", str(port),
           "--logits_all", "true", "--n_ctx", str(n_ctx)]
    if n_threads:
        cmd += ["--n_threads", str(n_threads)]
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://{host}:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RemoteError(f"llama_cpp.server exited with code {proc.returncode} ({' '.join(cmd)})")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RemoteError(f"llama_cpp.server did not answer within {startup_timeout} s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()
