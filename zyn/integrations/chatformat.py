"""The policy's chat markup, so a judge can read what the policy was asked and answered.

Trainers such as OpenRLHF hand the reward the policy's raw text: the prompt after its
chat template and the response decoded with special tokens kept, e.g. ::

    <|im_start|>user\\nReview a film.<|im_end|>\\n<|im_start|>assistant\\nA gem.<|im_end|>

`ChatFormat` knows where turns open and close in such text, and `split_query` turns it
into a zyn record (``{"messages": [...]}``, or ``{"prompt", "completion"}`` when there
is no chat markup), so the judge sees plain turns in its own chat template.

A format is named ("chatml", "llama3", "gemma", "none"), or read off a tokenizer's own
chat template (`ChatFormat.from_tokenizer`), or guessed from the markers in the text.
"""
from __future__ import annotations

import re
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

from ..errors import ZynError

# Begin- and end-of-sequence tokens common enough that even "none" removes them (and
# cuts a response at the end ones).
COMMON_BEGINS = ("<s>", "<|begin_of_text|>", "<bos>")
COMMON_ENDS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>")


@dataclass(frozen=True)
class ChatFormat:
    """Where turns open and close in a chat-templated text.

    Attributes:
        name: for messages and logs.
        openers: (markup that opens a turn, role) pairs, e.g. ("<|im_start|>user\\n", "user").
        closers: markup that ends a turn (end-of-turn and end-of-sequence tokens); a
            turn's content stops at the first one.
        specials: other special tokens, removed wherever they appear.
    """

    name: str
    openers: tuple[tuple[str, str], ...] = ()
    closers: tuple[str, ...] = ()
    specials: tuple[str, ...] = ()
    _pattern: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        markups = sorted((o for o, _ in self.openers if o), key=len, reverse=True)  # longest first
        pattern = re.compile("|".join(map(re.escape, markups))) if markups else None
        object.__setattr__(self, "_pattern", pattern)

    def turns(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """(the text before the first turn, [(role, content), ...]) of chat-templated text.

        >>> CHATML.turns("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello<|im_end|>")
        ('', [('user', 'Hi'), ('assistant', 'Hello')])
        """
        matches = list(self._pattern.finditer(text)) if self._pattern else []
        if not matches:
            return text, []
        roles = dict(self.openers)
        ends = [m.start() for m in matches[1:]] + [len(text)]
        return text[:matches[0].start()], [(roles[m.group()], self.content(text[m.end():end]))
                                           for m, end in zip(matches, ends)]

    def content(self, text: str, strip: bool = True) -> str:
        """One turn's text: up to its first closer, special tokens removed, edges
        trimmed (unless `strip` is False).

        >>> CHATML.content("A gem.<|im_end|>\\n<|endoftext|>")
        'A gem.'
        """
        cut = min((i for i in (text.find(c) for c in self.closers if c) if i >= 0), default=len(text))
        return self.clean(text[:cut], strip)

    def clean(self, text: str, strip: bool = True) -> str:
        """`text` without any of this format's markup, edges trimmed (unless `strip` is False)."""
        for markup in sorted({*self.specials, *self.closers, *(o for o, _ in self.openers)}, key=len, reverse=True):
            if markup:
                text = text.replace(markup, "")
        return text.strip() if strip else text

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "ChatFormat":
        """The format of a tokenizer's chat template, read off renderings of sample chats.

        Sentinel turns are rendered and the markup around them kept: what precedes the
        first user turn's text opens a user turn, what follows it closes one, and so on
        for assistant and system turns; the generation prompt opens an assistant turn.
        A template that refuses one of the sample chats leaves that role out.
        """
        specials = tuple(sorted(_special_tokens(tokenizer), key=len, reverse=True))
        if not getattr(tokenizer, "chat_template", None):
            return cls("tokenizer (no chat template)", closers=tuple(_ends(tokenizer)), specials=specials)
        u, a, v, s = "zynUserSentinel", "zynAssistantSentinel", "zynSecondSentinel", "zynSystemSentinel"
        user, assistant = {"role": "user", "content": u}, {"role": "assistant", "content": a}

        def render(messages, generation=False) -> str:
            try:
                return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            except Exception:  # a template may refuse a chat shape (roles must alternate, ...)
                return ""

        one, one_gen = render([user]), render([user], True)
        two = render([user, assistant])
        three = render([user, assistant, {"role": "user", "content": v}])
        system = render([{"role": "system", "content": s}, user])
        user_close = _between(one, u, None)
        assistant_close = _between(two, a, None)
        openers = {
            "assistant": [one_gen[len(one):] if one and one_gen.startswith(one) else "",
                          _strip_prefix(_between(two, u, a), user_close)],
            "user": [_between(three, a + (assistant_close or ""), v)],
            "system": [_strip_prefix(_between(system, None, s), getattr(tokenizer, "bos_token", None) or "")],
        }
        seen: set[str] = set()
        pairs = []
        for role in ("user", "assistant", "system"):  # a system opener equal to the user's is a folded system
            for markup in openers[role]:
                if markup and markup.strip() and markup not in seen:
                    seen.add(markup)
                    pairs.append((markup, role))
        closers = [c.strip() for c in (user_close, assistant_close) if c and c.strip()] + _ends(tokenizer)
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        return cls(f"tokenizer {name}", tuple(pairs), tuple(dict.fromkeys(closers)), specials)


CHATML = ChatFormat("chatml", (("<|im_start|>system\n", "system"), ("<|im_start|>user\n", "user"),
                               ("<|im_start|>assistant\n", "assistant"), ("<|im_start|>tool\n", "tool")),
                    ("<|im_end|>", "<|endoftext|>"), ("<|im_start|>",))
LLAMA3 = ChatFormat("llama3", tuple((f"<|start_header_id|>{r}<|end_header_id|>\n\n", role) for r, role in
                                    (("system", "system"), ("user", "user"), ("assistant", "assistant"),
                                     ("ipython", "tool"))),
                    ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
                    ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>"))
GEMMA = ChatFormat("gemma", (("<start_of_turn>user\n", "user"), ("<start_of_turn>model\n", "assistant"),
                             ("<start_of_turn>system\n", "system")),
                   ("<end_of_turn>", "<eos>"), ("<bos>", "<pad>", "<start_of_turn>"))
NONE = ChatFormat("none", closers=COMMON_ENDS, specials=COMMON_BEGINS)
FORMATS = {f.name: f for f in (CHATML, LLAMA3, GEMMA, NONE)}
# the marker that gives each named format away, for chat_format=None
_TELLS = (("<|im_start|>", CHATML), ("<|start_header_id|>", LLAMA3), ("<start_of_turn>", GEMMA))
_from_tokenizers: "weakref.WeakKeyDictionary[Any, ChatFormat]" = weakref.WeakKeyDictionary()


def _warn_if_foreign(fmt: ChatFormat, text: str) -> None:
    """Warn (once per process: a warning's place) where a named format was chosen and the
    text has none of its turns but another named format's markers: the judge would read
    the policy's chat markup as text."""
    if fmt.name not in FORMATS or fmt is NONE or (fmt._pattern and fmt._pattern.search(text)):
        return
    other = next((f for tell, f in _TELLS if f is not fmt and tell in text), None)
    if other is not None:
        warnings.warn(f"zyn: chat format {fmt.name!r} was chosen, but the policy's text has none of its turns and "
                      f"has {other.name}'s markers; the judge reads that markup as text. Set the policy's format "
                      f"(ZYN_CHAT_FORMAT={other.name}, --policy-chat-format {other.name}, or auto)", UserWarning,
                      stacklevel=3)


def resolve_chat_format(spec: Any = None, text: str = "") -> ChatFormat:
    """A `ChatFormat` from a name, a tokenizer (cached per tokenizer), a ChatFormat, or
    None (guessed from `text`: the first named format whose markers it contains, else "none").

    >>> resolve_chat_format("chatml").name, resolve_chat_format(None, "<start_of_turn>user\\nHi").name
    ('chatml', 'gemma')
    >>> resolve_chat_format().name
    'none'
    """
    if isinstance(spec, ChatFormat):
        return spec
    if spec is None or spec == "auto":
        return next((fmt for tell, fmt in _TELLS if tell in text), NONE)
    if isinstance(spec, str):
        try:
            return FORMATS[spec.lower()]
        except KeyError:
            raise ZynError(f"chat format {spec!r} is not known; use one of {', '.join(FORMATS)}, 'auto', "
                           "or pass the policy's tokenizer") from None
    if not hasattr(spec, "apply_chat_template"):
        raise ZynError(f"chat_format: expected a name, a tokenizer or a ChatFormat, got {type(spec).__name__}")
    try:
        found = _from_tokenizers.get(spec)
    except TypeError:  # not weak-referenceable: derive each time
        return ChatFormat.from_tokenizer(spec)
    if found is None:
        found = _from_tokenizers[spec] = ChatFormat.from_tokenizer(spec)
    return found


def split_query(query: str, prompt: str | None = None, chat_format: Any = None) -> dict:
    """The policy's prompt and response as a zyn record, its chat markup and special tokens gone.

    Args:
        query: the policy's text, prompt + response, decoded with special tokens kept
            (OpenRLHF's ``query``).
        prompt: the templated prompt (OpenRLHF's ``prompts`` entry); when `query` starts
            with it, the rest is the response. Else the last assistant turn is.
        chat_format: the policy's chat format: a name ("chatml", "llama3", "gemma",
            "none"), its tokenizer, a `ChatFormat`, or None to guess from the markers.

    Returns:
        ``{"messages": [...turns, {"role": "assistant", "content": response}]}`` when the
        prompt has chat turns; ``{"prompt": ..., "completion": ...}`` when it has none
        (the whitespace where the two meet kept, so that the judge reads prompt +
        completion as the policy wrote it); ``{"text": ...}`` when no response can be
        told apart.

    >>> split_query("<|im_start|>user\\nReview a film.<|im_end|>\\n<|im_start|>assistant\\nA gem.<|im_end|>")
    {'messages': [{'role': 'user', 'content': 'Review a film.'}, {'role': 'assistant', 'content': 'A gem.'}]}
    >>> split_query("Review: A gem.</s>", "Review: ", "none")
    {'prompt': 'Review: ', 'completion': 'A gem.'}
    >>> split_query("I loved this movie, it", "I loved this", "none")
    {'prompt': 'I loved this', 'completion': ' movie, it'}
    """
    fmt = resolve_chat_format(chat_format, query)
    _warn_if_foreign(fmt, query)
    if prompt and query.startswith(prompt):
        preamble, turns = fmt.turns(prompt)
        if turns and turns[-1] == ("assistant", ""):  # the generation prompt that opened the response
            turns.pop()
        response = query[len(prompt):]
        if not turns:  # plain text: the prompt runs on into the response, seam kept
            return {"prompt": fmt.clean(preamble, strip=False).lstrip(),
                    "completion": fmt.content(response, strip=False).rstrip()}
        completion = fmt.content(response)
    else:
        preamble, turns = fmt.turns(query)
        if not turns or turns[-1][0] != "assistant":
            return {"text": fmt.clean(query)}
        completion = turns.pop()[1]
    before = fmt.clean(preamble)
    if not turns:
        return {"prompt": before, "completion": completion}
    messages = [{"role": "system", "content": before}] if before else []
    messages += [{"role": role, "content": text} for role, text in turns]
    return {"messages": messages + [{"role": "assistant", "content": completion}]}


def _between(text: str, start: str | None, end: str | None) -> str:
    """The text after `start` (or from the beginning) up to `end` (or the end); "" if absent."""
    if not text or (start is not None and start not in text) or (end is not None and end not in text):
        return ""
    i = text.index(start) + len(start) if start is not None else 0
    j = text.index(end, i) if end is not None else len(text)
    return text[i:j] if j >= i else ""


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _special_tokens(tokenizer: Any) -> set[str]:
    found = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(str(token))
    return {t for t in found if t}


def _ends(tokenizer: Any) -> list[str]:
    eos = getattr(tokenizer, "eos_token", None)
    return [eos] if eos else []
