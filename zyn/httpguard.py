"""What reaches the reward server's app, and how it runs: the access and transport guards.

`GuardMiddleware` refuses a request on the cheapest evidence first (the API key or the
client's network, on the headers alone, before any body byte is read; the declared
length; then the body, bounded in size and in time). `uvicorn_server` adds what uvicorn
alone does not bound: the time a client may take to send its headers, and the number of
connections. Nothing here knows about scoring.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

from .errors import ZynError

HEADER_TIMEOUT_S = 10.0   # a client sends its request headers within this
MAX_CONNECTIONS = 256     # open connections and requests at once; beyond, 503
# Routes anyone may read without the API key.
PUBLIC_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")


class GuardMiddleware:
    """Checks a request before the app sees it, cheapest first: the API key (on the
    headers alone: an unauthenticated body is never read), the declared length, then
    the body itself, which must stay under ``max_body_bytes`` and arrive within
    ``body_timeout_s``. Answers 401, 413 or 408 as JSON."""

    def __init__(self, app, settings: Any):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        headers = dict(scope.get("headers") or [])
        if scope["path"] not in PUBLIC_PATHS and not _in_networks((scope.get("client") or ("",))[0], s.trusted):
            if s.api_key is None and s.trusted:
                return await _answer(send, 403, {"error": "this client is not in the server's trusted networks"})
            if s.api_key is not None and not key_matches(headers, s.api_key):
                return await _answer(send, 401, {"error": "missing or wrong API key (send Authorization: Bearer "
                                                          "KEY)"}, [(b"www-authenticate", b"Bearer")])
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > s.max_body_bytes:
            return await _too_large(send, s.max_body_bytes)
        try:
            body = await asyncio.wait_for(_read_body(receive, s.max_body_bytes), s.body_timeout_s)
        except asyncio.TimeoutError:
            return await _answer(send, 408, {"error": f"request body not received within {s.body_timeout_s} s"})
        if body is None:
            return  # client gone before sending its body: nothing to answer
        if len(body) > s.max_body_bytes:
            return await _too_large(send, s.max_body_bytes)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _read_body(receive, limit: int) -> bytearray | None:
    """The whole body, or as much as shows it is over `limit`; None if the client left."""
    body, more = bytearray(), True
    while more and len(body) <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _too_large(send, limit: int) -> None:
    await _answer(send, 413, {"error": f"request body larger than {limit} bytes", "limit": "max_body_bytes",
                              "max": limit})


async def _answer(send, status: int, payload: dict, headers: list | None = None) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def key_matches(headers: Mapping[bytes, bytes], key: str) -> bool:
    """Whether raw ASGI headers carry `key` as ``Authorization: Bearer`` or ``X-API-Key``."""
    given = headers.get(b"x-api-key", b"")
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        given = auth[7:].strip()
    return hmac.compare_digest(given, key.encode())


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, insecure_public: bool = False,
               trusted_networks: Sequence[str] = ()) -> None:
    """Refuse to serve on a non-loopback address to anyone without an API key, unless told so."""
    if not is_loopback(host) and not api_key and not insecure_public and not trusted_networks:
        raise ZynError(f"refusing to listen on {host} without an API key: pass --api-key (or set ZYN_API_KEY), "
                       "--trusted-network CIDR to admit only that network's clients without one (OpenRLHF "
                       "sends no key), or --insecure-public if the whole network is trusted")


def parse_networks(networks: Sequence[str]) -> tuple:
    """CIDR strings as ip_network objects, with a clear error for a bad one."""
    out = []
    for n in networks:
        try:
            out.append(ipaddress.ip_network(n, strict=False))
        except ValueError:
            raise ZynError(f"--trusted-network {n!r}: not a network; use CIDR form such as 10.0.0.0/8") from None
    return tuple(out)


def _in_networks(host: str, networks: tuple) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in n for n in networks)


def uvicorn_server(app: Any, host: str = "127.0.0.1", port: int = 0, *,
                   header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
                   log_level: str = "warning", graceful_s: float = 30.0, forwarded_allow_ips: Sequence[str] = ()):
    """A uvicorn server for `app` that also bounds what uvicorn alone does not: a client
    must send its request headers within `header_timeout_s` of connecting (or of its
    previous response), and at most `max_connections` connections and requests are
    served at once (beyond, 503).

    A client's address is the connection's: ``X-Forwarded-For`` is believed only from
    the reverse proxies in `forwarded_allow_ips` (uvicorn believes it from 127.0.0.1 by
    default, which would let any client behind a local proxy, or on the machine, claim
    a trusted network's address)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            http=_header_deadline_protocol(header_timeout_s), limit_concurrency=max_connections,
                            timeout_graceful_shutdown=int(graceful_s), proxy_headers=bool(forwarded_allow_ips),
                            forwarded_allow_ips=list(forwarded_allow_ips) or None)
    return uvicorn.Server(config)


def _header_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose next request's headers have
    not all arrived `seconds` after it opened or after its last response."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a new request's headers are complete
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

    return HeaderDeadline


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0,
                    **options: Any) -> Iterator[str]:
    """Run `app` under uvicorn (see `uvicorn_server`, which takes `options`) on a
    background thread; yields its base URL.

    Port 0 picks a free port. On exit the server shuts down gracefully (in-flight
    requests finish, the batcher drains).
    """
    server = uvicorn_server(app, host, port, **options)
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
