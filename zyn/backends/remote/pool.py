"""Several remote servers behind one backend: work split over the live ones, a failing
server set aside for a cool-down and its work sent to the others.

Each call's groups are cut into contiguous slices, one per live server, in
proportion to how few requests each has in flight (least-loaded first), and the
slices run at once. A server whose slice fails with a transport error, a timeout or
a 5xx (after its own retries) is marked dead for `cooldown` seconds and the slice is
scored by the servers left; a 4xx is the request's fault and is raised as it is.
When every server is dead the call raises `RemoteError` naming each one's failure.

A model string with several URLs separated by commas builds a pool::

    ZeroShotRewardModel("openai+http://a:8000/v1,openai+http://b:8000/v1")
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from ...api import Query
from .backend import OpenAIBackend, RemoteLogOdds
from .errors import RemoteError, RemoteStatusError

log = logging.getLogger(__name__)


def split_urls(model: str) -> list[str]:
    """The URLs of a model string: ``openai+http://a/v1,openai+http://b/v1`` gives two.

    A part without its own ``scheme+`` takes the first part's (``openai+http://a/v1,http://b/v1``).
    """
    parts = [p.strip() for p in model.split(",") if p.strip()]
    scheme = parts[0].partition("+")[0] + "+" if "+" in parts[0] else ""
    return [p if "+" in p.split("://")[0] else scheme + p for p in parts]


class PoolBackend:
    """A zyn Backend over several `OpenAIBackend`s (same model, several servers).

    Args:
        backends: one per server.
        cooldown: seconds a failing server is left out before it is tried again.
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, backends: Sequence[OpenAIBackend], *, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if not backends:
            raise ValueError("a pool needs at least one backend")
        self.backends = list(backends)
        self.cooldown, self._clock = float(cooldown), clock
        self._lock = threading.Lock()
        self._in_flight = [0] * len(self.backends)
        self._dead_until = [0.0] * len(self.backends)
        self._last_error: list[str | None] = [None] * len(self.backends)
        self._pool = ThreadPoolExecutor(max_workers=len(self.backends), thread_name_prefix="zyn-pool")

    @classmethod
    def from_url(cls, model: str, *, cooldown: float = 30.0, **kw) -> "PoolBackend":
        """Build from comma-separated model URLs; `kw` go to every `OpenAIBackend.from_url`.

        Each server retries once by default (not four times), so a dead one is left
        out within seconds.
        """
        kw.setdefault("retries", 1)
        return cls([OpenAIBackend.from_url(u, **kw) for u in split_urls(model)], cooldown=cooldown)

    @property
    def name(self) -> str:
        return "pool[" + ", ".join(b.name for b in self.backends) + "]"

    def live(self) -> list[int]:
        """Indices of the servers not in a cool-down."""
        now = self._clock()
        return [i for i, until in enumerate(self._dead_until) if until <= now]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for b in self.backends:
            b.close()

    # ----------------------------------------------------------------- Backend protocol
    def logodds(self, groups: list[list[Query]], yes: Sequence[str], no: Sequence[str]) -> RemoteLogOdds:
        if not groups:
            return RemoteLogOdds([])
        return self._score(groups, yes, no, tried=set())

    def _score(self, groups, yes, no, tried: set[int]) -> RemoteLogOdds:
        servers = self._pick(len(groups), tried)
        slices = _cut(groups, len(servers))
        futures = [self._pool.submit(self._one, i, s, yes, no) for i, s in zip(servers, slices)]
        parts = []
        for i, s, fut in zip(servers, slices, futures):
            try:
                parts.append(fut.result())
            except RemoteError as e:
                if isinstance(e, RemoteStatusError) and 400 <= e.status < 500:
                    raise  # the request is at fault: every server would refuse it
                self._mark_dead(i, e)
                parts.append(self._score(s, yes, no, tried | {i}))
        return _join(parts)

    def _pick(self, n_groups: int, tried: set[int]) -> list[int]:
        with self._lock:
            live = [i for i in self.live() if i not in tried]
            if not live:
                reasons = "; ".join(f"{b.base_url}: {self._last_error[i] or 'failed'}"
                                    for i, b in enumerate(self.backends))
                raise RemoteError(f"all {len(self.backends)} servers failed: {reasons}")
            live.sort(key=lambda i: self._in_flight[i])  # least-loaded first
            return live[:max(1, min(len(live), n_groups))]

    def _one(self, i: int, groups, yes, no) -> RemoteLogOdds:
        with self._lock:
            self._in_flight[i] += 1
        try:
            return self.backends[i].logodds(groups, yes, no)
        finally:
            with self._lock:
                self._in_flight[i] -= 1

    def _mark_dead(self, i: int, e: Exception) -> None:
        with self._lock:
            self._dead_until[i] = self._clock() + self.cooldown
            self._last_error[i] = str(e).splitlines()[0][:200]
        log.warning("%s failed (%s); left out for %.0f s, its work goes to the others",
                    self.backends[i].base_url, self._last_error[i], self.cooldown)


def _cut(groups: list, k: int) -> list[list]:
    """`groups` in k contiguous slices whose sizes differ by at most one."""
    n = len(groups)
    return [groups[j * n // k:(j + 1) * n // k] for j in range(k)]


def _join(parts: list[RemoteLogOdds]) -> RemoteLogOdds:
    contexts = [p.context for p in parts if p.context is not None]
    return RemoteLogOdds([v for p in parts for v in p.values], truncated=sum(p.truncated for p in parts),
                         context=min(contexts) if contexts else None,
                         flags=[f for p in parts for f in getattr(p, "flags", [])])
