"""The reward server on a tiny random model: a real uvicorn on 127.0.0.1 (random port).

Served numbers must equal direct batched scoring; failures (bad JSON, limits, keys,
a failing batch, a timeout, a client that hangs up) must stay local to their
requests while the server keeps serving.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from zyn import InputError, ZeroShotRewardModel  # noqa: E402
from zyn.server import MicroBatcher, check_bind, create_app, is_loopback, serve_in_thread  # noqa: E402


# Batches of different composition differ in float32 rounding (P(yes) by up to ~3e-6 on
# the tiny model); the "zyn" reward is 10 * (P - 0.5), so its tolerance is 10x.
TOL_P, TOL_REWARD = 1e-5, 1e-4
TEXTS = [f"Review {i}: the film was {'great' if i % 2 else 'awful'} and {'x ' * (i % 5)}the plot {i}."
         for i in range(40)]


@pytest.fixture(scope="module")
def rms(tiny_causal):
    model, tok = tiny_causal
    rm = ZeroShotRewardModel(model, tok, prompt="sentiment")
    return {"sentiment": rm, "sentiment_robust": rm.with_prompt("sentiment_robust")}


@pytest.fixture
def served(rms):
    """(base URL, app) of a fresh server; the batch window is wide so that concurrent
    requests share batches."""
    app = create_app(rms, batch_size=32, max_wait_ms=20)
    with serve_in_thread(app) as url:
        yield url, app


async def _post_many(url: str, bodies: list[dict], path: str = "/v1/rewards", **kw) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, **kw) as client:
        return await asyncio.gather(*[client.post(url + path, json=b) for b in bodies])


def post_many(url, bodies, path="/v1/rewards", **kw):
    return asyncio.run(_post_many(url, bodies, path, **kw))


# ----------------------------------------------------------------------------- numbers

def test_concurrent_requests_equal_direct_scoring(served, rms):
    url, app = served
    direct = rms["sentiment"].score_detailed(TEXTS)
    bodies = [{"texts": TEXTS[i:i + 4]} for i in range(0, len(TEXTS), 4)] * 2  # 20 requests
    responses = post_many(url, bodies)
    assert [r.status_code for r in responses] == [200] * len(bodies)
    for body, r in zip(bodies, responses):
        out = r.json()
        idx = [TEXTS.index(t) for t in body["texts"]]
        assert out["rewards"] == pytest.approx([direct.rewards[i] for i in idx], abs=TOL_REWARD)
        assert out["p_yes"] == pytest.approx([direct.p_yes[i] for i in idx], abs=TOL_P)
        assert out["per_question"]["positive"] == pytest.approx(
            [direct.per_question["positive"][i] for i in idx], abs=TOL_P)
        assert out["prompt_set"] == "sentiment"
    batcher = app.state.service.batcher
    assert batcher.batches < len(bodies)  # requests really were gathered into batches


def test_records_and_a_second_prompt_set_on_the_same_model(served, rms):
    url, _ = served
    items = [{"prompt": "Review of a film: ", "completion": "loved every minute"},
             {"messages": [{"role": "user", "content": "Write a review"},
                           {"role": "assistant", "content": "dull and too long"}]},
             {"text": "fine"}]
    r = httpx.post(url + "/v1/rewards", json={"items": items, "prompt": "sentiment_robust"})
    assert r.status_code == 200, r.text
    direct = rms["sentiment_robust"].score_detailed(items)
    assert r.json()["rewards"] == pytest.approx(direct.rewards, abs=TOL_REWARD)
    assert set(r.json()["per_question"]) == {"positive", "repetitive", "instructs", "coherent", "sysline"}
    assert rms["sentiment_robust"].backend is rms["sentiment"].backend
    r = httpx.post(url + "/v1/rewards", json={"texts": ["x"], "prompt": "nope"})
    assert r.status_code == 404 and r.json()["loaded"] == ["sentiment", "sentiment_robust"]


def test_openrlhf_remote_reward_protocol(served, rms):
    url, _ = served
    prompts = ["Review: ", "Tell me: ", "unrelated prompt"]
    responses = ["a wonderful film", "boring", "the whole query is judged"]
    query = [p + r for p, r in zip(prompts[:2], responses[:2])] + ["no prefix here: " + responses[2]]
    r = httpx.post(url + "/get_reward", json={"query": query, "prompts": prompts, "labels": ["a", "b", "c"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"rewards", "scores", "extra_logs"}
    expected = rms["sentiment"].score_detailed(
        [{"prompt": prompts[0], "completion": responses[0]}, {"prompt": prompts[1], "completion": responses[1]},
         {"text": query[2]}])
    assert out["rewards"] == pytest.approx(expected.rewards, abs=TOL_REWARD)
    assert out["scores"] == pytest.approx(expected.p_yes, abs=TOL_P)
    assert all(0.0 <= s <= 1.0 for s in out["scores"])
    assert all(len(v) == 3 for v in out["extra_logs"].values())
    r = httpx.post(url + "/get_reward", json={"query": query, "prompts": prompts[:2]})
    assert r.status_code == 422


@pytest.fixture
def grader(rms):
    """(base URL, app) of a server whose default prompt set is answer_grader (it reads 'reference')."""
    app = create_app({"answer_grader": rms["sentiment"].with_prompt("answer_grader"), "sentiment": rms["sentiment"]})
    with serve_in_thread(app) as url:
        yield url, app


def test_openrlhf_labels_reach_the_grader_as_its_reference(grader, rms):
    url, _ = grader
    body = {"query": ["What is 2+2? 4", "What is 2+2? 4"], "prompts": ["What is 2+2? "] * 2, "labels": ["4", 5]}
    r = httpx.post(url + "/get_reward", json=body)
    assert r.status_code == 200, r.text
    direct = rms["sentiment"].with_prompt("answer_grader").score_detailed(
        [{"prompt": "What is 2+2? ", "completion": "4", "reference": ref} for ref in ("4", "5")])
    assert r.json()["rewards"] == pytest.approx(direct.rewards, abs=TOL_P)
    assert r.json()["extra_logs"]["zyn/failed"] == [0.0, 0.0]


@pytest.mark.parametrize("labels", [None, [""], [None]], ids=["no-labels", "empty", "null"])
def test_get_reward_without_the_field_the_prompt_set_reads_is_a_logged_422(grader, labels, caplog):
    """OpenRLHF without --data.label_key sends "" labels: answer_grader cannot grade, and
    every sample would get the failure reward. The request is refused, naming the field and
    the fix, and the server says so in its log (OpenRLHF's client shows no response body)."""
    url, app = grader
    body = {"query": ["What is 2+2? 4"], "prompts": ["What is 2+2? "]} | ({"labels": labels} if labels else {})
    with caplog.at_level("WARNING", logger="zyn.server"):
        responses = [httpx.post(url + "/get_reward", json=body) for _ in range(3)]
    assert [r.status_code for r in responses] == [422] * 3
    out = responses[0].json()
    assert out["missing"] == ["reference"] and out["prompt_set"] == "answer_grader"
    assert "missing field(s) ['reference']" in out["error"] and "--data.label_key" in out["error"]
    logged = [rec for rec in caplog.records if rec.name == "zyn.server"]
    assert len(logged) == 1  # once, not once per retried sample
    assert "/get_reward" in logged[0].getMessage() and "['reference']" in logged[0].getMessage()
    assert app.state.metrics.value("zyn_errors_total", kind="missing_field") == 3
    assert app.state.metrics.value("zyn_failure_rewards_total") == 0


def test_one_bad_item_still_gets_the_failure_reward_with_labels(grader):
    # per-item failures keep their design: the culprit alone gets the failure reward
    body = json.dumps({"query": ["\udc00 bad", "What is 2+2? 4"], "prompts": ["", "What is 2+2? "], "labels": ["4", "4"]})
    r = httpx.post(grader[0] + "/get_reward", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["extra_logs"]["zyn/failed"] == [1.0, 0.0]


def test_v1_rewards_null_reference_is_a_missing_one(grader, rms):
    url, _ = grader
    item = {"prompt": "What is 2+2? ", "completion": "4"}
    r = httpx.post(url + "/v1/rewards", json={"items": [dict(item, reference="4")]})
    assert r.status_code == 200, r.text
    for bad in (dict(item, reference=None), item):  # null was read as the text "None"
        r = httpx.post(url + "/v1/rewards", json={"items": [dict(item, reference="4"), bad]})
        assert r.status_code == 422 and r.json()["missing"] == ["reference"] and r.json()["item"] == 1
        assert "give it in every item" in r.json()["error"]
    r = httpx.post(url + "/v1/rewards", json={"texts": ["4"]})  # plain texts give no reference either
    assert r.status_code == 422 and r.json()["missing"] == ["reference"] and r.json()["item"] == 0
    assert "a plain text gives only 'text'" in r.json()["error"]
    # a prompt set that reads no reference does not mind a null one
    r = httpx.post(url + "/v1/rewards", json={"items": [dict(item, reference=None)], "prompt": "sentiment"})
    assert r.status_code == 200
    assert r.json()["rewards"] == pytest.approx(rms["sentiment"].score_detailed([item]).rewards, abs=TOL_REWARD)


# ----------------------------------------------------------------------------- bad requests

def test_malformed_json_schema_and_limits(rms):
    app = create_app(rms, max_items=5, max_chars=50, max_body_bytes=2000)
    with serve_in_thread(app) as url:
        r = httpx.post(url + "/v1/rewards", content=b'{"texts": ["a",', headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"] == "malformed JSON body"
        r = httpx.post(url + "/v1/rewards", json={"texts": "not a list"})
        assert r.status_code == 422 and "error" in r.json()
        for kind in ("application/x-www-form-urlencoded", "text/plain", None):  # curl -d without -H
            r = httpx.post(url + "/v1/rewards", content=b'{"texts": ["Great film!"]}',
                           headers={"content-type": kind} if kind else {})
            assert r.status_code == 422 and "Content-Type: application/json" in r.json()["error"], r.text
        r = httpx.post(url + "/v1/rewards", json={"texts": ["a"], "items": [{"text": "b"}]})
        assert r.status_code == 422
        r = httpx.post(url + "/v1/rewards", json={"texts": ["a"] * 6})
        assert r.status_code == 422 and r.json()["limit"] == "max_items" and r.json()["max"] == 5
        r = httpx.post(url + "/v1/rewards", json={"texts": ["a" * 51]})
        assert r.status_code == 422 and r.json()["limit"] == "max_chars"
        r = httpx.post(url + "/v1/rewards", json={"items": [{"wrong": "keys"}]})
        assert r.status_code == 422 and "item 0" in r.json()["error"]
        r = httpx.post(url + "/v1/rewards", json={"texts": ["a" * 40] * 60})
        assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(10):
                yield b" " * 500
        r = httpx.post(url + "/v1/rewards", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert httpx.post(url + "/v1/rewards", json={"texts": ["still fine"]}).status_code == 200


def test_api_key(rms, monkeypatch):
    monkeypatch.setenv("ZYN_API_KEY", "s3cret")
    app = create_app(rms)
    with serve_in_thread(app) as url:
        r = httpx.post(url + "/v1/rewards", json={"texts": ["a"]})
        assert r.status_code == 401 and "API key" in r.json()["error"]
        r = httpx.post(url + "/get_reward", json={"query": ["a"]}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        ok = httpx.post(url + "/v1/rewards", json={"texts": ["a"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        alt = httpx.post(url + "/v1/rewards", json={"texts": ["a"]}, headers={"X-API-Key": "s3cret"})
        assert alt.status_code == 200
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 401
        httpx.post(url + "/nowhere/" + "x" * 50, headers={"X-API-Key": "s3cret"})
        metrics = httpx.get(url + "/metrics", headers={"X-API-Key": "s3cret"}).text
    # refusals the guard answers before any route are counted too, unknown paths under one label
    assert 'zyn_requests_total{route="/v1/rewards",status="401"} 1.0' in metrics
    assert 'zyn_requests_total{route="/get_reward",status="401"} 1.0' in metrics
    assert 'zyn_requests_total{route="/metrics",status="401"} 1.0' in metrics
    assert 'zyn_requests_total{route="unmatched",status="404"} 1.0' in metrics


def test_refuses_public_bind_without_key():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "key")
    check_bind("0.0.0.0", None, insecure_public=True)
    with pytest.raises(ValueError, match="--insecure-public"):
        check_bind("0.0.0.0", None)


# ----------------------------------------------------------------------------- failures stay local

class Gate:
    """Stands in for score_detailed: a batch holding a "HOLD" text blocks until
    released (so requests sent meanwhile queue up and share the next batch), one
    holding `fail_on` raises `error`, and "SLOW" texts take `slow` seconds."""

    def __init__(self, real, fail_on: str | None = None, error=RuntimeError, slow: float = 0.0):
        self.real, self.fail_on, self.error, self.slow = real, fail_on, error, slow
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, items):
        text = str(items)
        if "HOLD" in text:
            self.entered.set()
            self.release.wait(30)
        if "SLOW" in text:
            self.entered.set()
            time.sleep(self.slow)
        if self.fail_on and self.fail_on in text:
            raise self.error(f"item 0: injected failure on {self.fail_on}")
        return self.real(items)


def send_while_held(url: str, app, gate: Gate, bodies: list[dict]) -> tuple[httpx.Response, list[httpx.Response]]:
    """Occupy the worker with a HOLD request, queue `bodies`, then let go: the
    bodies are scored together in the next batch."""
    n_items = sum(len(b["texts"]) for b in bodies)
    batcher = app.state.service.batcher

    async def scenario():
        async with httpx.AsyncClient(timeout=60) as client:
            held = asyncio.create_task(client.post(url + "/v1/rewards", json={"texts": ["HOLD"]}))
            assert await asyncio.to_thread(gate.entered.wait, 30)
            rest = [asyncio.create_task(client.post(url + "/v1/rewards", json=b)) for b in bodies]
            deadline = time.monotonic() + 30
            while batcher.queued_items < n_items and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            gate.release.set()
            return await held, await asyncio.gather(*rest)

    return asyncio.run(scenario())


def test_an_item_that_raises_fails_only_its_own_request(rms, monkeypatch):
    rm = rms["sentiment"]
    real = rm.score_detailed
    gate = Gate(real, fail_on="BOOM")
    monkeypatch.setattr(rm, "score_detailed", gate)
    app = create_app(rms, batch_size=64, max_wait_ms=5)
    with serve_in_thread(app) as url:
        held, shared = send_while_held(url, app, gate, [{"texts": ["ok 0", "BOOM"]}, {"texts": ["ok 1"]},
                                                        {"texts": ["ok 2", "ok 3"]}])
        assert held.status_code == 200  # the batch before is unaffected
        # the batch is split until the culprit stands alone: only its request fails, naming it
        assert [r.status_code for r in shared] == [422, 200, 200]
        assert shared[0].json()["item"] == 1 and "injected failure" in shared[0].json()["error"]
        assert shared[2].json()["rewards"] == pytest.approx(real(["ok 2", "ok 3"]).rewards, abs=TOL_REWARD)
        later = post_many(url, [{"texts": ["ok 1"]}, {"texts": ["ok 2"]}])  # the server keeps serving
        assert [r.status_code for r in later] == [200, 200]
        other = httpx.post(url + "/v1/rewards", json={"texts": ["BOOM"], "prompt": "sentiment_robust"})
        assert other.status_code == 200  # another prompt set's scorer is unaffected
        assert 'zyn_errors_total{kind="item"} 1.0' in httpx.get(url + "/metrics").text


def test_a_broken_model_fails_the_batch_as_a_server_error(rms, monkeypatch):
    rm = rms["sentiment"]
    gate = Gate(rm.score_detailed, fail_on="'")  # every non-empty batch: the model, not an item
    monkeypatch.setattr(rm, "score_detailed", gate)
    app = create_app(rms, batch_size=64, max_wait_ms=50)
    with serve_in_thread(app) as url:
        rs = post_many(url, [{"texts": ["a", "b"]}, {"texts": ["c"]}])
        assert [r.status_code for r in rs] == [500, 500]
        assert 'zyn_errors_total{kind="batch"} 2.0' in httpx.get(url + "/metrics").text


def test_a_down_engine_is_a_502_to_retry_not_a_reward(rms):
    """A remote judge whose engine cannot be reached: every route answers 502 (OpenRLHF
    retries), none a failure reward to train on; the batch is not split and re-sent per
    piece; /health says the scoring is failing until a batch succeeds."""
    down = ZeroShotRewardModel("openai+http://user:s3cretpw@127.0.0.1:9/v1?model=m&retries=0&timeout=2",
                               prompt="sentiment")
    app = create_app({"sentiment": down, "local": rms["sentiment"]})
    with serve_in_thread(app) as url:
        t = time.monotonic()
        r = httpx.post(url + "/v1/rewards", json={"texts": ["a", "b", "c", "d"]})
        assert r.status_code == 502 and "engine failed" in r.json()["error"] and r.headers["retry-after"]
        assert "s3cretpw" not in r.text  # the judge's URL, masked in its errors
        assert time.monotonic() - t < 10
        r = httpx.post(url + "/get_reward", json={"query": ["Great film"]})
        assert r.status_code == 502, r.text
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "failing" and health.json()["last_error"]
        assert httpx.post(url + "/v1/rewards", json={"texts": ["a"], "prompt": "local"}).status_code == 200
        assert httpx.get(url + "/health").json()["status"] == "ok"  # a batch went through again


def test_an_engine_refusing_one_item_fails_that_item_only(rms):
    """An engine's 400 (a text over its context, say) may be one item's: the batch is split
    as for any item's error, so the others are scored; a password in the judge's URL is in
    no answer."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from test_remote_backend import make_fake_server

    engine = make_fake_server()

    @engine.middleware("http")
    async def refuse(request: Request, call_next):
        if b"POISON" in await request.body():
            return JSONResponse({"error": "maximum context length exceeded"}, status_code=400)
        return await call_next(request)

    with serve_in_thread(engine) as engine_url:
        url = engine_url.replace("http://", "http://user:s3cretpw@")
        judge = ZeroShotRewardModel(f"openai+{url}/v1?retries=0", prompt="Is this text positive?", top_k=50)
        app = create_app({"q": judge}, max_wait_ms=50)
        with serve_in_thread(app) as zyn_url:
            rs = post_many(zyn_url, [{"texts": ["POISON"]}, {"texts": ["fine"]}, {"texts": ["good", "bad"]}])
            assert [r.status_code for r in rs] == [422, 200, 200], [r.text for r in rs]
            assert "maximum context length" in rs[0].json()["error"] and "s3cretpw" not in rs[0].text
            r = httpx.post(zyn_url + "/get_reward", json={"query": ["POISON", "fine"]})
            assert r.status_code == 200 and r.json()["extra_logs"]["zyn/failed"] == [1.0, 0.0]
            assert httpx.get(zyn_url + "/health").json()["status"] == "ok"


def test_a_remote_judges_flags_reach_the_rewards_response():
    from test_remote_backend import make_fake_server

    with serve_in_thread(make_fake_server()) as engine_url:
        judge = ZeroShotRewardModel(f"openai+{engine_url}/v1?retries=0&top_k=8&chat_auto=false",
                                    prompt="Is this text positive?")
        with serve_in_thread(create_app({"q": judge}, max_wait_ms=5)) as zyn_url:
            texts = ["fine", "NONO here", "NOBOTH here"]
            r = httpx.post(zyn_url + "/v1/rewards", json={"texts": texts})
        direct = judge.score_detailed(texts)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["flags"] == direct.flags and set(direct.flags) == set(body["per_question"])
    (flags,) = direct.flags.values()
    assert flags[1:] == ["no_bound", "missing"]
    assert body["p_yes"][2] is None and body["p_yes"][1] == pytest.approx(direct.p_yes[1])


def test_an_in_process_judge_answers_no_flags(served):
    url, _ = served
    r = httpx.post(url + "/v1/rewards", json={"texts": ["A fine film."]})
    assert r.status_code == 200 and r.json()["flags"] == {}


def test_get_reward_fails_only_the_unscorable_samples_of_a_batch(served, rms):
    url, _ = served
    body = json.dumps({"query": ["\udc00 bad", "A fine film.", "x" * 200_000]})  # a lone surrogate, escaped
    r = httpx.post(url + "/get_reward", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["extra_logs"]["zyn/failed"] == [1.0, 0.0, 1.0]
    assert body["rewards"][1] == pytest.approx(rms["sentiment"].score_detailed(["A fine film."]).rewards[0],
                                               abs=TOL_REWARD)
    assert body["rewards"][0] == body["rewards"][2] == 0.0
    r = httpx.post(url + "/get_reward", json={"query": ["x" * 90_000] * 12})  # the request's size: 422
    assert r.status_code == 422 and "max_request_chars" in r.json()["error"]


def test_bad_input_in_a_shared_batch_fails_only_the_culprit(rms, monkeypatch):
    rm = rms["sentiment"]
    real = rm.score_detailed
    gate = Gate(real, fail_on="BAD", error=InputError)
    monkeypatch.setattr(rm, "score_detailed", gate)
    app = create_app(rms, batch_size=64, max_wait_ms=5)
    with serve_in_thread(app) as url:
        _, rs = send_while_held(url, app, gate, [{"texts": ["BAD"]}, {"texts": ["good 1"]},
                                                 {"texts": ["good 2", "good 3"]}])
    assert [r.status_code for r in rs] == [422, 200, 200]
    assert rs[2].json()["rewards"] == pytest.approx(real(["good 2", "good 3"]).rewards, abs=TOL_REWARD)


def wait_idle(app, timeout: float = 30.0) -> None:
    batcher = app.state.service.batcher
    deadline = time.monotonic() + timeout
    while not batcher.idle and time.monotonic() < deadline:
        time.sleep(0.02)


def test_timeout_and_disconnect_do_not_break_the_batcher(rms, monkeypatch):
    rm = rms["sentiment"]
    real = rm.score_detailed
    monkeypatch.setattr(rm, "score_detailed", Gate(real, slow=2.0))
    app = create_app(rms, request_timeout_s=1.0, max_wait_ms=1)
    with serve_in_thread(app) as url:
        r = httpx.post(url + "/v1/rewards", json={"texts": ["SLOW"]})
        assert r.status_code == 504 and "longer than" in r.json()["error"]
        wait_idle(app)
        # a client that hangs up mid-request
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/rewards", json={"texts": ["SLOW again"]}, timeout=0.3)
        wait_idle(app)
        r = httpx.post(url + "/v1/rewards", json={"texts": ["after"]})
        assert r.status_code == 200
        assert r.json()["rewards"] == pytest.approx(real(["after"]).rewards, abs=TOL_REWARD)
        assert app.state.service.batcher.running and app.state.service.batcher.queued_items == 0


def test_a_client_that_hangs_up_is_not_scored_for(rms, monkeypatch):
    """Parts of a request whose client has gone (a trainer's timeout, then its retry) are
    dropped from the queue, not scored for nobody."""
    rm = rms["sentiment"]
    seen: list[str] = []

    def scoring(items):
        seen.extend(map(str, items))
        return gate(items)

    gate = Gate(rm.score_detailed)
    monkeypatch.setattr(rm, "score_detailed", scoring)
    app = create_app(rms, max_wait_ms=1)
    batcher = app.state.service.batcher
    with serve_in_thread(app) as url:
        async def scenario():
            async with httpx.AsyncClient(timeout=60) as client:
                held = asyncio.create_task(client.post(url + "/v1/rewards", json={"texts": ["HOLD"]}))
                assert await asyncio.to_thread(gate.entered.wait, 30)
                with pytest.raises(httpx.ReadTimeout):  # queued behind HOLD, then the client gives up
                    await client.post(url + "/v1/rewards", json={"texts": ["GONE 1", "GONE 2"]}, timeout=0.5)
                with pytest.raises(httpx.ReadTimeout):
                    await client.post(url + "/get_reward", json={"query": ["GONE 3", "GONE 4"]}, timeout=0.5)
                await asyncio.sleep(3 * 0.25 + 0.5)  # the server notices within its polling interval
                gate.release.set()
                return await held

        assert asyncio.run(scenario()).status_code == 200
        wait_idle(app)
        assert httpx.post(url + "/v1/rewards", json={"texts": ["after"]}).status_code == 200
        assert not [t for t in seen if "GONE" in t] and batcher.queued_items == 0
        assert 'zyn_errors_total{kind="disconnected"} 2.0' in httpx.get(url + "/metrics").text


def test_overload_is_503(rms, monkeypatch):
    rm = rms["sentiment"]
    gate = Gate(rm.score_detailed)
    monkeypatch.setattr(rm, "score_detailed", gate)
    app = create_app(rms, batch_size=2, max_wait_ms=1, max_queue_items=4)
    batcher = app.state.service.batcher

    async def scenario(url):
        async with httpx.AsyncClient(timeout=60) as client:
            held = asyncio.create_task(client.post(url + "/v1/rewards", json={"texts": ["HOLD"]}))
            assert await asyncio.to_thread(gate.entered.wait, 30)
            queued = [asyncio.create_task(client.post(url + "/v1/rewards", json={"texts": ["a", "b"]}))
                      for _ in range(2)]
            while batcher.queued_items < 4:  # the queue is full
                await asyncio.sleep(0.01)
            refused = await client.post(url + "/v1/rewards", json={"texts": ["c"]})
            gate.release.set()
            return refused, await held, await asyncio.gather(*queued)

    with serve_in_thread(app) as url:
        refused, held, queued = asyncio.run(scenario(url))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "overloaded" in refused.json()["error"]
    assert held.status_code == 200 and [r.status_code for r in queued] == [200, 200]


def test_graceful_shutdown_finishes_in_flight_requests(rms, monkeypatch):
    rm = rms["sentiment"]
    gate = Gate(rm.score_detailed, slow=0.5)
    monkeypatch.setattr(rm, "score_detailed", gate)
    app = create_app(rms, max_wait_ms=1)
    results = []
    with serve_in_thread(app) as url:
        t = threading.Thread(target=lambda: results.append(
            httpx.post(url + "/v1/rewards", json={"texts": ["SLOW in flight"]}, timeout=30)))
        t.start()
        assert gate.entered.wait(30)  # the request is being scored when the server is told to stop
    t.join(timeout=30)
    assert results and results[0].status_code == 200
    assert not app.state.service.batcher.running


# ----------------------------------------------------------------------------- the rest

def test_health_metrics_and_docs(served):
    url, _ = served
    httpx.post(url + "/v1/rewards", json={"texts": ["a", "b"]})
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and set(health["prompt_sets"]) == {"sentiment", "sentiment_robust"}
    metrics = httpx.get(url + "/metrics").text
    assert 'zyn_requests_total{route="/v1/rewards",status="200"} 1.0' in metrics
    assert 'zyn_items_total{route="rewards"} 2.0' in metrics
    assert 'zyn_batch_size_items_bucket{le="2.0"} 1.0' in metrics
    assert 'zyn_request_latency_seconds_count{route="/v1/rewards"} 1.0' in metrics
    assert httpx.get(url + "/docs").status_code == 200
    assert {"/v1/rewards", "/get_reward"} <= set(httpx.get(url + "/openapi.json").json()["paths"])


def test_micro_batcher_splits_results_back_in_order():
    calls = []

    def score(key, items):
        calls.append(len(items))
        return [f"{key}:{x}" for x in items]

    async def main():
        b = MicroBatcher(score, batch_size=8, max_wait_ms=20)
        b.start()
        jobs = [b.submit("k", [f"{i}.{j}" for j in range(i % 3 + 1)]) for i in range(10)]
        out = await asyncio.gather(*jobs)
        await b.close()
        return out

    out = asyncio.run(main())
    assert out == [[f"k:{i}.{j}" for j in range(i % 3 + 1)] for i in range(10)]
    assert max(calls) <= 8 + 2 and len(calls) < 10


def test_serve_loads_every_prompt_set_on_one_model(rms, monkeypatch):
    from zyn.cli import serve

    base = rms["sentiment"]
    monkeypatch.setattr(serve, "load_reward_model", lambda args, prompt=None: base.with_prompt(prompt))
    args = argparse.Namespace(prompt=["sentiment", "detox", "Is it short?", "Is it long?"], reward=None)
    models = serve.load_models(args)
    assert list(models) == ["sentiment", "detox", "is_it_short", "is_it_long"]
    assert len({id(m.backend) for m in models.values()}) == 1
