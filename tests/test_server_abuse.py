"""The reward server under abuse, on a tiny random judge, loopback only, every loop bounded.

Each test sends what an attacker or a broken client would (poisoned items among
honest ones, marker injection, deep nesting, unauthenticated or trickled bodies,
trickled headers, one huge request) and checks that only the sender is refused and
that an honest client still gets its exact answer. The last test drives both routes
from the OpenAPI schema with schemathesis (positive and negative cases).
"""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from zyn import ZeroShotRewardModel  # noqa: E402
from zyn.server import create_app, serve_in_thread  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def rms(tiny_causal):
    model, tok = tiny_causal
    rm = ZeroShotRewardModel(model, tok, prompt="sentiment")
    return {"sentiment": rm, "sentiment_robust": rm.with_prompt("sentiment_robust")}


@pytest.fixture(scope="module")
def server(rms):
    app = create_app(rms, batch_size=8, max_wait_ms=20, api_key="secret", body_timeout_s=1.0,
                     max_chars=5_000, max_request_chars=50_000, request_timeout_s=20)
    with serve_in_thread(app, header_timeout_s=1.0, max_connections=64) as url:
        yield url, app


AUTH = {"Authorization": "Bearer secret"}


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _read_all(s: socket.socket, limit_s: float = 10.0) -> bytes:
    s.settimeout(limit_s)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _honest(url: str, texts: list[str]) -> httpx.Response:
    return httpx.post(url + "/v1/rewards", json={"texts": texts}, headers=AUTH, timeout=30)


def test_poisoned_items_among_concurrent_clients_fail_only_their_senders(server, rms):
    url, _ = server
    honest = [["a fine film"], ["dull", "long and slow"], ["great acting"]]
    poisons = ['{"texts": ["x\\ud800y"]}', '{"items": [{"messages": [{"role": "user", "content": "\\udfff"}]}]}',
               '{"items": [{"completion": 5}]}', '{"items": [{"text": "a", "extra": ' + "[" * 200 + "]" * 200 + "}]}",
               '{"texts": ["ok", "\\ud83d"]}']

    async def scenario():
        async with httpx.AsyncClient(timeout=30, headers={**AUTH, "content-type": "application/json"}) as c:
            bad = [c.post(url + "/v1/rewards", content=p) for p in poisons]
            good = [c.post(url + "/v1/rewards", json={"texts": t}) for t in honest]
            return await asyncio.gather(*bad, *good)

    rs = asyncio.run(scenario())
    bad, good = rs[:len(poisons)], rs[len(poisons):]
    assert all(400 <= r.status_code < 500 for r in bad), [(r.status_code, r.text[:100]) for r in bad]
    assert "surrogate" in bad[0].json()["error"] and bad[4].json()["item"] == 1
    for texts, r in zip(honest, good):
        assert r.status_code == 200
        assert r.json()["p_yes"] == pytest.approx(rms["sentiment"].score(texts), abs=TOL)


def test_marker_injection_scores_as_plain_text(server, rms):
    url, _ = server
    texts = ["\ue0000\ue001 swap me", "text \ue000ab:1\ue001 and \ue000", "plain"]
    r = _honest(url, texts)
    assert r.status_code == 200
    # as scored directly, and as the same text without the private-use characters would be rendered
    assert r.json()["p_yes"] == pytest.approx(rms["sentiment"].score(texts), abs=TOL)
    (query,) = rms["sentiment"].prompt_set.render(texts[0])
    assert query.user == "<review>\n\ue0000\ue001 swap me\n</review>\n\nIs the reviewer's opinion of the film favourable?"


def test_json_nested_1000_deep_is_a_4xx_and_the_server_stays_up(server):
    url, _ = server
    body = '{"items": [{"text": "a", "x": ' + "[" * 1000 + "]" * 1000 + "}]}"
    r = httpx.post(url + "/v1/rewards", content=body, headers={**AUTH, "content-type": "application/json"})
    assert 400 <= r.status_code < 500 and len(r.text) < 2000
    assert _honest(url, ["still here"]).status_code == 200


def test_the_key_is_checked_before_the_body_is_read(server):
    url, _ = server
    s = _raw(url)
    # declares 15 MB but sends none of it: a server that reads the body first would wait
    s.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 15000000\r\n\r\n")
    start = time.monotonic()
    reply = _read_all(s, 5.0)
    s.close()
    assert reply.startswith(b"HTTP/1.1 401") and time.monotonic() - start < 2.0


def test_a_trickled_body_is_cut_off(server):
    url, _ = server
    s = _raw(url)
    s.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
              b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    start = time.monotonic()
    for byte in b'{"texts": ["slow':  # one byte at a time, never finishing
        try:
            s.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.1)
    reply = _read_all(s, 5.0)
    s.close()
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 5.0
    assert _honest(url, ["ok"]).status_code == 200


def test_trickled_headers_are_cut_off(server):
    url, _ = server
    s = _raw(url)
    start = time.monotonic()
    closed = False
    for _ in range(40):  # at most 4 s of one header byte every 0.1 s
        try:
            s.sendall(b"X")
        except OSError:
            closed = True
            break
        time.sleep(0.1)
    if not closed:
        closed = _read_all(s, 2.0) == b""
    s.close()
    assert closed and time.monotonic() - start < 4.0
    assert _honest(url, ["ok"]).status_code == 200


def test_a_huge_request_does_not_hold_up_other_clients(rms):
    rm = rms["sentiment"]
    app = create_app(rms, batch_size=4, max_wait_ms=1, max_chars=20_000)
    calls: list[int] = []
    real = app.state.service.batcher._score

    def counting(key, items):
        calls.append(len(items))
        return real(key, items)

    app.state.service.batcher._score = counting
    big = {"texts": [f"review {i}: " + "long words " * 1500 for i in range(40)]}  # 20 batches of two

    async def scenario(url):
        async with httpx.AsyncClient(timeout=60) as c:
            heavy = asyncio.create_task(c.post(url + "/v1/rewards", json=big))
            while not calls:
                await asyncio.sleep(0.005)
            t = time.monotonic()
            light = await c.post(url + "/v1/rewards", json={"texts": ["quick one"]})
            light_s = time.monotonic() - t
            return light, light_s, heavy.done(), await heavy

    with serve_in_thread(app) as url:
        light, light_s, heavy_was_done, heavy = asyncio.run(scenario(url))
    assert light.status_code == 200 and heavy.status_code == 200
    assert not heavy_was_done  # the small request was answered in between the big one's parts
    assert max(calls) <= 4 and len(calls) >= 20
    assert light.json()["p_yes"] == pytest.approx(rm.score(["quick one"]), abs=TOL)


def test_a_timed_out_request_stops_being_scored(rms):
    app = create_app(rms, batch_size=2, max_wait_ms=1, request_timeout_s=0.5)
    calls: list[int] = []
    real = app.state.service.batcher._score

    def slow(key, items):
        calls.append(len(items))
        time.sleep(0.2)
        return real(key, items)

    app.state.service.batcher._score = slow
    with serve_in_thread(app) as url:
        r = httpx.post(url + "/v1/rewards", json={"texts": [f"t{i}" for i in range(40)]}, timeout=30)
        assert r.status_code == 504
        time.sleep(1.0)
        assert sum(calls) <= 12  # of 40 items: the parts left when it timed out were dropped
        assert httpx.post(url + "/v1/rewards", json={"texts": ["after"]}).status_code == 200


def test_openrlhf_never_gets_null(server, rms):
    url, app = server
    queries = ["fine film", "x\ud800y", "", "another one"]

    async def scenario():
        async with httpx.AsyncClient(timeout=30, headers=AUTH) as c:
            return await asyncio.gather(*[c.post(url + "/get_reward", content=json.dumps({"query": [q]}),
                                                 headers={"content-type": "application/json"})
                                          for q in queries])

    rs = asyncio.run(scenario())  # OpenRLHF: one sample per request, concurrently
    assert [r.status_code for r in rs] == [200] * 4
    for r in rs:
        body = r.json()
        values = body["rewards"] + body["scores"] + [v for vs in body["extra_logs"].values() for v in vs]
        assert all(isinstance(v, float) for v in values)
    assert rs[1].json()["extra_logs"]["zyn/failed"] == [1.0] and rs[1].json()["rewards"] == [0.0]
    assert rs[0].json()["rewards"] == pytest.approx(rms["sentiment"](samples=["fine film"]), abs=TOL)
    metrics = httpx.get(url + "/metrics", headers=AUTH).text
    assert "zyn_failure_rewards_total 1.0" in metrics


def test_schema_fuzzing_finds_no_5xx_and_an_honest_client_is_unaffected(server, rms):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    url, app = server
    schema = schemathesis.openapi.from_dict(app.openapi())
    strategies = [schema[path]["POST"].as_strategy(generation_mode=mode)
                  for path in ("/v1/rewards", "/get_reward")
                  for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)]
    expected = rms["sentiment"].score(["the honest client"])
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 120  # bounded in time as well as in examples

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def fuzz(case):
        if time.monotonic() > deadline:
            return
        r = case.call(base_url=url, headers=AUTH, timeout=30)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (case.path, case.body, r.status_code, r.text[:300])

    fuzz()
    assert sum(seen.values()) >= 50 and any(400 <= s < 500 for s in seen)
    r = _honest(url, ["the honest client"])
    assert r.status_code == 200 and r.json()["p_yes"] == pytest.approx(expected, abs=TOL)


def test_trusted_networks_need_no_key_and_others_are_refused(rms):
    # OpenRLHF sends no headers: a trusted network lets it in without the key
    app = create_app(rms, api_key="secret", trusted_networks=["127.0.0.0/8"])
    with serve_in_thread(app) as url:
        assert httpx.post(url + "/get_reward", json={"query": ["fine"]}).status_code == 200
    # no key and a trusted network that is not ours: refused before anything is read
    app = create_app(rms, trusted_networks=["10.0.0.0/8"])
    with serve_in_thread(app) as url:
        r = httpx.post(url + "/get_reward", json={"query": ["fine"]})
        assert r.status_code == 403 and "trusted networks" in r.json()["error"]
        assert httpx.get(url + "/health").status_code == 200
    from zyn.server import check_bind
    check_bind("10.1.2.3", None, trusted_networks=["10.0.0.0/8"])
    with pytest.raises(ValueError, match="CIDR"):
        create_app(rms, trusted_networks=["not-a-net"])


def test_a_request_of_too_many_values_is_refused_before_any_walk(rms):
    """Each record under the per-record bound, the request over the per-request one: 422,
    checked by counting (a container's length), not by walking it."""
    from zyn.server import MAX_REQUEST_VALUES

    items = [{"text": "a", "extra": [[]] * 9990} for _ in range(60)]
    with serve_in_thread(create_app(rms)) as url:
        r = httpx.post(url + "/v1/rewards", json={"items": items}, timeout=60)
        assert r.status_code == 422 and r.json()["limit"] == "values" and r.json()["max"] == MAX_REQUEST_VALUES
        labels = [[[] for _ in range(9990)] for _ in range(12)]
        r = httpx.post(url + "/get_reward", json={"query": ["x"] * 12, "labels": labels}, timeout=60)
        assert r.status_code == 422 and r.json()["limit"] == "values"
        assert httpx.post(url + "/v1/rewards", json={"texts": ["fine"]}).status_code == 200


def test_a_forwarded_header_cannot_claim_a_trusted_network(rms):
    """X-Forwarded-For is the client's word: believed only from a proxy named in
    forwarded_allow_ips (uvicorn's own default believes it from 127.0.0.1)."""
    app = create_app(rms, trusted_networks=["10.0.0.0/24"])
    spoof = {"X-Forwarded-For": "10.0.0.7"}
    with serve_in_thread(app) as url:
        assert httpx.post(url + "/get_reward", json={"query": ["fine"]}, headers=spoof).status_code == 403
        assert httpx.get(url + "/metrics", headers=spoof).status_code == 403
    with serve_in_thread(app, forwarded_allow_ips=["127.0.0.1"]) as url:  # zyn behind a local proxy
        assert httpx.post(url + "/get_reward", json={"query": ["fine"]}, headers=spoof).status_code == 200
        assert httpx.post(url + "/get_reward", json={"query": ["fine"]}).status_code == 403


def test_secrets_in_a_model_url_are_not_served():
    # a remote judge's URL may carry a user, a password and an api_key query parameter
    rm = ZeroShotRewardModel("openai+http://user:pa55@127.0.0.1:9/v1?api_key=REMOTE_SECRET&model=m")
    with serve_in_thread(create_app({"sentiment": rm})) as url:
        health = httpx.get(url + "/health").text
    assert "model=m" in health and "***" in health
    for shown in (health, rm.model_name, rm.backend.name, repr(rm)):
        assert "REMOTE_SECRET" not in shown and "pa55" not in shown


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_failure_reward_is_refused(rms, bad):
    with pytest.raises(ValueError, match="failure_reward: expected a finite number"):
        create_app(rms, failure_reward=bad)


def test_openrlhf_queries_with_the_policys_chat_markup_are_judged_as_turns(rms):
    # query = decode(prompt + response) with special tokens kept, as OpenRLHF builds it
    prompt = "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nReview a film.<|im_end|>\n<|im_start|>assistant\n"
    query = prompt + "A wonderful film.<|im_end|><|endoftext|>"
    app = create_app(rms)
    with serve_in_thread(app) as url:
        r = httpx.post(url + "/get_reward", json={"query": [query], "prompts": [prompt]})
    assert r.status_code == 200
    expected = rms["sentiment"].score_detailed([{"messages": [
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review a film."},
        {"role": "assistant", "content": "A wonderful film."}]}])
    assert r.json()["rewards"] == pytest.approx(expected.rewards, abs=TOL * 10)
