"""The reward server's Prometheus metrics, on the `prometheus_client` library.

Each app gets a registry of its own (several apps in one process, as in the tests,
do not collide). With ``PROMETHEUS_MULTIPROC_DIR`` set, as for several server worker
processes, ``/metrics`` aggregates every process's files (prometheus_client's
multiprocess mode; the live queue gauge is then per process and left out).
"""
from __future__ import annotations

import os
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """Counters and histograms of one reward server."""

    def __init__(self, queued_items: Callable[[], float] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("zyn_requests", "HTTP requests by route and status code.", ["route", "status"],
                                registry=r)
        self.items = Counter("zyn_items", "Items (texts or records) received for scoring, by route.", ["route"],
                             registry=r)
        self.errors = Counter("zyn_errors", "Failed scoring requests by kind.", ["kind"], registry=r)
        self.failure_rewards = Counter("zyn_failure_rewards", "Items answered with the failure reward "
                                       "(OpenRLHF route) because they could not be scored.", registry=r)
        self.latency = Histogram("zyn_request_latency_seconds", "Request latency by route.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_items = Histogram("zyn_batch_size_items", "Items per model batch.", buckets=SIZE_BUCKETS,
                                     registry=r)
        self.batch_requests = Histogram("zyn_batch_requests", "Requests per model batch.", buckets=SIZE_BUCKETS,
                                        registry=r)
        self.batch_latency = Histogram("zyn_batch_latency_seconds", "Model time per batch.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        if queued_items is not None and not _multiprocess():
            Gauge("zyn_queue_items", "Items waiting for a batch.", registry=r).set_function(queued_items)

    def on_batch(self, items: int, requests: int, seconds: float) -> None:
        """Record one model call (the micro-batcher's callback)."""
        self.batch_items.observe(items)
        self.batch_requests.observe(requests)
        self.batch_latency.observe(seconds)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value, e.g. ``value("zyn_errors_total", kind="batch")``; 0 if unseen."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        """The text exposition of this server (of every worker process in multiprocess mode)."""
        if _multiprocess():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
