"""zyn's CPU kernels (oneDNN linear layers, fused MLPs and norms) give the model's own numbers."""
import pytest
import torch

from zyn import ZeroShotRewardModel
from zyn.backends.hf.kernels import (FusedRMSNorm, OneDNNGatedMLP, OneDNNLinear, onednn_available, use_fused_norms,
                         use_onednn_linears)

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_linear(bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 96, bias=bias)
    x = torch.randn(3, 7, 64)
    with torch.inference_mode():
        assert torch.allclose(OneDNNLinear(lin)(x), lin(x), atol=1e-5)


@needs_onednn
def test_swapped_model_scores_like_the_original(tiny_causal):
    from conftest import make_tiny_causal

    model, tok = make_tiny_causal()  # a private copy: the swap changes the model in place
    texts = ["great film", "awful, boring plot", "fine", ""]
    ref = ZeroShotRewardModel(model, tok, prompt="sentiment_robust").score(texts)
    output_layer = model.get_output_embeddings()
    assert use_onednn_linears(model) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert model.get_output_embeddings() is output_layer  # left alone (may be tied)
    assert all(isinstance(layer.mlp, OneDNNGatedMLP) for layer in model.model.layers)
    assert ZeroShotRewardModel(model, tok, prompt="sentiment_robust").score(texts) == pytest.approx(ref, abs=1e-5)


@needs_onednn
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_fused_gated_mlp_matches_the_mlp(dtype, tol):
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

    torch.manual_seed(0)
    mlp = Qwen2MLP(Qwen2Config(hidden_size=64, intermediate_size=160)).to(dtype)
    x = torch.randn(2, 9, 64, dtype=dtype)
    with torch.inference_mode():
        want = mlp(x).float()
        fused = OneDNNGatedMLP(OneDNNLinear(mlp.gate_proj), OneDNNLinear(mlp.up_proj), OneDNNLinear(mlp.down_proj))
        got = fused(x).float()
    assert (got - want).abs().max() <= tol * want.abs().max()


@needs_onednn
def test_an_mlp_of_another_activation_keeps_separate_products():
    from transformers import GemmaConfig, GemmaForCausalLM

    model = GemmaForCausalLM(GemmaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    use_onednn_linears(model)  # gelu-gated: the SiLU fusion does not apply
    mlp = model.model.layers[0].mlp
    assert not isinstance(mlp, OneDNNGatedMLP) and isinstance(mlp.gate_proj, OneDNNLinear)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_norm_gives_the_norms_numbers(dtype):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    torch.manual_seed(0)
    norm = Qwen2RMSNorm(96, eps=1e-6).to(dtype)
    norm.weight.data = torch.randn(96, dtype=dtype)
    x = torch.randn(4, 11, 96, dtype=dtype) * 5
    with torch.inference_mode():
        want, got = norm(x), FusedRMSNorm(norm.weight, norm.variance_epsilon)(x)
    assert got.dtype == want.dtype
    if dtype == torch.float32:
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    else:  # rounded to bf16 at the same place: equal but for rare one-step ties
        assert (got != want).float().mean() < 0.01


def test_norms_swapped_where_they_match_and_scores_unchanged():
    from conftest import make_tiny_causal
    from transformers import GemmaConfig, GemmaForCausalLM

    model, tok = make_tiny_causal()  # a private copy: the swap changes the model in place
    texts = ["great film", "awful, boring plot", "fine", ""]
    ref = ZeroShotRewardModel(model, tok, prompt="sentiment_robust").score(texts)
    assert use_fused_norms(model) == 2 * 2 + 1  # two per layer and the final one
    assert ZeroShotRewardModel(model, tok, prompt="sentiment_robust").score(texts) == pytest.approx(ref, abs=1e-6)
    # Gemma's norm scales by (1 + weight): a FusedRMSNorm would not reproduce it
    gemma = GemmaForCausalLM(GemmaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    assert use_fused_norms(gemma) == 0
