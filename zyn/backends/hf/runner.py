"""Executes a `CallPlan`: each pass's tensors, the forward pass, the answer log-odds.

    packed   the pass's trie in one row after the cached prefix: (1, S) tokens,
             positions = prefix length + depth, a (1, 1, S, P + S) additive mask
    rows     one right-padded row per trie: (R, W) tokens, (R, 1, W, P + W) mask
    padded   one left-padded row per query, full attention mask, nothing cached;
             seq2seq: right-padded encoder input and one decoder step

The answer is read at each query's last token, through the output layer's answer rows
only where `Paths.head` says that gives the full model's numbers.

Model state changed during a pass, and restored when it ends (the backend's lock keeps
two calls from overlapping): the attention implementation (`attention.blockwise`
switches ``config._attn_implementation`` to zyn's block attention) and the last decoder
layer (`attention.last_layer_at` stands in for it, reading the answer positions only).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch

from ...answers import AnswerIds
from ...scoring import answer_logodds
from .attention import Blocks, blockwise, can_trim, last_layer_at
from .planner import CallPlan, Pass
from .trie import attention_mask


@dataclass(frozen=True)
class Paths:
    """The fast paths a pass may take (each checked once per model, see `checks.py`).

    Attributes:
        head: read the output layer's answer rows only (the transformer body runs alone).
        blockwise: attention block by block over a packed row.
        trim: the last decoder layer at the answer positions only (needs head and blockwise).
    """

    head: bool = False
    blockwise: bool = False
    trim: bool = False


class Runner:
    """Runs passes of one model; keeps the cached prefix of the last call."""

    def __init__(self, model, pad_id: int):
        self.model = model
        self.pad_id = pad_id
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.body = None if self.is_seq2seq else _body(model)
        self.cache_kw = cache_keyword(model)
        # Models without `logits_to_keep` compute every position's logits; only the read ones are kept.
        self.keep_kw = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.prefix = PrefixCache(self)
        # (probe, swaps, kept name) of a kernel swap made from a kept outcome, its logits check not
        # yet run: the first call's checks run it or re-prove it (`checks.check_model`)
        self.unverified_kernels: tuple[list[int], list, str] | None = None
        # (tokens, weights' version, logits) of the kernel check's last plain forward
        self.plain_memo: tuple | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def run(self, plan: CallPlan, ids: AnswerIds, paths: Paths) -> list[float]:
        """Log-odds of every query of `plan`, in the order of its queries."""
        out: list[float | None] = [None] * len(plan.tails)
        for p in plan.passes:
            for q, value in zip(p.queries, self._run_safe(plan, p, ids, paths)):
                out[q] = value
        assert all(v is not None for v in out), "a pass lost a query"
        return out  # type: ignore[return-value]

    def _run_safe(self, plan: CallPlan, p: Pass, ids: AnswerIds, paths: Paths) -> list[float]:
        """Run a pass; on out-of-memory split it in two and run each half. A NaN where
        queries share a row splits it too, down to the queries that give NaN alone: a
        NaN key or value is NaN even where the mask hides it (NaN + -inf is NaN), so one
        query whose activations overflow would take the others of its block with it."""
        try:
            values = self.run_pass(plan, p, ids, paths).tolist()
        except torch.OutOfMemoryError:
            if len(p.queries) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            values = None
        if values is not None and (len(p.queries) == 1 or plan.layout == "padded"
                                   or not any(math.isnan(v) for v in values)):
            return values
        first, second = plan.split(p)
        return self._run_safe(plan, first, ids, paths) + self._run_safe(plan, second, ids, paths)

    def run_pass(self, plan: CallPlan, p: Pass, ids: AnswerIds, paths: Paths) -> torch.Tensor:
        """(Q,) log-odds of one pass's queries, in the pass's order."""
        if plan.layout == "padded":
            seqs = [plan.tails[q] for q in p.queries]
            return self.seq2seq(seqs, ids) if self.is_seq2seq else self.padded(seqs, ids, paths)
        if plan.layout == "packed":
            return self.packed(p, plan.prefix, ids, paths)
        return self.rows(p, plan.prefix, ids, paths)

    # ------------------------------------------------------------------ layouts

    def plain(self, seq: list[int], ids: AnswerIds) -> torch.Tensor:
        """(1,) log-odds of one query by a plain forward of the whole model: the
        reference every other path is checked against."""
        return answer_logodds(self.plain_logits(seq)[None], ids.yes, ids.no)

    def plain_logits(self, seq: list[int]) -> torch.Tensor:
        """(V,) next-token logits after `seq`, one unpadded row through the whole model."""
        x = torch.tensor([seq], device=self.device)
        extra = {}
        if self.is_seq2seq:
            extra["decoder_input_ids"] = torch.full((1, 1), self._decoder_start, device=self.device)
        return self.model(input_ids=x, attention_mask=torch.ones_like(x), **extra).logits[0, -1]

    def seq2seq(self, seqs: list[list[int]], ids: AnswerIds) -> torch.Tensor:
        """Right-padded encoder inputs, one decoder step: (B,) log-odds."""
        input_ids, mask = _pad(seqs, self.pad_id, left=False, device=self.device)
        decoder_ids = torch.full((len(seqs), 1), self._decoder_start, dtype=torch.long, device=self.device)
        logits = self.model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        return answer_logodds(logits[:, -1], ids.yes, ids.no)  # (B, V) -> (B,)

    def padded(self, seqs: list[list[int]], ids: AnswerIds, paths: Paths) -> torch.Tensor:
        """One left-padded row per query, nothing shared: (B,) log-odds."""
        input_ids, mask = _pad(seqs, self.pad_id, left=True, device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = torch.arange(len(seqs), device=self.device)
        last = torch.full((len(seqs),), input_ids.shape[1] - 1, device=self.device)
        return self.read(input_ids, mask, positions, None, rows, last, ids, paths.head)

    def packed(self, p: Pass, prefix: list[int], ids: AnswerIds, paths: Paths) -> torch.Tensor:
        """The pass's trie in one row after the cached prefix: (Q,) log-odds."""
        (tree,) = p.tries
        n, dev = len(prefix), self.device
        input_ids = torch.tensor([tree.tokens], device=dev)  # (1, S)
        positions = torch.tensor([tree.depths], device=dev) + n
        mask = attention_mask(tree.allowed(), n, self.model.dtype)[None, None].to(dev)  # (1, 1, S, n + S)
        ends = torch.tensor(tree.ends, device=dev)
        if not paths.blockwise:
            return self.read(input_ids, mask, positions, self.prefix.get(prefix, 1), torch.zeros_like(ends), ends,
                             ids, paths.head)
        with blockwise(self.model) as switched:
            assert switched, "block attention was checked on this model"
            extra = {"zyn_blocks": Blocks.of(tree.blocks, mask)}
            cache = self.prefix.get(prefix, 1)
            if not paths.trim:
                return self.read(input_ids, mask, positions, cache, torch.zeros_like(ends), ends, ids, paths.head,
                                 **extra)
            keep, where = torch.unique(ends, return_inverse=True)  # the answer positions, each once
            with last_layer_at(self.body, keep):
                hidden = self.body(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                   **{self.cache_kw: cache}, use_cache=True, **extra).last_hidden_state
            return self.answer_head(hidden[0, where], ids)  # hidden: (1, K, D)

    def rows(self, p: Pass, prefix: list[int], ids: AnswerIds, paths: Paths) -> torch.Tensor:
        """One right-padded row per trie after the cached prefix: (Q,) log-odds."""
        trees = p.tries
        width, n, dev = max(len(t) for t in trees), len(prefix), self.device
        input_ids = torch.full((len(trees), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((len(trees), width), dtype=torch.long)
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1)  # padding sees itself
        rows, ends = [], []
        for r, tree in enumerate(trees):
            size = len(tree)
            input_ids[r, :size] = torch.tensor(tree.tokens)
            positions[r, :size] = torch.tensor(tree.depths) + n
            allowed[r, :size, :size] = tree.allowed()
            rows += [r] * len(tree.ends)
            ends += tree.ends
        mask = attention_mask(allowed, n, self.model.dtype)[:, None].to(dev)  # (R, 1, W, n + W)
        return self.read(input_ids.to(dev), mask, positions.to(dev), self.prefix.get(prefix, len(trees)),
                         torch.tensor(rows, device=dev), torch.tensor(ends, device=dev), ids, paths.head)

    # ------------------------------------------------------------------ reading answers

    def read(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache,
             rows: torch.Tensor, cols: torch.Tensor, ids: AnswerIds, head: bool, **extra) -> torch.Tensor:
        """Run the model over new tokens and read the answer log-odds at (rows, cols):
        through the body and the answer rows of the output layer (`head`), or the whole
        model keeping the logits of the read positions only."""
        args = dict(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                    use_cache=cache is not None, **{self.cache_kw: cache}, **extra)
        if head:
            hidden = self.body(**args).last_hidden_state[rows, cols]  # (Q, D)
            return self.answer_head(hidden, ids)
        if self.keep_kw:
            keep = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
            keep[rows, cols] = True
            logits = self.model(**args, logits_to_keep=keep).logits  # (Q, V), row-major order
            flat = rows * input_ids.shape[1] + cols
            logits = logits[torch.argsort(torch.argsort(flat))]
        else:
            logits = self.model(**args).logits[rows, cols]
        return answer_logodds(logits, ids.yes, ids.no)

    def answer_head(self, hidden: torch.Tensor, ids: AnswerIds) -> torch.Tensor:
        """Log-odds from the output layer's answer rows only: (R, D) -> (R,).

        Computed in float32 whatever the model's precision: the rows are few, and bf16
        logits of magnitude ~20 are rounded to steps of 0.125, which would show in the
        log-odds as often as not.
        """
        head = self.model.get_output_embeddings()
        rows = torch.tensor(ids.yes + ids.no, device=hidden.device)
        logits = hidden.float() @ head.weight[rows].float().T  # (R, n_yes + n_no)
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[rows].float()
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        n_yes = len(ids.yes)
        return answer_logodds(logits, range(n_yes), range(n_yes, logits.shape[-1]))

    def can_trim(self) -> bool:
        return self.body is not None and can_trim(self.body)

    @property
    def _decoder_start(self) -> int:
        start = self.model.config.decoder_start_token_id
        return self.pad_id if start is None else start


class PrefixCache:
    """The keys and values of the tokens every query of a call starts with, computed
    once with batch 1 and reused while the next calls start with the same tokens."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.key: tuple[int, ...] | None = None
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def clear(self) -> None:
        self.key, self.layers = None, []

    def get(self, prefix: list[int], n: int):
        """A fresh transformers cache holding `prefix` for `n` rows."""
        from transformers import DynamicCache

        run = self.runner
        cache = DynamicCache(config=run.model.config)
        if not prefix:
            return cache
        if self.key != tuple(prefix):
            x = torch.tensor([prefix], device=run.device)
            out = (run.body or run.model)(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True,
                                          **{run.cache_kw: DynamicCache(config=run.model.config)})
            filled = out.cache if run.cache_kw == "cache" else out.past_key_values
            self.key, self.layers = tuple(prefix), [(layer.keys, layer.values) for layer in filled.layers]
        for layer, (keys, values) in zip(cache.layers, self.layers):
            layer.update(keys.expand(n, -1, -1, -1), values.expand(n, -1, -1, -1))  # (n, Hkv, P, D)
        return cache


def cache_keyword(model) -> str:
    """The name under which `model.forward` takes a KV cache: ``cache`` since
    transformers 5.24 (``past_key_values`` is deprecated there), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_is_plain(model) -> bool:
    """Prefix reuse needs a cache whose layers keep every token (no sliding window
    that would drop the prefix, no recurrent state)."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - a config transformers' cache cannot describe
        return False
    return all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)


def _body(model):
    """The transformer without its output layer (e.g. `model.model`), if it has one."""
    body = getattr(model, "base_model", None)
    if body is None or body is model or model.get_output_embeddings() is None:
        return None
    return body


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
