"""ms-swift: zyn's ORM and reward-model plugins registered in swift's real registries and
called by swift's own ``compute_rewards_per_func`` (swift/rl_core/grpo_algorithm.py).

ms-swift 4.6.0 is installed with ``pip install --no-deps ms-swift`` plus the light
packages its registry imports (modelscope, modelscope-hub, dacite, peft, einops,
json-repair, aiohttp and its helpers, cryptography); the tests skip without them.
"""
from __future__ import annotations

import pickle
import types

import math

import pytest
import torch

from zyn import ZeroShotRewardModel
from zyn.integrations import shared
from zyn.integrations import swift as zyn_swift

try:
    from swift.rewards import orms, rm_plugins
    from swift.rl_core.data import GRPOSample
    from swift.rl_core.grpo_algorithm import compute_rewards_per_func
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"ms-swift's reward registry cannot be imported ({e})", allow_module_level=True)

ROWS = [("Review a film.", "A gem: warm and wise.", "good"), ("Review a film.", "Dull and long.", "bad"),
        ("Rate this.", "Loved every minute!", "good")]


def _samples():
    # each sample's messages end with the completion; other dataset columns travel in `extra`
    return [GRPOSample(messages=[{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                       extra={"reference": ref}) for p, c, ref in ROWS]


@pytest.fixture
def zyn_env(hook_env):
    return hook_env


def test_orm_registered_and_called_by_swift(zyn_env):
    cls = zyn_swift.register("zyn_grader", prompt="answer_grader")
    assert orms["zyn_grader"] is cls and cls.__name__ == "zyn_grader"  # swift logs rewards/<class name>
    reward_func = orms["zyn_grader"](args=None)  # as GRPOTrainer._prepare_rewards builds it
    rewards = compute_rewards_per_func(_samples(), [reward_func], [None], device=torch.device("cpu"),
                                       trainer_state=None)
    assert rewards.shape == (3, 1) and torch.isfinite(rewards).all()
    judge = shared.shared_reward_model(prompt="answer_grader")
    direct = judge.score([{"prompt": p, "completion": c, "reference": ref} for p, c, ref in ROWS])
    assert rewards[:, 0].tolist() == pytest.approx(direct, abs=1e-5)  # answer_grader's reward is P(yes)
    assert pickle.loads(pickle.dumps(reward_func)).__class__ is cls


def test_a_solution_column_is_the_graders_reference(zyn_env):
    """swift's accuracy ORM reads a 'solution' column: it reaches answer_grader as the
    reference (a 'reference' column wins). A row whose solution is None is not judged
    (None, which swift reads as NaN: a multi-task dataset's row of another task); a
    dataset without the column is refused with swift's advice."""
    from zyn.errors import MissingFieldError

    reward_func = zyn_swift.register("zyn_solution_grader", prompt="answer_grader")(args=None)
    samples = [GRPOSample(messages=[{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                          extra={"solution": ref}) for p, c, ref in ROWS]
    rewards = compute_rewards_per_func(samples, [reward_func], [None], device=torch.device("cpu"), trainer_state=None)
    judge = shared.shared_reward_model(prompt="answer_grader")
    direct = judge.score([{"prompt": p, "completion": c, "reference": ref} for p, c, ref in ROWS])
    assert rewards[:, 0].tolist() == pytest.approx(direct, abs=1e-5)
    mixed = [GRPOSample(messages=s.messages, extra={"solution": None if i == 1 else s.extra["solution"]})
             for i, s in enumerate(samples)]
    rewards = compute_rewards_per_func(mixed, [reward_func], [None], device=torch.device("cpu"), trainer_state=None)
    got = rewards[:, 0].tolist()
    assert math.isnan(got[1]) and [got[0], got[2]] == pytest.approx([direct[0], direct[2]], abs=1e-5)
    with pytest.raises(MissingFieldError, match=r"\['reference'\].*ms-swift hands the judge the dataset's columns"):
        reward_func([c for _, c, _ in ROWS])
    del orms["zyn_solution_grader"]


def test_rm_plugin_built_and_called_by_swift(tiny_causal):
    model, tok = tiny_causal
    zyn_swift.register_rm_plugin("zyn_rm", prompt="sentiment")
    template = types.SimpleNamespace(tokenizer=tok)  # stands in for swift's Template: the plugin reads .tokenizer
    plugin = rm_plugins["zyn_rm"](model=model, template=template)  # as GRPOTrainer._prepare_rewards builds it
    # a reward model is an nn.Module: swift calls its plugin with the reward rows
    rewards = compute_rewards_per_func(_samples(), [model], [plugin], device=torch.device("cpu"), trainer_state=None)
    direct = ZeroShotRewardModel(model, tok, prompt="sentiment").score_detailed(
        [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]} for p, c, _ in ROWS])
    assert rewards[:, 0].tolist() == pytest.approx(direct.rewards, abs=1e-5)


def test_orm_without_messages_scores_the_completion(tiny_causal):
    orm = zyn_swift.ZynORM(rm=ZeroShotRewardModel(*tiny_causal, prompt="sentiment"))
    out = orm(["A gem.", "Dull."], trainer_state=None, solution=["a", "b"])
    assert out == pytest.approx(orm.rm.score_detailed(["A gem.", "Dull."]).rewards, abs=1e-6)


def test_registered_names_never_shadow_the_module():
    cls = zyn_swift.register("register")
    assert cls.__name__ == "ZynORM_register" and callable(zyn_swift.register)
    del orms["register"]


def test_swift_doc_examples():
    import doctest

    assert doctest.testmod(zyn_swift).failed == 0


def test_a_bare_string_is_refused_not_scored_letter_by_letter(tiny_causal):
    from zyn import ZeroShotRewardModel
    from zyn.errors import InputError

    orm = zyn_swift.ZynORM(rm=ZeroShotRewardModel(*tiny_causal, prompt="sentiment"))
    with pytest.raises(InputError, match="completions: expected a list of completions, got str"):
        orm("Great", trainer_state=None)
    assert len(orm(["Great"], trainer_state=None)) == 1


def test_conversations_of_another_count_are_named_and_a_class_name_is_never_shadowed(tiny_causal):
    from zyn import ZeroShotRewardModel
    from zyn.errors import InputError

    orm = zyn_swift.ZynORM(rm=ZeroShotRewardModel(*tiny_causal, prompt="sentiment"))
    one = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(InputError, match="messages: 1 conversations for 2 completions"):
        orm(["a", "b"], messages=[one])
    original = zyn_swift.ZynORM
    cls = zyn_swift.register("ZynORM", prompt="sentiment")
    assert zyn_swift.ZynORM is original and cls.__name__ == "ZynORM_ZynORM"
    from swift.rewards import orms

    orms.pop("ZynORM", None)
