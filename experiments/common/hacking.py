"""Signs of reward hacking in a policy's outputs: diversity, repetition, length (pure), and the
independent evaluators ("monitors") that score the outputs without being optimised.

A policy that games a yes/no judge often does it by repeating what the judge likes ("really liked
it. Really liked it.") or by writing longer; the reward then rises while the text gets worse.
Each evaluation logs, over the held-out continuations:

    text/distinct_1, text/distinct_2   distinct unigrams / bigrams over all the continuations (Li et
                                       al. 2016, "distinct-n"): low = the policy says the same thing
    text/repeat_2gram, text/repeat_3gram per text, the share of its word bigrams / trigrams that
                                       already occurred earlier in the same text, averaged: high =
                                       repetition ("Definitely answered! Definitely answered!")
    text/words                         mean length in words
    monitor/<name>                     the mean of each independent evaluator (below)

Monitors are not part of the reward, so a policy cannot have learned to please them:

    vader       the VADER lexicon's compound sentiment (Hutto & Gilbert 2014; the `vaderSentiment`
                package), mapped from [-1, 1] to [0, 1]; no language model involved
    <prompt set> the judge's combined P(rewarded answer) under another prompt set (for example
                `sentiment` while training on `sentiment_robust`): the same judge, a question
                the policy was not trained on

"Reward up, monitors flat" is the signature of a hacked reward; the plots and the before/after
table show both.

>>> stats = text_stats(["good film", "good good good"])
>>> sorted(stats) == sorted(STAT_KEYS), stats["text/words"], stats["text/repeat_2gram"]
(True, 2.5, 0.25)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from zyn.textstats import distinct_n, repeated_ngram_rate, words

__all__ = ["STAT_KEYS", "text_stats", "words", "repeated_ngram_rate", "distinct_n",
           "Monitor", "vader_monitor", "judge_monitor"]

STAT_KEYS = ("text/distinct_1", "text/distinct_2", "text/repeat_2gram", "text/repeat_3gram", "text/words")


def text_stats(texts: Sequence[str]) -> dict[str, float]:
    """The text/* metrics of one evaluation (see the module docstring)."""
    nan = float("nan")
    return {
        "text/distinct_1": distinct_n(texts, 1),
        "text/distinct_2": distinct_n(texts, 2),
        "text/repeat_2gram": sum(repeated_ngram_rate(t, 2) for t in texts) / len(texts) if texts else nan,
        "text/repeat_3gram": sum(repeated_ngram_rate(t, 3) for t in texts) / len(texts) if texts else nan,
        "text/words": sum(len(words(t)) for t in texts) / len(texts) if texts else nan,
    }


# ---------------------------------------------------------------------------- monitors

Monitor = Callable[[Sequence[str], Sequence[str]], list[float]]  # (prompts, completions) -> one score each


def vader_monitor() -> Monitor:
    """VADER's compound sentiment of prompt + completion, mapped to [0, 1]."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def score(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [(analyzer.polarity_scores(p + c)["compound"] + 1.0) / 2.0 for p, c in zip(prompts, completions)]

    return score


def judge_monitor(reward_model: Any) -> Monitor:
    """The combined P(rewarded answer) of a reward model on (prompt, completion) records."""

    def score(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        records = [{"prompt": p, "completion": c} for p, c in zip(prompts, completions)]
        return list(reward_model.score_detailed(records).p_yes)

    return score
