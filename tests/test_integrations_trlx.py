"""trlx (not installable): reward_fn and metric_fn called with exactly the keywords trlx passes.

From trlx's accelerate_ppo_trainer.py (``make_experience``): ``reward_fn(samples=,
prompts=, outputs=, tokenizer=self.tokenizer, **metadata)``, then one tensor per
returned score; from accelerate_base_trainer.py (``evaluate``): ``metric_fn(samples=,
prompts=, outputs=, **metadata)`` -> dict of lists logged as ``metrics/<key>``.
"""
from __future__ import annotations

import pickle

import pytest
import torch

from zyn import ZeroShotRewardModel
from zyn.integrations.trlx import TrlxMetrics, TrlxReward

PROMPTS = ["This film", "I walked out of", "The director's latest"]
OUTPUTS = [" was a gem.", " the cinema bored.", " is long"]


@pytest.fixture(scope="module")
def rm(tiny_causal):
    return ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")


def test_reward_fn_as_ppo_trainer_calls_it(rm, tiny_causal):
    reward_fn = TrlxReward(rm)
    samples = [p + o for p, o in zip(PROMPTS, OUTPUTS)]
    scores = reward_fn(samples=samples, prompts=PROMPTS, outputs=OUTPUTS, tokenizer=tiny_causal[1],
                       split=["train"] * 3)  # metadata: the prompt dataset's other keys
    tensors = [torch.tensor(s, dtype=torch.float).view(-1) for s in scores]  # what trlx does next
    assert all(t.shape == (1,) for t in tensors)
    assert scores == pytest.approx(rm(samples=samples, prompts=PROMPTS, outputs=OUTPUTS), abs=1e-6)


def test_metric_fn_as_evaluate_calls_it(rm):
    metrics = TrlxMetrics(rm)(samples=[p + o for p, o in zip(PROMPTS, OUTPUTS)], prompts=PROMPTS, outputs=OUTPUTS)
    assert set(metrics) == {"p_yes", "reward"} | {f"p_yes/{q.name}" for q in rm.prompt_set.questions}
    assert len(metrics) > 3  # an ensemble: one row per question
    assert all(len(v) == 3 for v in metrics.values())


def test_reward_fn_never_gives_nan(rm, monkeypatch):
    monkeypatch.setattr(type(rm), "__call__", lambda self, **kw: [0.5, float("nan")])
    assert TrlxReward(rm, failure=-3.0)(samples=["a", "b"]) == [0.5, -3.0]


def test_trlx_hooks_pickle(rm):
    again = pickle.loads(pickle.dumps(TrlxReward(rm)))
    assert again.__name__ == "zyn_sentiment_robust"
    assert again(samples=["A gem."]) == pytest.approx(TrlxReward(rm)(samples=["A gem."]), abs=1e-6)
