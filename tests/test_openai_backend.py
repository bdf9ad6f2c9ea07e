"""The remote OpenAI-compatible backend against a fake server written here.

The fake "model" gives every prompt a full next-token distribution over a small
vocabulary (derived from the prompt text), answers /v1/completions and
/v1/chat/completions with its top k, and vLLM's /tokenize and /generative_scoring
exactly; markers in the prompt drop answers from the top k or inject failures.
"""
from __future__ import annotations

import hashlib
import math
import socket

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from zyn.api import Query  # noqa: E402
from zyn.backends.openai import (OpenAIBackend, RemoteError, logodds_from_top, normalise_token,  # noqa: E402
                                 plain_prompt)
from zyn.server import serve_in_thread  # noqa: E402

VOCAB = ["Yes", " Yes", "yes", "No", " No", "no", "Maybe", " the", ".", "I", "\n", "A", "B", "C", "D", "E"]
IDS = {tok: i for i, tok in enumerate(VOCAB)}
YES_VARIANTS = ("Yes", " Yes", "yes")
NO_VARIANTS = ("No", " No", "no")


def fake_logprobs(text: str) -> dict[str, float]:
    """A deterministic log-softmax over VOCAB for a prompt."""
    h = hashlib.sha256(text.encode()).digest()
    logits = [(b - 128) / 40.0 for b in h[:len(VOCAB)]]
    if "NOYES" in text or "NOBOTH" in text:  # push the answers far down the ranking
        for t in YES_VARIANTS:
            logits[IDS[t]] -= 30
    if "NONO" in text or "NOBOTH" in text:
        for t in NO_VARIANTS:
            logits[IDS[t]] -= 30
    m = max(logits)
    lse = m + math.log(sum(math.exp(x - m) for x in logits))
    return {tok: x - lse for tok, x in zip(VOCAB, logits)}


def exact_logodds(text: str) -> float:
    lp = fake_logprobs(text)
    y = math.log(sum(math.exp(lp[t]) for t in YES_VARIANTS))
    n = math.log(sum(math.exp(lp[t]) for t in NO_VARIANTS))
    return y - n


def top(text: str, k: int) -> list[tuple[str, float]]:
    return sorted(fake_logprobs(text).items(), key=lambda kv: -kv[1])[:k]


def chat_text(messages: list[dict]) -> str:
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def make_fake_server(fail_first: int = 0, fail_status: int = 503, with_scoring: bool = True) -> FastAPI:
    app = FastAPI()
    app.state.calls = []
    app.state.failures_left = fail_first

    @app.middleware("http")
    async def inject(request: Request, call_next):
        app.state.calls.append(request.url.path)
        if request.url.path != "/v1/models" and app.state.failures_left > 0:
            app.state.failures_left -= 1
            return JSONResponse({"error": "injected"}, status_code=fail_status)
        return await call_next(request)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(body: dict):
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        assert body["max_tokens"] == 1
        k = int(body["logprobs"])
        choices = []
        for i, p in enumerate(prompts):
            t = top(p, k)
            choices.append({"index": i, "text": t[0][0], "finish_reason": "length",
                            "logprobs": {"tokens": [t[0][0]], "token_logprobs": [t[0][1]],
                                         "top_logprobs": [dict(t)], "text_offset": [0]}})
        return {"object": "text_completion", "model": body["model"], "choices": choices}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        assert body["logprobs"] is True and body["max_tokens"] == 1
        t = top(chat_text(body["messages"]), int(body["top_logprobs"]))
        content = [{"token": t[0][0], "logprob": t[0][1],
                    "top_logprobs": [{"token": tok, "logprob": lp, "bytes": None} for tok, lp in t]}]
        return {"object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": t[0][0]},
                             "logprobs": {"content": content}, "finish_reason": "length"}]}

    if with_scoring:
        @app.post("/tokenize")
        async def tokenize(body: dict):
            text = body["prompt"]
            return {"tokens": [IDS[text]] if text in IDS else [IDS["A"], IDS["B"]], "count": 1}

        @app.post("/generative_scoring")
        async def scoring(body: dict):
            labels = body["label_token_ids"]
            data = []
            for i, item in enumerate(body["items"]):
                lp = fake_logprobs(body["query"] + item)
                probs = [math.exp(lp[VOCAB[t]]) for t in labels]
                score = probs[0] / sum(probs) if body.get("apply_softmax", True) else probs[0]
                data.append({"index": i, "object": "score", "score": score})
            return {"object": "list", "model": "fake-model", "data": data}

    return app


@pytest.fixture
def fake():
    app = make_fake_server()
    with serve_in_thread(app) as url:
        yield app, url


def q(text: str, chat: str = "never", system: str | None = None) -> Query:
    return Query(((text, True), ("\nIs it good?", False)), system, chat)


# ----------------------------------------------------------------------------- pure parsing

def test_normalise_and_match_variants():
    assert normalise_token("▁Yes") == normalise_token(" yes") == normalise_token("Ġyes") == "yes"
    lo, flag = logodds_from_top([(" Yes", math.log(0.3)), ("yes", math.log(0.1)), ("No", math.log(0.2))],
                                ["Yes"], ["No"])
    assert flag == "ok" and lo == pytest.approx(math.log(0.4 / 0.2))


def test_missing_answers_are_bounded_or_nan_never_zero():
    lo, flag = logodds_from_top([("Maybe", -0.5), ("No", -1.0), ("x", -4.0)], ["Yes"], ["No"])
    assert flag == "yes_bound" and lo == pytest.approx(-3.0)  # P(yes) <= e^-4: an upper bound
    lo, flag = logodds_from_top([("Yes", -0.5), ("x", -6.0)], ["Yes"], ["No"])
    assert flag == "no_bound" and lo == pytest.approx(5.5)    # a lower bound
    lo, flag = logodds_from_top([("Maybe", -0.5), ("x", -6.0)], ["Yes"], ["No"])
    assert flag == "missing" and math.isnan(lo)


# ----------------------------------------------------------------------------- through HTTP

def test_completions_exact_when_answers_in_top_k(fake):
    app, url = fake
    be = OpenAIBackend(url + "/v1", top_k=len(VOCAB))
    groups = [[q("great film"), q("awful film")], [q("so-so")]]
    out = be.logodds(groups, ["Yes"], ["No"])
    for group, values in zip(groups, out):
        for query, value in zip(group, values):
            assert value == pytest.approx(exact_logodds(plain_prompt(query)), abs=1e-9)
    assert be.last_flags == [["ok", "ok"], ["ok"]]
    assert be.model == "fake-model"


def test_top_k_missing_one_side_bounds_both_sides_nan(fake, caplog):
    app, url = fake
    be = OpenAIBackend(url + "/v1", top_k=8)
    texts = ["NOYES here", "NONO here", "NOBOTH here"]
    [values] = be.logodds([[q(t) for t in texts]], ["Yes"], ["No"])
    assert be.last_flags == [["yes_bound", "no_bound", "missing"]]
    true = [exact_logodds(plain_prompt(q(t))) for t in texts]
    assert true[0] <= values[0]          # yes missing: the value is an upper bound
    assert values[1] <= true[1]          # no missing: a lower bound
    assert math.isnan(values[2])
    assert be.counts["missing"] == 1 and be.counts["yes_bound"] == 1
    assert any("outside the top 8" in r.getMessage() for r in caplog.records)


def test_chat_endpoint_used_when_the_query_wants_the_template(fake):
    app, url = fake
    be = OpenAIBackend(url + "/v1", model="fake-model", top_k=len(VOCAB))
    query = q("nice", chat="always", system="Be strict.")
    [[value]] = be.logodds([[query]], ["Yes"], ["No"])
    messages = [{"role": "system", "content": "Be strict."}, {"role": "user", "content": query.user}]
    assert value == pytest.approx(exact_logodds(chat_text(messages)), abs=1e-9)
    assert app.state.calls[-1] == "/v1/chat/completions"
    # chat: auto follows chat_auto when no tokenizer is given
    OpenAIBackend(url + "/v1", model="fake-model", chat_auto=False).logodds([[q("x", chat="auto")]], ["Yes"], ["No"])
    assert app.state.calls[-1] == "/v1/completions"


def test_retries_5xx_then_succeeds():
    app = make_fake_server(fail_first=3, fail_status=503)
    with serve_in_thread(app) as url:
        be = OpenAIBackend(url + "/v1", model="fake-model", top_k=len(VOCAB), retries=4, backoff=0.01)
        [[value]] = be.logodds([[q("retry me")]], ["Yes"], ["No"])
    assert value == pytest.approx(exact_logodds(plain_prompt(q("retry me"))))
    assert be.retry_count == 3
    assert app.state.calls.count("/v1/completions") == 4


def test_gives_up_after_retries_and_does_not_retry_4xx():
    app = make_fake_server(fail_first=100, fail_status=503)
    with serve_in_thread(app) as url:
        be = OpenAIBackend(url + "/v1", model="fake-model", retries=2, backoff=0.01)
        with pytest.raises(RemoteError, match="after 3 attempts"):
            be.logodds([[q("x")]], ["Yes"], ["No"])
    app = make_fake_server(fail_first=100, fail_status=400)
    with serve_in_thread(app) as url:
        be = OpenAIBackend(url + "/v1", model="fake-model", retries=5, backoff=0.01)
        with pytest.raises(RemoteError, match="HTTP 400"):
            be.logodds([[q("x")]], ["Yes"], ["No"])
        assert app.state.calls.count("/v1/completions") == 1


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    be = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(RemoteError, match="ConnectError"):
        be.logodds([[q("x")]], ["Yes"], ["No"])
    assert be.retry_count == 2


def test_vllm_generative_scoring_is_exact_even_outside_top_k(fake):
    app, url = fake
    be = OpenAIBackend.from_url(f"vllm+{url}/v1?model=fake-model", top_k=2)
    texts = ["NOYES but exact", "plain text"]
    [values] = be.logodds([[q(t) for t in texts]], ["Yes"], ["No"])
    for t, v in zip(texts, values):
        assert v == pytest.approx(exact_logodds(plain_prompt(q(t))), abs=1e-9)
    assert be.last_flags == [["ok", "ok"]]
    assert "/generative_scoring" in app.state.calls and "/tokenize" in app.state.calls
    assert be.label_ids(["Yes"], ["No"]) == ([IDS["Yes"], IDS[" Yes"], IDS["yes"]],
                                             [IDS["No"], IDS[" No"], IDS["no"]])


def test_vllm_mode_falls_back_to_logprobs_without_the_route():
    app = make_fake_server(with_scoring=False)
    with serve_in_thread(app) as url:
        be = OpenAIBackend.from_url(f"vllm+{url}/v1", top_k=len(VOCAB))
        [[value]] = be.logodds([[q("fallback")]], ["Yes"], ["No"])
    assert value == pytest.approx(exact_logodds(plain_prompt(q("fallback"))))
    assert be.mode == "logprobs"


def test_from_url_parsing():
    be = OpenAIBackend.from_url("openai+http://127.0.0.1:9/v1?model=m&top_k=5&timeout=3", concurrency=2)
    assert (be.base_url, be.model, be.top_k, be.mode) == ("http://127.0.0.1:9/v1", "m", 5, "logprobs")
    assert be.root_url == "http://127.0.0.1:9"
    assert OpenAIBackend.from_url("vllm+http://h:1/v1").mode == "vllm"
    with pytest.raises(ValueError):
        OpenAIBackend.from_url("http://h:1/v1")
    with pytest.raises(ValueError):
        OpenAIBackend("http://h/v1", mode="bogus")


def test_reward_model_by_url_matches_the_fake_model(fake):
    from zyn import ZeroShotRewardModel

    app, url = fake
    rm = ZeroShotRewardModel(f"openai+{url}/v1", prompt="Is this text positive?", top_k=len(VOCAB))
    assert isinstance(rm.backend, OpenAIBackend)
    texts = ["a lovely day", "a terrible day"]
    p = rm.score([{"text": t} for t in texts])
    queries = [rm.prompt_set.render(t)[0] for t in texts]
    expected = [1 / (1 + math.exp(-exact_logodds(chat_text(
        [{"role": "user", "content": qq.user}])))) for qq in queries]
    assert p == pytest.approx(expected, abs=1e-9)


# ----------------------------------------------------------------------------- a real peer

# Measured on 40 reviews with benchmarks/bench_remote.py (max |d log-odds|, max |d P|):
# Qwen2.5-Coder-0.5B-Instruct via chat 0.12 / 0.028, Gemma 3 270M via completions 0.35 / 0.086.
REAL_PEERS = [("qwen2.5-coder-0.5b-instruct", True, 0.3, 0.08), ("gemma-3-270m", False, 0.6, 0.15)]


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("preset,chat,max_logodds,max_p", REAL_PEERS)
def test_llama_cpp_server_matches_local_scoring_of_the_same_gguf(preset, chat, max_logodds, max_p, tmp_path):
    """llama.cpp's server computes with the quantised weights (and quantised
    activations), transformers with de-quantised float32 ones; the tokens are the
    same, so the difference is numeric and bounded."""
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python[server]")
    from zyn import ZeroShotRewardModel, models
    from zyn.backends.openai import llama_cpp_server

    try:
        gguf = models.assemble(preset, tmp_path / f"{preset}.gguf")
        local_rm = ZeroShotRewardModel(preset, prompt="sentiment")
    except models.ModelNotFoundError as e:
        pytest.skip(str(e))
    assert bool(local_rm.backend.tokenizer.chat_template) == chat
    texts = ["A wonderful, moving film.", "Two hours I will never get back.",
             "The acting was fine but the plot made no sense.", "I laughed, I cried, I bought it on DVD."]
    local = local_rm.score_detailed(texts)
    with llama_cpp_server(str(gguf), n_threads=2) as url:
        remote_rm = ZeroShotRewardModel(f"openai+{url}", prompt="sentiment", chat_auto=chat)
        remote = remote_rm.score_detailed(texts)
    assert remote_rm.backend.last_flags == [["ok"]] * len(texts)
    diffs = [abs(a - b) for a, b in zip(local.logodds["positive"], remote.logodds["positive"])]
    assert max(diffs) < max_logodds, diffs
    assert max(abs(a - b) for a, b in zip(local.p_yes, remote.p_yes)) < max_p
