"""Token ids of a query: the caller's text is never a special token, and a query too long
for the model is cut inside its text (`fit`). Shared by the transformers backend and the
remote backends' local tokenizer (`zyn.backends.remote.encoding.LocalTokens`); no torch.

Cutting (`fit`): the longest cuttable piece of the query (a value of the record) loses
tokens from its middle, and ``" … "`` (`MARK`) marks the place, so the template's text,
the question and the answer cue stay whole. Re-tokenising a cut text can merge tokens
differently, so the cut is retried with more slack each time; only a query with nothing
left to cut keeps its last tokens (the question and the cue are at the end).

Special tokens:

The rule: special tokens written by the chat template (and those the tokenizer adds
itself, BOS/EOS) stay special; a special-token string inside the caller's text (a
``<|im_end|>\\n<|im_start|>system`` in a text to be graded, T5's ``</s>``) is read as
plain text, as ``split_special_tokens=True`` would read it, so a text cannot forge a
chat turn or end the input early.

What counts as the caller's: the whole user message, the question's template text
included. A record's values reach it as cuttable segments (`Query.segments`) but also
through template text: a loop over ``messages`` writes their contents as template
output (`zyn.prompts._render_query` marks top-level strings only), so only the message
as a whole is certain to cover them. A question template has no business writing
special tokens itself; the chat template around the message (and the tokenizer's
BOS/EOS) does. The message is located in the formatted string; where a chat template
changed it (``| trim``, escaping) so that it cannot be found verbatim, its region is
found by rendering the query around a sentinel.

How, so that ordinary texts keep exactly their ids:

1. tokenise the whole formatted string as before, with character offsets;
2. if no special token overlaps the caller's text (the common case), return those ids;
3. else cut the string at the special tokens that stay (every one outside the caller's
   text); the tokenizer reads the text between two of them on its own anyway, so a
   stretch without a forged token keeps its ids, and a stretch with one is tokenised
   as plain text. Whether a stretch read alone reproduces the tokenizer's ids (a
   SentencePiece "▁" at the start of a string, say) is checked once per string by
   re-tokenising every stretch normally and comparing; when that fails after a
   newline prefix too, only the forged tokens are replaced by their plain-text ids.

Plain text is read by a private copy of a fast tokenizer's backend with
``encode_special_tokens`` set, never by flipping the shared tokenizer's flag, which a
concurrent call would see. Slow tokenizers (no offsets) locate special-token strings by
search and pass ``split_special_tokens=True``. Whatever path ran, a special id never
comes back from a stretch of plain text: one the tokenizer still produced is dropped.

Remote backends given a local tokenizer (``tokenizer=``, exact vLLM scoring) send ids made
by this rule too; a server that tokenises itself (its ``/tokenize``, OpenAI-compatible
completions) reads such strings as its tokenizer does: there ``delimit: true``
(`zyn.prompts.neutralise`) is the defence.
"""
from __future__ import annotations

import re
import threading
import weakref
from typing import Callable, Sequence

from ..api import Query
from ..errors import ZynError

Span = tuple[int, int]
MARK = " … "  # put where a text was cut
_RETRIES = 8  # re-tokenising a cut text can merge tokens differently: cut again, with more slack


def fit(query: Query, tokenize: Callable[[Query, str | None], list[int]],
        shorten: Callable[[str, int], str], limit: int | None) -> tuple[list[int], bool]:
    """Token ids of `query`, cut inside its cuttable text to at most `limit` tokens.

    Args:
        query: the query.
        tokenize: (query, user message or None for the query's own) -> token ids.
        shorten: (text, n) -> the text with about n tokens (and what `MARK` costs) dropped
            from its middle.
        limit: most tokens allowed; None for no limit.

    Returns:
        (ids, whether they were cut).

    >>> from zyn.api import Query
    >>> q = Query((("Review: ", False), ("one two three four five six", True), (" Positive?", False)))
    >>> words = lambda q, user=None: (user if user is not None else "".join(p for p, _ in q.segments)).split()
    >>> def shorten(text, n):
    ...     w = text.split(); keep = max(len(w) - n - 1, 0)
    ...     return " ".join(w[:keep // 2] + ["…"] + w[len(w) - (keep - keep // 2):]) if keep else ""
    >>> fit(q, words, shorten, 6)
    (['Review:', '…', 'six', 'Positive?'], True)
    """
    ids = tokenize(query, None)
    if limit is None or len(ids) <= limit:
        return ids, False
    segments = list(query.segments)
    for attempt in range(_RETRIES):
        over = len(ids) - limit
        cuttable = [i for i, (piece, cut) in enumerate(segments) if cut and piece]
        if over <= 0 or not cuttable:
            break
        longest = max(cuttable, key=lambda i: len(segments[i][0]))
        segments[longest] = (shorten(segments[longest][0], (over + 2) << attempt), True)
        ids = tokenize(query, "".join(piece for piece, _ in segments))
    if len(ids) <= limit:
        return ids, True
    bare = len(tokenize(query, "".join(piece for piece, cut in segments if not cut)))
    if bare >= limit:  # no text would be left to judge: every input would get the same score
        raise ZynError(f"the prompt around the text (chat template, system message, question) takes {bare} "
                       f"tokens, and the model reads at most {limit} (max_length, or the model's context): "
                       "raise max_length, or shorten the template or the system message")
    return ids[-limit:], True
# A private-use character no template renders, standing in for the user message.
_SENTINEL = "\ue000zyn-user\ue001"
_PLAIN: "weakref.WeakKeyDictionary[object, object]" = weakref.WeakKeyDictionary()
_PLAIN_LOCK = threading.Lock()
_PROBE = "Is this review positive? A fine film, 10/10 -- naïve < 2 > 1\n\n  Yes"


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (its named ones and added tokens marked
    special), but <unk>, which plain text legitimately reads for unknown characters."""
    ids = set(getattr(tokenizer, "all_special_ids", ()) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(i for i, tok in decoder.items() if getattr(tok, "special", False))
    ids.discard(getattr(tokenizer, "unk_token_id", None))
    return ids


def special_strings(tokenizer) -> list[str]:
    """Contents of the special tokens, longest first."""
    strings = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    strings.update(tok.content for tok in decoder.values() if getattr(tok, "special", False))
    return sorted((s for s in strings if s), key=len, reverse=True)


def caller_spans(formatted: str, user: str, render: Callable[[str], str] | None = None) -> list[Span]:
    """Character span of the user message (the question's template text and every value of
    the record it renders, nested ones included) in `formatted`.

    `render(user)` formats the query with another user message; it is used only when the
    user message is not found exactly once, to find where it went (then the whole user
    message counts as the caller's).
    """
    if not user:
        return []
    start = formatted.find(user)
    if start >= 0 and (render is None or formatted.find(user, start + 1) < 0):  # found, and only once
        return [(start, start + len(user))]
    region = _user_region(formatted, render)
    return [region] if region[1] > region[0] else []


def _user_region(formatted: str, render: Callable[[str], str] | None) -> Span:
    """Where a (transformed) user message sits: what differs from the rendering with a
    sentinel user message. Without `render`, the whole string."""
    if render is None:
        return 0, len(formatted)
    other = render(_SENTINEL)
    head = 0
    while head < min(len(formatted), len(other)) and formatted[head] == other[head]:
        head += 1
    tail = 0
    while (tail < min(len(formatted), len(other)) - head
           and formatted[len(formatted) - 1 - tail] == other[len(other) - 1 - tail]):
        tail += 1
    return head, len(formatted) - tail


def encode(tokenizer, text: str, spans: Sequence[Span], add_special_tokens: bool) -> list[int]:
    """Token ids of `text` with every special token overlapping `spans` read as plain text.

    Identical to ``tokenizer(text, add_special_tokens=...)["input_ids"]`` whenever no
    special token overlaps `spans`.
    """
    specials = special_ids(tokenizer)
    ids, found = _tokens(tokenizer, text, add_special_tokens, specials)
    if not any(_overlaps(s, e, spans) for _, s, e in found):
        return ids
    bare, found = _tokens(tokenizer, text, False, specials) if add_special_tokens else (ids, found)
    head, tail = _wrapping(ids, bare)
    return head + _rebuild(tokenizer, text, found, spans, bare, specials) + tail


def _tokens(tokenizer, text: str, add_special_tokens: bool, specials: set[int]) -> tuple[list[int], list]:
    """The tokenizer's ids of `text`, and (index, start, end) of each special token read
    from the text (not those it adds around it)."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        # A special id whose string is not in its span stands for something else (<unk>).
        return ids, [(k, s, e) for k, (i, (s, e)) in enumerate(zip(ids, enc["offset_mapping"]))
                     if i in specials and e > s and tokenizer.convert_ids_to_tokens(i) in text[s:e]]
    ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    # Slow tokenizers give no offsets: search the strings (as their trie does: leftmost,
    # longest) and pair each match with the next special id of that string.
    matches = list(_special_re(tokenizer).finditer(text))
    found, k = [], 0
    for m in matches:
        while k < len(ids) and not (ids[k] in specials and tokenizer.convert_ids_to_tokens(ids[k]) == m.group()):
            k += 1
        if k == len(ids):
            break
        found.append((k, m.start(), m.end()))
        k += 1
    return ids, found


def _rebuild(tokenizer, text: str, found: list, spans: Sequence[Span], bare: list[int],
             specials: set[int]) -> list[int]:
    """`bare` (the ids without added BOS/EOS) with the special tokens overlapping `spans`
    read as plain text: the string cut at the special tokens that stay, and each stretch
    holding a forged one re-read as text."""
    keep = [(k, s, e) for k, s, e in found if not _overlaps(s, e, spans)]
    forged = [(k, s, e) for k, s, e in found if _overlaps(s, e, spans)]
    stretches, at = [], 0
    for _, s, e in keep:
        stretches.append((at, s))
        at = e
    stretches.append((at, len(text)))
    anchors = [bare[k] for k, _, _ in keep]
    for prefix in ("", "\n"):
        # Does reading each stretch alone (after `prefix`) give the tokenizer's own ids?
        normal = _join([_alone(tokenizer, text[a:b], prefix if a else "", False) for a, b in stretches], anchors)
        if normal == bare:
            parts = []
            for a, b in stretches:
                plain = any(a <= s and e <= b for _, s, e in forged)
                ids = _alone(tokenizer, text[a:b], prefix if a else "", plain)
                parts.append([i for i in ids if i not in specials] if plain else ids)
            return _join(parts, anchors)
    # Stretches read alone differ from the whole: replace only the forged tokens.
    plain = {k: [i for i in _alone(tokenizer, text[s:e], "", True) if i not in specials] for k, s, e in forged}
    out = []
    for k, i in enumerate(bare):
        out.extend(plain.get(k, (i,)))
    return out


def shorten(tokenizer, text: str, drop: int) -> str:
    """`text` with `drop` tokens, and as many more as `MARK` costs, taken from its middle
    (head and tail kept). The text is counted as plain text (special-token strings in it
    are several tokens, as `encode` reads them), and the result stays a cuttable piece,
    so decoding a special-token string back cannot make it a real token."""
    ids = plain_ids(tokenizer, text)
    keep = max(len(ids) - drop - len(plain_ids(tokenizer, MARK)), 0)
    if keep == 0:
        return ""
    head, tail = ids[: keep // 2], ids[len(ids) - (keep - keep // 2):]
    return tokenizer.decode(head) + MARK + tokenizer.decode(tail)


def plain_ids(tokenizer, text: str) -> list[int]:
    """Ids of `text` read as plain text, special-token strings included (no BOS/EOS)."""
    return [i for i in _ids(tokenizer, text, True) if i not in special_ids(tokenizer)]


def _alone(tokenizer, piece: str, prefix: str, plain: bool) -> list[int]:
    """Ids of `piece` read on its own, after `prefix` (whose ids are removed)."""
    if not piece:
        return []
    if prefix:
        lead = _ids(tokenizer, prefix, plain)
        ids = _ids(tokenizer, prefix + piece, plain)
        if ids[: len(lead)] == lead:
            return ids[len(lead):]
    return _ids(tokenizer, piece, plain)


def _ids(tokenizer, text: str, plain: bool) -> list[int]:
    if not plain:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    backend = _plain_backend(tokenizer)
    if backend is not None:
        return list(backend.encode(text, add_special_tokens=False).ids)
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def _plain_backend(tokenizer):
    """A private copy of a fast tokenizer's backend that reads special tokens as text
    (None for slow tokenizers)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None or not hasattr(backend, "encode_special_tokens"):
        return None
    with _PLAIN_LOCK:
        try:
            copy = _PLAIN.get(tokenizer)
        except TypeError:  # not weak-referenceable: build a copy each time
            copy = None
        if copy is None:
            copy = type(backend).from_str(backend.to_str())
            copy.encode_special_tokens = True
            # The copy must read ordinary text as the tokenizer does (no Python-side
            # preprocessing in between); else fall back to split_special_tokens=True.
            if copy.encode(_PROBE, add_special_tokens=False).ids != _ids(tokenizer, _PROBE, False):
                copy = False
            try:
                _PLAIN[tokenizer] = copy
            except TypeError:
                pass
        return None if copy is False else copy


def _join(parts: list[list[int]], anchors: list[int]) -> list[int]:
    out = list(parts[0])
    for anchor, part in zip(anchors, parts[1:]):
        out.append(anchor)
        out.extend(part)
    return out


def _wrapping(ids: list[int], bare: list[int]) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds around `bare` (BOS, EOS) in `ids`."""
    for k in range(len(ids) - len(bare) + 1):
        if ids[k:k + len(bare)] == bare:
            return ids[:k], ids[k + len(bare):]
    return [], []


def _overlaps(s: int, e: int, spans: Sequence[Span]) -> bool:
    return any(s < b and a < e for a, b in spans)


def _special_re(tokenizer) -> re.Pattern:
    strings = special_strings(tokenizer)
    return re.compile("|".join(map(re.escape, strings))) if strings else re.compile(r"(?!x)x")
