"""Answer words resolve to token ids from the tokenizer itself."""
import pytest

from zyn.answers import resolve_answer_ids
from zyn.errors import AnswerError


def _spelled(tok, ids):
    return {tok.decode([i]).strip() for i in ids}


def test_bytelevel_variants(tiny_causal):
    _, tok = tiny_causal
    ids = resolve_answer_ids(tok, ["Yes"], ["No"])
    assert _spelled(tok, ids.yes) <= {"Yes", "yes", "YES"} and "Yes" in _spelled(tok, ids.yes)
    # the leading-space form "ĠYes" is a separate token and must be read too
    vocab = tok.get_vocab()
    assert vocab["ĠNo"] in ids.no
    assert not set(ids.yes) & set(ids.no)


def test_sentencepiece_variants(tiny_seq2seq):
    _, tok = tiny_seq2seq
    ids = resolve_answer_ids(tok, ["Yes"], ["No"])
    assert tok.get_vocab()["▁Yes"] in ids.yes
    assert tok.get_vocab()["▁No"] in ids.no


def test_multi_token_word_is_an_error(tiny_causal):
    _, tok = tiny_causal
    with pytest.raises(AnswerError, match="not a single token"):
        resolve_answer_ids(tok, ["Absolutely"], ["No"])


def test_same_words_on_both_sides_is_an_error(tiny_causal):
    _, tok = tiny_causal
    with pytest.raises(AnswerError, match="share all their tokens"):
        resolve_answer_ids(tok, ["Yes"], ["yes"])


@pytest.mark.parametrize("fixture", ["tiny_causal", "tiny_seq2seq"])
def test_vocabulary_lookup_matches_the_whole_vocabulary(request, fixture):
    """Token-by-token lookup (fast tokenizers) finds what the whole vocabulary holds, and a
    tokenizer without a backend is read through get_vocab()."""
    from zyn.answers import _vocab_lookup, word_token_ids

    _, tok = request.getfixturevalue(fixture)
    vocab, lookup = tok.get_vocab(), _vocab_lookup(tok)
    for token in list(vocab)[:300] + ["▁Yes", "ĠNo", "Yes", "no-such-token-here"]:
        assert lookup(token) == vocab.get(token)

    class Plain:  # only the slow tokenizer's interface
        def __init__(self, inner):
            self.inner = inner

        def get_vocab(self):
            return self.inner.get_vocab()

        def encode(self, *a, **kw):
            return self.inner.encode(*a, **kw)

        def decode(self, *a, **kw):
            return self.inner.decode(*a, **kw)

    for word in ["Yes", "No", "maybe"]:
        assert word_token_ids(Plain(tok), word) == word_token_ids(tok, word)
