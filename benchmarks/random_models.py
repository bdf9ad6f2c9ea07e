"""Judges of real architectures with random weights, for throughput figures only.

Speed does not depend on the weights, so a GPU benchmark can build a model from its
published configuration instead of carrying gigabytes of checkpoint to a machine
that reaches no model hub. The scores of such a model mean nothing; the benchmark
reports them only as a check that every path computes the same numbers.

The tokenizer is the offline Qwen preset's (byte-level BPE, 151,665 ids), or a copy of
its files in a folder (a GPU machine here cannot install the presets), so the token
counts of a workload match those of the real judges within a few percent;
flan-t5-large's vocabulary is widened to hold its ids (the output layer runs at one
decoder position, so this adds ~0.5% to the work).

    random:flan-t5-large   google/flan-t5-large: 24+24 layers, d_model 1024, gated-GELU
    random:qwen2.5-1.5b    Qwen/Qwen2.5-1.5B-Instruct: 28 layers, hidden 1536, GQA 12/2
"""
from __future__ import annotations

from pathlib import Path

import torch

PREFIX = "random:"

CONFIGS = {
    "flan-t5-large": ("t5", dict(d_model=1024, d_ff=2816, d_kv=64, num_heads=16, num_layers=24,
                                 num_decoder_layers=24, feed_forward_proj="gated-gelu", vocab_size=32128,
                                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                 layer_norm_epsilon=1e-6, tie_word_embeddings=False, decoder_start_token_id=0,
                                 pad_token_id=0, eos_token_id=1)),
    "qwen2.5-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                                   rope_theta=1e6, rms_norm_eps=1e-6, vocab_size=151936, tie_word_embeddings=True,
                                   use_sliding_window=False)),
}


def is_random(name: str) -> bool:
    return name.startswith(PREFIX)


def load_tokenizer(source: str):
    """A tokenizer from a folder of its files, or from a preset's cached folder."""
    from transformers import AutoTokenizer

    if Path(source).is_dir():
        return AutoTokenizer.from_pretrained(source)
    from zyn.models import prepare

    return AutoTokenizer.from_pretrained(str(prepare(source)))


def config(arch: str, vocab_size: int = 0):
    """The transformers config of `arch`, its vocabulary widened to `vocab_size` ids if larger."""
    from transformers import AutoConfig

    if arch not in CONFIGS:
        raise SystemExit(f"--model {PREFIX}{arch}: unknown architecture; choose one of "
                         + ", ".join(PREFIX + a for a in CONFIGS))
    model_type, fields = CONFIGS[arch]
    fields = dict(fields, vocab_size=max(fields["vocab_size"], vocab_size))
    cfg = AutoConfig.for_model(model_type, **fields)
    cfg._attn_implementation = "sdpa"
    return cfg


def build(name: str, dtype: str, device: str | None, tokenizer: str = "qwen2.5-coder-0.5b-instruct"):
    """(model, tokenizer) for ``random:<architecture>``, weights drawn at random (seed 0)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    tok = load_tokenizer(tokenizer)
    cfg = config(name[len(PREFIX):], len(tok))
    auto = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(0)
    with torch.device(device or "cpu"):
        model = auto.from_config(cfg, dtype=getattr(torch, dtype))
    return model.eval(), tok
