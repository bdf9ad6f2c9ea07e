"""OpenRLHF: split_query on real chat templates, and reward_func loaded and called by OpenRLHF's own executor.

The queries are made as OpenRLHF makes them (openrlhf/utils/agent.py,
``SingleTurnAgentExecutor.execute``): the templated prompt tokenized without special
tokens, the response's token ids appended, the whole decoded with special tokens kept.
The tokenizers are conftest's tiny BPE with the special tokens and chat templates of
ChatML (Qwen2.5), Llama 3 and Gemma, and conftest's own template.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import types

import pytest
import torch

from conftest import CHAT_TEMPLATE, _tokenizer

from zyn import ZeroShotRewardModel
from zyn.errors import MissingFieldError
from zyn.integrations import openrlhf as zyn_openrlhf, shared
from zyn.integrations.chatformat import CHATML, ChatFormat, resolve_chat_format, split_query

# Chat templates as their models ship them (Qwen2.5 without its tools branch).
TEMPLATES = {
    "chatml": (
        "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
        "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
        "{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
        "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"),
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
        "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"),
    "tiny": CHAT_TEMPLATE,
}
SPECIALS = {  # (added special tokens, bos, end of turn the policy emits)
    "chatml": (["<|im_start|>", "<|im_end|>", "<|endoftext|>"], None, "<|im_end|>"),
    "llama3": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|eot_id|>"),
    "gemma": (["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<end_of_turn>"),
    "tiny": ([], None, "<|end|>"),
}
DEFAULT_SYSTEM = {"chatml": [{"role": "system", "content": "You are a helpful assistant."}]}
CHAT = [{"role": "user", "content": "Review a film, please."}]
MULTI = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi! What film?"},
         {"role": "user", "content": "The one about the robot."}]
RESPONSE = "A gem: warm, funny and wise."


@pytest.fixture(scope="module")
def policy_tokenizers():
    toks = {}
    for name, template in TEMPLATES.items():
        tok = _tokenizer("bytelevel")
        added, bos, _ = SPECIALS[name]
        if added:
            tok.add_special_tokens({"additional_special_tokens": added})
        if bos:
            tok.bos_token = bos
        tok.chat_template = template
        toks[name] = tok
    return toks


def openrlhf_query(tok, messages, response, end) -> tuple[str, str]:
    """(query, prompt) as OpenRLHF builds them for one sample."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tok(response + end, add_special_tokens=False)["input_ids"]
    return tok.decode(prompt_ids + response_ids, skip_special_tokens=False), prompt


@pytest.mark.parametrize("name", list(TEMPLATES))
@pytest.mark.parametrize("messages", [CHAT, MULTI], ids=["one-turn", "multi-turn"])
def test_split_query_with_the_policy_tokenizer(policy_tokenizers, name, messages):
    tok = policy_tokenizers[name]
    query, prompt = openrlhf_query(tok, messages, RESPONSE, SPECIALS[name][2])
    assert query.startswith(prompt)  # the case OpenRLHF gives: prompt is a prefix of query
    expected = {"messages": DEFAULT_SYSTEM.get(name, []) + messages + [{"role": "assistant", "content": RESPONSE}]}
    assert split_query(query, prompt, tok) == expected
    # without the prompt, the last assistant turn is the response
    assert split_query(query, None, tok) == expected
    if name != "tiny":  # the named format reads the same, and so does a guess from the markers
        assert split_query(query, prompt, name) == expected
        assert split_query(query, prompt, None) == expected


def test_tokenizer_format_reads_the_markup(policy_tokenizers):
    fmt = resolve_chat_format(policy_tokenizers["chatml"])
    assert ("<|im_start|>user\n", "user") in fmt.openers and ("<|im_start|>assistant\n", "assistant") in fmt.openers
    assert fmt.closers[0] == "<|im_end|>"
    gemma = resolve_chat_format(policy_tokenizers["gemma"])  # refuses a system turn: no system opener
    assert dict(gemma.openers) == {"<start_of_turn>user\n": "user", "<start_of_turn>model\n": "assistant"}
    assert resolve_chat_format(policy_tokenizers["gemma"]) is gemma  # derived once per tokenizer


@pytest.mark.parametrize("query, prompt, fmt, expected", [
    # a truncated response (no end-of-turn token) is still the response
    ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello, wor", None, "chatml",
     {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, wor"}]}),
    # text after the end of turn (padding, a second eos) is not the response's
    ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHey<|im_end|><|endoftext|><|endoftext|>", None,
     "chatml", {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]}),
    # no chat markup: the prompt prefix splits, end-of-sequence tokens go, and the seam between
    # prompt and response keeps its whitespace (the judge reads prompt + completion as written)
    ("Review: A gem.</s>", "Review: ", "none", {"prompt": "Review: ", "completion": "A gem."}),
    ("Review: A gem.<|endoftext|>", "Review: ", None, {"prompt": "Review: ", "completion": "A gem."}),
    ("I loved this movie, it", "I loved this", "none", {"prompt": "I loved this", "completion": " movie, it"}),
    ("<s> Title:\nThe plot\n </s>", "<s> Title:\n", "none", {"prompt": "Title:\n", "completion": "The plot"}),
    # no prompt and no markup: the whole query is the text
    ("just some text</s>", None, None, {"text": "just some text"}),
    ("<s>just some text</s>", "", "none", {"text": "just some text"}),
    # a prompt that is not a prefix (re-tokenised differently): the markup still splits it
    ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>", "<bos><start_of_turn>user\nHi",
     "gemma", {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}),
    # llama3's date header lands in a system turn
    ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: 1 Jan<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYo"
     "<|eot_id|>", None, "llama3",
     {"messages": [{"role": "system", "content": "Today Date: 1 Jan"}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Yo"}]}),
])
def test_split_query_chat_strings(query, prompt, fmt, expected):
    assert split_query(query, prompt, fmt) == expected


def test_split_query_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="chat format 'vicuna' is not known; use one of chatml"):
        split_query("x", None, "vicuna")


def test_chat_format_pickles():
    import pickle

    again = pickle.loads(pickle.dumps(CHATML))
    assert isinstance(again, ChatFormat) and again.turns("<|im_start|>user\nHi") == ("", [("user", "Hi")])


# --------------------------------------------------------------------------- reward_func in OpenRLHF's executor

@pytest.fixture
def zyn_env(hook_env):
    hook_env.setenv("ZYN_PROMPT", "sentiment_robust")


@pytest.fixture(scope="module")
def executor_class():
    """openrlhf 0.11.2's SingleTurnAgentExecutor; openrlhf/utils/__init__ imports its maths
    grader (pylatexenc), so the package folder is mounted without running that __init__."""
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or importlib.util.find_spec("aiohttp") is None:
        pytest.skip("openrlhf (pip install --no-deps openrlhf) and aiohttp are needed")
    saved = {k: v for k, v in sys.modules.items() if k == "openrlhf" or k.startswith("openrlhf.")}
    root = os.path.dirname(spec.origin)
    for name, path in (("openrlhf", root), ("openrlhf.utils", os.path.join(root, "utils"))):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    yield SingleTurnAgentExecutor
    for name in [k for k in sys.modules if k == "openrlhf" or k.startswith("openrlhf.")]:
        del sys.modules[name]
    sys.modules.update(saved)


class FakeEngine:
    """vLLM's engine as the executor uses it: generate(prompt_ids, params) -> outputs[0]."""

    def __init__(self, response_ids):
        self.response_ids = response_ids

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        out = types.SimpleNamespace(token_ids=self.response_ids, finish_reason="stop", logprobs=None)
        return types.SimpleNamespace(outputs=[out])


def test_openrlhf_executor_loads_and_calls_reward_func(executor_class, zyn_env, policy_tokenizers, monkeypatch):
    tok = policy_tokenizers["chatml"]
    monkeypatch.setenv("ZYN_CHAT_FORMAT", "chatml")
    executor = executor_class(remote_rm_url=zyn_openrlhf.__file__)  # --remote_rm_url /path/to/file.py
    assert executor.reward_func is not None
    params = types.SimpleNamespace(max_tokens=16, logprobs=None)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Review film {i}."}], tokenize=False,
                                       add_generation_prompt=True) for i in range(4)]
    responses = ["A gem.", "Dull and long.", "Loved it!", "Meh."]

    async def rollouts():  # the samples of a step are generated and rewarded concurrently
        return await asyncio.gather(*(
            executor.execute(p, "label", params, 256, tok,
                             FakeEngine(tok(r + "<|im_end|>", add_special_tokens=False)["input_ids"]))
            for p, r in zip(prompts, responses)))

    outputs = asyncio.run(rollouts())
    judge = shared.shared_reward_model()  # the model the hook loaded, by ZYN_MODEL
    direct = judge.score_detailed([{"messages": [{"role": "user", "content": f"Review film {i}."},
                                                 {"role": "assistant", "content": r}], "label": "label"}
                                   for i, r in enumerate(responses)])
    for i, out in enumerate(outputs):
        # what samples_generator does with them: torch.tensor([value]) and .flatten()[0].item()
        reward, score = torch.tensor([out["reward"]]), torch.tensor([out["scores"]])
        assert reward.flatten()[0].item() == pytest.approx(direct.rewards[i], abs=1e-5)
        assert score.flatten()[0].item() == pytest.approx(direct.p_yes[i], abs=1e-5)
        logs = {k: v.flatten()[0].item() for k, v in out["extra_logs"].items()}
        assert set(logs) == {"p_yes", "zyn/failed"} | {f"p_yes/{q.name}" for q in judge.prompt_set.questions}
        assert len(logs) > 3  # the ensemble's questions each logged
        assert logs["zyn/failed"] == 0.0


def test_reward_func_never_returns_nan_or_none(tiny_causal):
    f = zyn_openrlhf.OpenRLHFReward(ZeroShotRewardModel(*tiny_causal, prompt="sentiment"), "chatml", failure=-2.0)
    out = f(["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nfine<|im_end|>", "bad \ud800"],
            ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", ""], [None, None])
    assert out["rewards"][1].item() == -2.0 and out["extra_logs"]["zyn/failed"].tolist() == [0.0, 1.0]
    assert torch.isfinite(out["rewards"]).all() and torch.isfinite(out["scores"]).all()
    assert out["scores"][1].item() == 0.5


def test_openrlhf_doc_examples():
    import doctest

    from zyn.integrations import chatformat

    for module in (chatformat, zyn_openrlhf, shared):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_openrlhf_executor_hands_its_label_to_the_grader(executor_class, hook_env, policy_tokenizers, monkeypatch):
    """OpenRLHF's own executor with ZYN_PROMPT=answer_grader: each sample's label reaches
    the grader as its reference answer (it was the field 'label', which no shipped prompt
    set reads, so every sample raised)."""
    hook_env.setenv("ZYN_PROMPT", "answer_grader")
    monkeypatch.setenv("ZYN_CHAT_FORMAT", "chatml")
    tok = policy_tokenizers["chatml"]
    executor = executor_class(remote_rm_url=zyn_openrlhf.__file__)
    params = types.SimpleNamespace(max_tokens=16, logprobs=None)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], tokenize=False,
                                     add_generation_prompt=True)
    response = tok("4<|im_end|>", add_special_tokens=False)["input_ids"]

    async def rollouts():
        return await asyncio.gather(*(executor.execute(prompt, label, params, 256, tok, FakeEngine(response))
                                      for label in ("4", "5")))

    outputs = asyncio.run(rollouts())
    judge = shared.shared_reward_model()
    conversation = DEFAULT_SYSTEM["chatml"] + [{"role": "user", "content": "What is 2 + 2?"},
                                               {"role": "assistant", "content": "4"}]
    direct = judge.score_detailed([{"messages": conversation, "reference": ref} for ref in ("4", "5")])
    for i, out in enumerate(outputs):
        assert torch.tensor([out["reward"]]).flatten()[0].item() == pytest.approx(direct.rewards[i], abs=1e-5)
        assert out["extra_logs"]["zyn/failed"].tolist() == [0.0]
    assert direct.rewards[0] != pytest.approx(direct.rewards[1], abs=1e-6)  # the reference was read


def test_labels_are_the_reference_and_a_missing_one_is_named(tiny_causal):
    grader = zyn_openrlhf.OpenRLHFReward(ZeroShotRewardModel(*tiny_causal, prompt="answer_grader"), "none")
    out = grader(["What is 2+2? 4"], ["What is 2+2? "], ["4"])
    direct = grader.rm.score_detailed([{"prompt": "What is 2+2? ", "completion": "4", "reference": "4"}])
    assert out["rewards"].tolist() == pytest.approx(direct.rewards, abs=1e-5)
    assert out["extra_logs"]["zyn/failed"].tolist() == [0.0]
    assert zyn_openrlhf.openrlhf_records(["q a"], ["q "], [7], "none") == [
        {"prompt": "q ", "completion": "a", "label": 7, "reference": "7"}]  # 'label' kept as sent
    # no label: None, or the "" OpenRLHF sends without --data.label_key, is no reference
    for labels in ([None], [""], None):
        with pytest.raises(MissingFieldError, match=r"\['reference'\].*OpenRLHF hands the judge .*--data.label_key"):
            grader(["What is 2+2? 4"], ["What is 2+2? "], labels)
    # a prompt set that reads no reference is unaffected by a missing one
    sentiment = zyn_openrlhf.OpenRLHFReward(grader.rm.with_prompt("sentiment"), "none")
    assert sentiment(["A gem."], [""], [""])["rewards"].tolist() == pytest.approx(
        sentiment(["A gem."], [""], ["x"])["rewards"].tolist(), abs=1e-6)


def test_plain_text_policy_is_judged_as_the_other_hooks_judge_it(tiny_causal):
    """A base policy's IMDB continuation (the paper's setup): OpenRLHF hands the hook the
    prompt and prompt + response; the judge must read the same text as TRL's and trlx's
    hooks do, the space where the prompt and the continuation meet included."""
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    prompts, responses = ["I loved this", "Review: ", "The plot\n"], [" movie, it", "great film", "was thin"]
    got = zyn_openrlhf.OpenRLHFReward(rm, "none")([p + r for p, r in zip(prompts, responses)], prompts,
                                                 [None] * 3)["rewards"].tolist()
    trl = rm.as_trl_reward()(prompts=prompts, completions=responses)
    direct = rm.score_detailed([p + r for p, r in zip(prompts, responses)]).rewards
    assert got == pytest.approx(trl, abs=1e-5) and got == pytest.approx(direct, abs=1e-5)


def test_queries_of_the_wrong_kind_and_a_bad_policy_tokenizer_are_named(monkeypatch, tmp_path):
    from zyn.errors import InputError, ZynError

    with pytest.raises(InputError, match="queries: item 0: expected a string .*got int"):
        zyn_openrlhf.openrlhf_records([5], ["p"], [""])
    with pytest.raises(InputError, match="labels: expected a list of labels, got str"):
        zyn_openrlhf.openrlhf_records(["q1", "q2"], None, "ab")
    monkeypatch.setenv("ZYN_POLICY_TOKENIZER", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZynError, match="ZYN_POLICY_TOKENIZER=.*nowhere.*cannot load a tokenizer there"):
        zyn_openrlhf.env_chat_format()


def test_a_chat_format_the_text_does_not_use_is_warned_about():
    import warnings

    from zyn.integrations.chatformat import split_query

    prompt = "<|im_start|>user\nReview<|im_end|>\n<|im_start|>assistant\n"
    with pytest.warns(UserWarning, match="chat format 'llama3' was chosen, but .* has chatml's markers.*"
                                         "ZYN_CHAT_FORMAT=chatml"):
        split_query(prompt + "Sure.<|im_end|>", prompt, "llama3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right format, plain text, or "none": no warning
        split_query(prompt + "Sure.<|im_end|>", prompt, "chatml")
        split_query("Review: a gem", "Review:", "llama3")
        split_query(prompt + "Sure.<|im_end|>", prompt, "none")
