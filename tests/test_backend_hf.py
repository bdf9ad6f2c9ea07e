"""Batching invariants of the transformers backend, causal and seq2seq alike.

The tiny models are random: they check plumbing (padding, order, caches), not values.
"""
import math
import random

import warnings

import pytest
import torch

from zyn import TruncationWarning, ZeroShotRewardModel, ZynError
from zyn.api import Query
from zyn.backends.hf import HFBackend
from zyn.backends.hf.planner import length_batches
from pathlib import Path

# the frozen v1 sentiment (plain template) and v2 robust set: tests of mechanics that need their shape
FROZEN = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "prompts_v1"
SENTIMENT_V1, ROBUST_V2 = str(FROZEN / "sentiment_v1.yaml"), str(FROZEN / "sentiment_robust_v2.yaml")


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


@pytest.mark.parametrize("prompt", ["sentiment", ROBUST_V2, "d5_funny_scifi"], ids=["sentiment", "robust_v2", "d5"])  # v3 scales x20
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
    seqs = [rm.backend.encode(q) for text in (TEXTS[1], TEXTS[9]) for q in rm.prompt_set.render(text)]
    plan = rm.backend.plan(seqs, *rm.prompt_set.answers)
    ((p,),) = [plan.passes]
    (tree,) = p.tries
    assert len(p.queries) == 2 * len(rm.prompt_set.questions)  # every question of both texts in one pass
    # each text is computed once: the trie saves one copy of each (>10 tokens apiece)
    assert len(tree.blocks) == 2 and len(tree) < sum(len(s) for s in plan.tails) - 20


@pytest.mark.parametrize("prompt", ["sentiment", ROBUST_V2], ids=["sentiment", "robust_v2"])  # v3 scales x20
@pytest.mark.parametrize("budget", [16, 64, 512])
def test_packed_rows_and_full_recompute_agree(tiny_causal, prompt, budget):
    full = ZeroShotRewardModel(*tiny_causal, prompt=prompt, share_prefix=False).score_detailed(TEXTS)
    for layout in ("packed", "rows"):
        rm = ZeroShotRewardModel(*tiny_causal, prompt=prompt, layout=layout, token_budget=budget)
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


@pytest.mark.parametrize("small_block", ["default", 0], ids=["products", "fused-kernel"])
def test_blockwise_attention_equals_the_dense_mask(tiny_causal, monkeypatch, small_block):
    from transformers import AttentionInterface

    from conftest import make_tiny_causal
    from zyn.backends.hf import attention

    if small_block != "default":  # every block through torch's fused kernel, as a long one goes
        monkeypatch.setattr(attention, "SMALL_BLOCK", small_block)
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    blockwise = rm.score(TEXTS)
    assert rm.backend.fast_paths(*rm.prompt_set.answers)["blockwise"]
    calls = []
    original = attention.block_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("zyn_blocks") is not None)
        return original(*args, **kwargs)

    AttentionInterface.register(attention.NAME, counting)
    try:
        rm.backend.clear_prefix_cache()
        assert rm.score(TEXTS) == pytest.approx(blockwise, abs=1e-6)
    finally:
        AttentionInterface.register(attention.NAME, original)
    assert any(calls)  # the per-block path ran
    assert rm.backend.model.config._attn_implementation == "sdpa"  # restored after each pass
    model, tok = make_tiny_causal()  # a private copy, on eager attention: one dense masked product
    model.set_attn_implementation("eager")
    dense = ZeroShotRewardModel(model, tok, prompt="sentiment_robust")
    assert dense.score(TEXTS) == pytest.approx(blockwise, abs=1e-5)
    assert not dense.backend.fast_paths(*dense.prompt_set.answers)["blockwise"]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)], ids=["float32", "bf16"])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (6, 2), (8, 1)], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("which", ["products", "fused-kernel", "mixed"])
def test_block_attention_equals_dense_attention_over_the_whole_row(monkeypatch, dtype, tol, heads, kv_heads, which):
    """The attention function alone, on random queries, keys and values: each block against the
    cached prefix and itself, with masked entries inside both (padding, causality), equals one
    float64 softmax over the whole row's mask."""
    from zyn.backends.hf import attention

    g = torch.Generator().manual_seed(heads * 10 + kv_heads)
    past, dim, lengths = 5, 8, [3, 7, 1, 4, 6]
    spans, a = [], 0
    for n in lengths:
        spans.append((a, a + n))
        a += n
    S = a
    allowed = torch.zeros(S, past + S, dtype=torch.bool)
    for a, b in spans:
        allowed[a:b, :past] = torch.rand(b - a, past, generator=g) > 0.3  # some prefix keys masked (padding)
        allowed[a:b, past + a:past + b] = torch.ones(b - a, b - a).tril().bool()  # causal inside the block
    mask = torch.where(allowed, 0.0, float("-inf"))[None, None]
    q = torch.randn(1, heads, S, dim, generator=g).to(dtype)
    k = torch.randn(1, kv_heads, past + S, dim, generator=g).to(dtype)
    v = torch.randn(1, kv_heads, past + S, dim, generator=g).to(dtype)
    if which == "fused-kernel":
        monkeypatch.setattr(attention, "small_blocks", lambda h, p, blocks: [False] * len(blocks.spans))
    elif which == "mixed":
        monkeypatch.setattr(attention, "small_blocks", lambda h, p, blocks: [i % 2 == 0 for i in range(len(blocks.spans))])
    module = torch.nn.Module().eval()
    blocks = attention.Blocks.of(spans, mask)
    out, _ = attention.block_attention(module, q, k, v, None, zyn_blocks=blocks)
    again, _ = attention.block_attention(module, q, k, v, None, zyn_blocks=blocks)  # what was made once is reused
    group = heads // kv_heads
    kd, vd = (t.double().repeat_interleave(group, dim=1) for t in (k, v))
    weights = torch.softmax(q.double() @ kd.transpose(-1, -2) * dim ** -0.5 + mask.double(), dim=-1)
    dense = (weights @ vd).transpose(1, 2)  # (1, S, heads, dim)
    assert out.dtype == dtype and out.shape == (1, S, heads, dim)
    assert torch.equal(out, again)
    assert (out.double() - dense).abs().max() < tol


def test_identical_inputs_scored_once(tiny_causal, monkeypatch):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    rm.backend.fast_paths(*rm.prompt_set.answers)  # the one-time checks run their own passes
    calls = []
    original = rm.backend.runner.run_pass
    monkeypatch.setattr(rm.backend.runner, "run_pass",
                        lambda plan, p, ids, paths: calls.append(len(p.queries)) or original(plan, p, ids, paths))
    out = rm.score(["same text"] * 10 + ["other"])
    assert sum(calls) == 2 and len(set(out[:10])) == 1


def test_out_of_memory_splits_and_keeps_order(tiny_causal, monkeypatch):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    ref = rm.score(TEXTS)  # and the one-time checks
    original = rm.backend.runner.run_pass
    sizes = []

    def flaky(plan, p, ids, paths):
        sizes.append(len(p.queries))
        if len(p.queries) > 2:
            raise torch.OutOfMemoryError("simulated")
        return original(plan, p, ids, paths)

    monkeypatch.setattr(rm.backend.runner, "run_pass", flaky)
    assert rm.score(TEXTS) == pytest.approx(ref, abs=1e-5)
    assert max(sizes) > 2 and sizes[-1] <= 2  # the pass was split, and the halves ran


def test_long_input_cut_inside_text_with_one_warning(model_pair):
    rm = ZeroShotRewardModel(*model_pair, prompt=SENTIMENT_V1, max_length=64)
    long_text = "the film was good and " * 5000  # ~100,000 characters
    with pytest.warns(UserWarning, match=r"2 of 3 inputs were longer") as record:
        scores = rm.score([long_text, "fine", long_text + "bad"])
    # zyn's own warnings only: a library's deprecation notices come and go with its releases
    ours = [w for w in record if str(w.message).startswith("zyn:")]
    assert len(ours) == 1 and all(0.0 <= s <= 1.0 for s in scores)
    assert ours[0].category is TruncationWarning and ours[0].filename == __file__  # the caller's line
    with pytest.warns(TruncationWarning):
        assert rm.score_detailed([long_text, "fine"]).truncated == 1
    with warnings.catch_warnings(record=True) as again:  # a call from the same line warns again when
        warnings.simplefilter("always", TruncationWarning)  # the user asks for every call's warning
        for _ in range(3):
            rm.score([long_text])
    assert len([w for w in again if w.category is TruncationWarning]) == 3
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


def test_padded_batches_cover_everything_longest_first():
    lengths = [10, 50, 30, 40, 20, 5]
    batches = length_batches(lengths, budget=100, max_rows=4)
    flat = [q for batch in batches for q in batch]
    assert sorted(flat) == list(range(6)) and [lengths[q] for q in flat] == [50, 40, 30, 20, 10, 5]
    assert all(len(b) * lengths[b[0]] <= 100 or len(b) == 1 for b in batches)
    assert [len(b) for b in length_batches(lengths, budget=1000, max_rows=4)] == [4, 2]


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
    for layout in ("packed", "rows"):
        fast = ZeroShotRewardModel(model, tok, prompt="sentiment_robust", layout=layout, token_budget=96)
        assert fast.backend.share_prefix
        assert fast.score(TEXTS) == pytest.approx(full, abs=1e-5)
        assert fast.score(TEXTS[:1]) == pytest.approx(full[:1], abs=1e-5)
        assert fast.score(TEXTS[::-1]) == pytest.approx(full[::-1], abs=1e-5)
        paths = fast.backend.fast_paths(*fast.prompt_set.answers)
        assert paths["layout"] == layout
        # the last layer at the answers only (packed), where the decoder keeps its layers in a list
        assert paths["trim"] is (layout == "packed" and arch != "gpt2")


def test_answer_rows_only_head_matches_full_logits(tiny_causal):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    fast = rm.score(TEXTS)
    assert rm.backend.fast_paths(*rm.prompt_set.answers)["head"]
    full = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust", answer_rows=False)
    assert not full.backend.fast_paths(*full.prompt_set.answers)["head"]
    assert full.score(TEXTS) == pytest.approx(fast, abs=1e-5)


def test_head_self_check_falls_back_when_logits_are_rescaled():
    from conftest import make_tiny_causal

    model, tok = make_tiny_causal()
    # the head would soft-cap logits that this model's own forward does not: the
    # one-time check must notice and keep the full-vocabulary path
    model.config.final_logit_softcapping = 0.5
    rm = ZeroShotRewardModel(model, tok, prompt="sentiment")
    scores = rm.score(TEXTS[:4])
    paths = rm.backend.fast_paths(*rm.prompt_set.answers)
    assert not paths["head"] and not paths["trim"] and paths["layout"] == "packed"
    model.config.final_logit_softcapping = None
    assert scores == pytest.approx(ZeroShotRewardModel(model, tok, prompt="sentiment").score(TEXTS[:4]), abs=1e-5)


def test_trim_last_layer_can_be_refused_or_required(tiny_causal):
    full_layer = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", trim_last_layer=False)
    required = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", trim_last_layer=True)
    assert not full_layer.backend.fast_paths(*full_layer.prompt_set.answers)["trim"]
    assert full_layer.score(TEXTS) == pytest.approx(required.score(TEXTS), abs=1e-5)
    rows = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", layout="rows", trim_last_layer=True)
    with pytest.raises(ZynError, match="trim_last_layer=True"):
        rows.score(TEXTS)


def test_small_call_runs_its_prefix_in_the_pass_and_a_large_one_caches_it(tiny_causal):
    """One-pass calls leave the cache as it is and score as a full recompute; a call of
    several passes caches its prefix, which the next small call then reads."""
    full = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", share_prefix=False)
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", token_budget=64)
    runner = rm.backend.runner
    assert rm.score(TEXTS[:1]) == pytest.approx(full.score(TEXTS[:1]), abs=1e-5)
    assert runner.prefix.key is None  # computed in the pass, not cached
    assert rm.score(TEXTS) == pytest.approx(full.score(TEXTS), abs=1e-5)  # several passes
    key = runner.prefix.key
    assert key is not None
    seqs = [rm.backend.encode(q) for text in TEXTS[3:5] for q in rm.prompt_set.render(text)]
    assert rm.backend.plan(seqs, *rm.prompt_set.answers).prefix == list(key)
    assert rm.score(TEXTS[3:5]) == pytest.approx(full.score(TEXTS[3:5]), abs=1e-5)
    assert runner.prefix.key == key
    # a single text's own "prefix" (all but its last token) is never worth a pass of its own
    one = [rm.backend.encode(q) for q in rm.prompt_set.render(TEXTS[1])]
    assert rm.backend.plan(one, *rm.prompt_set.answers).prefix == []


@pytest.mark.parametrize("layout", ["packed", "rows"])
def test_a_query_that_overflows_to_nan_does_not_take_its_pass_with_it(tiny_causal, layout):
    """A NaN key is NaN even where the mask hides it, so a pass holding one query whose
    activations are NaN is split until that query stands alone; the others keep the
    numbers they get alone."""
    import copy

    model, tok = copy.deepcopy(tiny_causal[0]), tiny_causal[1]
    with torch.no_grad():
        model.get_input_embeddings().weight[tok.convert_tokens_to_ids("wful")] = float("nan")
    texts = ["good film", "awful film", "good", "a great movie"]
    got = ZeroShotRewardModel(model, tok, prompt="sentiment", layout=layout).score(texts)
    alone = [ZeroShotRewardModel(model, tok, prompt="sentiment", layout="padded").score([t])[0] for t in texts]
    assert math.isnan(got[1]) and math.isnan(alone[1])
    assert [got[i] for i in (0, 2, 3)] == pytest.approx([alone[i] for i in (0, 2, 3)], abs=1e-5)
