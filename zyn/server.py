"""HTTP reward service: a FastAPI app over one or more loaded reward models.

Routes
    POST /v1/rewards   zyn's own API: ``texts`` or ``items`` (records), optional ``prompt``
    POST /get_reward   OpenRLHF's remote reward protocol (``--reward.remote_url``)
    GET  /health       liveness and what is loaded (no key needed); 503 "failing" while every
                       batch fails (a remote judge's engine that is down), until one succeeds
    GET  /metrics      Prometheus text exposition
    GET  /docs         OpenAPI UI (FastAPI)

Concurrent requests are gathered into model batches by `zyn.batcher.MicroBatcher`
and scored on one worker thread, off the event loop; an item that cannot be scored
fails only its own request (422 naming the item; /get_reward gives it the failure
reward), a remote engine that fails is a 502 to retry, a client that hangs up stops
its request, and a large request is scored in turns with the others.

Data that lacks a field the prompt set's templates use (`MissingFieldError`: no label
for answer_grader's ``reference``, say) is the request's 422 on both routes, naming the
field and where it comes from, and is logged (OpenRLHF's client shows no response body):
it would fail every item alike, so it never becomes a failure reward, the trainer
hooks' rule. OpenRLHF's labels reach the judge as ``reference`` (and ``label``), as in
`zyn.integrations.openrlhf`; a null ``reference`` is a missing one.

Abuse is bounded before it costs anything: `zyn.httpguard` checks the API key before
the body is read, sets deadlines on headers and bodies and caps connections; here the
items, their characters and the nesting of records are limited, and the parts of a
request that timed out are not scored.

Nothing here sets up logging: that is the command line's job.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import BatchError, ItemError, MicroBatcher, Overloaded
from .errors import MissingFieldError, ZynError
from .httpguard import (HEADER_TIMEOUT_S, MAX_CONNECTIONS, GuardMiddleware, check_bind, is_loopback,
                        parse_networks, serve_in_thread, uvicorn_server)
from .integrations.shared import REFERENCE
from .metrics import CONTENT_TYPE, ServerMetrics
from .prompts import MAX_DEPTH, make_context

log = logging.getLogger(__name__)

__all__ = ["create_app", "serve_in_thread", "uvicorn_server", "check_bind", "is_loopback", "openrlhf_items",
           "RewardService", "MicroBatcher", "DEFAULTS"]

DEFAULTS = dict(max_items=512, max_chars=100_000, max_request_chars=1_000_000, max_body_bytes=16 * 1024 * 1024,
                batch_size=64, max_wait_ms=5.0, request_timeout_s=170.0, max_queue_items=8192,
                body_timeout_s=30.0, header_timeout_s=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS,
                failure_reward=0.0)


# =========================================================================== request and response bodies

class RewardRequest(BaseModel):
    """Body of POST /v1/rewards: give `texts` or `items`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"texts": ["A wonderful film.", "Two hours I will never get back."]},
        {"items": [{"prompt": "Review: ", "completion": "loved it"}], "prompt": "sentiment"}]})
    texts: list[str] | None = Field(None, description="texts to judge")
    items: list[dict[str, Any]] | None = Field(
        None, description="records: {text} | {prompt, completion} | {messages}, plus template fields")
    prompt: str | None = Field(None, description="name of a loaded prompt set (default: the server's default)")


class RewardResponse(BaseModel):
    rewards: list[float | None] = Field(description="shaped rewards (null where unscorable)")
    p_yes: list[float | None] = Field(description="combined P(rewarded answer) in [0, 1]")
    per_question: dict[str, list[float | None]] = Field(description="P(yes) of each question")
    flags: dict[str, list[str]] = Field(
        default_factory=dict, description="a remote judge's reading of each question's value: ok, yes_bound, "
                                          "no_bound, missing, invalid or too_long (empty for an in-process judge)")
    prompt_set: str
    model: str


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward request: query = prompt + response."""

    model_config = ConfigDict(extra="allow")
    query: list[str]
    prompts: list[str] | None = None
    labels: list[Any] | None = None


class OpenRLHFResponse(BaseModel):
    rewards: list[float | None]
    scores: list[float | None] = Field(description="P(yes) in [0, 1]")
    extra_logs: dict[str, list[float | None]]


@dataclass
class Settings:
    default: str
    max_items: int
    max_chars: int
    max_request_chars: int
    max_body_bytes: int
    request_timeout_s: float
    body_timeout_s: float
    api_key: str | None
    failure_reward: float
    trusted: tuple = ()            # ip networks whose clients need no key (OpenRLHF sends no headers)
    policy_chat_format: Any = None  # how /get_reward reads the policy's chat markup (None: recognise it)


# =========================================================================== the scoring service

@dataclass
class Scored:
    """One item's scores, as the batcher hands them back."""

    reward: float
    p_yes: float
    per_question: dict[str, float]
    flags: dict[str, str] = field(default_factory=dict)  # a remote judge's, per question


class RewardService:
    """The loaded reward models, request validation, and the batcher around them."""

    def __init__(self, models: Mapping[str, Any], settings: Settings, batcher_options: dict):
        if not models:
            raise ValueError("create_app needs at least one reward model")
        if settings.default not in models:
            raise ValueError(f"default prompt set {settings.default!r} is not among {sorted(models)}")
        self.models = dict(models)
        self.settings = settings
        self.metrics = ServerMetrics(queued_items=lambda: self.batcher.queued_items)
        # a batch holds at most two items of the largest size allowed, so one request of
        # many long items is scored in turns with everyone else's
        self.batcher = MicroBatcher(self._score_blocking, cost=_chars, max_batch_cost=2 * settings.max_chars,
                                    on_batch=self.metrics.on_batch, item_error=_may_be_an_items_fault,
                                    **batcher_options)
        self.failing: str | None = None  # the last batch's error while the scoring keeps failing
        self._reported: dict[tuple, tuple[float, int]] = {}  # missing fields: (last logged, requests since)
        self._report_lock = threading.Lock()

    def _score_blocking(self, key: str, items: list[Any]) -> list[Scored]:
        scores = self.models[key].score_detailed(items)
        names = list(scores.per_question)
        return [Scored(scores.rewards[i], scores.p_yes[i], {n: scores.per_question[n][i] for n in names},
                       {n: f[i] for n, f in scores.flags.items()}) for i in range(len(items))]

    def resolve(self, name: str | None) -> str:
        name = name or self.settings.default
        if name not in self.models:
            raise HTTPException(404, {"error": f"no prompt set {name!r} is loaded",
                                      "loaded": sorted(self.models)})
        return name

    def validate(self, key: str, items: list[Any]) -> None:
        """Limits and record structure, checked before queueing (422 naming what failed)."""
        self.check_count(items)
        self.check_total(sum(self.check_item(key, i, item) for i, item in enumerate(items)))

    def check_count(self, items: list[Any]) -> list[Any]:
        """The number of items, and of values in all of them (before any walk over them:
        a record may hold at most MAX_VALUES, a request MAX_REQUEST_VALUES)."""
        s = self.settings
        if len(items) > s.max_items:
            raise HTTPException(422, {"error": f"too many items: {len(items)} > max_items={s.max_items}",
                                      "limit": "max_items", "max": s.max_items, "got": len(items)})
        values = _count_values(items, MAX_REQUEST_VALUES)
        if values > MAX_REQUEST_VALUES:
            raise HTTPException(422, {"error": f"the request holds more than {MAX_REQUEST_VALUES} values in its "
                                      "records; send only the fields the prompt set uses, or fewer items",
                                      "limit": "values", "max": MAX_REQUEST_VALUES})
        return items

    def check_item(self, key: str, i: int, item: Any, route: str = "/v1/rewards") -> int:
        """One item's record structure and size (422 naming it; `MissingFields` for a field
        the prompt set needs and the data lacks); returns its characters."""
        s = self.settings
        fields = self.models[key].prompt_set.fields
        try:
            make_context(_null_reference_absent(item), i, fields)  # first: it bounds the nesting _chars walks
        except MissingFieldError as e:
            raise self.missing_fields(key, i, item, e, route) from None
        except ZynError as e:
            raise HTTPException(422, {"error": str(e), "item": i}) from None
        n = _chars(item)
        if n > s.max_chars:
            raise HTTPException(422, {"error": f"item {i} has {n} characters > max_chars={s.max_chars}",
                                      "limit": "max_chars", "max": s.max_chars, "got": n, "item": i})
        return n

    def missing_fields(self, key: str, i: int, item: Any, error: MissingFieldError, route: str) -> "MissingFields":
        """The 422 for data that lacks fields the prompt set reads, counted and logged."""
        from .integrations.openrlhf import ADVICE

        given = item if isinstance(item, Mapping) else {}
        missing = [f for f in self.models[key].prompt_set.fields
                   if f not in given or (f == REFERENCE and given[f] is None)]
        advice = ADVICE if route == "/get_reward" else (
            "give it in every item, e.g. {\"prompt\": ..., \"completion\": ..., \"reference\": ...} (a null counts "
            "as missing), or name a prompt set that does not use it")
        message = f"prompt set {key!r}: {error}; {advice}"
        self.metrics.errors.labels("missing_field").inc()
        self.report_missing(route, key, missing, message)
        return MissingFields(422, {"error": message, "item": i, "missing": missing, "prompt_set": key})

    def report_missing(self, route: str, key: str, missing: list[str], message: str) -> None:
        """Log a request refused for missing fields: the first of its kind, then at most one
        every MISSING_LOG_EVERY_S with the count since (a trainer retries each of its
        samples: thousands of identical lines would bury the first)."""
        now, what = time.monotonic(), (route, key, tuple(missing))
        with self._report_lock:
            last, since = self._reported.get(what, (None, 0))
            if last is not None and now - last < MISSING_LOG_EVERY_S:
                self._reported[what] = (last, since + 1)
                return
            self._reported[what] = (now, 0)
        more = f" ({since} more such requests since the last report)" if since else ""
        log.error("%s refused (422): %s%s", route, message, more)

    def check_total(self, total: int) -> None:
        s = self.settings
        if total > s.max_request_chars:
            raise HTTPException(422, {"error": f"the request has {total} characters > max_request_chars="
                                      f"{s.max_request_chars}; send fewer items per request",
                                      "limit": "max_request_chars", "max": s.max_request_chars, "got": total})

    async def score(self, key: str, items: list[Any], route: str, validate: bool = True) -> list[Scored]:
        """Validate (unless done), queue, await with the request timeout; errors become
        HTTP errors."""
        if validate:  # in a thread: walking a large request must not stall the event loop
            await asyncio.to_thread(self.validate, key, items)
        self.metrics.items.labels(route).inc(len(items))
        if not items:
            return []
        try:
            scored = await asyncio.wait_for(self.batcher.submit(key, items), self.settings.request_timeout_s)
            self.failing = None
            return scored
        except asyncio.TimeoutError:
            self.metrics.errors.labels("timeout").inc()
            limit = self.settings.request_timeout_s
            raise HTTPException(504, {"error": f"scoring took longer than {limit} s"}) from None
        except Overloaded as e:
            self.metrics.errors.labels("overloaded").inc()
            raise HTTPException(503, {"error": f"overloaded: {e}"}, headers={"Retry-After": "1"}) from None
        except ItemError as e:
            self.metrics.errors.labels("item").inc()
            raise HTTPException(422, {"error": f"item {e.index}: could not be scored: {e.reason}",
                                      "item": e.index}) from None
        except BatchError as e:
            self.metrics.errors.labels("batch").inc()
            self.failing = str(e)
            if not _may_be_an_items_fault(e.error):  # the judge's engine: retrying later may work
                raise HTTPException(502, {"error": f"the judge's engine failed: {e}"},
                                    headers={"Retry-After": "1"}) from None
            raise HTTPException(500, {"error": f"scoring failed: {e}"}) from None

    def model_label(self, key: str) -> str:
        return self.models[key].model_name


DISCONNECT_POLL_S = 0.25
MISSING_LOG_EVERY_S = 60.0


class MissingFields(HTTPException):
    """A 422 for data that lacks a field the prompt set's templates use: the request's
    error on every route, never an item's failure reward."""


def _null_reference_absent(item: Any) -> Any:
    """`item` with a null ``reference`` left out: no reference answer, not the text "None"."""
    if isinstance(item, Mapping) and REFERENCE in item and item[REFERENCE] is None:
        return {k: v for k, v in item.items() if k != REFERENCE}
    return item


async def _while_connected(request: Request, work: Any) -> Any:
    """Await `work` (scoring), but stop it if the client hangs up meanwhile: its parts
    not yet scored are then dropped from the queue (a trainer that gave up and will
    retry must not cost the server the same work twice)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                _service(request).metrics.errors.labels("disconnected").inc()
                raise HTTPException(499, {"error": "the client closed the connection"})
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _may_be_an_items_fault(error: BaseException | None) -> bool:
    """Whether a scoring error may come from the item scored: not when a remote judge's
    engine failed or could not be reached (the batch fails whole, unsplit, and the
    client gets a 502 to retry, not a failure reward for its item). An engine that
    refuses a request (400, 413, 422: a text over its context, say) may be refusing one
    item: that batch is split as for any item's error."""
    from .backends.remote.errors import RemoteError, RemoteStatusError

    if isinstance(error, RemoteStatusError):
        return error.status in (400, 413, 422)
    return not isinstance(error, RemoteError)


MAX_REQUEST_VALUES = 100_000  # strings, numbers, lists and mappings in one request's records, all levels


def _count_values(value: Any, limit: int) -> int:
    """How many values `value` holds, counting stops past `limit` (and below the records'
    nesting bound, `zyn.prompts.MAX_DEPTH`), so counting a huge request costs at most
    `limit` steps."""
    stack, seen = [(value, 0)], 0
    while stack and seen <= limit:
        v, d = stack.pop()
        seen += 1
        if d > MAX_DEPTH:
            continue  # deeper than any record may be: make_context refuses it by name
        if isinstance(v, (Mapping, list, tuple)):
            if seen + len(v) > limit:  # len is O(1): a huge container is over the limit without a walk
                return limit + 1
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, Mapping) else v))
    return seen


def _chars(item: Any) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, Mapping):
        return sum(_chars(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(_chars(v) for v in item)
    return 0


def _finite(x: float, default: float | None = None) -> float | None:
    return default if x is None or not math.isfinite(x) else x


def openrlhf_items(req: OpenRLHFRequest, chat_format: Any = None) -> list[dict]:
    """OpenRLHF sends query = decode(prompt + response) with special tokens kept. Where
    the policy's chat markup is in it (`chat_format`: a name, the policy's tokenizer, or
    None to recognise it), the judge gets the turns as messages with the markup and
    special tokens gone (`zyn.integrations.chatformat.split_query`); plain text is split
    at its prompt when the prompt is a prefix of it, else judged whole. Each label is the
    ``reference`` and ``label`` fields (`zyn.integrations.openrlhf.label_fields`)."""
    from .integrations.chatformat import NONE, resolve_chat_format, split_query
    from .integrations.openrlhf import label_fields

    prompts = req.prompts if req.prompts is not None else [""] * len(req.query)
    if len(prompts) != len(req.query):
        raise HTTPException(422, {"error": f"query ({len(req.query)}) and prompts ({len(prompts)}) differ in length"})
    if req.labels is not None and len(req.labels) != len(req.query):
        raise HTTPException(422, {"error": f"query ({len(req.query)}) and labels ({len(req.labels)}) differ in length"})
    items = []
    for i, (q, p) in enumerate(zip(req.query, prompts)):
        if resolve_chat_format(chat_format, q) is not NONE:
            item = split_query(q, p, chat_format)
        else:
            item = {"prompt": p, "completion": q[len(p):]} if p and q.startswith(p) else {"text": q}
        if req.labels is not None:
            item.update(label_fields(req.labels[i]))
        items.append(item)
    return items


# =========================================================================== app

def create_app(models: Mapping[str, Any], *, default: str | None = None,
               max_items: int = DEFAULTS["max_items"], max_chars: int = DEFAULTS["max_chars"],
               max_request_chars: int = DEFAULTS["max_request_chars"],
               max_body_bytes: int = DEFAULTS["max_body_bytes"], api_key: str | None = None,
               batch_size: int = DEFAULTS["batch_size"], max_wait_ms: float = DEFAULTS["max_wait_ms"],
               request_timeout_s: float = DEFAULTS["request_timeout_s"],
               body_timeout_s: float = DEFAULTS["body_timeout_s"],
               max_queue_items: int = DEFAULTS["max_queue_items"],
               failure_reward: float = DEFAULTS["failure_reward"],
               trusted_networks: Sequence[str] = (), policy_chat_format: Any = None) -> FastAPI:
    """The reward service over `models` ({prompt-set name: ZeroShotRewardModel}).

    Args:
        default: the prompt set used when a request names none (default: the first).
        max_items: most items per request (422 beyond).
        max_chars: most characters per item, all its string fields together (422 beyond).
        max_request_chars: most characters per request (422 beyond).
        max_body_bytes: largest request body (413 beyond).
        api_key: if set, every route but /health and the docs needs
            ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``), checked before the
            body is read; default ``$ZYN_API_KEY``.
        batch_size, max_wait_ms: micro-batching bounds (items per model call, wait
            of a batch's first request).
        request_timeout_s: a request not answered by then gets 504 (OpenRLHF's client
            gives up after 180 s); its parts not yet scored are dropped.
        body_timeout_s: a body not received in full by then gets 408.
        max_queue_items: items allowed to wait; beyond, 503 with Retry-After.
        failure_reward: what /get_reward answers for an item that cannot be scored
            (OpenRLHF builds tensors from every value: it must never be null); counted
            in ``extra_logs["zyn/failed"]`` and ``zyn_failure_rewards_total``.
        trusted_networks: CIDR ranges (e.g. ``10.0.0.0/8``) whose clients may call without
            the key, for trainers that send no headers (OpenRLHF); with no key set, clients
            outside them are refused (403).
        policy_chat_format: the policy's chat format for /get_reward queries: "chatml",
            "llama3", "gemma", "none", the policy's tokenizer, or None to recognise the
            named formats by their markers.
    """
    if not math.isfinite(float(failure_reward)):
        raise ZynError(f"failure_reward: expected a finite number, got {failure_reward!r} (OpenRLHF builds "
                       "tensors from it)")
    api_key = api_key if api_key is not None else (os.environ.get("ZYN_API_KEY") or None)
    settings = Settings(default or next(iter(models)), max_items, max_chars, max_request_chars, max_body_bytes,
                        request_timeout_s, body_timeout_s, api_key, float(failure_reward),
                        parse_networks(trusted_networks), policy_chat_format)
    service = RewardService(models, settings, dict(batch_size=batch_size, max_wait_ms=max_wait_ms,
                                                   max_queue_items=max_queue_items))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.close()

    app = FastAPI(title="zyn reward server", version="1", default_response_class=SafeJSONResponse,
                  description="Zero-shot yes/no reward models over HTTP.", lifespan=lifespan)
    app.state.service = service
    app.state.metrics = service.metrics
    # refuses a request on its headers alone, before any body is read
    app.add_middleware(GuardMiddleware, settings=settings)
    app.add_middleware(CountRequests, metrics=service.metrics)  # outermost: counts the guard's refusals too
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(_router())
    return app


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, and the fix")


# every error answer the scoring routes give, so that a client generated from the schema knows them
_ERRORS: dict = {status: {"model": ErrorBody, "description": text} for status, text in {
    400: "the body is not valid JSON",
    401: "the API key is missing or wrong",
    403: "the client is outside the trusted networks and sent no key",
    404: "no such prompt set is loaded",
    408: "the body did not arrive within --body-timeout",
    413: "the body is larger than --max-body-mb",
    422: "the body does not match the schema, breaks a limit, lacks a field the prompt set reads, or an item "
         "cannot be scored (named)",
    499: "the client closed the connection before the answer (its unscored items were dropped)",
    502: "the judge's remote engine failed (retry later)",
    503: "overloaded or shutting down (retry after Retry-After)",
    504: "scoring took longer than --timeout",
}.items()}


def _router():
    from fastapi import APIRouter

    r = APIRouter()
    r.add_api_route("/v1/rewards", post_rewards, methods=["POST"], response_model=RewardResponse,
                    summary="Score texts or records", responses=_ERRORS)
    r.add_api_route("/get_reward", post_get_reward, methods=["POST"], response_model=OpenRLHFResponse,
                    summary="OpenRLHF remote reward protocol", responses=_ERRORS)
    r.add_api_route("/health", get_health, methods=["GET"], summary="Liveness and loaded prompt sets",
                    responses={503: {"description": "stopping, or every batch fails ('failing', with last_error)"}})
    r.add_api_route("/metrics", get_metrics, methods=["GET"], response_class=PlainTextResponse,
                    summary="Prometheus metrics")
    return r


# --------------------------------------------------------------------------- handlers

def _service(request: Request) -> RewardService:
    return request.app.state.service


async def post_rewards(body: RewardRequest, request: Request) -> dict:
    service = _service(request)
    if (body.texts is None) == (body.items is None):
        raise HTTPException(422, {"error": "give exactly one of 'texts' or 'items'"})
    key = service.resolve(body.prompt)
    scored = await _while_connected(request, service.score(key, body.texts if body.texts is not None
                                                           else body.items, "rewards"))
    names = [q.name for q in service.models[key].prompt_set.questions]
    return {"rewards": [_finite(s.reward) for s in scored], "p_yes": [_finite(s.p_yes) for s in scored],
            "per_question": {n: [_finite(s.per_question[n]) for s in scored] for n in names},
            "flags": ({n: [s.flags[n] for s in scored] for n in names}
                      if scored and all(s.flags for s in scored) else {}),
            "prompt_set": key, "model": service.model_label(key)}


async def post_get_reward(body: OpenRLHFRequest, request: Request) -> dict:
    """OpenRLHF builds tensors from every value it gets back, so this route never
    answers null: an item that cannot be scored (bad content, a failed item, NaN)
    gets the failure reward, and ``extra_logs["zyn/failed"]`` marks it. A request
    whose data lacks a field the prompt set reads (no label for a grader's
    ``reference``) is a 422, logged: every sample would fail alike, and a constant
    failure reward would train on nothing."""
    service = _service(request)
    key = service.settings.default
    items = service.check_count(openrlhf_items(body, service.settings.policy_chat_format))

    def check() -> list[int]:
        good, total = [], 0
        for i, item in enumerate(items):
            try:
                total += service.check_item(key, i, item, "/get_reward")
            except MissingFields:
                raise  # the data does not match the prompt set: the request's error
            except HTTPException:
                continue  # an unscorable item gets the failure reward, not the others' 422
            good.append(i)
        service.check_total(total)  # the request's own size: the client's to fix
        return good

    good = await asyncio.to_thread(check)  # off the event loop, as in `score`
    scored: list[Scored | None] = [None] * len(items)

    async def one(i: int) -> None:  # each alone: an item that fails in scoring fails only itself
        try:
            (scored[i],) = await service.score(key, [items[i]], "get_reward", validate=False)
        except HTTPException as e:
            if e.status_code != 422:  # overload, timeout, a failing engine: the client retries
                raise

    await _while_connected(request, asyncio.gather(*(one(i) for i in good)))
    names = [q.name for q in service.models[key].prompt_set.questions]
    fail = service.settings.failure_reward
    failed = [s is None or not math.isfinite(s.reward) for s in scored]
    service.metrics.failure_rewards.inc(sum(failed))

    def col(get, bad: float) -> list[float]:
        return [bad if f else get(s) for s, f in zip(scored, failed)]

    extra = {"p_yes": col(lambda s: s.p_yes, 0.5), "zyn/failed": [float(f) for f in failed]}
    extra.update({f"p_yes/{n}": col(lambda s, n=n: _finite(s.per_question[n], 0.5), 0.5) for n in names})
    return {"rewards": col(lambda s: s.reward, fail), "scores": extra["p_yes"], "extra_logs": extra}


async def get_health(request: Request) -> dict:
    service = _service(request)
    running = service.batcher.running
    status = "stopping" if not running else "failing" if service.failing else "ok"
    body = {"status": status, "default": service.settings.default,
            "prompt_sets": {k: service.model_label(k) for k in service.models},
            "queued_items": service.batcher.queued_items, "batches": service.batcher.batches}
    if service.failing:  # every request since this error failed: a load balancer should look elsewhere
        body["last_error"] = service.failing
    return body if status == "ok" else JSONResponse(body, status_code=503)


async def get_metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


# --------------------------------------------------------------------------- errors and middleware

class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate a client sent, echoed
    back in an error, is then valid output instead of an encoding error (a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, dict) else {"error": str(exc.detail)}
    return SafeJSONResponse(detail, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    malformed = any(e.get("type") == "json_invalid" for e in errors)
    message = "malformed JSON body" if malformed else "request body does not match the schema"
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and not (kind == "application/json" or kind.endswith("+json")):
        message = (f"the body must be JSON, sent with the header 'Content-Type: application/json' "
                   f"(got {kind or 'no content type'}); e.g. curl -H 'content-type: application/json' -d '{{...}}'")
    # where and what, not the offending input itself (it may be megabytes)
    detail = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in errors[:20]]
    return SafeJSONResponse({"error": message, "detail": detail}, status_code=400 if malformed else 422)


ROUTES = ("/v1/rewards", "/get_reward", "/health", "/metrics", "/docs", "/openapi.json")


class CountRequests:
    """Outermost ASGI middleware: counts every response by route and status, the
    guard's refusals (401, 403, 408, 413, 503) included, and times the scoring routes.
    (Plain ASGI, not Starlette's BaseHTTPMiddleware, which hides a client's disconnect
    from the route.)"""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            path = path if path in ROUTES else "unmatched"  # a bounded set of labels
            self.metrics.requests.labels(path, str(status)).inc()
            if path in ("/v1/rewards", "/get_reward"):
                self.metrics.latency.labels(path).observe(time.perf_counter() - start)


