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
    from zyn.api import Scores

    nan = float("nan")
    monkeypatch.setattr(type(rm), "score_detailed", lambda self, items: Scores([0.5, nan], [0.5, nan]))
    assert TrlxReward(rm, failure=-3.0)(samples=["a", "b"]) == [0.5, -3.0]


def test_trlx_hooks_pickle(rm):
    again = pickle.loads(pickle.dumps(TrlxReward(rm)))
    assert again.__name__ == "zyn_sentiment_robust"
    assert again(samples=["A gem."]) == pytest.approx(TrlxReward(rm)(samples=["A gem."]), abs=1e-6)


def test_a_reference_key_reaches_the_grader(tiny_causal):
    """trlx hands the judge the prompt dataset's keys: 'reference' (else 'solution') is
    answer_grader's reference; a None one is refused with trlx's advice, not read as "None"."""
    from zyn.errors import MissingFieldError

    grader = ZeroShotRewardModel(*tiny_causal, prompt="answer_grader")
    prompts, outputs = ["What is 2 + 2? ", "What is 3 + 3? "], ["4", "6"]
    samples = [p + o for p, o in zip(prompts, outputs)]
    direct = grader.score_detailed([{"prompt": p, "completion": o, "text": p + o, "reference": r}
                                    for p, o, r in zip(prompts, outputs, ["4", "7"])])
    reward_fn, metric_fn = TrlxReward(grader), TrlxMetrics(grader)
    assert reward_fn(samples=samples, prompts=prompts, outputs=outputs, solution=["4", "7"]) == \
        pytest.approx(direct.rewards, abs=1e-6)
    assert metric_fn(samples=samples, prompts=prompts, outputs=outputs, reference=["4", "7"])["p_yes"] == \
        pytest.approx(direct.p_yes, abs=1e-6)
    for hook in (reward_fn, metric_fn):
        with pytest.raises(MissingFieldError, match=r"item 1: missing field\(s\) \['reference'\].*trlx hands"):
            hook(samples=samples, prompts=prompts, outputs=outputs, reference=["4", None])
    # row by row, as TRL and ms-swift read them: a row's reference, else its solution
    assert reward_fn(samples=samples, prompts=prompts, outputs=outputs, reference=["4", None],
                     solution=["x", "7"]) == pytest.approx(direct.rewards, abs=1e-6)
    # a prompt set that reads no reference is unaffected by a None one
    plain = TrlxReward(grader.with_prompt("sentiment"))
    assert plain(samples=samples, reference=[None, None]) == pytest.approx(plain(samples=samples), abs=1e-6)


def test_trlx_doc_examples():
    import doctest

    from zyn.integrations import trlx

    assert doctest.testmod(trlx).failed == 0
