"""The wire protocols of remote scoring: request bodies in, answers parsed out. No I/O.

Three ways to read P(yes) from a server:

* ``POST /v1/completions`` with ``max_tokens: 1, logprobs: k``: the first position's
  ``choices[i].logprobs.top_logprobs[0]``, a ``{token string: logprob}`` map. ``prompt``
  may be a list of strings (OpenAI, vLLM, llama.cpp's server: choice ``index`` i answers
  prompt i); llama-cpp-python's server answers a list of more than one with HTTP 500
  (`LIST_REFUSAL`: an assertion in its handler) and takes one prompt per request.
* ``POST /v1/chat/completions`` with ``logprobs: true, top_logprobs: k``:
  ``choices[0].logprobs.content[0].top_logprobs``, a list of ``{token, logprob}``.
* vLLM's ``POST /generative_scoring`` (server root, not under /v1):
  ``{model, query, items, label_token_ids, apply_softmax}`` with query and items as
  token ids; answers ``data: [{index, score}]`` with score = P(first label) over the
  labels. vLLM's ``POST /tokenize`` takes ``{model, prompt, add_special_tokens}`` or
  ``{model, messages, add_generation_prompt}`` and answers ``{count, max_model_len,
  tokens}``; ``GET /v1/models`` lists ``data: [{id, max_model_len}]``.

Other servers tokenize elsewhere (`TokenizeRoute`), and every one refuses a prompt
longer than its context with a 400 that says so (`too_long`).

Numbers from a server are checked, never trusted: a logprob that is not a number,
NaN, +inf or above 0, and a probability that is not a number in [0, 1], make that
query's value NaN with flag ``"invalid"``, never a valid-looking number.

Top-k answers can miss an answer word; the flags say how the value was read:

* ``"ok"``: both sides present, exact log-odds over the returned variants;
* ``"yes_bound"`` / ``"no_bound"``: one side missing; its mass is bounded by the
  smallest returned logprob (every token outside the top k is at most that likely),
  so the value is an upper bound (yes missing) or a lower bound (no missing). The
  bound is per token: several unseen variants of a word could together exceed it;
* ``"missing"``: both sides missing, NaN;
* ``"invalid"``: the server sent a number that is not a logprob or probability, NaN;
* ``"too_long"``: the server refused the query as longer than its context, and it
  could not be cut to fit inside its text (nothing left to cut, or no way to count
  its tokens: no local tokenizer, no usable /tokenize), NaN. The call's other
  queries are scored.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

from ...api import Query
from ...scoring import logsumexp
from .errors import RemoteError

FLAGS = ("ok", "yes_bound", "no_bound", "missing", "invalid", "too_long")
_MARKS = "▁Ġ"  # SentencePiece and byte-level BPE word-start marks
# float32 log-softmax can round the top logprob a hair above 0; more than this is not a logprob
_LOGPROB_SLACK = 1e-5


# --------------------------------------------------------------------------- prompts

def plain_prompt(query: Query, user: str | None = None) -> str:
    """The text of a query without a chat template (as the local backend writes it)."""
    user = query.user if user is None else user
    return f"{query.system}\n\n{user}" if query.system else user


def chat_messages(query: Query, user: str | None = None) -> list[dict]:
    """Chat messages of a query: the optional system message, then the user message."""
    msgs = [{"role": "system", "content": query.system}] if query.system else []
    return msgs + [{"role": "user", "content": query.user if user is None else user}]


# --------------------------------------------------------------------------- checked numbers

def checked_logprob(value: Any) -> float | None:
    """`value` as a logprob, or None if it is not one (not a number, NaN, +inf, > 0).

    >>> checked_logprob(-1.5), checked_logprob(float("nan")), checked_logprob("x"), checked_logprob(0.3)
    (-1.5, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    x = float(value)
    if math.isnan(x) or x > _LOGPROB_SLACK:
        return None
    return min(x, 0.0)


def checked_probability(value: Any) -> float:
    """`value` as a probability, or NaN if it is not a number in [0, 1].

    >>> checked_probability(0.25), checked_probability(1.5), checked_probability(None)
    (0.25, nan, nan)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    x = float(value)
    return x if 0.0 <= x <= 1.0 else math.nan


# --------------------------------------------------------------------------- top-k logprobs

#: how llama-cpp-python's server answers a list of prompts (and how a failing server answers)
LIST_REFUSAL = 500


def completion_body(model: str, prompts: list[str], top_k: int, extra: dict) -> dict:
    """A /v1/completions request reading the first position's top `top_k` logprobs."""
    return {"model": model, "prompt": prompts if len(prompts) > 1 else prompts[0], "max_tokens": 1,
            "temperature": 0.0, "logprobs": top_k, **extra}


def chat_body(model: str, messages: list[dict], top_k: int, extra: dict) -> dict:
    """A /v1/chat/completions request reading the first position's top `top_k` logprobs."""
    return {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0.0,
            "logprobs": True, "top_logprobs": top_k, **extra}


def parse_completion_top(body: Any, index: int = 0) -> list[tuple[str, Any]]:
    """The first position's top-k of choice `index` of a /v1/completions answer."""
    try:
        return _top_entries(_choice(body["choices"], index)["logprobs"]["top_logprobs"][0])
    except (KeyError, IndexError, TypeError) as e:
        raise RemoteError(f"/v1/completions answer has no logprobs.top_logprobs[0] ({e!r}); "
                          "does the server support `logprobs`?") from None


def parse_chat_top(body: Any) -> list[tuple[str, Any]]:
    """The first generated position's top-k of a /v1/chat/completions answer; none (the
    answer is then missing, not an error of the whole call) where the server generated no
    token it reports, as llama.cpp does when the first token is end-of-sequence."""
    try:
        content = body["choices"][0]["logprobs"]["content"]
        if content == []:
            return []
        return _top_entries(content[0]["top_logprobs"])
    except (KeyError, IndexError, TypeError) as e:
        raise RemoteError(f"/v1/chat/completions answer has no logprobs.content[0].top_logprobs ({e!r}); "
                          "does the server support `logprobs`/`top_logprobs`?") from None


def _choice(choices: list, index: int) -> dict:
    for c in choices:
        if isinstance(c, dict) and c.get("index") == index:
            return c
    return choices[index]


def _top_entries(top: Any) -> list[tuple[str, Any]]:
    """(token, raw logprob) pairs from either wire form: {token: logprob} or [{token, logprob}]."""
    if isinstance(top, dict):
        return [(str(t), lp) for t, lp in top.items()]
    if isinstance(top, list):
        return [(str(e.get("token", "")), e.get("logprob")) if isinstance(e, dict) else ("", None) for e in top]
    raise RemoteError(f"cannot read top_logprobs of type {type(top).__name__}")


def normalise_token(token: str) -> str:
    """A token string as compared with answer words: no marks, no spaces, lower case."""
    return token.strip().lstrip(_MARKS).strip().lower()


def logodds_from_top(top: Iterable[tuple[str, Any]], yes: Sequence[str], no: Sequence[str]) -> tuple[float, str]:
    """Log-odds of the yes words against the no words from one top-k list.

    Args:
        top: (token string, logprob) pairs of one position, as the server sent them.
        yes, no: answer words.

    Returns:
        (log-odds, flag), flag one of FLAGS (see the module docstring).

    >>> logodds_from_top([(" Yes", -1.0), ("No", -2.0), ("yes", -3.0)], ["Yes"], ["No"])[1]
    'ok'
    >>> logodds_from_top([("Maybe", -0.1), ("No", -2.0), ("x", -5.0)], ["Yes"], ["No"])
    (-3.0, 'yes_bound')
    >>> logodds_from_top([("Yes", "-0.1"), ("No", -2.0)], ["Yes"], ["No"])
    (nan, 'invalid')
    """
    entries = [(normalise_token(t), checked_logprob(lp)) for t, lp in top]
    if any(lp is None for _, lp in entries):
        return math.nan, "invalid"
    yes_set = {w.strip().lower() for w in yes}
    no_set = {w.strip().lower() for w in no}
    y = [lp for t, lp in entries if t in yes_set and t not in no_set]
    n = [lp for t, lp in entries if t in no_set and t not in yes_set]
    if y and n:
        return logsumexp(y) - logsumexp(n), "ok"
    if not y and not n:
        return math.nan, "missing"
    floor = min(lp for _, lp in entries)
    if not y:
        return floor - logsumexp(n), "yes_bound"
    return logsumexp(y) - floor, "no_bound"


# --------------------------------------------------------------------------- tokenize

@dataclass(frozen=True)
class Tokenized:
    """A /tokenize answer: the token ids, and the served context length if it said."""

    tokens: list[int]
    max_model_len: int | None


def tokenize_prompt_body(model: str, text: str, add_special_tokens: bool) -> dict:
    """A vLLM /tokenize request for plain text."""
    return {"model": model, "prompt": text, "add_special_tokens": add_special_tokens}


def tokenize_chat_body(model: str, messages: list[dict]) -> dict:
    """A vLLM /tokenize request applying the served model's chat template (its own
    special tokens only, as vLLM's default ``add_special_tokens: false`` does)."""
    return {"model": model, "messages": messages, "add_generation_prompt": True, "add_special_tokens": False}


def parse_tokenize(body: Any) -> Tokenized:
    """Read a /tokenize answer."""
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise RemoteError(f"/tokenize answer has no list of integer `tokens`: {str(body)[:200]}")
    return Tokenized(tokens, _positive_int(body.get("max_model_len")))


@dataclass(frozen=True)
class TokenizeRoute:
    """A server's tokenize route (`path` under the server root) and the body it reads.

    * ``"vllm"``: ``POST /tokenize``, plain text or chat messages (above).
    * ``"llama.cpp"`` (llama-server): ``POST /tokenize {content, add_special}`` answers
      ``{tokens}``; no chat template. A body without ``content`` gets no tokens.
    * ``"llama-cpp-python"``: ``POST /extras/tokenize {model, input}`` answers
      ``{tokens}`` with BOS added, as its completions add it; no chat template.
    """

    dialect: str
    path: str

    @property
    def chat(self) -> bool:
        """Whether the route applies the served model's chat template."""
        return self.dialect == "vllm"

    def text_body(self, model: str, text: str, add_special: bool) -> dict:
        if self.dialect == "llama.cpp":
            return {"content": text, "add_special": add_special}
        if self.dialect == "llama-cpp-python":
            return {"model": model, "input": text}
        return tokenize_prompt_body(model, text, add_special)

    def chat_body(self, model: str, messages: list[dict]) -> dict:
        if not self.chat:
            raise ValueError(f"{self.dialect}'s {self.path} does not apply a chat template")
        return tokenize_chat_body(model, messages)


VLLM_TOKENIZE = TokenizeRoute("vllm", "/tokenize")
LLAMA_CPP_TOKENIZE = TokenizeRoute("llama.cpp", "/tokenize")
LLAMA_CPP_PYTHON_TOKENIZE = TokenizeRoute("llama-cpp-python", "/extras/tokenize")
#: the routes tried, in order, with `PROBE_TEXT` as a text body (llama.cpp's is found through vLLM's)
PROBED_ROUTES = (VLLM_TOKENIZE, LLAMA_CPP_PYTHON_TOKENIZE)
PROBE_TEXT = "Yes"


def tokenize_dialect(route: TokenizeRoute, answer: Any) -> TokenizeRoute:
    """The route that answered a probe of `route`: llama.cpp's /tokenize reads no
    ``prompt`` and answers vLLM's body with no tokens (and no ``count``).

    >>> tokenize_dialect(VLLM_TOKENIZE, {"tokens": []}).dialect
    'llama.cpp'
    >>> tokenize_dialect(VLLM_TOKENIZE, {"count": 1, "max_model_len": 8, "tokens": [9]}).dialect
    'vllm'
    """
    if route == VLLM_TOKENIZE and isinstance(answer, dict) and answer.get("tokens") == [] and "count" not in answer:
        return LLAMA_CPP_TOKENIZE
    return route


# --------------------------------------------------------------------------- vLLM scoring, served models

def generative_body(model: str, items: list[list[int]], labels: list[int]) -> dict:
    """A vLLM /generative_scoring request: each item's token ids are a whole prompt
    (the query is empty), scored as P(labels[0]) normalised over `labels`."""
    return {"model": model, "query": [], "items": items, "label_token_ids": labels, "apply_softmax": True}


def parse_generative(body: Any, n: int) -> list[float]:
    """The n scores of a /generative_scoring answer in item order; NaN where a score is
    not a probability."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or len(data) != n:
        got = len(data) if isinstance(data, list) else "no"
        raise RemoteError(f"/generative_scoring returned {got} scores for {n} items: {str(body)[:200]}")
    out: list[float | None] = [None] * n
    for k, entry in enumerate(data):
        index = entry.get("index", k) if isinstance(entry, dict) else None
        if not isinstance(index, int) or not 0 <= index < n or out[index] is not None:
            raise RemoteError(f"/generative_scoring answer has a bad or repeated index: {str(entry)[:200]}")
        out[index] = checked_probability(entry.get("score"))
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class ServedModel:
    """One entry of GET /v1/models."""

    id: str
    max_model_len: int | None


def parse_models(body: Any) -> list[ServedModel]:
    """The served models of a /v1/models answer (empty if it lists none)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return []
    return [ServedModel(str(m["id"]), _positive_int(m.get("max_model_len")))
            for m in data if isinstance(m, dict) and "id" in m]


def names_unknown_model(body: Any) -> bool:
    """True if an error body is vLLM's "model does not exist" answer.

    vLLM answers a request for a model it does not serve with HTTP 404 and
    ``{"error": {"message": "The model `X` does not exist.", "type": "NotFoundError",
    "param": "model", "code": 404}}`` (older releases: the same fields at the top
    level). A route the server lacks gives FastAPI's ``{"detail": "Not Found"}``.
    """
    if not isinstance(body, dict):
        return False
    err = body.get("error") if isinstance(body.get("error"), dict) else body
    message = str(err.get("message", "")).lower()
    return err.get("type") == "NotFoundError" and (err.get("param") == "model" or "model" in message)


# --------------------------------------------------------------------------- refusals

@dataclass(frozen=True)
class TooLong:
    """A server's refusal of a prompt longer than its context.

    Attributes:
        limit: the most prompt tokens it takes with the one answer token (its
            context less one), if it said its context; else None.
    """

    limit: int | None


# Each names the context N; the prompt may have at most N - 1 tokens with max_tokens 1:
_CONTEXT_SIZE = (
    # OpenAI, vLLM's OpenAI server, llama-cpp-python's server (prompt + max_tokens <= N)
    re.compile(r"maximum context length is (\d+)", re.IGNORECASE),
    # llama.cpp's server: "request (n tokens) exceeds the available context size (N tokens)" (n < N)
    re.compile(r"available context size \((\d+) tokens?\)", re.IGNORECASE),
    # vLLM's engine: "The decoder prompt (length n) is longer than the maximum model length of N"
    re.compile(r"maximum model length of (\d+)", re.IGNORECASE),
)
_CONTEXT_CODES = ("context_length_exceeded", "exceed_context_size_error")


def too_long(status: int, body: Any) -> TooLong | None:
    """The refusal an error answer is, if it refuses a prompt as longer than the
    server's context (HTTP 400, 413 or 422 saying so); None for any other error.

    >>> too_long(400, {"error": {"message": "This model's maximum context length is 256 tokens, however "
    ...     "you requested 446 tokens (445 in your prompt; 1 for the completion).", "code": "context_length_exceeded"}})
    TooLong(limit=255)
    >>> too_long(400, {"error": {"message": "request (300 tokens) exceeds the available context size (256 tokens), "
    ...     "try increasing it", "type": "exceed_context_size_error", "n_ctx": 256}})
    TooLong(limit=255)
    >>> too_long(400, {"error": {"message": "temperature must be non-negative"}}) is None
    True
    """
    if status not in (400, 413, 422):
        return None
    text = str(body)
    for pattern in _CONTEXT_SIZE:
        if m := pattern.search(text):
            return TooLong(max(int(m.group(1)) - 1, 1))
    return TooLong(None) if any(code in text for code in _CONTEXT_CODES) else None


def root_of(base_url: str) -> str:
    """http://h:p/v1 -> http://h:p (vLLM serves /tokenize and /generative_scoring there)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
