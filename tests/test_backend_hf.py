"""Batching invariants of the transformers backend, causal and seq2seq alike.

The tiny models are random: they check plumbing (padding, order, caches), not values.
"""
import random

import pytest
import torch

from zyn import ZeroShotRewardModel
from zyn.api import Query
from zyn.backends.hf import HFBackend
from zyn.packing import plan_rows

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


def test_ensemble_shares_the_text_stem(tiny_causal, monkeypatch):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    seen = []
    original = rm.backend._packed_logodds
    monkeypatch.setattr(rm.backend, "_packed_logodds", lambda s, p, i: seen.append((s, p)) or original(s, p, i))
    rm.score([TEXTS[1], TEXTS[9]])
    ((seqs, prefix),) = seen
    assert len(seqs) == 4  # both questions of both texts in one pass
    from zyn.packing import pack
    tree = pack(seqs)
    # each text is computed once: the trie saves one copy of each (>10 tokens apiece)
    assert len(tree.blocks) == 2 and len(tree) < sum(len(s) for s in seqs) - 20


@pytest.mark.parametrize("prompt", ["sentiment", "sentiment_robust"])
@pytest.mark.parametrize("budget", [16, 64, 512])
def test_packed_rows_and_full_recompute_agree(tiny_causal, prompt, budget):
    full = ZeroShotRewardModel(*tiny_causal, prompt=prompt, share_prefix=False).score_detailed(TEXTS)
    for layout in (True, False):
        rm = ZeroShotRewardModel(*tiny_causal, prompt=prompt, pack=layout, token_budget=budget)
        got = rm.score_detailed(TEXTS)
        for name in full.logodds:
            assert got.logodds[name] == pytest.approx(full.logodds[name], abs=1e-4), (layout, name)


def test_completions_of_one_prompt_share_it(tiny_causal):
    # GRPO-style: several completions of each prompt, judged as prompt + completion
    prompt = "The plot is good but the acting is awful and the story is"
    texts = [f"{prompt} {end}" for end in ("boring", "fine", "wonderful", "bad, dull and long", "")]
    texts += [f"Another prompt entirely, {end}" for end in ("yes", "no")]
    fast = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", token_budget=64)
    full = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", share_prefix=False)
    assert fast.score(texts) == pytest.approx(full.score(texts), abs=1e-5)


def test_blockwise_attention_equals_the_dense_mask(tiny_causal, monkeypatch):
    from zyn import attention

    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    rm.backend.model.config._attn_implementation = "sdpa"
    blockwise = rm.score(TEXTS)
    calls = []
    original = attention.block_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("zyn_blocks") is not None)
        return original(*args, **kwargs)

    from transformers import AttentionInterface
    monkeypatch.setitem(AttentionInterface._global_mapping, attention.NAME, counting)
    rm.backend._prefix = None
    assert rm.score(TEXTS) == pytest.approx(blockwise, abs=1e-6)
    assert any(calls)  # the per-block path ran
    dense = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    monkeypatch.setattr("zyn.backends.hf.blockwise", _never_switch)
    assert dense.score(TEXTS) == pytest.approx(blockwise, abs=1e-5)
    assert rm.backend.model.config._attn_implementation == "sdpa"  # restored after each pass


class _never_switch:
    def __init__(self, model):
        pass

    def __enter__(self):
        return False

    def __exit__(self, *exc):
        return False


def test_identical_inputs_scored_once(tiny_causal, monkeypatch):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    calls = []
    original = rm.backend._forward
    monkeypatch.setattr(rm.backend, "_forward",
                        lambda b, s, p, i: calls.append(sum(map(len, b))) or original(b, s, p, i))
    out = rm.score(["same text"] * 10 + ["other"])
    assert sum(calls) == 2 and len(set(out[:10])) == 1


def test_out_of_memory_splits_and_keeps_order(tiny_causal, monkeypatch):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    ref = rm.score(TEXTS)
    original = rm.backend._forward

    def flaky(blocks, seqs, prefix, ids):
        if sum(map(len, blocks)) > 2:
            raise torch.OutOfMemoryError("simulated")
        return original(blocks, seqs, prefix, ids)

    monkeypatch.setattr(rm.backend, "_forward", flaky)
    assert rm.score(TEXTS) == pytest.approx(ref, abs=1e-5)


def test_long_input_cut_inside_text_with_one_warning(model_pair):
    rm = ZeroShotRewardModel(*model_pair, prompt="sentiment", max_length=64)
    long_text = "the film was good and " * 5000  # ~100,000 characters
    with pytest.warns(UserWarning, match=r"2 of 3 inputs were longer") as record:
        scores = rm.score([long_text, "fine", long_text + "bad"])
    # zyn's own warnings only: a library's deprecation notices come and go with its releases
    ours = [w for w in record if str(w.message).startswith("zyn:")]
    assert len(ours) == 1 and all(0.0 <= s <= 1.0 for s in scores)
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


def test_padded_passes_cover_everything_longest_first():
    seqs = [[0] * n for n in [10, 50, 30, 40, 20, 5]]
    passes = plan_rows(seqs, budget=100, max_rows=4, min_shared=1000)  # no sharing: one query a row
    flat = [b[0] for p in passes for b in p]
    assert sorted(flat) == list(range(6)) and [len(seqs[q]) for q in flat] == [50, 40, 30, 20, 10, 5]
    assert all(len(p) * len(seqs[p[0][0]]) <= 100 or len(p) == 1 for p in passes)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "llama"])
def test_other_architectures_prefix_reuse_matches(tiny_causal, arch):
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    _, tok = tiny_causal
    torch.manual_seed(1)
    if arch == "llama":
        from conftest import make_tiny_causal

        model = make_tiny_causal()[0]
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                           initializer_range=0.1))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=256, initializer_range=0.1))
    model.eval()
    full = ZeroShotRewardModel(model, tok, prompt="sentiment_robust", share_prefix=False).score(TEXTS)
    for layout in (True, False):
        fast = ZeroShotRewardModel(model, tok, prompt="sentiment_robust", pack=layout, token_budget=96)
        assert fast.backend.share_prefix
        assert fast.score(TEXTS) == pytest.approx(full, abs=1e-5)
        assert fast.score(TEXTS[:1]) == pytest.approx(full[:1], abs=1e-5)
        assert fast.score(TEXTS[::-1]) == pytest.approx(full[::-1], abs=1e-5)
        if layout:  # the last layer at the answers only, where the decoder keeps its layers in a list
            assert bool(fast.backend._trim) is (arch != "gpt2")


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
