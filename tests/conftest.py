"""Tiny random models built from configs: they test plumbing and invariants, not values.

The causal model gets a byte-level BPE tokenizer ("ĠYes") with a chat template; the
seq2seq model gets a SentencePiece-style tokenizer ("▁Yes"), so both answer-token
families are exercised.
"""
from __future__ import annotations

import pytest
import torch

CORPUS = [
    "Yes No yes no YES NO True False Correct Incorrect Maybe",
    "Review: This movie was great and the acting was wonderful. Is this movie review positive?",
    "Review: A dull, boring film with a terrible plot. Is this text too repetitive?",
    "Question: Reference answer: Candidate answer: Does this text contain toxic speech?",
    "the a an is was of and to in it for on with as at by this that film story plot actor",
    "Check whether the TEXT satisfies a PROPERTY. Respond with Yes or No. output: input:",
    "system user assistant hello world good bad awful amazing fine okay . , ! ? : ' \" ( ) - 0 1 2 3 4 5 6 7 8 9",
]
SHARPEN = 5.0  # with init 0.1: P(yes) spreads over 0.1-0.5 instead of sitting at 0.5
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    return fast


@pytest.fixture(scope="session")
def tiny_causal():
    """(model, tokenizer): a 2-layer Llama-style causal LM with a chat template."""
    return make_tiny_causal()


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory, tiny_causal):
    """The tiny causal judge saved as a folder, so a test can name it as a user names a model."""
    folder = tmp_path_factory.mktemp("tiny_judge")
    model, tok = tiny_causal
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def hook_env(monkeypatch, tiny_causal_dir):
    """The environment the file-loaded trainer hooks read (ZYN_MODEL: the tiny judge), with
    their per-process reward model cleared before and after; returns the monkeypatch."""
    from zyn.integrations import shared

    monkeypatch.setenv("ZYN_MODEL", tiny_causal_dir)
    monkeypatch.setenv("ZYN_DTYPE", "float32")
    shared.clear()
    yield monkeypatch
    shared.clear()


@pytest.fixture(scope="session")
def tiny_seq2seq():
    """(model, tokenizer): a 2-layer T5-style encoder-decoder, SentencePiece-style tokenizer."""
    return make_tiny_seq2seq()


def make_tiny_causal():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer("bytelevel")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    _sharpen(model)
    return model, tok


def make_tiny_seq2seq():
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _tokenizer("metaspace")
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id, initializer_factor=1.5)
    model = T5ForConditionalGeneration(cfg).eval()
    _sharpen(model)
    return model, tok


def _sharpen(model):
    """Scale the output layer up so P(yes) varies visibly between inputs (random init
    gives logits near zero, where every input would score ~0.5)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(SHARPEN)
