"""Several remote servers behind one backend: split, least-loaded, a dead server skipped."""
import math

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from test_remote_backend import VOCAB, exact_logodds, make_fake_server, q  # noqa: E402

from zyn import ZeroShotRewardModel  # noqa: E402
from zyn.backends.remote import OpenAIBackend, RemoteError  # noqa: E402
from zyn.backends.remote.pool import PoolBackend, split_urls  # noqa: E402
from zyn.backends.remote.protocols import plain_prompt  # noqa: E402
from zyn.server import serve_in_thread  # noqa: E402


def test_split_urls_lends_the_first_scheme():
    assert split_urls("openai+http://a:1/v1, http://b:2/v1,vllm+http://c:3/v1") == [
        "openai+http://a:1/v1", "openai+http://b:2/v1", "vllm+http://c:3/v1"]


def _texts(n):
    return [f"text number {i}" for i in range(n)]


def test_work_is_split_and_a_server_stopped_mid_run_is_skipped():
    a, b = make_fake_server(), make_fake_server()
    with serve_in_thread(a) as url_a:
        cm = serve_in_thread(b)
        url_b = cm.__enter__()
        now = [0.0]
        pool = PoolBackend([OpenAIBackend(u + "/v1", model="fake-model", top_k=len(VOCAB), retries=0, timeout=5)
                            for u in (url_a, url_b)], cooldown=60, clock=lambda: now[0])
        texts = _texts(8)
        first = pool.logodds([[q(t)] for t in texts], ["Yes"], ["No"])
        assert a.state.calls.count("/v1/completions") == 4 and b.state.calls.count("/v1/completions") == 4
        cm.__exit__(None, None, None)  # server b stops mid-run
        second = pool.logodds([[q(t)] for t in texts], ["Yes"], ["No"])
        assert pool.live() == [0]
        expected = [[exact_logodds(plain_prompt(q(t)))] for t in texts]
        for got in (first.values, second.values):
            assert got == [[pytest.approx(v[0], abs=1e-9)] for v in expected]
        # b's slice went to a; a dead server is not tried again during its cool-down
        assert a.state.calls.count("/v1/completions") == 4 + 8
        calls = a.state.calls.count("/v1/completions")
        pool.logodds([[q("once more")]], ["Yes"], ["No"])
        assert a.state.calls.count("/v1/completions") == calls + 1
        now[0] = 61.0  # after the cool-down b is tried again, fails, and a takes over once more
        third = pool.logodds([[q(t)] for t in texts[:2]], ["Yes"], ["No"])
        assert not math.isnan(third.values[1][0]) and pool.live() == [0]


def test_every_server_dead_is_one_error_naming_each():
    pool = PoolBackend.from_url("openai+http://127.0.0.1:9/v1?model=m,http://127.0.0.1:10/v1?model=m",
                                retries=0, timeout=2)
    with pytest.raises(RemoteError, match=r"all 2 servers failed: http://127.0.0.1:9/v1: .*127.0.0.1:10/v1"):
        pool.logodds([[q("x")], [q("y")]], ["Yes"], ["No"])


def test_a_reward_model_from_several_urls(tmp_path):
    a, b = make_fake_server(), make_fake_server()
    with serve_in_thread(a) as url_a, serve_in_thread(b) as url_b:
        rm = ZeroShotRewardModel(f"openai+{url_a}/v1,openai+{url_b}/v1", prompt="Is this text positive?",
                                 top_k=len(VOCAB))
        one = ZeroShotRewardModel(f"openai+{url_a}/v1", prompt="Is this text positive?", top_k=len(VOCAB))
        assert isinstance(rm.backend, PoolBackend)
        inputs = [{"text": t} for t in _texts(6)]
        assert rm.score(inputs) == pytest.approx(one.score(inputs), abs=1e-12)
        assert b.state.calls.count("/v1/chat/completions") > 0
