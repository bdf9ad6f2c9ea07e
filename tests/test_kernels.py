"""oneDNN linear kernels give the default kernel's numbers."""
import pytest
import torch

from zyn import ZeroShotRewardModel
from zyn.kernels import OneDNNLinear, onednn_available, use_onednn_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_linear(bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 96, bias=bias)
    x = torch.randn(3, 7, 64)
    with torch.inference_mode():
        assert torch.allclose(OneDNNLinear(lin)(x), lin(x), atol=1e-5)


def test_swapped_model_scores_like_the_original(tiny_causal):
    from conftest import make_tiny_causal

    model, tok = make_tiny_causal()  # a private copy: the swap changes the model in place
    texts = ["great film", "awful, boring plot", "fine", ""]
    ref = ZeroShotRewardModel(model, tok, prompt="sentiment_robust").score(texts)
    output_layer = model.get_output_embeddings()
    assert use_onednn_linears(model) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert model.get_output_embeddings() is output_layer  # left alone (may be tied)
    assert ZeroShotRewardModel(model, tok, prompt="sentiment_robust").score(texts) == pytest.approx(ref, abs=1e-5)
