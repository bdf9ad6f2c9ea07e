"""Any LM, exactly: zyn's log-odds equal a plain single-query forward for tiny random
models of the common transformers families, with zyn's CPU kernels off and forced on.

Where a fast path does not fit an architecture (Bloom's ALiBi from a 2D mask, Falcon's
mask handling, T5's MLP reading its projection's weight), the backend's one-time checks
must notice and fall back; the numbers must match either way.
"""
import pytest
import torch

from zyn import ZeroShotRewardModel
from zyn.backends.hf import HFBackend
from zyn.scoring import answer_logodds

TEXTS = ["This movie was great", "A dull, boring film with a terrible plot and awful acting from start to finish",
         "", "ok", "the film was fine, I guess, with a good actor and a bad story"]


def _configs(vocab: int) -> dict:
    import transformers as T

    small = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return {
        "llama": lambda: T.LlamaConfig(**small),
        "qwen2": lambda: T.Qwen2Config(**small),
        "qwen3": lambda: T.Qwen3Config(**small, head_dim=16),
        "mistral": lambda: T.MistralConfig(**small, sliding_window=None),
        "gemma": lambda: T.GemmaConfig(**small, head_dim=16),
        "gemma2": lambda: T.Gemma2Config(**small, head_dim=16),
        "gemma3": lambda: T.Gemma3TextConfig(**small, head_dim=16),
        "phi3": lambda: T.Phi3Config(**small, pad_token_id=0),
        "olmo": lambda: T.OlmoConfig(**small),
        "gpt2": lambda: T.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256),
        "gpt_neox": lambda: T.GPTNeoXConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            max_position_embeddings=256),
        "opt": lambda: T.OPTConfig(vocab_size=vocab, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=64),
        "bloom": lambda: T.BloomConfig(vocab_size=vocab, hidden_size=64, n_layer=2, n_head=4),
        "falcon": lambda: T.FalconConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4),
        "t5": lambda: T.T5Config(vocab_size=vocab, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                                 feed_forward_proj="gated-gelu", decoder_start_token_id=0),
        "bart": lambda: T.BartConfig(vocab_size=vocab, d_model=64, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                     decoder_ffn_dim=128, max_position_embeddings=256),
    }


ARCHS = list(_configs(8))


def _model(arch: str, tok):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cfg = _configs(len(tok))[arch]()
    cfg.initializer_range = cfg.init_std = 0.1
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    auto = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_config(cfg).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(5.0)  # P(yes) spread away from 0.5
    return model


def _plain(model, backend: HFBackend, queries, ids) -> list[float]:
    """log-odds of each query by one unpadded forward of the whole model."""
    out = []
    with torch.inference_mode():
        for q in queries:
            x = torch.tensor([backend.encode(q)])
            extra = {}
            if model.config.is_encoder_decoder:
                extra["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]])
            logits = model(input_ids=x, attention_mask=torch.ones_like(x), **extra).logits[:, -1]
            out.append(answer_logodds(logits, ids.yes, ids.no).item())
    return out


@pytest.mark.parametrize("fast_kernels", [False, "always"])
@pytest.mark.parametrize("arch", ARCHS)
def test_logodds_equal_a_plain_forward(arch, fast_kernels, tiny_causal, tiny_seq2seq):
    _, tok = tiny_seq2seq if arch in ("t5", "bart") else tiny_causal
    model = _model(arch, tok)  # a private copy: forced kernels change it in place
    plain_backend = HFBackend(model, tok)
    rm = ZeroShotRewardModel(model, tok, prompt="sentiment_robust", token_budget=96)
    groups = [rm.prompt_set.render(t) for t in TEXTS]
    yes, no = rm.prompt_set.answers
    ids = plain_backend.answer_ids(yes, no)
    want = _plain(model, plain_backend, [q for g in groups for q in g], ids)  # before any kernel swap

    backend = HFBackend(model, tok, token_budget=96, fast_kernels=fast_kernels)
    got = [v for row in backend.logodds(groups, yes, no).values for v in row]
    assert got == pytest.approx(want, abs=1e-4), backend.fast_paths(yes, no)
    # a second call reuses the cached prefix; reversed order gives reversed numbers
    again = [v for row in backend.logodds(groups[::-1], yes, no).values[::-1] for v in row]
    assert again == pytest.approx(want, abs=1e-4)


def test_bloom_falls_back_to_padded_rows_and_falcon_keeps_its_fast_paths(tiny_causal):
    _, tok = tiny_causal
    bloom = HFBackend(_model("bloom", tok), tok).fast_paths(["Yes"], ["No"])
    # its ALiBi biases are built from a 2D mask: a packed row's 4D mask cannot carry them
    assert bloom["layout"] == "padded" and bloom["padding"]
    llama = HFBackend(_model("llama", tok), tok).fast_paths(["Yes"], ["No"])
    assert llama == {"layout": "packed", "padding": True, "kernels": "default", "head": True, "blockwise": True,
                     "trim": True}


def test_t5_keeps_the_linear_its_mlp_reads(tiny_seq2seq):
    from zyn.backends.hf.kernels import OneDNNLinear, onednn_available

    if not onednn_available():
        pytest.skip("this torch build has no oneDNN")
    _, tok = tiny_seq2seq
    model = _model("t5", tok)
    backend = HFBackend(model, tok, fast_kernels="always")
    assert backend.kernels == "onednn"
    ff = model.encoder.block[0].layer[1].DenseReluDense
    assert isinstance(ff.wi_0, OneDNNLinear) and isinstance(ff.wo, torch.nn.Linear)  # T5 reads wo.weight
