"""TRL: AsyncTRLReward is detected, named and awaited as TRL 1.x does it, and trains in a real GRPOTrainer.

TRL's GRPOTrainer._calculate_rewards (trl/trainer/grpo_trainer.py) sorts the reward
functions with ``trl.trainer.utils.is_async_callable``, names them with
``get_callable_name``, and awaits the async ones together with ``asyncio.gather`` on an
event loop in a daemon thread (``start_event_loop_in_daemon``), each as
``await f(prompts=, completions=, completion_ids=, **reward_kwargs)``.
"""
from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

trl = pytest.importorskip("trl")

from trl.trainer.utils import get_callable_name, is_async_callable, start_event_loop_in_daemon  # noqa: E402

from zyn import AsyncTRLReward, TRLReward, ZeroShotRewardModel  # noqa: E402

PROMPTS = ["This film was", "I walked out of", "The director's latest", "Two hours of"]
COMPLETIONS = [" a gem.", " the cinema.", " is long.", " joy."]


@pytest.fixture(scope="module")
def rm(tiny_causal):
    return ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")


def _reward_kwargs(logged: dict) -> dict:
    return {"split": ["train"] * 4, "trainer_state": None, "log_extra": lambda *a, **k: None,
            "log_metric": lambda k, v: logged.__setitem__(k, v)}


def test_trl_sees_an_async_reward_with_a_stable_name(rm):
    sync, async_ = rm.as_trl_reward(), rm.as_trl_reward(async_=True)
    assert isinstance(async_, AsyncTRLReward) and type(sync) is TRLReward
    assert is_async_callable(async_) and not is_async_callable(sync)
    assert get_callable_name(async_) == get_callable_name(sync) == "zyn_sentiment_robust"
    import torch.nn as nn

    assert not isinstance(async_, nn.Module)  # TRL would run a module as a sequence classifier
    again = pickle.loads(pickle.dumps(async_))
    assert is_async_callable(again) and again.__name__ == "zyn_sentiment_robust"


def test_awaited_on_trls_loop_like_calculate_rewards(rm):
    sync, async_ = rm.as_trl_reward(), rm.as_trl_reward(async_=True)
    thread, loop, ready = start_event_loop_in_daemon(name="zyn-test-loop")
    ready.wait()
    logged: dict = {}
    scoring_threads = set()
    score = rm.score_detailed

    def spy(records):
        scoring_threads.add(threading.current_thread().name)
        return score(records)

    rm.score_detailed = spy  # instance attribute: this test's rm only
    try:
        async def run_async_funcs():
            coros = [f(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1]] * 4, **_reward_kwargs(logged))
                     for f in (async_, async_)]
            return await asyncio.gather(*coros)

        first, second = asyncio.run_coroutine_threadsafe(run_async_funcs(), loop).result(timeout=120)
    finally:
        del rm.score_detailed
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    expected = sync(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1]] * 4, **_reward_kwargs({}))
    assert first == pytest.approx(expected, abs=1e-6) and second == pytest.approx(expected, abs=1e-6)
    assert "zyn-test-loop" not in scoring_threads  # the blocking scoring left TRL's loop free
    assert set(logged) == {f"zyn_sentiment_robust/p_yes_{q.name}" for q in rm.prompt_set.questions}
    assert len(logged) > 1


def test_conversational_prompts_async(rm):
    f = rm.as_trl_reward(async_=True)
    out = asyncio.run(f(prompts=[[{"role": "user", "content": "Review a film"}]] * 2,
                        completions=[[{"role": "assistant", "content": "Great!"}],
                                     [{"role": "assistant", "content": "Bad."}]]))
    assert len(out) == 2 and all(isinstance(r, float) for r in out)


def test_grpo_step_with_the_async_reward(tmp_path, tiny_causal):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from conftest import make_tiny_causal

    policy, tok = make_tiny_causal()
    reward = ZeroShotRewardModel(*tiny_causal, prompt="sentiment").as_trl_reward(async_=True)
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=4, learning_rate=1e-4, logging_steps=1, report_to="none",
                      use_cpu=True, bf16=False, save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=args,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]), processing_class=tok)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/zyn_sentiment/mean" in h]
    assert len(logged) == 1 and -5.0 <= logged[0]["rewards/zyn_sentiment/mean"] <= 5.0


def test_image_datasets_prompts_as_trl_rewrites_them(rm):
    """With images in the dataset, GRPOTrainer rewrites every prompt into content blocks
    (trl.data_utils.prepare_multimodal_messages) and hands those to the rewards: the
    judge reads the text blocks, as it would the same chat in plain strings."""
    from trl.data_utils import prepare_multimodal_messages

    chat = [{"role": "user", "content": "Describe the poster."}]
    blocks = prepare_multimodal_messages([dict(m) for m in chat], images=["poster.png"])
    assert isinstance(blocks[0]["content"], list)  # what TRL passes: image and text blocks
    completions = [[{"role": "assistant", "content": "A great film."}], [{"role": "assistant", "content": "Dull."}]]
    f = rm.as_trl_reward()
    got = f(prompts=[blocks] * 2, completions=completions, completion_ids=[[1], [1]], images=[["poster.png"]] * 2)
    assert got == pytest.approx(f(prompts=[chat] * 2, completions=completions), abs=1e-6)


def test_a_completion_cut_after_a_tool_result_is_judged_on_the_assistant_turn(rm):
    """TRL leaves a tool's result last when the text after the tool call was cut off; the
    judged answer is still the policy's own last turn, not the tool's output."""
    from zyn.prompts import make_context

    prompt = [{"role": "user", "content": "What is 6*7?"}]
    call = {"role": "assistant", "content": None, "tool_calls": [{"type": "function",
                                                                  "function": {"name": "mul", "arguments": {}}}]}
    ctx = make_context({"messages": prompt + [call, {"role": "tool", "name": "mul", "content": "42 42 42"}]})
    assert ctx["completion"] == "" and ctx["prompt"] == "What is 6*7?"
    ctx = make_context({"messages": prompt + [{"role": "assistant", "content": "It is 42."},
                                              {"role": "tool", "content": "ok"}]})
    assert ctx["completion"] == "It is 42."


@pytest.mark.parametrize("content, error", [
    (5, "messages\\[0\\].content must be a string, null, or a list of content blocks.*got int"),
    ([{"type": "text", "text": 3}], "got a text block whose 'text' is not a string"),
    ([None], "got a list with an item of type NoneType"),
])
def test_unreadable_turn_contents_are_named(rm, content, error):
    from zyn.errors import InputError

    with pytest.raises(InputError, match=error):
        rm.as_trl_reward()(prompts=[[{"role": "user", "content": content}]],
                           completions=[[{"role": "assistant", "content": "x"}]])


def test_the_reference_answer_reaches_the_grader(tiny_causal):
    """A 'reference' column, else 'solution' (the column TRL's accuracy_reward reads), is
    answer_grader's reference. A row whose column holds None is not judged (None: TRL's
    "does not apply", as accuracy_reward gives for a row without a usable solution),
    never graded against the text "None"; a dataset without the column is refused with
    TRL's advice."""
    from zyn.errors import MissingFieldError

    grader = ZeroShotRewardModel(*tiny_causal, prompt="answer_grader").as_trl_reward()
    prompts, completions = ["What is 2 + 2?", "What is 3 + 3?"], ["4", "6"]
    direct = grader.rm.score_detailed([{"prompt": p, "completion": c, "reference": r}
                                       for p, c, r in zip(prompts, completions, ["4", "7"])]).rewards
    assert grader(prompts=prompts, completions=completions, solution=["4", "7"]) == pytest.approx(direct, abs=1e-6)
    assert grader(prompts=prompts, completions=completions, reference=["4", "7"], solution=["x", "y"]) == \
        pytest.approx(direct, abs=1e-6)  # a reference column wins
    assert asyncio.run(grader.rm.as_trl_reward(async_=True)(prompts=prompts, completions=completions,
                                                             solution=["4", "7"])) == pytest.approx(direct, abs=1e-6)
    for columns in ({"reference": ["4", None]}, {"solution": ["4", None]}, {"solution": ["4", float("nan")]}):
        got = grader(prompts=prompts, completions=completions, **columns)
        assert got[1] is None and got[0] == pytest.approx(direct[0], abs=1e-6)
    logged: dict = {}
    assert grader(prompts=prompts, completions=completions, solution=[None, None],
                  log_metric=logged.__setitem__) == [None, None] and logged == {}
    with pytest.raises(MissingFieldError, match=r"\['reference'\].*TRL hands the judge the dataset's columns"):
        grader(prompts=prompts, completions=completions)
    from zyn.errors import InputError

    for bad, got in (("4", "a single str"), (["4"], "1 values")):  # a malformed column is no "does not apply"
        with pytest.raises(InputError, match=f"column 'solution': {got} for 2 samples"):
            grader(prompts=prompts, completions=completions, solution=bad)
    # row by row: a row's reference, else its solution
    assert grader(prompts=prompts, completions=completions, reference=[None, "7"], solution=["4", "x"]) == \
        pytest.approx(direct, abs=1e-6)


def test_trl_hook_doc_examples():
    import doctest

    from zyn.integrations import trl as zyn_trl

    assert doctest.testmod(zyn_trl).failed == 0
