"""A minimal Prometheus registry: labelled counters, histograms and gauges, and the
text exposition format (version 0.0.4), so the server needs no client library."""
from __future__ import annotations

import math
import threading
from bisect import bisect_left
from typing import Callable, Sequence


class Metrics:
    """A minimal Prometheus registry: counters and histograms with labels, text exposition."""

    LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)
    SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = {}
        self._hists: dict[str, dict[tuple, list]] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._help: dict[str, tuple[str, str, tuple]] = {}

    def counter(self, name: str, help: str) -> None:
        self._help[name] = ("counter", help, ())
        self._counters[name] = {}

    def histogram(self, name: str, help: str, buckets: Sequence[float]) -> None:
        self._help[name] = ("histogram", help, tuple(buckets))
        self._hists[name] = {}

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self._help[name] = ("gauge", help, ())
        self._gauges[name] = read

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        buckets = self._help[name][2]
        with self._lock:
            series = self._hists[name].setdefault(key, [[0] * (len(buckets) + 1), 0.0, 0])
            series[0][bisect_left(buckets, value)] += 1
            series[1] += value
            series[2] += 1

    def value(self, name: str, **labels: str) -> float:
        """A counter's value (tests and the benchmark read it)."""
        return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help, buckets) in self._help.items():
                lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    for key, v in sorted(self._counters[name].items()):
                        lines.append(f"{name}{_labels(key)} {_num(v)}")
                elif kind == "gauge":
                    lines.append(f"{name} {_num(self._gauges[name]())}")
                else:
                    for key, (counts, total, n) in sorted(self._hists[name].items()):
                        running = 0
                        for bound, c in zip(list(buckets) + [math.inf], counts):
                            running += c
                            le = "+Inf" if math.isinf(bound) else _num(bound)
                            lines.append(f"{name}_bucket{_labels(key + (('le', le),))} {running}")
                        lines.append(f"{name}_sum{_labels(key)} {_num(total)}")
                        lines.append(f"{name}_count{_labels(key)} {n}")
        return "\n".join(lines) + "\n"


def _labels(key: tuple) -> str:
    if not key:
        return ""
    esc = lambda v: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # noqa: E731
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in key) + "}"


def _num(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))
