"""Micro-batching: concurrent requests gathered into model batches on one worker thread.

A batch closes when it holds ``batch_size`` items (or ``max_batch_cost`` of their
cost, e.g. characters) or ``max_wait_ms`` after its first request arrived, whichever
comes first; while the worker is busy, the next batch keeps filling. Results are
split back to their requests in order.

Fairness: a request larger than the room left in a batch is cut into parts, and the
rest goes to the back of the queue, so a big request is scored in turns with the
requests that arrived after it instead of holding the worker until it is done. Parts
of a request that has already timed out or been cancelled are dropped unscored.

Isolation: a batch that raises is split in halves and re-scored, down to single items,
so only the items that fail fail; their requests get an `ItemError` naming the item
and the reason, everyone else gets what they would have got alone. Only when every
item of a batch of several fails (the model, not the input, is broken), or when the
error is one that `item_error` says is not an item's (a remote engine that is down:
splitting would only call it again for every piece), do its requests get a
`BatchError`.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


class BatchError(RuntimeError):
    """Scoring the batch that held a request failed (not the request's fault).

    Attributes:
        error: what the scorer raised, if it raised (None otherwise).
    """

    def __init__(self, message: str, error: BaseException | None = None):
        super().__init__(message)
        self.error = error


class _BatchFault(Exception):
    """Carries an error that `item_error` says is not an item's out of the isolation."""

    def __init__(self, error: BaseException):
        self.error = error


class Overloaded(RuntimeError):
    """The queue is full."""


class ItemError(ValueError):
    """One item of a request could not be scored.

    Attributes:
        index: the item's position in its request.
        reason: why, as ``ExceptionType: message``.
    """

    def __init__(self, index: int, error: BaseException):
        self.index = index
        self.reason = f"{type(error).__name__}: {error}"
        super().__init__(f"item {index} could not be scored: {self.reason}")


@dataclass
class _Job:
    key: str                       # prompt-set name: only jobs with one key share a call
    items: list[Any]
    future: asyncio.Future
    results: list[Any] = field(default_factory=list)
    todo: int = 0                  # items not scored yet
    enqueued: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self.results = [None] * len(self.items)
        self.todo = len(self.items)


@dataclass
class _Part:
    """Items [start, stop) of a job, scored in one batch."""

    job: _Job
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


class _Failed:
    """Marks an item whose scoring raised, alone."""

    def __init__(self, error: BaseException):
        self.error = error


class MicroBatcher:
    """Gathers concurrent scoring requests into batches, scored on one worker thread.

    Args:
        score: ``score(key, items) -> list[result]`` run on the worker thread, one
            result per item (blocking; never called concurrently).
        batch_size: most items in one call.
        max_wait_ms: how long the first request of a batch waits for company.
        max_queue_items: items waiting beyond this are refused with `Overloaded`.
        cost, max_batch_cost: an item's cost (e.g. its characters) and the most a batch
            may hold (a single costlier item is a batch of its own).
        on_batch: called as ``on_batch(items, requests, seconds)`` after each model call.
        item_error: whether an error the scorer raised may be an item's fault (default:
            any); one that is not fails the whole batch at once, unsplit.
    """

    def __init__(self, score: Callable[[str, list[Any]], list[Any]], *, batch_size: int = 64,
                 max_wait_ms: float = 5.0, max_queue_items: int = 8192,
                 cost: Callable[[Any], int] | None = None, max_batch_cost: float = float("inf"),
                 on_batch: Callable[[int, int, float], None] | None = None,
                 item_error: Callable[[BaseException], bool] | None = None):
        self._score = score
        self._item_error = item_error or (lambda error: True)
        self.batch_size = max(1, int(batch_size))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.max_queue_items = int(max_queue_items)
        self._cost = cost or (lambda item: 0)
        self.max_batch_cost = max_batch_cost
        self._on_batch = on_batch
        self.queued_items = 0
        self.batches = 0
        self._parts: collections.deque[_Part] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._busy: asyncio.Lock | None = None
        self._inflight: set[asyncio.Task] = set()
        self._gathering: list[_Part] = []  # taken from the queue, not yet handed to the worker
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the collector on the running event loop."""
        self._arrived = asyncio.Event()
        self._busy = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zyn-score")
        self._closing = False
        self._runner = asyncio.create_task(self._collect(), name="zyn-batcher")

    async def close(self, timeout: float = 60.0) -> None:
        """Refuse new work, finish what is queued and running, then stop."""
        self._closing = True
        if self._runner is None:
            return
        deadline = time.monotonic() + timeout
        while (self.queued_items or self._inflight) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        for part in [*self._gathering, *self._parts]:
            _fail(part.job, BatchError("server shutting down"))
        self._parts.clear()
        self._gathering = []
        self.queued_items = 0
        self._executor.shutdown(wait=True)
        self._runner = None

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being scored."""
        return not self.queued_items and not self._inflight

    # ----------------------------------------------------------------- submitting
    async def submit(self, key: str, items: list[Any]) -> list[Any]:
        """Score `items` in some batches; returns their results in order.

        Raises:
            Overloaded: too many items are waiting already.
            ItemError: an item of this request cannot be scored.
            BatchError: the batch failed for a reason other than this request's input.
        """
        if self._closing or not self.running:
            raise Overloaded("server is shutting down")
        if self.queued_items and self.queued_items + len(items) > self.max_queue_items:
            raise Overloaded(f"{self.queued_items} items already queued")
        job = _Job(key, list(items), asyncio.get_running_loop().create_future())
        if not job.items:
            return []
        self._push(_Part(job, 0, len(job.items)))
        return await job.future

    def _push(self, part: _Part) -> None:
        self._parts.append(part)
        self.queued_items += len(part)
        self._arrived.set()

    def _pop(self, room: int, budget: float, first: bool) -> _Part | None:
        """The next live part, cut to at most `room` items and `budget` cost; the rest of it
        goes to the back of the queue. The `first` part of a batch has at least one item
        whatever its cost; otherwise None when the next item does not fit."""
        while self._parts:
            part = self._parts[0]
            if part.job.future.done():  # timed out or cancelled: nothing to score for it
                self._parts.popleft()
                self.queued_items -= len(part)
                continue
            stop, spent = part.start, 0.0
            while stop < part.stop and stop - part.start < room:
                spent += self._cost(part.job.items[stop])
                if spent > budget and not (first and stop == part.start):
                    break
                stop += 1
            if stop == part.start:
                return None
            self._parts.popleft()
            if stop < part.stop:
                self._parts.append(_Part(part.job, stop, part.stop))  # still counted as queued
            return _Part(part.job, part.start, stop)
        return None

    # ----------------------------------------------------------------- collecting
    async def _collect(self) -> None:
        while True:
            while not self._parts:
                self._arrived.clear()
                await self._arrived.wait()
            batch: list[_Part] = []
            self._gathering = batch
            deadline = time.perf_counter() + self.max_wait
            while self._fill(batch) and time.perf_counter() < deadline:
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), deadline - time.perf_counter())
            await self._busy.acquire()  # the worker is free: whatever queued meanwhile joins
            self._fill(batch)
            self.queued_items -= sum(len(p) for p in batch)
            self._gathering = []
            if not batch:
                self._busy.release()
                continue
            task = asyncio.create_task(self._run(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _fill(self, batch: list[_Part]) -> bool:
        """Move parts from the queue into `batch` while it has room; whether room is left."""
        size = sum(len(p) for p in batch)
        cost = sum(self._cost(p.job.items[i]) for p in batch for i in range(p.start, p.stop))
        while size < self.batch_size and (cost < self.max_batch_cost or not batch):
            part = self._pop(self.batch_size - size, self.max_batch_cost - cost, first=not batch)
            if part is None:
                return not self._parts  # room left, unless the next item did not fit
            batch.append(part)
            size += len(part)
            cost += sum(self._cost(part.job.items[i]) for i in range(part.start, part.stop))
        return False

    # ----------------------------------------------------------------- scoring
    async def _run(self, batch: list[_Part]) -> None:
        try:
            by_key: dict[str, list[_Part]] = {}
            for part in batch:
                if not part.job.future.done():
                    by_key.setdefault(part.job.key, []).append(part)
            for key, parts in by_key.items():
                await self._run_group(key, parts)
        finally:
            self._busy.release()

    async def _run_group(self, key: str, parts: list[_Part]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for p in parts for item in p.job.items[p.start:p.stop]]
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._isolate, key, items)
        except _BatchFault as e:
            log.error("a batch of %d failed: %s: %s", len(items), type(e.error).__name__, e.error)
            for part in parts:
                _fail(part.job, BatchError(f"{type(e.error).__name__}: {e.error}", e.error))
            return
        finally:
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(len(items), len({id(p.job) for p in parts}), time.perf_counter() - start)
        if len(items) > 1 and all(isinstance(r, _Failed) for r in results):
            error = results[0].error
            log.error("every item of a batch of %d failed: %s: %s", len(items), type(error).__name__, error)
            for part in parts:
                _fail(part.job, BatchError(f"{type(error).__name__}: {error}", error))
            return
        k = 0
        for part in parts:
            _deliver(part, results[k:k + len(part)])
            k += len(part)

    def _isolate(self, key: str, items: list[Any]) -> list[Any]:
        """Scores of `items`; where a call raises, its halves are scored apart, down to
        single items, which come back as `_Failed`. Runs on the worker thread."""
        try:
            results = self._score(key, items)
            if len(results) != len(items):
                raise BatchError(f"scorer returned {len(results)} results for {len(items)} items")
            return list(results)
        except Exception as e:  # noqa: BLE001 - whatever an item does, it fails only itself
            if not self._item_error(e):
                raise _BatchFault(e) from e
            if len(items) == 1:
                log.warning("an item could not be scored: %s: %s", type(e).__name__, e)
                return [_Failed(e)]
            half = len(items) // 2
            return self._isolate(key, items[:half]) + self._isolate(key, items[half:])


def _deliver(part: _Part, results: list[Any]) -> None:
    """Hand a part's results to its job; the job's future resolves once all are in."""
    job = part.job
    if job.future.done():
        return
    for i, r in zip(range(part.start, part.stop), results):
        if isinstance(r, _Failed):
            _fail(job, ItemError(i, r.error))
            return
        job.results[i] = r
    job.todo -= len(part)
    if job.todo == 0:
        job.future.set_result(job.results)


def _fail(job: _Job, error: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(error)
