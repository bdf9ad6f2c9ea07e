"""JSON over HTTP with retries, each request bounded by a total deadline.

A read timeout alone does not bound a request: a server that trickles one byte a
second never trips it. Here every attempt runs as a task on one event loop (a
daemon thread per client) under ``asyncio.timeout(timeout)``, which cancels it, and
closes its connection, when the whole attempt (connect, send, wait, read) has
taken `timeout` seconds. Callers stay synchronous and may call from any thread.

Retried ``retries`` times with exponential backoff (plus jitter, honouring
``Retry-After`` up to ``max_backoff``): connection errors, deadlines, 408, 409,
425, 429 and 5xx. Any other answer of 400 or more raises `RemoteStatusError` at once, as
does a status the caller names in ``fail_fast`` (one that it can act on itself).
"""
from __future__ import annotations

import asyncio
import random
import threading
import weakref
from typing import Any, Collection

import httpx

from .errors import RemoteError, RemoteStatusError

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class HttpClient:
    """Synchronous JSON requests with retries and a total deadline per attempt.

    Args:
        headers: sent with every request.
        timeout: seconds one attempt may take in all, from connecting to the last byte.
        retries: further attempts after a retryable failure.
        backoff, max_backoff: first backoff in seconds (doubling) and its cap.
        concurrency: most connections open at once.
        transport: an httpx async transport (tests use ``httpx.MockTransport``).
    """

    def __init__(self, *, headers: dict | None = None, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 20.0, concurrency: int = 8,
                 transport: httpx.AsyncBaseTransport | None = None):
        if timeout <= 0 or retries < 0 or concurrency < 1:
            raise ValueError("timeout must be > 0, retries >= 0 and concurrency >= 1")
        self.timeout, self.retries = float(timeout), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self._client_args = dict(headers=headers or {}, transport=transport, timeout=None,
                                 limits=httpx.Limits(max_connections=concurrency))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()
        #: how many attempts were retried, over the client's life
        self.retry_count = 0

    def request(self, method: str, url: str, body: dict | None = None, *, fail_fast: Collection[int] = ()) -> Any:
        """One JSON request; the answer's JSON.

        Args:
            fail_fast: statuses raised as `RemoteStatusError` at once, not retried.

        Raises:
            RemoteStatusError: an HTTP error that is not retried.
            RemoteError: every attempt failed, or the answer is not JSON.
        """
        loop = self._running_loop()
        return asyncio.run_coroutine_threadsafe(self._request(method, url, body, fail_fast), loop).result()

    def close(self) -> None:
        """Close the connections and stop the event loop."""
        with self._lock:
            finalizer, self._finalizer, self._loop, self._client = self._finalizer, None, None, None
        if finalizer is not None:
            finalizer()

    # ----------------------------------------------------------------- the loop

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=_run, args=(loop,), name="zyn-remote-http", daemon=True).start()
                self._client = httpx.AsyncClient(**self._client_args)
                self._loop = loop
                # a client dropped without close() must not leave its thread running
                self._finalizer = weakref.finalize(self, _stop, loop, self._client)
            return self._loop

    async def _request(self, method: str, url: str, body: dict | None, fail_fast: Collection[int]) -> Any:
        last = ""
        for attempt in range(self.retries + 1):
            wait = None
            try:
                async with asyncio.timeout(self.timeout):
                    resp = await self._client.request(method, url, json=body)
            except TimeoutError:
                last = f"no complete answer within the {self.timeout:g} s deadline"
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code < 400:
                    return _json(resp, url)
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in _RETRY_STATUS or resp.status_code in fail_fast:
                    raise RemoteStatusError(f"{method} {url} failed: {last}", resp.status_code,
                                            _json_or_none(resp), url)
                wait = _retry_after(resp)
            if attempt < self.retries:
                self.retry_count += 1  # the loop thread is the only writer
                delay = wait if wait is not None else self.backoff * (2 ** attempt) * (0.5 + random.random())
                await asyncio.sleep(min(delay, self.max_backoff))
        raise RemoteError(f"{method} {url} failed after {self.retries + 1} attempts: {last}")


def _run(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_forever()
    finally:
        loop.close()


def _stop(loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
    if loop.is_closed():
        return
    try:
        if not _runs_on(loop):  # on the loop's own thread, waiting for it would deadlock
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
    except Exception:  # closing connections is best effort: the loop stops either way
        pass
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # closed meanwhile
        pass


def _runs_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _json(resp: httpx.Response, url: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise RemoteError(f"{url}: answer is not JSON: {resp.text[:200]!r}") from None
    except RecursionError:  # nested past Python's limit: no server's real answer
        raise RemoteError(f"{url}: answer is JSON nested too deeply to read") from None


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except (ValueError, RecursionError):
        return None


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
