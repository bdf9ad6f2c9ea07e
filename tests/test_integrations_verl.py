"""verl loads zyn's compute_score through its own loader and calls it as its reward manager does.

The loader is verl's real `verl.trainer.ppo.reward.get_custom_reward_fn` (verl 0.9.1,
installed with ``pip install --no-deps verl``). verl's package ``__init__`` imports
``verl.protocol`` (ray, tensordict) which a CPU test environment lacks, so the test
mounts the installed ``verl`` folder as a package without running that ``__init__``:
every module the loader uses (reward.py, utils/import_utils.py) is verl's own file.
The calls copy ``NaiveRewardManager.run_single``
(verl/experimental/reward_loop/reward_manager/naive.py): keywords only, a sync hook run
in the loop's default thread pool, an async one (``inspect.iscoroutinefunction``) awaited.
"""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import pickle
import sys
import threading
import types

import pytest

from zyn import ZeroShotRewardModel, ZynError
from zyn.errors import MissingFieldError
from zyn.integrations import shared, verl as zyn_verl

ITEMS = [  # (data_source, solution_str, ground_truth, extra_info)
    ("gsm8k", "The answer is 4.", "4", {"question": "What is 2 + 2?", "index": 0, "split": "train"}),
    ("gsm8k", "It is 5.", "4", {"question": "What is 2 + 2?", "index": 1, "split": "train"}),
    ("chat", "A wonderful, moving film.", "A warm review.", {"prompt": [{"role": "user", "content": "Review a film."}]}),
    ("plain", "Two hours I will never get back.", "", {}),
]


@pytest.fixture
def zyn_env(hook_env):
    hook_env.setenv("ZYN_PROMPT", "answer_grader")


@pytest.fixture(scope="module")
def get_custom_reward_fn():
    spec = importlib.util.find_spec("verl")
    if spec is None:
        pytest.skip("verl is not installed (pip install --no-deps verl)")
    saved = {k: v for k, v in sys.modules.items() if k == "verl" or k.startswith("verl.")}
    root = os.path.dirname(spec.origin)
    if "verl" not in sys.modules or not hasattr(sys.modules["verl"], "__version__"):
        for name, path in (("verl", root), ("verl.utils", os.path.join(root, "utils"))):
            package = types.ModuleType(name)
            package.__path__ = [path]
            package.DataProto = object  # the only name reward.py takes from verl/__init__
            sys.modules[name] = package
    from verl.trainer.ppo.reward import get_custom_reward_fn

    yield get_custom_reward_fn
    for name in [k for k in sys.modules if k == "verl" or k.startswith("verl.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def _config(path: str, name: str, **reward_kwargs):
    # get_custom_reward_fn reads config.reward.get("custom_reward_function") (a DictConfig in verl)
    return types.SimpleNamespace(reward={"custom_reward_function": {
        "path": path, "name": name, "reward_kwargs": reward_kwargs}})


def _run_like_naive_manager(fn, items):
    """NaiveRewardManager.run_single for each item, concurrently on one event loop."""
    is_async = inspect.iscoroutinefunction(fn)

    async def one(item):
        data_source, solution_str, ground_truth, extra_info = item
        kwargs = dict(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth,
                      extra_info=dict(extra_info, num_turns=None, rollout_reward_scores={}))
        if is_async:
            result = await fn(**kwargs)
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, lambda: fn(**kwargs))
        assert isinstance(result, dict)
        return result["score"], result

    async def all_items():
        return await asyncio.gather(*(one(item) for item in items))

    return asyncio.run(all_items())


@pytest.mark.parametrize("path", ["pkg://zyn.integrations.verl", zyn_verl.__file__])
def test_verl_loads_and_calls_compute_score(get_custom_reward_fn, zyn_env, path):
    fn = get_custom_reward_fn(_config(path, "compute_score"))
    assert not inspect.iscoroutinefunction(fn)
    results = _run_like_naive_manager(fn, ITEMS)
    for score, result in results:
        # answer_grader's reward is P(correct): a float in [0, 1], every item scored
        assert isinstance(score, float) and 0.0 <= score <= 1.0
        assert set(result) == {"score", "p_yes", "failed"} and result["failed"] == 0.0


def test_verl_async_hook_is_awaited_and_matches_sync(get_custom_reward_fn, zyn_env):
    sync_fn = get_custom_reward_fn(_config("pkg://zyn.integrations.verl", "compute_score"))
    async_fn = get_custom_reward_fn(_config("pkg://zyn.integrations.verl", "compute_score_async"))
    assert inspect.iscoroutinefunction(async_fn)  # verl's own test for awaiting the hook
    sync = [s for s, _ in _run_like_naive_manager(sync_fn, ITEMS)]
    awaited = [s for s, _ in _run_like_naive_manager(async_fn, ITEMS)]
    assert awaited == pytest.approx(sync, abs=1e-6)


def test_verl_reward_kwargs_choose_the_prompt_set(get_custom_reward_fn, zyn_env):
    # custom_reward_function.reward_kwargs={prompt: sentiment} overrides ZYN_PROMPT=answer_grader;
    # the sentiment reward is (p - 0.5) * 10, the grader's is p, over the same loaded weights
    fn = get_custom_reward_fn(_config("pkg://zyn.integrations.verl", "compute_score", prompt="sentiment"))
    (score, result), = _run_like_naive_manager(fn, ITEMS[2:3])
    assert score == pytest.approx((result["p_yes"] - 0.5) * 10, abs=1e-9)
    grader = zyn_verl.compute_score(*ITEMS[2])
    assert shared.shared_reward_model(prompt="sentiment").backend is \
        shared.shared_reward_model(prompt="answer_grader").backend
    assert grader["score"] == pytest.approx(grader["p_yes"], abs=1e-9)


def _in_eight_threads(items):
    """compute_score over `items` from 8 threads released together; results in item order."""
    results: list = [None] * len(items)
    start = threading.Barrier(8)

    def worker(k):
        start.wait(timeout=60)
        for i in range(k, len(items), 8):
            results[i] = zyn_verl.compute_score(*items[i])["score"]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_verl_model_loaded_once_from_many_threads(zyn_env, monkeypatch):
    built = []
    real = shared.ZeroShotRewardModel

    def counting(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(shared, "ZeroShotRewardModel", counting)
    assert None not in _in_eight_threads(ITEMS * 2)  # 8 first calls at once
    assert len(built) == 1


def test_eight_threads_give_the_sequential_numbers(zyn_env):
    items = ITEMS * 4  # 16 calls, two per thread
    sequential = [zyn_verl.compute_score(*item)["score"] for item in items]
    assert _in_eight_threads(items) == pytest.approx(sequential, abs=1e-6)


def test_unscorable_item_gets_the_failure_reward(tiny_causal, monkeypatch):
    # a lone surrogate cannot be encoded: that item alone fails, with a number verl can use
    monkeypatch.setenv("ZYN_FAILURE_REWARD", "-1.5")
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    hook = zyn_verl.VerlReward(rm)
    bad = hook(data_source="x", solution_str="\ud800", ground_truth=None, extra_info=None)
    assert bad == {"score": -1.5, "p_yes": 0.5, "failed": 1.0}
    assert hook(data_source="x", solution_str="fine", ground_truth=None)["failed"] == 0.0


def test_verl_reward_pickles_and_scores_as_before(tiny_causal):
    hook = zyn_verl.VerlReward(ZeroShotRewardModel(*tiny_causal, prompt="answer_grader"))
    again = pickle.loads(pickle.dumps(hook))
    kwargs = dict(zip(("data_source", "solution_str", "ground_truth", "extra_info"), ITEMS[0]))
    assert again(**kwargs)["score"] == pytest.approx(hook(**kwargs)["score"], abs=1e-6)
    assert asyncio.run(hook.score_async(**kwargs))["score"] == pytest.approx(hook(**kwargs)["score"], abs=1e-6)


def test_verl_record_doc_examples():
    import doctest

    assert doctest.testmod(zyn_verl).failed == 0


def test_the_batch_reward_managers_call_gets_a_list(get_custom_reward_fn, zyn_env):
    """verl/workers/reward_manager/batch.py: ``self.compute_score(data_sources=,
    solution_strs=, ground_truths=, extra_infos=, **self.reward_kwargs)``, then
    ``scores[i]`` (a dict: its "score" is the reward)."""
    fn = get_custom_reward_fn(_config("pkg://zyn.integrations.verl", "compute_score"))
    sources, solutions, truths, extras = (list(column) for column in zip(*ITEMS))
    scores = fn(data_sources=sources, solution_strs=solutions, ground_truths=truths,
                extra_infos=[dict(e, rollout_reward_scores={}) for e in extras])
    assert isinstance(scores, list) and len(scores) == len(ITEMS)
    singles = [zyn_verl.compute_score(*item) for item in ITEMS]
    for i, score in enumerate(scores):
        assert score["score"] == pytest.approx(singles[i]["score"], abs=1e-5) and score["failed"] == 0.0
    with pytest.raises(ZynError, match="differ in length"):
        fn(data_sources=sources[:2], solution_strs=solutions, ground_truths=truths, extra_infos=extras)


def test_a_mistyped_reward_kwarg_is_named(get_custom_reward_fn, zyn_env):
    # verl binds custom_reward_function.reward_kwargs to every call (reward.py's partial)
    fn = get_custom_reward_fn(_config("pkg://zyn.integrations.verl", "compute_score", promt="sentiment"))
    with pytest.raises(ZynError, match=r"unknown keyword\(s\) \['promt'\].*did you mean 'prompt' for 'promt'"):
        fn(data_source="x", solution_str="42", ground_truth="42", extra_info={})


def test_extra_info_reaches_the_template_and_a_missing_field_fails_loudly(tiny_causal, tmp_path):
    path = tmp_path / "rubric.yaml"
    path.write_text("name: rubric\nfields: [rubric]\nquestions:\n"
                    "  - {name: q, template: \"Rubric: {{ rubric }}\\nAnswer: {{ completion }}\\nDoes it follow?\"}\n")
    hook = zyn_verl.VerlReward(ZeroShotRewardModel(*tiny_causal, prompt=str(path)))
    a = hook(data_source="x", solution_str="42", ground_truth="42", extra_info={"rubric": "be right"})
    b = hook(data_source="x", solution_str="42", ground_truth="42", extra_info={"rubric": "be very wrong"})
    assert a["failed"] == b["failed"] == 0.0 and a["score"] != b["score"]  # the rubric was read
    with pytest.raises(MissingFieldError, match=r"missing field\(s\) \['rubric'\].*add it to the dataset's extra_info"):
        hook(data_source="x", solution_str="42", ground_truth="42", extra_info={})


@pytest.mark.parametrize("value", ["nan", "inf", "zero"])
def test_a_bad_failure_reward_is_refused_when_the_judge_loads(zyn_env, monkeypatch, value):
    monkeypatch.setenv("ZYN_FAILURE_REWARD", value)
    with pytest.raises(ZynError, match=f"ZYN_FAILURE_REWARD='{value}': expected a finite number"):
        zyn_verl.compute_score(*ITEMS[0])


def test_a_bad_batch_size_variable_is_named(zyn_env, monkeypatch):
    monkeypatch.setenv("ZYN_BATCH_SIZE", "abc")
    with pytest.raises(ZynError, match="ZYN_BATCH_SIZE='abc': expected a whole number"):
        zyn_verl.compute_score(*ITEMS[0])


def test_a_none_ground_truth_is_no_reference(tiny_causal):
    """verl's ground_truth is answer_grader's 'reference'; None is no reference at all, so
    the grader refuses it with verl's advice instead of grading against "", and a prompt
    set that reads no reference scores the item as before."""
    rm = ZeroShotRewardModel(*tiny_causal, prompt="answer_grader")
    grader = zyn_verl.VerlReward(rm)
    assert "reference" not in zyn_verl.verl_record("x", "42", None, {"question": "6*7"})
    with pytest.raises(MissingFieldError, match=r"\['reference'\].*ground_truth as 'reference', and it was None: "
                                                r"set reward_model.ground_truth"):
        grader(data_source="x", solution_str="42", ground_truth=None, extra_info={"question": "6*7"})
    with pytest.raises(MissingFieldError, match=r"item 1: missing field\(s\) \['reference'\]"):  # the batch form too
        grader(data_sources=["x", "x"], solution_strs=["42", "41"], ground_truths=["42", None],
               extra_infos=[{"question": "6*7"}] * 2)
    # a given ground truth is read: it reaches the template as the reference answer
    direct = rm.score_detailed([{"prompt": "6*7", "completion": "42", "reference": "42"}]).rewards[0]
    assert grader(data_source="x", solution_str="42", ground_truth=42,
                  extra_info={"question": "6*7"})["score"] == pytest.approx(direct, abs=1e-6)
    sentiment = zyn_verl.VerlReward(rm.with_prompt("sentiment"))
    none = sentiment(data_source=None, solution_str="A gem.", ground_truth=None)
    assert none["failed"] == 0.0
    assert none["score"] == pytest.approx(sentiment(data_source="x", solution_str="A gem.", ground_truth="y")["score"],
                                          abs=1e-6)


def test_a_hook_built_on_a_reward_model_refuses_to_switch_it_per_call(tiny_causal):
    from zyn import ZeroShotRewardModel
    from zyn.errors import ZynError
    from zyn.integrations.verl import VerlReward

    hook = VerlReward(ZeroShotRewardModel(*tiny_causal, prompt="sentiment"))
    with pytest.raises(ZynError, match=r"\['prompt'\] given to a VerlReward built on a reward model \('sentiment'\)"):
        hook(data_source="d", solution_str="x", ground_truth=None, extra_info={}, prompt="answer_grader")
    assert set(hook(data_source="d", solution_str="x", ground_truth=None, extra_info={})) >= {"score", "failed"}


def test_a_ground_truth_of_several_answers_or_an_array_reads_as_text():
    import numpy as np
    import torch

    from zyn.integrations.shared import set_reference

    assert set_reference({}, ["42", "42.0"]) == {"reference": "42 or 42.0"}  # was "['42', '42.0']"
    assert set_reference({}, np.array(["42", "42.0"])) == {"reference": "42 or 42.0"}
    assert set_reference({}, torch.tensor(4)) == {"reference": "4"}  # was "tensor(4)"
    assert set_reference({}, [None, float("nan")]) == {}
