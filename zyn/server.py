"""HTTP reward service: a FastAPI app over one or more loaded reward models.

Routes
    POST /v1/rewards   zyn's own API: ``texts`` or ``items`` (records), optional ``prompt``
    POST /get_reward   OpenRLHF's remote reward protocol (``--reward.remote_url``)
    GET  /health       liveness and what is loaded (no key needed)
    GET  /metrics      Prometheus text exposition
    GET  /docs         OpenAPI UI (FastAPI)

Concurrent requests are gathered into model batches by `zyn.batcher.MicroBatcher`
and scored on one worker thread (the models are not thread-safe), off the event
loop; a failing batch fails only the requests in it (500), the rest keep flowing.

Nothing here sets up logging: that is the command line's job.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import BatchError, MicroBatcher, Overloaded
from .errors import ZynError
from .prometheus import Metrics
from .prompts import make_context

log = logging.getLogger(__name__)

DEFAULTS = dict(max_items=512, max_chars=100_000, max_body_bytes=16 * 1024 * 1024, batch_size=64,
                max_wait_ms=5.0, request_timeout_s=170.0, max_queue_items=8192)


# =========================================================================== metrics

def make_metrics() -> Metrics:
    m = Metrics()
    m.counter("zyn_requests_total", "HTTP requests by route and status code.")
    m.counter("zyn_items_total", "Items (texts or records) received for scoring, by route.")
    m.counter("zyn_errors_total", "Failed scoring requests by kind.")
    m.histogram("zyn_request_latency_seconds", "Request latency by route.", Metrics.LATENCY_BUCKETS)
    m.histogram("zyn_batch_size_items", "Items per model batch.", Metrics.SIZE_BUCKETS)
    m.histogram("zyn_batch_requests", "Requests per model batch.", Metrics.SIZE_BUCKETS)
    m.histogram("zyn_batch_latency_seconds", "Model time per batch.", Metrics.LATENCY_BUCKETS)
    return m


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
    max_body_bytes: int
    request_timeout_s: float
    api_key: str | None


# =========================================================================== the scoring service

@dataclass
class Scored:
    """One item's scores, as the batcher hands them back."""

    reward: float
    p_yes: float
    per_question: dict[str, float]


class RewardService:
    """The loaded reward models, request validation, and the batcher around them."""

    def __init__(self, models: Mapping[str, Any], settings: Settings, batcher_options: dict, metrics: Metrics):
        if not models:
            raise ValueError("create_app needs at least one reward model")
        if settings.default not in models:
            raise ValueError(f"default prompt set {settings.default!r} is not among {sorted(models)}")
        self.models = dict(models)
        self.settings = settings
        self.metrics = metrics
        self.batcher = MicroBatcher(self._score_blocking, metrics=metrics, **batcher_options)

    def _score_blocking(self, key: str, items: list[Any]) -> list[Scored]:
        scores = self.models[key].score_detailed(items)
        names = list(scores.per_question)
        return [Scored(scores.rewards[i], scores.p_yes[i], {n: scores.per_question[n][i] for n in names})
                for i in range(len(items))]

    def resolve(self, name: str | None) -> str:
        name = name or self.settings.default
        if name not in self.models:
            raise HTTPException(404, {"error": f"no prompt set {name!r} is loaded",
                                      "loaded": sorted(self.models)})
        return name

    def validate(self, key: str, items: list[Any]) -> None:
        """Limits and record structure, checked before queueing (422 naming what failed)."""
        s = self.settings
        if len(items) > s.max_items:
            raise HTTPException(422, {"error": f"too many items: {len(items)} > max_items={s.max_items}",
                                      "limit": "max_items", "max": s.max_items, "got": len(items)})
        fields = self.models[key].prompt_set.fields
        for i, item in enumerate(items):
            n = _chars(item)
            if n > s.max_chars:
                raise HTTPException(422, {"error": f"item {i} has {n} characters > max_chars={s.max_chars}",
                                          "limit": "max_chars", "max": s.max_chars, "got": n, "item": i})
            try:
                make_context(item, i, fields)
            except ZynError as e:
                raise HTTPException(422, {"error": str(e), "item": i}) from None

    async def score(self, key: str, items: list[Any], route: str) -> list[Scored]:
        """Validate, queue, await with the request timeout; errors become HTTP errors."""
        self.validate(key, items)
        self.metrics.inc("zyn_items_total", len(items), route=route)
        if not items:
            return []
        try:
            return await asyncio.wait_for(self.batcher.submit(key, items), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.inc("zyn_errors_total", kind="timeout")
            limit = self.settings.request_timeout_s
            raise HTTPException(504, {"error": f"scoring took longer than {limit} s"}) from None
        except Overloaded as e:
            self.metrics.inc("zyn_errors_total", kind="overloaded")
            raise HTTPException(503, {"error": f"overloaded: {e}"}, headers={"Retry-After": "1"}) from None
        except ZynError as e:
            self.metrics.inc("zyn_errors_total", kind="input")
            raise HTTPException(422, {"error": str(e)}) from None
        except BatchError as e:
            self.metrics.inc("zyn_errors_total", kind="batch")
            raise HTTPException(500, {"error": f"scoring failed: {e}"}) from None

    def model_label(self, key: str) -> str:
        return self.models[key].model_name


def _chars(item: Any) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, Mapping):
        return sum(_chars(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(_chars(v) for v in item)
    return 0


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def openrlhf_items(req: OpenRLHFRequest) -> list[dict]:
    """OpenRLHF sends query = prompt + response: split each query at its prompt when
    the prompt is a prefix of it, else judge the whole query as the text."""
    prompts = req.prompts if req.prompts is not None else [""] * len(req.query)
    if len(prompts) != len(req.query):
        raise HTTPException(422, {"error": f"query ({len(req.query)}) and prompts ({len(prompts)}) differ in length"})
    if req.labels is not None and len(req.labels) != len(req.query):
        raise HTTPException(422, {"error": f"query ({len(req.query)}) and labels ({len(req.labels)}) differ in length"})
    items = []
    for i, (q, p) in enumerate(zip(req.query, prompts)):
        item = {"prompt": p, "completion": q[len(p):]} if p and q.startswith(p) else {"text": q}
        if req.labels is not None:
            item["label"] = req.labels[i]
        items.append(item)
    return items


# =========================================================================== app

def create_app(models: Mapping[str, Any], *, default: str | None = None,
               max_items: int = DEFAULTS["max_items"], max_chars: int = DEFAULTS["max_chars"],
               max_body_bytes: int = DEFAULTS["max_body_bytes"], api_key: str | None = None,
               batch_size: int = DEFAULTS["batch_size"], max_wait_ms: float = DEFAULTS["max_wait_ms"],
               request_timeout_s: float = DEFAULTS["request_timeout_s"],
               max_queue_items: int = DEFAULTS["max_queue_items"]) -> FastAPI:
    """The reward service over `models` ({prompt-set name: ZeroShotRewardModel}).

    Args:
        default: the prompt set used when a request names none (default: the first).
        max_items: most items per request (422 beyond).
        max_chars: most characters per item, all its string fields together (422 beyond).
        max_body_bytes: largest request body (413 beyond).
        api_key: if set, every route but /health and /docs needs
            ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``); default ``$ZYN_API_KEY``.
        batch_size, max_wait_ms: micro-batching bounds (items per model call, wait
            of a batch's first request).
        request_timeout_s: a request not answered by then gets 504 (OpenRLHF's client
            gives up after 180 s).
        max_queue_items: items allowed to wait; beyond, 503 with Retry-After.
    """
    api_key = api_key if api_key is not None else (os.environ.get("ZYN_API_KEY") or None)
    settings = Settings(default or next(iter(models)), max_items, max_chars, max_body_bytes,
                        request_timeout_s, api_key)
    metrics = make_metrics()
    service = RewardService(models, settings, dict(batch_size=batch_size, max_wait_ms=max_wait_ms,
                                                   max_queue_items=max_queue_items), metrics)
    metrics.gauge("zyn_queue_items", "Items waiting for a batch.", lambda: service.batcher.queued_items)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.close()

    app = FastAPI(title="zyn reward server", version="1",
                  description="Zero-shot yes/no reward models over HTTP.", lifespan=lifespan)
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.middleware("http")(_count_requests)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(_router())
    return app


def _router():
    from fastapi import APIRouter

    r = APIRouter()
    r.add_api_route("/v1/rewards", post_rewards, methods=["POST"], response_model=RewardResponse,
                    dependencies=[Depends(require_key)], summary="Score texts or records")
    r.add_api_route("/get_reward", post_get_reward, methods=["POST"], response_model=OpenRLHFResponse,
                    dependencies=[Depends(require_key)], summary="OpenRLHF remote reward protocol")
    r.add_api_route("/health", get_health, methods=["GET"], summary="Liveness and loaded prompt sets")
    r.add_api_route("/metrics", get_metrics, methods=["GET"], response_class=PlainTextResponse,
                    dependencies=[Depends(require_key)], summary="Prometheus metrics")
    return r


# --------------------------------------------------------------------------- handlers

def _service(request: Request) -> RewardService:
    return request.app.state.service


async def require_key(request: Request) -> None:
    key = _service(request).settings.api_key
    if key is None:
        return
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise HTTPException(401, {"error": "missing or wrong API key (send Authorization: Bearer KEY)"},
                            headers={"WWW-Authenticate": "Bearer"})


async def post_rewards(body: RewardRequest, request: Request) -> dict:
    service = _service(request)
    if (body.texts is None) == (body.items is None):
        raise HTTPException(422, {"error": "give exactly one of 'texts' or 'items'"})
    key = service.resolve(body.prompt)
    scored = await service.score(key, body.texts if body.texts is not None else body.items, "rewards")
    names = [q.name for q in service.models[key].prompt_set.questions]
    return {"rewards": [_finite(s.reward) for s in scored], "p_yes": [_finite(s.p_yes) for s in scored],
            "per_question": {n: [_finite(s.per_question[n]) for s in scored] for n in names},
            "prompt_set": key, "model": service.model_label(key)}


async def post_get_reward(body: OpenRLHFRequest, request: Request) -> dict:
    service = _service(request)
    key = service.settings.default
    scored = await service.score(key, openrlhf_items(body), "get_reward")
    names = [q.name for q in service.models[key].prompt_set.questions]
    extra = {"p_yes": [_finite(s.p_yes) for s in scored]}
    extra.update({f"p_yes/{n}": [_finite(s.per_question[n]) for s in scored] for n in names})
    return {"rewards": [_finite(s.reward) for s in scored], "scores": extra["p_yes"], "extra_logs": extra}


async def get_health(request: Request) -> dict:
    service = _service(request)
    ok = service.batcher.running
    body = {"status": "ok" if ok else "stopping", "default": service.settings.default,
            "prompt_sets": {k: service.model_label(k) for k in service.models},
            "queued_items": service.batcher.queued_items, "batches": service.batcher.batches}
    return body if ok else JSONResponse(body, status_code=503)


async def get_metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.app.state.metrics.render(),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


# --------------------------------------------------------------------------- errors and middleware

async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, dict) else {"error": str(exc.detail)}
    return JSONResponse(detail, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    malformed = any(e.get("type") == "json_invalid" for e in errors)
    message = "malformed JSON body" if malformed else "request body does not match the schema"
    return JSONResponse({"error": message, "detail": json.loads(json.dumps(errors, default=str))},
                        status_code=400 if malformed else 422)


async def _count_requests(request: Request, call_next):
    start = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics: Metrics = request.app.state.metrics
        metrics.inc("zyn_requests_total", route=path, status=str(status))
        if path in ("/v1/rewards", "/get_reward"):
            metrics.observe("zyn_request_latency_seconds", time.perf_counter() - start, route=path)


class BodyLimitMiddleware:
    """Answers 413 (JSON) for a request body over `max_bytes`, declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # client gone before sending its body: nothing to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        payload = json.dumps({"error": f"request body larger than {self.max_bytes} bytes",
                              "limit": "max_body_bytes", "max": self.max_bytes}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


# =========================================================================== running

def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, insecure_public: bool = False) -> None:
    """Refuse to serve on a non-loopback address without an API key, unless told so."""
    if not is_loopback(host) and not api_key and not insecure_public:
        raise ZynError(f"refusing to listen on {host} without an API key: pass --api-key (or set "
                       "ZYN_API_KEY), or --insecure-public if the network is trusted")


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout: float = 30.0) -> Iterator[str]:
    """Run `app` under uvicorn on a background thread; yields its base URL.

    Port 0 picks a free port. On exit the server shuts down gracefully (in-flight
    requests finish, the batcher drains).
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, name="zyn-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"server on {host}:{port} did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
