"""Transformers backend: causal and seq2seq LMs, batched, reading one logit row per query.

Causal LMs run in up to three stages over a key/value cache, so shared tokens are
computed once:

    prefix  tokens every query of the call starts with (chat template, system
            message, template head), run once with batch 1 and reused across calls
    stem    tokens the queries of one sample share beyond the prefix (with a
            text-first template, everything up to the end of the text), run once
            per sample
    leaf    the rest of each query (its question and the answer cue)

The logits are read at the last position of each leaf only (`logits_to_keep=1`).
Leaves are left-padded so that position is the same for every row; positions are
passed explicitly as cumsum(mask) - 1, so padding anywhere in the cache leaves the
numbers equal to a full recomputation. Seq2seq LMs run the encoder over the whole
input and one decoder step from the decoder start token.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from ..answers import AnswerIds, resolve_answer_ids
from ..errors import ZynError
from ..kernels import onednn_is_faster, use_onednn_linears
from ..scoring import answer_logodds
from .base import Query

DEFAULT_MAX_LENGTH = 8192  # longer judge inputs are rarely judged well and cost quadratic memory


@dataclass
class _Item:
    """One group's token ids, split into the three stages."""

    index: int                     # position of the group in the caller's list
    stem: list[int]                # shared by the group's queries, after the prefix
    leaves: list[list[int]]        # one per query, each non-empty

    @property
    def cost(self) -> int:
        return len(self.stem) + sum(len(leaf) for leaf in self.leaves)


class HFBackend:
    """Scores queries with a loaded transformers model.

    Args:
        model: a causal or seq2seq LM (an ``nn.Module`` with ``.config``).
        tokenizer: its tokenizer.
        batch_size: most rows in one forward pass.
        token_budget: most tokens (rows x padded length) in one forward pass.
        max_length: longest input in tokens; longer texts are cut inside the text.
        share_prefix: reuse shared prefixes and stems (causal LMs only).
        fast_kernels: on CPU, compute the linear layers with oneDNN where a measurement
            shows it faster (this changes the model in place, so zyn does it only for
            models it loaded itself unless asked).
    """

    name = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int | None = None, token_budget: int | None = None,
                 max_length: int | None = None, share_prefix: bool = True, fast_kernels: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        on_gpu = self.device.type != "cpu"
        # CPU: 8 rows of ~50 tokens keep a layer's activations in cache and measured
        # fastest (batch scan in benchmarks/RESULTS.md); a GPU wants wide batches.
        self.batch_size = batch_size or (64 if on_gpu else 8)
        self.token_budget = token_budget or (65536 if on_gpu else 4096)
        self.max_length = max_length or _context_length(model, tokenizer)
        self.share_prefix = share_prefix and not self.is_seq2seq and _cache_is_plain(model)
        self.pad_id = _pad_id(tokenizer)
        # Models without `logits_to_keep` compute every position's logits; we still
        # read only the last, but say so in the docs of such models' speed.
        self._keep_kw = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._body = _body(model) if not self.is_seq2seq else None
        self._head_checked: dict[AnswerIds, bool] = {}
        self.kernels = "default"
        if fast_kernels and not on_gpu and onednn_is_faster(self.model.dtype):
            use_onednn_linears(self.model)
            self.kernels = "onednn"
        self.n_truncated = 0           # inputs cut to fit, since the last reset
        self._answer_ids: dict[tuple, AnswerIds] = {}
        self._prefix: tuple[tuple[int, ...], list] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def answer_ids(self, yes: Sequence[str], no: Sequence[str]) -> AnswerIds:
        """The token ids read for these answer words (resolved once, then cached)."""
        key = (tuple(yes), tuple(no))
        if key not in self._answer_ids:
            self._answer_ids[key] = resolve_answer_ids(self.tokenizer, yes, no)
        return self._answer_ids[key]

    # ------------------------------------------------------------------ encoding

    def uses_chat(self, mode: str) -> bool:
        has_template = bool(getattr(self.tokenizer, "chat_template", None)) and not self.is_seq2seq
        if mode == "always" and not has_template:
            raise ZynError("prompt set says chat_template: always, but this model's tokenizer has no chat "
                           "template; set chat_template: auto or never")
        return has_template and mode != "never"

    def format(self, query: Query, user: str | None = None) -> str:
        """The exact string the model reads for `query` (chat template applied or not)."""
        user = query.user if user is None else user
        if self.uses_chat(query.chat):
            messages = [{"role": "system", "content": query.system}] if query.system else []
            messages.append({"role": "user", "content": user})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{query.system}\n\n{user}" if query.system else user

    def _tokenize(self, query: Query, user: str | None = None) -> list[int]:
        # A chat template already writes its special tokens; a plain prompt gets the
        # tokenizer's own (BOS for most causal LMs, EOS for T5's encoder).
        special = not self.uses_chat(query.chat)
        return self.tokenizer(self.format(query, user), add_special_tokens=special)["input_ids"]

    def encode(self, query: Query) -> list[int]:
        """Token ids of a query, cut inside its cuttable text if it exceeds `max_length`."""
        ids = self._tokenize(query)
        if len(ids) <= self.max_length:
            return ids
        self.n_truncated += 1
        segments = list(query.segments)
        for _ in range(4):  # re-tokenising a cut text can merge tokens differently: retry
            over = len(ids) - self.max_length
            cuttable = [i for i, (piece, cut) in enumerate(segments) if cut]
            if over <= 0 or not cuttable:
                break
            longest = max(cuttable, key=lambda i: len(segments[i][0]))
            segments[longest] = (self._shorten(segments[longest][0], over + 2), True)
            ids = self._tokenize(query, "".join(piece for piece, _ in segments))
        # Last resort (nothing cuttable left): keep the end, where question and cue are.
        return ids[-self.max_length:]

    def _shorten(self, text: str, drop: int) -> str:
        """Drop `drop` tokens from the middle of `text`, keeping its head and tail."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        keep = max(len(ids) - drop, 0)
        if keep == 0:
            return ""
        head, tail = ids[: keep // 2], ids[len(ids) - (keep - keep // 2):]
        return self.tokenizer.decode(head) + " … " + self.tokenizer.decode(tail)

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def logodds(self, groups: list[list[Query]], yes: Sequence[str], no: Sequence[str]) -> list[list[float]]:
        ids = self.answer_ids(yes, no)
        encoded = [[self.encode(q) for q in group] for group in groups]
        # Identical groups (same tokens for every question) are scored once.
        unique: dict[tuple, int] = {}
        for g in encoded:
            unique.setdefault(tuple(map(tuple, g)), len(unique))
        keys = list(unique)
        results = self._score_unique([list(map(list, k)) for k in keys], ids)
        return [results[unique[tuple(map(tuple, g))]] for g in encoded]

    def _score_unique(self, groups: list[list[list[int]]], ids: AnswerIds) -> list[list[float]]:
        if self.is_seq2seq:
            flat = [seq for g in groups for seq in g]
            values = self._run_batches([_Item(i, [], [s]) for i, s in enumerate(flat)], [], ids)
            it = iter(v[0] for v in values)
            return [[next(it) for _ in g] for g in groups]
        prefix = _common_prefix([seq for g in groups for seq in g]) if self.share_prefix else []
        items = [_split(i, g, len(prefix), self.share_prefix) for i, g in enumerate(groups)]
        return self._run_batches(items, prefix, ids)

    def _run_batches(self, items: list[_Item], prefix: list[int], ids: AnswerIds) -> list[list[float]]:
        """Score items in length-sorted batches under the token budget; caller's order out."""
        out: list[list[float] | None] = [None] * len(items)
        # Longest first: an out-of-memory error shows at once, time estimates err high.
        order = sorted(items, key=lambda it: it.cost, reverse=True)
        for batch in _budget_batches(order, self.batch_size, self.token_budget):
            for item, values in zip(batch, self._forward_safe(batch, prefix, ids)):
                out[item.index] = values
        assert all(v is not None for v in out), "a batch lost an item"
        return out  # type: ignore[return-value]

    def _forward_safe(self, batch: list[_Item], prefix: list[int], ids: AnswerIds) -> list[list[float]]:
        """Forward a batch; on out-of-memory split it in two and retry each half."""
        try:
            return self._forward(batch, prefix, ids)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(batch) // 2
            return self._forward_safe(batch[:half], prefix, ids) + self._forward_safe(batch[half:], prefix, ids)

    def _forward(self, batch: list[_Item], prefix: list[int], ids: AnswerIds) -> list[list[float]]:
        if self.is_seq2seq:
            logits = self._seq2seq_logits([item.leaves[0] for item in batch])
            return [[v] for v in answer_logodds(logits, ids.yes, ids.no).tolist()]
        values = iter(self._causal_logodds(batch, prefix, ids).tolist())  # (sum of leaves,)
        return [[next(values) for _ in item.leaves] for item in batch]

    def _seq2seq_logits(self, seqs: list[list[int]]) -> torch.Tensor:
        input_ids, mask = _pad(seqs, self.pad_id, left=False, device=self.device)
        start = self.model.config.decoder_start_token_id
        if start is None:
            start = self.pad_id
        decoder_ids = torch.full((len(seqs), 1), start, dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_ids)
        return out.logits[:, -1]  # (B, V)

    def _causal_logodds(self, batch: list[_Item], prefix: list[int], ids: AnswerIds) -> torch.Tensor:
        n = len(batch)
        cache, mask = self._prefix_cache(prefix, n)  # mask: (B, p)
        if any(item.stem for item in batch):
            stems, stem_mask = _pad([item.stem for item in batch], self.pad_id, left=True, device=self.device)
            mask = torch.cat([mask, stem_mask], dim=1)
            cache = self._step(stems, mask, cache).past_key_values
        k = len(batch[0].leaves)
        if k > 1:
            # Every group of one call has one query per question, so k is uniform.
            cache.batch_repeat_interleave(k)
            mask = mask.repeat_interleave(k, dim=0)
        leaves, leaf_mask = _pad([leaf for item in batch for leaf in item.leaves], self.pad_id,
                                 left=True, device=self.device)
        mask = torch.cat([mask, leaf_mask], dim=1)
        if self._head_ok(ids):
            hidden = self._step(leaves, mask, cache).last_hidden_state[:, -1]  # (R, D)
            return self._answer_head(hidden, ids)
        logits = self._step(leaves, mask, cache, logits=True).logits[:, -1]  # (R, V)
        return answer_logodds(logits, ids.yes, ids.no)

    def _step(self, input_ids: torch.Tensor, mask: torch.Tensor, cache, logits: bool = False):
        """One forward over new tokens, given the full attention mask (past + new).

        Without `logits` only the transformer body runs (hidden states and cache), and
        the output layer's 100k+ vocabulary rows are not computed at all.
        """
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        args = dict(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True)
        if not logits and self._body is not None:
            return self._body(**args)
        return self.model(**args, **({"logits_to_keep": 1} if self._keep_kw else {}))

    def _answer_head(self, hidden: torch.Tensor, ids: AnswerIds) -> torch.Tensor:
        """Log-odds from the output layer's answer rows only: (R, D) -> (R,)."""
        head = self.model.get_output_embeddings()
        rows = torch.tensor(ids.yes + ids.no, device=hidden.device)
        logits = hidden @ head.weight[rows].T  # (R, n_yes + n_no)
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[rows]
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        n_yes = len(ids.yes)
        return answer_logodds(logits, range(n_yes), range(n_yes, logits.shape[-1]))

    def _head_ok(self, ids: AnswerIds) -> bool:
        """Whether reading only the answer rows gives the full model's numbers (checked
        once per answer set on a short input, since some models rescale their logits)."""
        if self._body is None:
            return False
        if ids not in self._head_checked:
            probe = self.tokenizer("Is this sentence a question? Answer:", add_special_tokens=True)["input_ids"]
            x = torch.tensor([probe], device=self.device)
            mask = torch.ones_like(x)
            full = answer_logodds(self._step(x, mask, None, logits=True).logits[:, -1], ids.yes, ids.no)
            fast = self._answer_head(self._step(x, mask, None).last_hidden_state[:, -1], ids)
            self._head_checked[ids] = bool(torch.allclose(full, fast, atol=1e-3, rtol=1e-3))
        return self._head_checked[ids]

    def _prefix_cache(self, prefix: list[int], n: int):
        """A fresh cache holding the shared prefix for `n` rows, and its mask."""
        from transformers import DynamicCache

        mask = torch.ones((n, len(prefix)), dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)
        if not prefix:
            return cache, mask
        key = tuple(prefix)
        if self._prefix is None or self._prefix[0] != key:
            ids = torch.tensor([prefix], device=self.device)
            out = self._step(ids, mask[:1], DynamicCache(config=self.model.config))
            layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            self._prefix = (key, layers)
        for layer, (keys, values) in zip(cache.layers, self._prefix[1]):
            layer.update(keys.expand(n, -1, -1, -1), values.expand(n, -1, -1, -1))
        return cache, mask


# ---------------------------------------------------------------------- helpers

def _context_length(model, tokenizer) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None),
              getattr(model.config, "n_positions", None)]
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 10**9:
        limits.append(tok_max)
    return min(limits + [DEFAULT_MAX_LENGTH])


def _body(model):
    """The transformer without its output layer (e.g. `model.model`), if it has one."""
    body = getattr(model, "base_model", None)
    if body is None or body is model or model.get_output_embeddings() is None:
        return None
    return body


def _cache_is_plain(model) -> bool:
    """Prefix reuse needs a cache whose layers keep every token (no sliding window
    that would drop the prefix, no recurrent state)."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


def _pad(seqs: list[list[int]], pad_id: int, *, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask, padded on the left or the right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if not seq:
            continue
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    """Longest common prefix, leaving at least one token of every sequence after it."""
    if not seqs:
        return []
    shortest = min(len(s) for s in seqs)
    n = 0
    first = seqs[0]
    while n < shortest - 1 and all(s[n] == first[n] for s in seqs):
        n += 1
    return first[:n]


def _split(index: int, group: list[list[int]], p: int, share: bool) -> _Item:
    rest = [seq[p:] for seq in group]
    if not share or len(rest) == 1:
        return _Item(index, [], rest)
    s = len(_common_prefix(rest))
    return _Item(index, rest[0][:s], [r[s:] for r in rest])


def _budget_batches(items: list[_Item], max_groups: int, budget: int):
    """Cut a length-sorted list into batches of at most `max_groups` samples whose padded
    size (samples x longest stem + queries x longest leaf) stays within `budget` tokens;
    one item always fits. Counting samples, not queries, keeps the shared stem pass of
    an ensemble as wide as a single question's pass."""
    batch: list[_Item] = []
    stem_w = leaf_w = 0
    for item in items:
        item_leaf = max(len(leaf) for leaf in item.leaves)
        stem, leaf = max(stem_w, len(item.stem)), max(leaf_w, item_leaf)
        n = len(batch) + 1
        if batch and (n > max_groups or n * (stem + len(item.leaves) * leaf) > budget):
            yield batch
            batch, stem, leaf = [], len(item.stem), item_leaf
        batch.append(item)
        stem_w, leaf_w = stem, leaf
    if batch:
        yield batch
