"""Lexical statistics of texts: word tokens, n-grams, repetition, diversity (pure).

A yes/no judge reads a text; these functions count it. They serve two ends: a prompt set's
`penalties` (a term subtracted from the judge's combined log-odds, `zyn.prompts.Penalty`) and
the experiments' signs of reward hacking (distinct-n, repeated n-grams, length).

Words are lower-cased runs of letters and digits (inner apostrophes kept); punctuation,
line breaks and hyphens separate them, so "Loved it!\\nLoved it!" and "loved it. loved it"
are the same four words.

>>> words("Really liked it. Really-liked it!")
['really', 'liked', 'it', 'really', 'liked', 'it']
>>> repeated_ngram_rate("really liked it. Really liked it. I liked it well.", 3)
0.125
>>> distinct_n(["a b c", "a b d"], 1), distinct_n(["a b c", "a b d"], 2)
(0.6666666666666666, 0.75)
"""
from __future__ import annotations

import re
from typing import Sequence

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, inner apostrophes kept); punctuation dropped."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The contiguous n-grams of `tokens`, in order (none when there are fewer than n)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """The share of the text's word n-grams that already occurred earlier in it: 0 for a text
    that never repeats itself (or has fewer than n words), about 1 - 1/k for a text said k
    times over.

    >>> repeated_ngram_rate("a fine film"), repeated_ngram_rate("great film " * 4, 2)
    (0.0, 0.7142857142857143)
    """
    seen: set[tuple[str, ...]] = set()
    grams = ngrams(words(text), n)
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams) if grams else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of all the texts (corpus-level distinct-n, Li et al.
    2016); NaN with none."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")
