"""The remote backend: wire parsing, transport, top-k logprobs and exact vLLM scoring.

Top-k logprobs run against a fake OpenAI-compatible server written here: its
"model" gives every prompt a full next-token distribution over a small vocabulary
(derived from the prompt text) and answers /v1/completions and /v1/chat/completions
with its top k; markers in the prompt drop answers from the top k, send a logprob
that is not a number, or inject failures. Exact scoring runs against the stand-in
vLLM server of tests/support/vllm_standin.py, backed by the tiny random causal LM.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import math
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402
from support.vllm_standin import make_vllm_standin  # noqa: E402

from zyn import ZeroShotRewardModel  # noqa: E402
from zyn.answers import resolve_answer_ids  # noqa: E402
from zyn.calibration import raw_logodds  # noqa: E402
from zyn.api import Query  # noqa: E402
from zyn.prompts import PromptSet, Question  # noqa: E402
from zyn.backends.remote import OpenAIBackend, RemoteError, RemoteModelError  # noqa: E402
from zyn.backends.remote.protocols import (checked_probability, logodds_from_top, names_unknown_model,  # noqa: E402
                                           normalise_token, parse_generative, plain_prompt)
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


def make_fake_server(fail_first: int = 0, fail_status: int = 503) -> FastAPI:
    """An OpenAI-compatible server with no vLLM routes (/tokenize, /generative_scoring)."""
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
            top_map = {tok: ("oops" if "BADLP" in p and tok == t[-1][0] else lp) for tok, lp in t}
            choices.append({"index": i, "text": t[0][0], "finish_reason": "length",
                            "logprobs": {"tokens": [t[0][0]], "token_logprobs": [t[0][1]],
                                         "top_logprobs": [top_map], "text_offset": [0]}})
        return {"object": "text_completion", "model": body["model"], "choices": choices}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        assert body["logprobs"] is True and body["max_tokens"] == 1
        t = top(chat_text(body["messages"]), int(body["top_logprobs"]))
        content = [{"token": t[0][0], "logprob": t[0][1],
                    "top_logprobs": [{"token": tok, "logprob": lp, "bytes": None} for tok, lp in t]}]
        if "EOSFIRST" in chat_text(body["messages"]):  # llama.cpp: end-of-sequence first, no logprobs for it
            content = []
        return {"object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": t[0][0]},
                             "logprobs": {"content": content}, "finish_reason": "length"}]}

    return app


def make_trickling_server(seconds: float) -> FastAPI:
    """Answers /v1/completions one byte every 0.1 s for `seconds`: no read ever waits long."""
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions():
        async def body():
            for _ in range(round(seconds / 0.1)):
                yield b" "
                await asyncio.sleep(0.1)
            yield b"{}"
        return StreamingResponse(body(), media_type="application/json")

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


@pytest.mark.parametrize("bad", ["-0.5", None, math.nan, math.inf, 0.5, True, {"logprob": -1.0}])
def test_a_logprob_that_is_not_one_makes_the_value_nan_flagged_invalid(bad):
    # one bad entry anywhere in the list (here the yes answer itself) poisons the position
    assert repr(logodds_from_top([("Yes", bad), ("No", -1.0)], ["Yes"], ["No"])) == "(nan, 'invalid')"
    lo, flag = logodds_from_top([("Yes", -1.0), ("No", -2.0), ("Maybe", bad)], ["Yes"], ["No"])
    assert math.isnan(lo) and flag == "invalid"


def test_logprob_minus_infinity_is_a_probability_of_zero():
    assert logodds_from_top([("Yes", -math.inf), ("No", -1.0)], ["Yes"], ["No"]) == (-math.inf, "ok")


def test_generative_scores_out_of_range_become_nan():
    raw = [0.3, math.nan, 1.5, -0.1, None, "0.5", math.inf, 1, 0]
    body = {"data": [{"index": i, "score": x} for i, x in reversed(list(enumerate(raw)))]}
    got = parse_generative(body, len(raw))
    assert got[0] == 0.3 and got[7:] == [1.0, 0.0]   # in item order, whatever the answer's order
    assert all(math.isnan(x) for x in got[1:7])
    assert math.isnan(checked_probability(False))    # JSON true/false are not numbers
    with pytest.raises(RemoteError, match="2 scores for 3 items"):
        parse_generative({"data": [{"index": 0, "score": 0.1}, {"index": 1, "score": 0.2}]}, 3)
    with pytest.raises(RemoteError, match="repeated index"):
        parse_generative({"data": [{"index": 0, "score": 0.1}, {"index": 0, "score": 0.2}]}, 2)


def test_unknown_model_answers_are_told_from_missing_routes():
    # vLLM today, vLLM before its errors were nested, and FastAPI's answer for a route it lacks
    assert names_unknown_model({"error": {"message": "The model `x` does not exist.", "type": "NotFoundError",
                                          "param": "model", "code": 404}})
    assert names_unknown_model({"object": "error", "message": "The model `x` does not exist.",
                                "type": "NotFoundError", "param": None, "code": 404})
    assert not names_unknown_model({"detail": "Not Found"})
    assert not names_unknown_model(None)


# ----------------------------------------------------------------------------- through HTTP

def test_completions_exact_when_answers_in_top_k(fake):
    app, url = fake
    be = OpenAIBackend(url + "/v1", top_k=len(VOCAB))
    groups = [[q("great film"), q("awful film")], [q("so-so")]]
    out = be.logodds(groups, ["Yes"], ["No"])
    for group, values in zip(groups, out.values):
        for query, value in zip(group, values):
            assert value == pytest.approx(exact_logodds(plain_prompt(query)), abs=1e-9)
    assert be.last_flags == [["ok", "ok"], ["ok"]]
    assert be.model == "fake-model"


def test_top_k_missing_one_side_bounds_both_sides_nan(fake, caplog):
    app, url = fake
    be = OpenAIBackend(url + "/v1", top_k=8)
    texts = ["NOYES here", "NONO here", "NOBOTH here"]
    [values] = be.logodds([[q(t) for t in texts]], ["Yes"], ["No"]).values
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
    [[value]] = be.logodds([[query]], ["Yes"], ["No"]).values
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
        [[value]] = be.logodds([[q("retry me")]], ["Yes"], ["No"]).values
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


def test_a_failed_call_cancels_its_queued_requests():
    """A dead server fails the call once; the call's requests not yet sent are dropped, not
    retried one after another in the background while the next call waits behind them."""
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    be = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", retries=2, backoff=0.05, timeout=2,
                       concurrency=2, completion_batch=1)
    with pytest.raises(RemoteError, match="ConnectError"):
        be.logodds([[q(f"x{i}")] for i in range(40)], ["Yes"], ["No"])
    time.sleep(1.0)  # the requests already in flight finish their retries
    # the requests in flight, and one more each worker may take before the cancel lands: not all 40 (80 retries)
    assert be.retry_count <= 4 * 2 * 2


def test_vllm_mode_falls_back_to_logprobs_without_the_route(caplog):
    app = make_fake_server()  # no /tokenize, no /generative_scoring: FastAPI's plain 404
    with serve_in_thread(app) as url:
        be = OpenAIBackend.from_url(f"vllm+{url}/v1", top_k=len(VOCAB))
        [[value]] = be.logodds([[q("fallback")]], ["Yes"], ["No"]).values
    assert value == pytest.approx(exact_logodds(plain_prompt(q("fallback"))))
    assert be.mode == "logprobs"
    assert any("no such route" in r.getMessage() for r in caplog.records)


def test_a_logprob_that_is_not_a_number_is_flagged_not_raised(fake):
    app, url = fake
    be = OpenAIBackend(url + "/v1", top_k=len(VOCAB))
    out = be.logodds([[q("BADLP here"), q("fine here")]], ["Yes"], ["No"])
    assert math.isnan(out.values[0][0]) and out.flags == [["invalid", "ok"]]
    assert out.values[0][1] == pytest.approx(exact_logodds(plain_prompt(q("fine here"))))


def test_timeout_is_a_total_deadline_not_a_read_timeout():
    # each byte comes within 0.1 s, so a per-read timeout of 0.5 s would wait the full 3 s
    with serve_in_thread(make_trickling_server(3.0)) as url:
        be = OpenAIBackend(url + "/v1", model="m", timeout=0.5, retries=1, backoff=0.01)
        t = time.monotonic()
        with pytest.raises(RemoteError, match="0.5 s deadline"):
            be.logodds([[q("x")]], ["Yes"], ["No"])
        elapsed = time.monotonic() - t
        be.close()
    assert elapsed < 2.0, elapsed  # two attempts of 0.5 s and a short backoff
    assert be.retry_count == 1


def test_from_url_parsing():
    be = OpenAIBackend.from_url("openai+http://127.0.0.1:9/v1?model=m&top_k=5&timeout=3", concurrency=2)
    assert (be.base_url, be.model, be.top_k, be.mode) == ("http://127.0.0.1:9/v1", "m", 5, "logprobs")
    assert be.root_url == "http://127.0.0.1:9"
    assert OpenAIBackend.from_url("vllm+http://h:1/v1").mode == "vllm"
    # no path, as the trainers' docs write a vLLM server: its OpenAI routes are under /v1
    assert OpenAIBackend.from_url("vllm+http://h:1").base_url == OpenAIBackend.from_url("vllm+http://h:1/").base_url \
        == "http://h:1/v1"
    assert OpenAIBackend.from_url("openai+http://h:1/api/v1/").base_url == "http://h:1/api/v1"
    with pytest.raises(ValueError):
        OpenAIBackend.from_url("http://h:1/v1")
    with pytest.raises(ValueError):
        OpenAIBackend("http://h/v1", mode="bogus")
    with pytest.raises(ValueError):
        OpenAIBackend("http://h/v1", timeout=0)


def test_reward_model_by_url_matches_the_fake_model(fake):
    app, url = fake
    rm = ZeroShotRewardModel(f"openai+{url}/v1", prompt="Is this text positive?", top_k=len(VOCAB))
    assert isinstance(rm.backend, OpenAIBackend)
    texts = ["a lovely day", "a terrible day"]
    p = rm.score([{"text": t} for t in texts])
    queries = [rm.prompt_set.render(t)[0] for t in texts]
    expected = [1 / (1 + math.exp(-exact_logodds(chat_text(
        [{"role": "user", "content": qq.user}])))) for qq in queries]
    assert p == pytest.approx(expected, abs=1e-9)


# ----------------------------------------------------------------------------- exact: a stand-in vLLM

REVIEWS = ["A wonderful, moving film.", "Two hours I will never get back.", "The plot made no sense.",
           "I laughed, I cried, I bought it on DVD."]
CUE = "Is the reviewer's opinion of the film favourable?<|end|>\n<|assistant|>\n"  # the sentiment question, then the chat cue


@pytest.fixture
def vllm(tiny_causal):
    """(app, base URL) of a stand-in vLLM serving the tiny causal judge (chat template) as "tiny-judge"."""
    model, tok = tiny_causal
    app = make_vllm_standin(model, tok)
    with serve_in_thread(app) as url:
        yield app, url


@pytest.mark.parametrize("local_tokenizer", [False, True], ids=["server-tokenize", "local-tokenizer"])
def test_chat_prompt_set_scores_exactly_through_vllm(vllm, tiny_causal, local_tokenizer):
    app, url = vllm
    model, tok = tiny_causal
    local = ZeroShotRewardModel(model, tok, prompt="sentiment").score_detailed(REVIEWS)
    rm = ZeroShotRewardModel(f"vllm+{url}", tokenizer=tok if local_tokenizer else None, prompt="sentiment")
    assert rm.prompt_set.chat_template == "auto"
    remote = rm.score_detailed(REVIEWS)
    assert remote.logodds["positive"] == pytest.approx(local.logodds["positive"], abs=1e-4)
    assert rm.backend.mode == "vllm" and rm.backend.last_flags == [["ok"]] * len(REVIEWS)
    # the prompts the server scored are the chat-formatted ones, the answer ids the local ones
    assert all(tok.decode(p).endswith(CUE) for p in app.state.prompts)
    ids = resolve_answer_ids(tok, ["Yes"], ["No"])
    assert rm.backend.label_ids(["Yes"], ["No"]) == (list(ids.yes), list(ids.no))


def test_scores_carry_each_questions_flags_and_zyn_score_writes_the_inexact_ones(fake, tmp_path):
    import json

    from zyn.cli import main

    _, url = fake
    two = PromptSet(name="two", chat_template="never", questions=(
        Question(name="good", template="{{ text }}\nIs it good?"),
        Question(name="NONO", template="{{ text }}\nNONO: is it bad?", reward_answer="no")))
    rm = ZeroShotRewardModel(f"openai+{url}/v1?top_k=8", prompt=two)
    scores = rm.score_detailed(["fine", "NOYES here", "NOBOTH here"])
    assert scores.flags == {"good": ["ok", "yes_bound", "missing"], "NONO": ["no_bound", "missing", "missing"]}
    assert [scores.inexact(i) for i in range(3)] == [["no_bound"], ["yes_bound", "missing"], ["missing"]]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"text": "fine"}\n{"text": "NOYES here"}\n')
    yaml = tmp_path / "two.yaml"
    two.to_yaml(yaml)
    assert main(["score", "--model", f"openai+{url}/v1?top_k=8", "--prompt", str(yaml), "--input", str(src),
                 "--output", str(out)]) == 0
    assert [json.loads(line).get("flags") for line in out.read_text().splitlines()] == ["no_bound",
                                                                                       "yes_bound,missing"]


def test_an_in_process_judge_has_no_flags(tiny_causal):
    scores = ZeroShotRewardModel(*tiny_causal, prompt="sentiment").score_detailed(["fine"])
    assert scores.flags == {} and scores.inexact(0) == []


def test_chat_auto_goes_as_plain_text_when_the_served_model_has_no_template(tiny_causal):
    model, tok = tiny_causal
    plain_tok = copy.deepcopy(tok)
    plain_tok.chat_template = None
    with serve_in_thread(make_vllm_standin(model, plain_tok)) as url:
        rm = ZeroShotRewardModel(f"vllm+{url}/v1", prompt="sentiment")
        remote = rm.score_detailed(REVIEWS[:2])
    local = ZeroShotRewardModel(model, plain_tok, prompt="sentiment").score_detailed(REVIEWS[:2])
    assert remote.logodds["positive"] == pytest.approx(local.logodds["positive"], abs=1e-4)
    assert rm.backend.last_flags == [["ok"], ["ok"]]


@pytest.mark.parametrize("bad", [math.nan, 1.5, -0.25])
def test_a_score_that_is_not_a_probability_stays_nan(tiny_causal, bad):
    model, tok = tiny_causal
    with serve_in_thread(make_vllm_standin(model, tok, corrupt=lambda p: bad)) as url:
        rm = ZeroShotRewardModel(f"vllm+{url}/v1", prompt="sentiment")
        scores = rm.score_detailed(REVIEWS[:2])
    assert all(math.isnan(p) for p in scores.p_yes + scores.rewards + scores.logodds["positive"])
    assert rm.backend.last_flags == [["invalid"], ["invalid"]] and rm.backend.counts["invalid"] == 2


LONG = "The film opens on a quiet street and keeps going. " * 40


@pytest.mark.parametrize("local_tokenizer", [False, True], ids=["server-tokenize", "local-tokenizer"])
def test_over_long_input_is_cut_inside_the_text(tiny_causal, local_tokenizer):
    model, tok = tiny_causal
    app = make_vllm_standin(model, tok, max_model_len=160)  # sentiment's system line and question: ~105 tokens
    with serve_in_thread(app) as url:
        be = OpenAIBackend.from_url(f"vllm+{url}/v1", tokenizer=tok if local_tokenizer else None)
        rm = ZeroShotRewardModel(be, prompt="sentiment")
        queries = [rm.prompt_set.render(t)[0] for t in (LONG, "Short and sweet.")]
        out = be.logodds([[q] for q in queries], ["Yes"], ["No"])
    assert (out.truncated, out.context) == (1, 159)  # vLLM keeps one position for the answer
    cut = tok.decode(app.state.prompts[0])
    assert len(app.state.prompts[0]) <= 159 and " … " in cut and cut.endswith(CUE)
    head = f"<|system|>\n{rm.prompt_set.system}<|end|>\n<|user|>\n<review>\n"
    assert cut.startswith(head + "The film opens")  # the head of the text is kept too
    # and it scores as the local backend scores the cut text (which fits)
    text = cut.removeprefix(head).removesuffix("\n</review>\n\n" + CUE)
    local = raw_logodds(ZeroShotRewardModel(model, tok, prompt="sentiment"), [text])  # the backend's are uncalibrated
    assert out.values[0][0] == pytest.approx(local["positive"][0], abs=1e-4)


def test_wrong_model_name_is_a_clear_error_not_a_missing_route(vllm):
    app, url = vllm
    be = OpenAIBackend.from_url(f"vllm+{url}/v1?model=no-such-judge")
    with pytest.raises(RemoteModelError, match=r"'no-such-judge' is not served .* it serves: tiny-judge"):
        be.logodds([[q("x", chat="auto")]], ["Yes"], ["No"])
    assert be.mode == "vllm"  # never downgraded to top-k logprobs


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
    from support.llama_server import llama_cpp_server

    from zyn import models

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


def test_an_unreadable_answer_is_a_remote_error():
    """A broken engine's answer (not JSON, or JSON nested past Python's limit) is a
    RemoteError, which the server turns into a 502, never another exception type."""
    import httpx

    from zyn.backends.remote.errors import RemoteError
    from zyn.backends.remote.http import _json

    for content in (b"<html>502</html>", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(RemoteError, match="u: answer is"):
            _json(httpx.Response(200, content=content), "u")


@pytest.mark.parametrize("query, match", [
    ("apikey=sk", r"\?apikey= is not an option; did you mean 'api_key'\?"),
    ("foo=1", r"\?foo= is not an option \(the options are "),
    ("top_k=abc", r"\?top_k='abc': expected a whole number"),
    ("timeout=soon", r"\?timeout='soon': expected a number"),
    ("chat_auto=maybe", r"\?chat_auto='maybe': expected true or false"),
    ("transport=x", r"\?transport= cannot be given in a URL; pass transport= in Python"),
    ("tokenizer=no-such-preset-or-folder", r"\?tokenizer='no-such-preset-or-folder': could not load the tokenizer"),
])
def test_url_options_are_checked_like_keywords(query, match):
    from zyn import ZeroShotRewardModel, ZynError

    with pytest.raises(ZynError, match=match):
        ZeroShotRewardModel(f"openai+http://127.0.0.1:9/v1?{query}", prompt="sentiment")


def test_url_options_still_set_the_backend():
    be = OpenAIBackend.from_url("openai+http://127.0.0.1:9/v1?top_k=7&timeout=1.5&chat_auto=false&model=m")
    assert (be.top_k, be.chat_auto) == (7, False)


def test_a_tokenizer_named_in_the_url_is_loaded_and_a_keyword_wins(tiny_causal_dir, tiny_causal, monkeypatch):
    """The CLI and the trainer hooks give a remote judge as a URL only: ?tokenizer=NAME is
    how they give it the served model's tokenizer (to cut long texts and apply the chat
    template here)."""
    from zyn.models import hub

    monkeypatch.setattr(hub, "unreachable", lambda: "the hub is not reachable in tests")
    rm = ZeroShotRewardModel(f"openai+http://127.0.0.1:9/v1?tokenizer={tiny_causal_dir}&max_length=64",
                             prompt="sentiment")
    tok = rm.backend.tokenizer
    assert tok is not None and tok("A fine film.")["input_ids"] == tiny_causal[1]("A fine film.")["input_ids"]
    assert rm.backend.max_length == 64
    mine = tiny_causal[1]
    rm = ZeroShotRewardModel(f"openai+http://127.0.0.1:9/v1?tokenizer={tiny_causal_dir}", mine, prompt="sentiment")
    assert rm.backend.tokenizer is mine
    pool = ZeroShotRewardModel(f"openai+http://127.0.0.1:9/v1?tokenizer={tiny_causal_dir},"
                               f"openai+http://127.0.0.1:8/v1?tokenizer={tiny_causal_dir}", prompt="sentiment")
    assert all(b.tokenizer is not None for b in pool.backend.backends)


def test_a_chat_answer_that_generated_no_token_is_missing_not_a_failed_call():
    from zyn.backends.remote import protocols as wire

    eos_first = {"choices": [{"index": 0, "logprobs": {"content": []}, "finish_reason": "stop"}]}  # llama.cpp
    value, flag = wire.logodds_from_top(wire.parse_chat_top(eos_first), ["Yes"], ["No"])
    assert math.isnan(value) and flag == "missing"
    with pytest.raises(RemoteError, match="has no logprobs.content"):
        wire.parse_chat_top({"choices": [{"index": 0, "message": {"content": "Yes"}}]})  # logprobs not supported


def test_every_chat_answer_missing_points_at_the_chat_template(fake, caplog):
    app, url = fake
    be = OpenAIBackend(url + "/v1", model="fake-model", top_k=len(VOCAB))
    out = be.logodds([[q("EOSFIRST a", chat="always"), q("EOSFIRST b", chat="always")]], ["Yes"], ["No"])
    assert all(math.isnan(v) for v in out.values[0]) and out.flags == [["missing", "missing"]]
    assert any("give its tokenizer (tokenizer= or ?tokenizer=NAME) or add ?chat_auto=false" in r.getMessage() for r in caplog.records)
    caplog.clear()
    be.logodds([[q("EOSFIRST a", chat="always"), q("fine", chat="always")]], ["Yes"], ["No"])
    assert not any("chat_auto=false" in r.getMessage() for r in caplog.records)  # one answer read: no such hint
