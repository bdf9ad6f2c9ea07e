"""The scoring benchmark's own parts: random judges' architectures, the FLOPs of its bound, the int8 probe."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import random_models  # noqa: E402
from bench_scoring import flops_per_sample, run_int8  # noqa: E402


@pytest.mark.parametrize("arch, params, own_head", [("flan-t5-large", 783.15e6, True),
                                                     ("qwen2.5-1.5b", 1543.7e6, False)])
def test_random_judges_have_the_published_size(arch, params, own_head):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cfg = random_models.config(arch)
    auto = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):  # shapes only, no memory
        model = auto.from_config(cfg)
    n = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight
    if own_head and head is model.get_input_embeddings().weight:
        n += head.numel()  # transformers 5 ties T5's output layer; the checkpoint has one of its own
    assert n == pytest.approx(params, rel=2e-3)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(SystemExit, match="random:flan-t5-large"):
        random_models.config("gpt-5")


def test_bound_flops_of_causal_and_encoder_decoder(tiny_causal, tiny_seq2seq):
    model = tiny_causal[0]
    linear = sum(m.weight.numel() for m in model.modules()
                 if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings())
    assert flops_per_sample(model, 10) == 2 * linear * 10
    t5 = tiny_seq2seq[0]
    enc = sum(m.weight.numel() for m in t5.encoder.modules() if isinstance(m, torch.nn.Linear))
    dec = {n: m.weight.numel() for n, m in t5.decoder.named_modules() if isinstance(m, torch.nn.Linear)}
    cross_kv = sum(v for n, v in dec.items() if "EncDecAttention.k" in n or "EncDecAttention.v" in n)
    assert cross_kv > 0
    want = 2 * (enc * 10 + cross_kv * 10 + (sum(dec.values()) - cross_kv))
    assert flops_per_sample(t5, 10) == want


def test_int8_probe_quantises_every_linear_but_the_output_layer(tiny_causal, tmp_path):
    from argparse import Namespace

    from zyn import ZeroShotRewardModel

    model, tok = tiny_causal
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    texts = ["A fine film.", "Dull and long.", "I laughed a lot."]
    reference = ZeroShotRewardModel(model, tok, prompt="sentiment", reward="prob").score(texts)
    res = run_int8(Namespace(model=str(tmp_path / "m"), prompt="sentiment", repeats=1), texts, reference)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules()) - 1
    assert res["layers_quantised"] == linears == 14
    assert len(res["scores"]) == 3 and all(0 <= p <= 1 for p in res["scores"])
    assert res["drift_vs_float32"]["max_abs"] == max(abs(a - b) for a, b in zip(res["scores"], reference))
    assert res["zyn"]["samples_s"] > 0
