#!/usr/bin/env python
"""Fuzz the reward server (tiny random judge, 127.0.0.1 only) and count what it answers.

Two sources of requests, both bounded in number and time:
  schema   schemathesis cases from the server's own OpenAPI schema, positive and
           negative, for POST /v1/rewards and POST /get_reward
  hostile  hand-made families: lone surrogates, renderer markers, deep nesting, non-string
           fields, over-long items, poisoned items sent beside honest ones

Prints, per family, how many requests got 2xx, 4xx and 5xx (and transport errors),
and whether an honest client sent after each family still got its exact scores.
It uses only `create_app` and `serve_in_thread`, so the same script measures an older
checkout: `PYTHONPATH=/path/to/old/checkout python benchmarks/bench_fuzz.py`.

    python benchmarks/bench_fuzz.py --examples 300 --seconds 300
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT / "tests"))  # the tiny random judge of the test suite

KEY = {"Authorization": "Bearer fuzz-key"}


def hostile_bodies() -> dict[str, list[str]]:
    """Raw JSON bodies per family (strings, so that invalid Unicode escapes survive)."""
    deep = '{"items": [{"text": "a", "x": ' + "[" * 1000 + "]" * 1000 + "}]}"
    return {
        "surrogates": ['{"texts": ["x\\ud800y"]}', '{"texts": ["ok", "\\udfff"]}',
                       '{"items": [{"messages": [{"role": "user", "content": "\\ud83d"}]}]}',
                       '{"query": ["a\\ud800"]}'],
        "markers": [json.dumps({"texts": [f"\ue000{i}\ue001 swap", "t \ue000ab:0\ue001 \ue000"]}) for i in range(3)]
        + [json.dumps({"items": [{"messages": [{"role": "user", "content": "\ue0000\ue001"},
                                               {"role": "assistant", "content": "\ue0001\ue001"}]}]})],
        "nesting": [deep, '{"items": [{"text": "a", "x": ' + "{\"a\": " * 500 + "1" + "}" * 500 + "}]}"],
        "types": ['{"items": [{"completion": 5}]}', '{"items": [{"messages": "hi"}]}',
                  '{"items": [{"messages": [{"content": 3}]}]}', '{"items": [{"prompt": [], "completion": "x"}]}',
                  '{"query": [5]}', '{"query": "x"}', '{"texts": [null]}'],
        "sizes": [json.dumps({"texts": ["x" * 120_000]}), json.dumps({"texts": ["y"] * 600})],
    }


async def _send(url: str, bodies: list[str], path: str, counts: collections.Counter) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=60, headers={**KEY, "content-type": "application/json"}) as client:
        for r in await asyncio.gather(*[client.post(url + path, content=b.encode("utf-8", "surrogatepass"))
                                        for b in bodies], return_exceptions=True):
            counts[_bucket(r)] += 1


def _bucket(r) -> str:
    if isinstance(r, BaseException):
        return "error"
    return f"{r.status_code // 100}xx"


def run_schema(url: str, app, examples: int, deadline: float) -> dict[str, collections.Counter]:
    import httpx
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_dict(app.openapi())
    out = {}
    for path in ("/v1/rewards", "/get_reward"):
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            counts: collections.Counter = collections.Counter()

            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=schema[path]["POST"].as_strategy(generation_mode=mode))
            def fuzz(case):
                if time.monotonic() > deadline:
                    return
                try:
                    counts[_bucket(case.call(base_url=url, headers=KEY, timeout=60))] += 1
                except (httpx.HTTPError, OSError, ValueError) as e:  # a request the client could not send
                    counts[f"unsent:{type(e).__name__}"] += 1

            fuzz()
            out[f"schema {path} {mode.value}"] = counts
    return out


def honest_ok(url: str, expected: list[float]) -> bool:
    import httpx

    r = httpx.post(url + "/v1/rewards", json={"texts": ["an honest review", "another one"]}, headers=KEY, timeout=60)
    return r.status_code == 200 and all(abs(a - b) < 1e-4 for a, b in zip(r.json()["p_yes"], expected))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=200, help="schemathesis examples per route and mode")
    p.add_argument("--seconds", type=float, default=300, help="stop generating after this long")
    p.add_argument("--out", help="write the counts as JSON here")
    args = p.parse_args()

    import zyn
    from conftest import make_tiny_causal
    from zyn import ZeroShotRewardModel
    from zyn.server import create_app, serve_in_thread

    model, tok = make_tiny_causal()
    rm = ZeroShotRewardModel(model, tok, prompt="sentiment")
    app = create_app({"sentiment": rm}, api_key="fuzz-key", batch_size=16, max_wait_ms=5)
    expected = rm.score(["an honest review", "another one"])
    results: dict[str, dict] = {}
    start = time.monotonic()
    with serve_in_thread(app) as url:
        for family, bodies in hostile_bodies().items():
            counts: collections.Counter = collections.Counter()
            honest = [json.dumps({"texts": ["an honest review", "another one"]})] * 3
            asyncio.run(_send(url, bodies + honest, "/v1/rewards", counts))  # poisoned beside honest requests
            asyncio.run(_send(url, bodies, "/get_reward", counts))
            results[f"hostile {family}"] = {**counts, "honest_ok": honest_ok(url, expected)}
        for name, counts in run_schema(url, app, args.examples, start + args.seconds).items():
            results[name] = {**counts, "honest_ok": honest_ok(url, expected)}
    print(f"zyn from {Path(zyn.__file__).parent}, {time.monotonic() - start:.0f} s")
    print(f"{'family':38s} {'2xx':>5s} {'4xx':>5s} {'5xx':>5s} {'other':>6s}  honest client ok")
    for name, c in results.items():
        other = sum(v for k, v in c.items() if k not in ("2xx", "4xx", "5xx", "honest_ok"))
        print(f"{name:38s} {c.get('2xx', 0):5d} {c.get('4xx', 0):5d} {c.get('5xx', 0):5d} {other:6d}  {c['honest_ok']}")
    total_5xx = sum(c.get("5xx", 0) for c in results.values())
    print(f"total requests {sum(sum(v for k, v in c.items() if k != 'honest_ok') for c in results.values())}, "
          f"5xx {total_5xx}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
