"""One transformers backend called from several threads gives the numbers of sequential calls."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from zyn import ZeroShotRewardModel

TEXTS = ["This movie was great", "A dull, boring film with a terrible plot", "", "ok", "fine, I guess",
         "amazing amazing amazing"]


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_eight_threads_equal_sequential_scoring(tiny_causal, layout):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust", layout=layout, token_budget=64)
    # each thread scores its own batch, with prefixes that differ (so the cache is
    # replaced mid-run) and passes that switch the model's attention and last layer
    batches = [TEXTS[i % 6:] + TEXTS[:i % 6] for i in range(8)]
    batches[3] = [f"{t}!" for t in batches[3]]
    sequential = [rm.score_detailed(b) for b in batches]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(rm.score_detailed, batches))
    for seq, thr in zip(sequential, threaded):
        assert thr.p_yes == seq.p_yes
        assert thr.logodds == seq.logodds


def test_two_backends_on_one_model_share_its_lock(tiny_causal):
    a = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    b = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", layout="rows")
    want = a.score(TEXTS), b.score(TEXTS)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda rm: rm.score(TEXTS), [a, b] * 4))
    assert got == [want[0], want[1]] * 4
