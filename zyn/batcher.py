"""Micro-batching: concurrent requests gathered into model batches on one worker thread.

A batch closes when it holds ``batch_size`` items or ``max_wait_ms`` after its first
request arrived, whichever comes first; while the worker is busy, the next batch
keeps filling up to ``batch_size``. Results are split back to their requests in
order. A batch that fails fails only its own requests; one that fails on bad input
(a ZynError) is re-run one request at a time, so only the culprit fails. Requests
that were cancelled (timed out, client gone) before their batch ran are skipped.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ZynError
from .prometheus import Metrics

log = logging.getLogger(__name__)


class BatchError(RuntimeError):
    """Scoring the batch that held a request failed (not the request's fault)."""


class Overloaded(RuntimeError):
    """The queue is full."""


@dataclass
class _Job:
    key: str                       # prompt-set name: only jobs with one key share a call
    items: list[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers concurrent scoring requests into batches, scored on one worker thread.

    Args:
        score: ``score(key, items) -> list[result]`` run on the worker thread, one
            result per item (blocking; never called concurrently).
        batch_size: most items in one call (a larger request is a batch of its own).
        max_wait_ms: how long the first request of a batch waits for company.
        max_queue_items: items waiting beyond this are refused with `Overloaded`.
        metrics: optional Metrics to record batch sizes and times.
    """

    def __init__(self, score: Callable[[str, list[Any]], list[Any]], *, batch_size: int = 64,
                 max_wait_ms: float = 5.0, max_queue_items: int = 8192, metrics: Metrics | None = None):
        self._score = score
        self.batch_size = max(1, int(batch_size))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.max_queue_items = int(max_queue_items)
        self.metrics = metrics
        self.queued_items = 0
        self.batches = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._runner: asyncio.Task | None = None
        self._busy: asyncio.Lock | None = None
        self._inflight: set[asyncio.Task] = set()
        self._gathering: list[_Job] = []   # taken from the queue, not yet handed to the worker
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the collector on the running event loop."""
        self._queue = asyncio.Queue()
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
        for job in self._gathering + self._drain_nowait():
            _fail(job, BatchError("server shutting down"))
        self._gathering = []
        self._executor.shutdown(wait=True)
        self._runner = None

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    # ----------------------------------------------------------------- submitting
    async def submit(self, key: str, items: list[Any]) -> list[Any]:
        """Score `items` in some batch; returns their results in order.

        Raises:
            Overloaded: too many items are waiting already.
            BatchError: the batch failed for a reason other than this request's input.
            ZynError: this request's input is bad.
        """
        if self._closing or not self.running:
            raise Overloaded("server is shutting down")
        if self.queued_items and self.queued_items + len(items) > self.max_queue_items:
            raise Overloaded(f"{self.queued_items} items already queued")
        job = _Job(key, list(items), asyncio.get_running_loop().create_future())
        self.queued_items += len(job.items)
        self._queue.put_nowait(job)
        return await job.future

    # ----------------------------------------------------------------- collecting
    async def _collect(self) -> None:
        while True:
            batch = self._gathering = [await self._queue.get()]
            size = len(batch[0].items)
            deadline = time.perf_counter() + self.max_wait
            while size < self.batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                batch.append(job)
                size += len(job.items)
            await self._busy.acquire()  # the worker is free: whatever queued meanwhile joins
            while size < self.batch_size and not self._queue.empty():
                job = self._queue.get_nowait()
                batch.append(job)
                size += len(job.items)
            self.queued_items -= size
            self._gathering = []
            task = asyncio.create_task(self._run(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _drain_nowait(self) -> list[_Job]:
        jobs = []
        while self._queue is not None and not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        self.queued_items = 0
        return jobs

    # ----------------------------------------------------------------- scoring
    async def _run(self, batch: list[_Job]) -> None:
        try:
            live = [j for j in batch if not j.future.done()]  # timed out or disconnected: skip
            by_key: dict[str, list[_Job]] = {}
            for job in live:
                by_key.setdefault(job.key, []).append(job)
            for key, jobs in by_key.items():
                await self._run_group(key, jobs)
        finally:
            self._busy.release()

    async def _run_group(self, key: str, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for job in jobs for item in job.items]
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._score, key, items)
            if len(results) != len(items):
                raise BatchError(f"scorer returned {len(results)} results for {len(items)} items")
        except ZynError as e:
            if len(jobs) > 1:  # bad input somewhere: find out whose, one request at a time
                for job in jobs:
                    await self._run_group(key, [job])
                return
            _fail(jobs[0], e)
            return
        except Exception as e:  # noqa: BLE001 - any model failure fails this batch only
            log.exception("scoring a batch of %d items (%d requests) failed", len(items), len(jobs))
            for job in jobs:
                _fail(job, BatchError(f"{type(e).__name__}: {e}"))
            return
        finally:
            self._record(len(items), len(jobs), time.perf_counter() - start)
        k = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(results[k:k + len(job.items)])
            k += len(job.items)

    def _record(self, n_items: int, n_jobs: int, seconds: float) -> None:
        self.batches += 1
        if self.metrics is not None:
            self.metrics.observe("zyn_batch_size_items", n_items)
            self.metrics.observe("zyn_batch_requests", n_jobs)
            self.metrics.observe("zyn_batch_latency_seconds", seconds)


def _fail(job: _Job, error: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(error)
