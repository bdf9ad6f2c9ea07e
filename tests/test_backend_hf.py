"""Batching invariants of the transformers backend, causal and seq2seq alike.

The tiny models are random: they check plumbing (padding, order, caches), not values.
"""
import random

import pytest
import torch

from zyn import ZeroShotRewardModel
from zyn.backends.base import Query
from zyn.backends.hf import HFBackend, _budget_batches, _common_prefix, _Item

TEXTS = [
    "This movie was great",
    "A dull, boring film with a terrible plot and awful acting from start to finish",
    "",
    "ok",
    "the film was fine, I guess, with a good actor and a bad story",
    "bad awful",
    "amazing amazing amazing",
    "It was a film.",
    "hello world",
    "The plot is good but the acting is awful and the story is boring, bad, dull and long",
    "fine",
    "wonderful story",
    "this that the a an",
    "Is this movie review positive?",
    "!!!",
    "The director's latest is a mess",
]


@pytest.fixture(params=["causal", "seq2seq"])
def model_pair(request, tiny_causal, tiny_seq2seq):
    return tiny_causal if request.param == "causal" else tiny_seq2seq


@pytest.mark.parametrize("prompt", ["sentiment", "sentiment_robust"])
def test_alone_equals_in_mixed_batch(model_pair, prompt):
    rm = ZeroShotRewardModel(*model_pair, prompt=prompt)
    batched = rm.score_detailed(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = rm.score_detailed([text])
        assert alone.p_yes[0] == pytest.approx(batched.p_yes[i], abs=1e-5)
        for name, values in batched.per_question.items():
            assert alone.per_question[name][0] == pytest.approx(values[i], abs=1e-5)


def test_permuting_inputs_permutes_outputs(model_pair):
    rm = ZeroShotRewardModel(*model_pair, prompt="sentiment_robust")
    base = rm.score(TEXTS)
    order = list(range(len(TEXTS)))
    random.Random(0).shuffle(order)
    shuffled = rm.score([TEXTS[i] for i in order])
    assert shuffled == pytest.approx([base[i] for i in order], abs=1e-5)


@pytest.mark.parametrize("batch_size, budget", [(1, 4096), (3, 4096), (16, 64), (16, 100000)])
def test_batch_size_and_budget_do_not_change_scores(model_pair, batch_size, budget):
    ref = ZeroShotRewardModel(*model_pair, prompt="sentiment", batch_size=1).score(TEXTS)
    rm = ZeroShotRewardModel(*model_pair, prompt="sentiment", batch_size=batch_size, token_budget=budget)
    assert rm.score(TEXTS) == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("prompt", ["sentiment", "sentiment_robust", "d5_funny_scifi"])
def test_shared_prefix_equals_full_recompute(tiny_causal, prompt):
    fast = ZeroShotRewardModel(*tiny_causal, prompt=prompt)
    full = ZeroShotRewardModel(*tiny_causal, prompt=prompt, share_prefix=False)
    assert fast.backend.share_prefix and not full.backend.share_prefix
    a, b = fast.score_detailed(TEXTS), full.score_detailed(TEXTS)
    for name in a.logodds:
        assert a.logodds[name] == pytest.approx(b.logodds[name], abs=1e-4)
    # the second call reuses the cached prefix and must still agree
    assert fast.score(TEXTS[:5]) == pytest.approx(b.p_yes[:5], abs=1e-5)


def test_ensemble_shares_the_text_stem(tiny_causal):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    backend = rm.backend
    groups = [rm.prompt_set.render(t) for t in TEXTS[:3]]
    encoded = [[backend.encode(q) for q in g] for g in groups]
    prefix = _common_prefix([s for g in encoded for s in g])
    from zyn.backends.hf import _split
    item = _split(0, encoded[1], len(prefix), True)
    # the stem holds the whole text; each leaf holds only its question and the cue
    assert len(item.stem) > 10 and all(len(leaf) < 30 for leaf in item.leaves)


def test_identical_inputs_scored_once(tiny_causal, monkeypatch):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    calls = []
    original = rm.backend._forward
    monkeypatch.setattr(rm.backend, "_forward", lambda b, p, i: calls.append(len(b)) or original(b, p, i))
    out = rm.score(["same text"] * 10 + ["other"])
    assert sum(calls) == 2 and len(set(out[:10])) == 1


def test_out_of_memory_splits_and_keeps_order(tiny_causal, monkeypatch):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    ref = rm.score(TEXTS)
    original = rm.backend._forward

    def flaky(batch, prefix, ids):
        if len(batch) > 2:
            raise torch.OutOfMemoryError("simulated")
        return original(batch, prefix, ids)

    monkeypatch.setattr(rm.backend, "_forward", flaky)
    assert rm.score(TEXTS) == pytest.approx(ref, abs=1e-5)


def test_long_input_cut_inside_text_with_one_warning(model_pair):
    rm = ZeroShotRewardModel(*model_pair, prompt="sentiment", max_length=64)
    long_text = "the film was good and " * 5000  # ~100,000 characters
    with pytest.warns(UserWarning, match=r"2 of 3 inputs were longer") as record:
        scores = rm.score([long_text, "fine", long_text + "bad"])
    assert len(record) == 1 and all(0.0 <= s <= 1.0 for s in scores)
    (query,) = rm.prompt_set.render(long_text)
    ids = rm.backend.encode(query)
    assert len(ids) <= 64
    # the question and the answer cue survive the cut
    assert rm.backend.tokenizer.decode(ids).rstrip().endswith(_tail(rm.backend, query))


def _tail(backend, query):
    return backend.format(query).rstrip()[-20:]


def test_chat_template_modes(tiny_causal):
    model, tok = tiny_causal
    backend = HFBackend(model, tok)
    q = Query((("hello", True),), system="be brief", chat="auto")
    assert backend.format(q).startswith("<|system|>\nbe brief") and backend.format(q).endswith("<|assistant|>\n")
    assert backend.format(Query((("hello", True),), chat="never")) == "hello"


def test_budget_batches_cover_everything_in_order():
    items = [_Item(i, [], [[0] * n]) for i, n in enumerate([50, 40, 30, 20, 10, 5])]
    batches = list(_budget_batches(items, max_groups=4, budget=100))
    assert [it.index for b in batches for it in b] == list(range(6))
    assert all(len(b) * max(len(it.leaves[0]) for it in b) <= 100 or len(b) == 1 for b in batches)


def test_budget_batches_count_samples_not_queries():
    # 4 samples with a 30-token stem and 4 leaves of 5: 4 x (30 + 4 x 5) = 200 tokens
    items = [_Item(i, [0] * 30, [[0] * 5] * 4) for i in range(8)]
    assert [len(b) for b in _budget_batches(items, max_groups=4, budget=200)] == [4, 4]
    assert [len(b) for b in _budget_batches(items, max_groups=8, budget=199)] == [3, 3, 2]


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_other_architectures_prefix_reuse_matches(tiny_causal, arch):
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    _, tok = tiny_causal
    torch.manual_seed(1)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                           initializer_range=0.1))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=256, initializer_range=0.1))
    model.eval()
    fast = ZeroShotRewardModel(model, tok, prompt="sentiment_robust")
    full = ZeroShotRewardModel(model, tok, prompt="sentiment_robust", share_prefix=False)
    assert fast.backend.share_prefix
    assert fast.score(TEXTS) == pytest.approx(full.score(TEXTS), abs=1e-5)
    assert fast.score(TEXTS[:1]) == pytest.approx(full.score(TEXTS)[:1], abs=1e-5)


def test_answer_rows_only_head_matches_full_logits(tiny_causal):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    ids = rm.backend.answer_ids(*rm.prompt_set.answers)
    fast = rm.score(TEXTS)
    assert rm.backend._head_ok(ids)
    rm.backend._head_checked[ids] = False  # force the full-vocabulary path
    assert rm.score(TEXTS) == pytest.approx(fast, abs=1e-5)


def test_head_self_check_falls_back_when_logits_are_rescaled():
    from conftest import make_tiny_causal

    model, tok = make_tiny_causal()
    # the head would soft-cap logits that this model's own forward does not: the
    # one-time check must notice and keep the full-vocabulary path
    model.config.final_logit_softcapping = 0.5
    rm = ZeroShotRewardModel(model, tok, prompt="sentiment")
    scores = rm.score(TEXTS[:4])
    assert rm.backend._head_checked and not any(rm.backend._head_checked.values())
    model.config.final_logit_softcapping = None
    assert scores == pytest.approx(ZeroShotRewardModel(model, tok, prompt="sentiment").score(TEXTS[:4]), abs=1e-5)
