"""The remote backend's limits: texts longer than the server's context, and servers that
take one prompt per request.

The protocol behaviour runs against `FakeServer`, an ``httpx.MockTransport`` handler that
answers as vLLM, llama.cpp's server (llama-server) or llama-cpp-python's server do, as
read in their code: the tokenize route each has and the body it reads, the 400 each sends
for a prompt over its context (the message naming the context), and llama-cpp-python's
HTTP 500 for a list of prompts (``assert len(body.prompt) <= 1`` in its
``create_completion``). Its tokens are words (or a given tokenizer's), its P(yes) a hash
of the prompt. The end-to-end checks run against a real llama-cpp-python server on the
Gemma 3 270M preset, with a 256-token context, and skip without llama-cpp-python or the
preset's packages.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import warnings
import zlib

import httpx
import pytest

from zyn import TruncationWarning, ZeroShotRewardModel, ZynError
from zyn.api import Query
from zyn.backends.remote import OpenAIBackend, RemoteError, RemoteStatusError
from zyn.backends.remote import protocols as wire

_WORD = re.compile(r"\w+|[^\w\s]")
BOS = 1
QUESTION = "\nIs it good?"


def answer_top(prompt: str) -> dict[str, float]:
    """The fake model's first-position top logprobs for a prompt."""
    h = hashlib.sha256(prompt.encode()).digest()
    return {"Yes": -0.2 - h[0] / 100, "No": -0.2 - h[1] / 100, "Maybe": -4.0}


def expected(prompt: str) -> float:
    top = answer_top(prompt)
    return top["Yes"] - top["No"]


def chat_text(messages: list[dict]) -> str:
    return "".join(f"<{m['role']}> {m['content']} </{m['role']}>" for m in messages) + " <assistant>"


class FakeServer:
    """An OpenAI-compatible server in one dialect: "vllm", "llama.cpp", "llama-cpp-python"
    or "bare" (no tokenize route). `requests` records (path, body) of every request;
    `fail(path, body)` may answer a request first (an httpx.Response) or pass (None)."""

    def __init__(self, dialect: str = "llama-cpp-python", n_ctx: int = 64, tokenize=None, fail=None):
        self.dialect, self.n_ctx, self.fail = dialect, n_ctx, fail
        self._tokenize = tokenize or (lambda text, bos: [BOS] * bos + [zlib.crc32(w.encode()) % 1000 + 2
                                                                        for w in _WORD.findall(text)])
        self.requests: list[tuple[str, dict | None]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        self.requests.append((path, body))
        if self.fail is not None and (answer := self.fail(path, body)) is not None:
            return answer
        if path == "/v1/models":
            card = {"id": "m", "object": "model"}
            if self.dialect == "vllm":
                card["max_model_len"] = self.n_ctx
            return httpx.Response(200, json={"object": "list", "data": [card]})
        if path == "/tokenize" and self.dialect == "vllm":
            text = chat_text(body["messages"]) if "messages" in body else body["prompt"]
            ids = self._tokenize(text, "prompt" in body and body.get("add_special_tokens", True))
            return httpx.Response(200, json={"count": len(ids), "max_model_len": self.n_ctx, "tokens": ids})
        if path == "/tokenize" and self.dialect == "llama.cpp":
            ids = self._tokenize(body["content"], body.get("add_special", False)) if "content" in body else []
            return httpx.Response(200, json={"tokens": ids})
        if path == "/extras/tokenize" and self.dialect == "llama-cpp-python":
            return httpx.Response(200, json={"tokens": self._tokenize(body["input"], True)})  # BOS always
        if path == "/v1/completions":
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            if len(prompts) > 1 and self.dialect == "llama-cpp-python":
                return httpx.Response(500, json={"error": {"message": "", "type": "internal_server_error",
                                                           "param": None, "code": None}})
            return self._answer(prompts, [len(self._tokenize(p, True)) for p in prompts])
        if path == "/v1/chat/completions":
            text = chat_text(body["messages"])
            if (refusal := self._too_long(len(self._tokenize(text, True)))) is not None:
                return refusal
            top = answer_top(text)
            return httpx.Response(200, json={"choices": [{"index": 0, "logprobs": {"content": [
                {"token": "Yes", "logprob": top["Yes"],
                 "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}]}}]})
        return httpx.Response(404, json={"detail": "Not Found"})

    def _answer(self, prompts: list[str], lengths: list[int]) -> httpx.Response:
        for n in lengths:
            if (refusal := self._too_long(n)) is not None:
                return refusal
        choices = [{"index": k, "text": "Yes", "logprobs": {"top_logprobs": [answer_top(p)]}}
                   for k, p in enumerate(prompts)]
        return httpx.Response(200, json={"choices": choices[::-1]})  # in any order: the index says which

    def _too_long(self, n: int) -> httpx.Response | None:
        """The server's refusal of an n-token prompt with max_tokens 1, or None if it fits."""
        if n + 1 <= self.n_ctx:
            return None
        N = self.n_ctx
        if self.dialect == "llama.cpp":
            return httpx.Response(400, json={"error": {
                "code": 400, "message": f"request ({n} tokens) exceeds the available context size ({N} tokens), "
                "try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": n, "n_ctx": N}})
        if self.dialect == "vllm":
            return httpx.Response(400, json={"error": {
                "message": f"This model's maximum context length is {N} tokens. However, you requested 1 output "
                f"tokens and your prompt contains {n} input tokens, for a total of {n + 1} tokens. Please reduce "
                "the length of the input prompt or the number of requested output tokens.",
                "type": "BadRequestError", "param": None, "code": 400}})
        return httpx.Response(400, json={"error": {
            "message": f"This model's maximum context length is {N} tokens, however you requested {n + 1} tokens "
            f"({n} in your prompt; 1 for the completion). Please reduce your prompt; or completion length.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})

    def prompts(self) -> list[str]:
        """Every prompt sent to /v1/completions, in order."""
        out = []
        for path, body in self.requests:
            if path == "/v1/completions":
                out += body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        return out

    def count(self, path: str, lists: bool | None = None) -> int:
        return sum(1 for p, b in self.requests if p == path
                   and (lists is None or isinstance(b["prompt"], list) == lists))


def q(text: str, chat: str = "never") -> Query:
    return Query(((text, True), (QUESTION, False)), None, chat)


def backend(fake: FakeServer, **kw) -> OpenAIBackend:
    kw.setdefault("top_k", 5)
    return OpenAIBackend("http://fake/v1", model="m", transport=fake.transport(), retries=2, backoff=0.001, **kw)


LONG = "The film opens on a quiet street and keeps going, scene after scene. " * 12  # ~170 words


# ----------------------------------------------------------------------------- A: texts over the context

@pytest.mark.parametrize("dialect", ["llama-cpp-python", "llama.cpp", "vllm"])
def test_a_text_over_the_context_is_cut_inside_and_the_others_scored(dialect):
    """One long text no longer fails the call: the server's 400 names its context, the
    server's own tokenize route counts the text, and the text is cut in its middle,
    question kept, and sent again."""
    fake = FakeServer(dialect, n_ctx=64)
    be = backend(fake)
    texts = ["A fine film.", LONG, "Dull."]
    out = be.logodds([[q(t)] for t in texts], ["Yes"], ["No"])
    assert out.flags == [["ok"]] * 3
    assert (out.truncated, out.context) == (1, 63)  # the context less the answer's position
    sent = fake.prompts()
    cut = [p for p in sent if p.startswith("The film opens")][-1]  # the requests may arrive in any order
    assert " … " in cut and cut.endswith(QUESTION)
    assert len(fake._tokenize(cut, True)) <= 63
    assert out.values[1][0] == pytest.approx(expected(cut))
    assert [out.values[0][0], out.values[2][0]] == pytest.approx([expected(t + QUESTION) for t in texts[::2]])
    route = {"vllm": "/tokenize", "llama.cpp": "/tokenize", "llama-cpp-python": "/extras/tokenize"}[dialect]
    assert fake.count(route) > 0 and be._route.dialect == dialect
    # without tokenizer= or max_length, a text is counted only once refused: a short one costs no request
    fake.requests.clear()
    assert be.logodds([[q("Short.")]], ["Yes"], ["No"]).truncated == 0
    assert [p for p, _ in fake.requests] == ["/v1/completions"]


def test_the_truncation_warning_reaches_the_caller():
    fake = FakeServer("vllm", n_ctx=64)
    rm = ZeroShotRewardModel(backend(fake), prompt="Is this text positive?")
    with pytest.warns(TruncationWarning, match=r"1 of 2 inputs were longer than the judge's limit of 63 tokens \(max_length, else the model's context\)"):
        scores = rm.score_detailed(["Fine.", LONG])
    assert scores.truncated == 1 and not any(math.isnan(p) for p in scores.p_yes)


def test_a_text_that_cannot_be_cut_is_nan_too_long_and_the_call_goes_on(caplog):
    """No local tokenizer and no tokenize route: the long text cannot be counted, so it
    gets NaN, flag too_long, with a warning; the other texts of the call are scored."""
    fake = FakeServer("bare", n_ctx=64)
    be = backend(fake, completion_batch=4)
    with caplog.at_level(logging.WARNING, logger="zyn.backends.remote.backend"):
        out = be.logodds([[q("A fine film."), q(LONG)], [q("Dull.")]], ["Yes"], ["No"])
    assert out.flags == [["ok", "too_long"], ["ok"]] and math.isnan(out.values[0][1])
    assert out.values[0][0] == pytest.approx(expected("A fine film." + QUESTION))
    assert out.truncated == 0 and be.counts["too_long"] == 1
    assert any("too_long=1" in r.getMessage() and "?tokenizer=NAME in the URL" in r.getMessage() for r in caplog.records)


def test_a_chat_text_the_server_cannot_count_is_too_long():
    """llama-cpp-python's /extras/tokenize reads plain text only: a chat query, formatted by
    the server's template, cannot be counted, so a long one is NaN too_long."""
    fake = FakeServer("llama-cpp-python", n_ctx=64)
    out = backend(fake).logodds([[q("Nice.", "always"), q(LONG, "always")]], ["Yes"], ["No"])
    assert out.flags == [["ok", "too_long"]]
    assert fake.count("/v1/chat/completions") == 2  # sent once, refused, not sent again


def test_a_vllm_chat_text_is_cut_with_the_servers_chat_template():
    fake = FakeServer("vllm", n_ctx=64)
    out = backend(fake).logodds([[q(LONG, "always")]], ["Yes"], ["No"])
    assert out.flags == [["ok"]] and out.truncated == 1
    last = [b for p, b in fake.requests if p == "/v1/chat/completions"][-1]
    assert len(fake._tokenize(chat_text(last["messages"]), True)) <= 63


@pytest.mark.parametrize("body", [
    {"error": {"message": "temperature must be non-negative", "type": "BadRequestError", "code": 400}},
    {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]},
])
def test_a_400_that_is_not_about_length_still_raises(body):
    fake = FakeServer("vllm", fail=lambda path, b: httpx.Response(400, json=body) if "completions" in path else None)
    with pytest.raises(RemoteStatusError, match="HTTP 400") as e:
        backend(fake, completion_batch=2).logodds([[q("a"), q("b")]], ["Yes"], ["No"])
    assert e.value.status == 400 and fake.count("/v1/completions") == 1


def test_max_length_cuts_before_sending_and_counts_only_texts_near_it():
    fake = FakeServer("vllm", n_ctx=4096)
    be = backend(fake, max_length=40)
    out = be.logodds([[q("A fine film."), q(LONG), q("Dull.")]], ["Yes"], ["No"])
    assert (out.truncated, out.context) == (1, 40) and out.flags == [["ok"] * 3]
    sent = fake.prompts()
    [cut] = [p for p in sent if p.startswith("The film")]
    assert len(sent) == 3 and " … " in cut and cut.endswith(QUESTION) and len(fake._tokenize(cut, True)) <= 40
    # nothing refused; the short texts (fewer bytes than tokens allowed) were never counted
    tokenized = [b["prompt"] for p, b in fake.requests if p == "/tokenize"]
    assert not any(t.startswith(("A fine", "Dull")) for t in tokenized)


def test_max_length_without_a_way_to_count_is_a_clear_error():
    with pytest.raises(ZynError, match=r"max_length=40: .* no tokenize route .* tokenizer= in Python, \?tokenizer=NAME"):
        backend(FakeServer("bare"), max_length=40).logodds([[q("x")]], ["Yes"], ["No"])
    with pytest.raises(ZynError, match=r"max_length=40: .*cannot apply the chat template.*chat_auto=false"):
        backend(FakeServer("llama-cpp-python"), max_length=40).logodds([[q("x", "auto")]], ["Yes"], ["No"])


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "64"])
def test_max_length_must_be_a_positive_whole_number(value):
    with pytest.raises(ZynError, match="max_length: expected a positive whole number"):
        OpenAIBackend("http://h/v1", max_length=value)


def test_max_length_reaches_the_backend_from_the_url_and_the_reward_model():
    assert OpenAIBackend.from_url("openai+http://h:1/v1?max_length=64").max_length == 64
    rm = ZeroShotRewardModel("openai+http://h:1/v1", prompt="sentiment", max_length=64)
    assert rm.backend.max_length == 64
    with pytest.raises(ZynError, match=r"\?max_length='many': expected a whole number"):
        ZeroShotRewardModel("openai+http://h:1/v1?max_length=many", prompt="sentiment")


def test_the_refusals_are_read_from_each_servers_words():
    assert wire.too_long(400, {"error": {"message": "The decoder prompt (length 300) is longer than the maximum "
                                                    "model length of 256. Make sure..."}}) == wire.TooLong(255)
    assert wire.too_long(400, {"error": {"code": "context_length_exceeded", "message": "too long"}}) \
        == wire.TooLong(None)
    assert wire.too_long(500, {"error": {"message": "This model's maximum context length is 8 tokens"}}) is None
    assert wire.too_long(400, {"error": {"message": "The model `x` does not exist."}}) is None


def test_local_tokenizer_cuts_exactly_as_the_local_backend(tiny_causal):
    """With tokenizer= the text is counted and cut here, by the local backend's rules: the
    ids the server reads from the text sent are the ids the local backend would score."""
    from zyn.backends.hf import HFBackend

    model, tok = tiny_causal
    fake = FakeServer("llama-cpp-python", n_ctx=160,  # the sentiment set's text around the review: ~105 tokens
                      tokenize=lambda text, bos: tok(text, add_special_tokens=bos)["input_ids"])
    rm = ZeroShotRewardModel(backend(fake, tokenizer=tok), prompt="sentiment")
    queries = [rm.prompt_set.render(t)[0] for t in ("Fine.", "the film was good and the plot was bad " * 30)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        out = rm.backend.logodds([[qq] for qq in queries], ["Yes"], ["No"])  # learns the context from the refusal
        again = rm.backend.logodds([[qq] for qq in queries], ["Yes"], ["No"])  # cut before sending
    assert out.flags == again.flags == [["ok"], ["ok"]] and out.truncated == again.truncated == 1
    local = HFBackend(model, tok, max_length=159)
    # the second call's long text as sent (its two requests may arrive in either order)
    sent = [p for p in fake.prompts() if "the plot was bad" in p][-1]
    assert tok(sent)["input_ids"] == local.encode(queries[1])
    assert fake.count("/v1/completions") == 3 + 2  # first call: one refused and resent; second: none refused


def test_vllm_exact_mode_cuts_to_max_length_when_less_than_the_servers(tiny_causal):
    pytest.importorskip("fastapi")
    from support.vllm_standin import make_vllm_standin

    from zyn.server import serve_in_thread

    model, tok = tiny_causal
    app = make_vllm_standin(model, tok, max_model_len=256)
    with serve_in_thread(app) as url:
        for tokenizer in (None, tok):
            be = OpenAIBackend.from_url(f"vllm+{url}/v1", tokenizer=tokenizer, max_length=140)
            rm = ZeroShotRewardModel(be, prompt="sentiment")
            query = rm.prompt_set.render("The film opens on a quiet street and keeps going. " * 40)[0]
            out = be.logodds([[query]], ["Yes"], ["No"])
            assert (out.truncated, out.context) == (1, 140) and len(app.state.prompts[-1]) <= 140


# ----------------------------------------------------------------------------- B: lists of prompts

def test_a_server_that_refuses_lists_gets_one_prompt_per_request_in_order(caplog):
    fake = FakeServer("llama-cpp-python")
    be = backend(fake, completion_batch=4)
    texts = [f"text number {k}" for k in range(7)]
    with caplog.at_level(logging.WARNING, logger="zyn.backends.remote.backend"):
        out = be.logodds([[q(t)] for t in texts], ["Yes"], ["No"])
    assert [v[0] for v in out.values] == pytest.approx([expected(t + QUESTION) for t in texts])
    assert be._lists is False
    assert sum("takes one prompt per request" in r.getMessage() for r in caplog.records) == 1
    lists = fake.count("/v1/completions", lists=True)
    assert lists == 2  # the first list, then once more after one prompt alone passed: never retried
    fake.requests.clear()
    out = be.logodds([[q(t)] for t in texts], ["Yes"], ["No"])
    assert [v[0] for v in out.values] == pytest.approx([expected(t + QUESTION) for t in texts])
    assert fake.count("/v1/completions", lists=True) == 0 and fake.count("/v1/completions") == 7


def test_a_server_that_takes_lists_keeps_getting_them():
    fake = FakeServer("vllm")
    be = backend(fake, completion_batch=4)
    texts = [f"text number {k}" for k in range(7)]
    out = be.logodds([[q(t)] for t in texts], ["Yes"], ["No"])
    assert [v[0] for v in out.values] == pytest.approx([expected(t + QUESTION) for t in texts])
    assert fake.count("/v1/completions", lists=True) == 2 == fake.count("/v1/completions")  # 4 + 3, any order


def test_a_failing_server_is_retried_and_raises_not_taken_for_a_list_refusal():
    fake = FakeServer("vllm", fail=lambda path, body: httpx.Response(500, json={"error": "engine dead"})
                      if path == "/v1/completions" else None)
    be = backend(fake, completion_batch=4)
    with pytest.raises(RemoteError, match=r"failed after 3 attempts: HTTP 500"):
        be.logodds([[q("a"), q("b")]], ["Yes"], ["No"])
    assert be._lists is None  # nothing learnt about lists
    assert fake.count("/v1/completions", lists=False) == 3  # the one prompt alone, with its retries


@pytest.mark.parametrize("status", [500, 503])
def test_a_passing_failure_of_the_first_list_does_not_stop_lists(status):
    failures = [status]

    def once(path, body):
        return httpx.Response(status, json={"error": "busy"}) if path == "/v1/completions" and failures and \
            failures.pop() else None

    fake = FakeServer("vllm", fail=once)
    be = backend(fake, completion_batch=4)
    out = be.logodds([[q("a"), q("b"), q("c")]], ["Yes"], ["No"])
    assert out.values[0] == pytest.approx([expected(t + QUESTION) for t in "abc"])
    fake.requests.clear()
    be.logodds([[q("a"), q("b"), q("c")]], ["Yes"], ["No"])
    assert fake.count("/v1/completions", lists=True) == 1 == fake.count("/v1/completions")  # still a list


# ----------------------------------------------------------------------------- a real llama.cpp server

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """(base URL) of llama-cpp-python's server on Gemma 3 270M with a 256-token context."""
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python[server]")
    from support.llama_server import llama_cpp_server

    from zyn import models

    try:
        gguf = models.assemble("gemma-3-270m", tmp_path_factory.mktemp("gguf") / "gemma-3-270m.gguf")
    except models.ModelNotFoundError as e:
        pytest.skip(str(e))
    # 256: llama.cpp pads a smaller context up to 256 and says so, but llama-cpp-python's
    # buffers keep the size asked for, and a prompt past it fails with a 500
    with llama_cpp_server(str(gguf), n_ctx=256, n_threads=2) as url:
        yield url


@pytest.mark.real
def test_real_llama_cpp_server_cuts_a_long_text_and_scores_the_rest(llama_server):
    be = OpenAIBackend(llama_server, top_k=20)
    plain = [q("A wonderful, moving film."), q(LONG * 2), q("Two hours I will never get back.")]
    out = be.logodds([[x] for x in plain] + [[q(LONG * 2, "always"), q("Fine.", "always")]], ["Yes"], ["No"])
    assert (out.truncated, out.context) == (1, 255)  # its 400 says "maximum context length is 256 tokens"
    assert all(f[0] != "too_long" for f in out.flags[:3]) and not any(math.isnan(v[0]) for v in out.values[:3])
    assert out.flags[3][0] == "too_long"  # a chat query: /extras/tokenize cannot apply the chat template
    assert be._route == wire.LLAMA_CPP_PYTHON_TOKENIZE


@pytest.mark.real
def test_real_llama_cpp_server_takes_one_prompt_per_request(llama_server, caplog):
    texts = ["A wonderful, moving film.", "Two hours I will never get back.", "The plot made no sense.",
             "I laughed, I cried.", "Fine."]
    one = OpenAIBackend(llama_server, top_k=20).logodds([[q(t)] for t in texts], ["Yes"], ["No"])
    be = OpenAIBackend(llama_server, top_k=20, completion_batch=4)
    with caplog.at_level(logging.WARNING, logger="zyn.backends.remote.backend"):
        batched = be.logodds([[q(t)] for t in texts], ["Yes"], ["No"])
    assert be._lists is False and any("takes one prompt per request" in r.getMessage() for r in caplog.records)
    # the same order; llama.cpp's numbers move a little with the prompt cache the last request left
    assert [v[0] for v in batched.values] == pytest.approx([v[0] for v in one.values], abs=0.2)


@pytest.mark.real
@pytest.mark.slow
def test_real_llama_cpp_server_reads_the_local_backends_cut(llama_server):
    """With tokenizer= (the preset's), the text sent is the local backend's cut: the
    server's own /extras/tokenize reads it into the ids the local backend scores."""
    from transformers import AutoTokenizer

    from zyn import models
    from zyn.backends.tokens import fit
    from zyn.backends.remote.encoding import LocalTokens

    try:
        tok = AutoTokenizer.from_pretrained(models.prepare("gemma-3-270m"))
    except models.ModelNotFoundError as e:
        pytest.skip(str(e))
    recording = _Recording()
    be = OpenAIBackend(llama_server, tokenizer=tok, top_k=20, max_length=120, transport=recording)
    rm = ZeroShotRewardModel(be, prompt="sentiment")
    query = rm.prompt_set.render(LONG)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        out = be.logodds([[query]], ["Yes"], ["No"])
    assert (out.truncated, out.context) == (1, 120) and not math.isnan(out.values[0][0])
    [sent] = [body["prompt"] for path, body in recording.requests if path.endswith("/completions")]
    local = LocalTokens(tok)
    want, cut = fit(query, local.tokenize, local.shorten, 120)
    got = httpx.post(llama_server.removesuffix("/v1") + "/extras/tokenize", json={"input": sent}).json()["tokens"]
    assert cut and " … " in sent and got == want and len(got) <= 120


class _Recording(httpx.AsyncBaseTransport):
    """A real transport that keeps (path, JSON body) of each request."""

    def __init__(self):
        self.inner, self.requests = httpx.AsyncHTTPTransport(), []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.url.path, json.loads(request.content) if request.content else None))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
