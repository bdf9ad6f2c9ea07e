"""Answer words -> token-id sets for one tokenizer.

A model can answer "Yes" as several different first tokens: with or without a
leading space (SentencePiece writes it "▁Yes", byte-level BPE "ĠYes"), in
another case ("yes", "YES"). The reward reads all of them, so the sets are
resolved from the tokenizer's own vocabulary, never hard-coded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import AnswerError

# Word-start markers of the common tokenizer families: SentencePiece, byte-level BPE.
_SPACE_MARKS = ("", "▁", "Ġ")


@dataclass(frozen=True)
class AnswerIds:
    """The token ids read for each answer, and the words they came from."""

    yes: tuple[int, ...]
    no: tuple[int, ...]
    yes_words: tuple[str, ...]
    no_words: tuple[str, ...]


def _case_variants(word: str) -> list[str]:
    return list(dict.fromkeys([word, word.lower(), word.capitalize(), word.upper()]))


def word_token_ids(tokenizer, word: str) -> set[int]:
    """Every single token that spells `word` (any case, with or without a leading space)."""
    token_id = _vocab_lookup(tokenizer)
    ids: set[int] = set()
    for variant in _case_variants(word):
        for mark in _SPACE_MARKS:
            found = token_id(mark + variant)
            if found is not None:
                ids.add(found)
        for spaced in (variant, " " + variant):
            encoded = tokenizer.encode(spaced, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(encoded[0])
    # Keep only ids that decode back to the word: guards against odd vocab entries.
    target = word.strip().lower()
    return {i for i in ids if tokenizer.decode([i]).strip().lower() == target}


def _vocab_lookup(tokenizer):
    """token -> its id in the vocabulary (added tokens included), or None.

    A fast tokenizer is asked token by token: ``get_vocab()`` copies the whole vocabulary
    into a dict (0.1 s for a 151k-token vocabulary, per call)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and callable(getattr(backend, "token_to_id", None)):
        return backend.token_to_id
    return tokenizer.get_vocab().get


def resolve_answer_ids(tokenizer, yes_words: Sequence[str], no_words: Sequence[str]) -> AnswerIds:
    """Resolve the yes and no answer sets.

    Ids that both sets would claim are dropped from both, so a token can never
    vote for both answers.

    Raises:
        AnswerError: a word has no single-token form, or a set ends up empty.
    """
    def ids_for(words: Sequence[str], side: str) -> set[int]:
        found: set[int] = set()
        for word in words:
            ids = word_token_ids(tokenizer, word)
            if not ids:
                pieces = tokenizer.tokenize(word)
                raise AnswerError(
                    f"answer word {word!r} ({side}) is not a single token for this tokenizer "
                    f"(it splits into {pieces}); choose a word that is one token, e.g. 'Yes'/'No'"
                )
            found |= ids
        return found

    yes, no = ids_for(yes_words, "yes"), ids_for(no_words, "no")
    shared = yes & no
    yes, no = yes - shared, no - shared
    if not yes or not no:
        raise AnswerError(
            f"answers yes={list(yes_words)} and no={list(no_words)} share all their tokens; "
            "pick words that differ"
        )
    return AnswerIds(tuple(sorted(yes)), tuple(sorted(no)), tuple(yes_words), tuple(no_words))
