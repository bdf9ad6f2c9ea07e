"""Transformers backend: causal and seq2seq LMs, batched, reading one logit row per query.

Causal LMs never compute a token twice within a call, and never compute padding:

    prefix  tokens every query of the call starts with (chat template, system
            message, template head), run once with batch 1 and reused across calls
    tree    the rest of each query; queries that start alike (an ensemble's questions
            after one text, completions of one prompt) share those tokens in a trie,
            packed into one row with a mask that lets each token see the prefix, its
            ancestors and itself (one padded row per block on a GPU)

The answer is read at each query's last token, through the output layer's answer
rows only. Positions are passed explicitly (prefix length + depth in the trie), so
the numbers equal a plain forward of each query alone. Seq2seq LMs, and causal ones
with ``layout="padded"`` (the reference path), run length-sorted padded batches.

The package, one concept a module:

    backend    HFBackend: encoding (chat template, cutting long texts), the public API
    planner    a call's layout, decided once, and each pass's trie, built once
    runner     executes a plan: packed row, padded rows, seq2seq; the prefix cache
    trie       token tries: pure layout
    attention  attention per block of a packed row; the last layer at the answers only
    kernels    oneDNN linears and fused norms for CPUs where they are faster
    checks     which fast paths reproduce a plain forward of this model (once per model)
    precision  device and dtype choice, "fast" measured

Changes to the model, all stated here: with ``fast_kernels`` the backend swaps CPU
kernels into the model once, at construction, and keeps them only if the model's
logits stay the same (`checks.use_fast_kernels`). During a pass it switches the
attention implementation and stands in for the last decoder layer, restoring both
when the pass ends (`runner`); a lock per model keeps calls from overlapping, so
backends may be called from several threads. After the first call's checks, the output
layer's pages read from a memory-mapped checkpoint are released when only its answer
rows are read from then on (`kernels.release_file_pages`; clean pages, read back if
touched).
"""
from __future__ import annotations

import threading
import weakref
from typing import Sequence

import torch

from ...answers import AnswerIds, resolve_answer_ids
from ...api import LogOdds, Query
from ...errors import ZynError
from .checks import Along, Checked, check_head, check_model, probe_queries, use_fast_kernels
from ..tokens import caller_spans, encode, fit, shorten
from .kernels import OneDNNLinear, onednn_is_faster, release_file_pages
from .planner import LAYOUTS, CallPlan, plan_call
from .runner import Paths, Runner, cache_is_plain

DEFAULT_MAX_LENGTH = 8192  # longer judge inputs are rarely judged well and cost quadratic memory
# One lock per model, shared by every backend on it: a pass switches the model's
# attention and last layer, which another backend's pass must not see.
_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


class HFBackend:
    """Scores queries with a loaded transformers model.

    Args:
        model: a causal or seq2seq LM (an ``nn.Module`` with ``.config``).
        tokenizer: its tokenizer.
        batch_size: most queries in one forward pass (rows, where rows are padded).
        token_budget: most tokens in one forward pass (rows x padded length where
            rows are padded).
        max_length: longest input in tokens; longer texts are cut inside the text.
        layout: "packed" (default on CPU), "rows" (default on a GPU) or "padded": see
            `planner`. Seq2seq models, and causal ones whose cache drops tokens
            (sliding windows), always run "padded".
        share_prefix: False is ``layout="padded"``, the reference path.
        pack: older spelling of the layout: True "packed", False "rows".
        trim_last_layer: run the last decoder layer at the answer positions only
            (packed layout). None: where the check shows it exact; False: never;
            True: required (a call raises if the check fails).
        answer_rows: read the output layer's answer rows only. None: where the check
            shows it exact (per answer set); False: always the full output layer.
        fast_kernels: on CPU, RMSNorms as one fused op and linear layers computed by
            oneDNN where a measurement shows it faster ("always": without measuring).
            This changes the model in place, so zyn does it only for models it loaded
            itself unless asked.
    """

    name = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int | None = None, token_budget: int | None = None,
                 max_length: int | None = None, layout: str | None = None, share_prefix: bool = True,
                 pack: bool | None = None, trim_last_layer: bool | None = None, answer_rows: bool | None = None,
                 fast_kernels: bool | str = False):
        for name, value in (("batch_size", batch_size), ("token_budget", token_budget), ("max_length", max_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ZynError(f"{name}: expected a positive whole number, got {value!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.runner = Runner(self.model, _pad_id(tokenizer))
        self.is_seq2seq = self.runner.is_seq2seq
        on_gpu = self.device.type != "cpu"
        # CPU: ~512 packed tokens per pass measured fastest (budget scan in
        # benchmarks/RESULTS.md): larger passes gain nothing in the products and lose
        # cache locality. A GPU wants wide batches.
        self.batch_size = batch_size or 64
        self.token_budget = token_budget or (65536 if on_gpu else 512)
        positions = _positions(model)
        if max_length and positions and max_length > positions:
            raise ZynError(f"max_length: {max_length} is beyond the model's {positions} positions; give at most "
                           f"{positions} (or leave it out: the model's context)")
        self.max_length = max_length or _context_length(model, tokenizer)
        self.layout = _layout(layout, share_prefix, pack, on_gpu, self.is_seq2seq or not cache_is_plain(model))
        self.trim_last_layer = trim_last_layer
        self.answer_rows = answer_rows
        self._answer_ids: dict[tuple, AnswerIds] = {}
        self._checked: Checked | None = None
        self._lock = model_lock(self.model)
        self.kernels = "default"
        if fast_kernels and not on_gpu:
            onednn = fast_kernels == "always" or onednn_is_faster(self.model.dtype)
            with self._lock, torch.no_grad():
                self.kernels = use_fast_kernels(self.runner, probe_queries(tokenizer)[0], onednn)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]  # a lock does not pickle; the copy's model gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = model_lock(self.model)

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def share_prefix(self) -> bool:
        """Whether calls are asked to share tokens (the layout is not "padded")."""
        return self.layout != "padded"

    def answer_ids(self, yes: Sequence[str], no: Sequence[str]) -> AnswerIds:
        """The token ids read for these answer words (resolved once, then cached)."""
        key = (tuple(yes), tuple(no))
        if key not in self._answer_ids:
            self._answer_ids[key] = resolve_answer_ids(self.tokenizer, yes, no)
        return self._answer_ids[key]

    def fast_paths(self, yes: Sequence[str], no: Sequence[str]) -> dict:
        """What a call with these answers runs: the layout, and which fast paths the
        checks allowed (running them now if no call has yet)."""
        with self._lock:
            ids = self.answer_ids(yes, no)
            checked = self._check(ids)
            paths = self._paths(ids)
            return {"layout": checked.layout, "padding": checked.padding, "kernels": self.kernels,
                    "head": paths.head, "blockwise": paths.blockwise, "trim": paths.trim}

    def clear_prefix_cache(self) -> None:
        """Forget the cached prefix: the next call computes it again."""
        with self._lock:
            self.runner.prefix.clear()

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
        # tokenizer's own (BOS for most causal LMs, EOS for T5's encoder). Special-token
        # strings in the user message are read as plain text (`zyn.backends.tokens`).
        user = query.user if user is None else user
        text = self.format(query, user)
        spans = caller_spans(text, user, lambda other: self.format(query, other))
        return encode(self.tokenizer, text, spans, add_special_tokens=not self.uses_chat(query.chat))

    def encode(self, query: Query) -> list[int]:
        """Token ids of a query, cut inside its cuttable text if it exceeds `max_length`."""
        return self._encode(query)[0]

    def _encode(self, query: Query) -> tuple[list[int], bool]:
        """`encode`, and whether the query had to be cut."""
        return fit(query, self._tokenize, self._shorten, self.max_length)

    def _shorten(self, text: str, drop: int) -> str:
        """`shorten` of the tokenizer: `drop` tokens and the marker's cost out of the middle of `text`."""
        return shorten(self.tokenizer, text, drop)

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def logodds(self, groups: list[list[Query]], yes: Sequence[str], no: Sequence[str]) -> LogOdds:
        with self._lock:  # one call's passes at a time: they use the prefix cache and switch model state
            ids = self.answer_ids(yes, no)
            # Every query of every group, identical token lists scored once.
            unique: dict[tuple[int, ...], int] = {}
            slots, truncated = [], 0
            for group in groups:
                row = []
                for q in group:
                    seq, cut = self._encode(q)
                    truncated += cut
                    row.append(unique.setdefault(tuple(seq), len(unique)))
                slots.append(row)
            values = self._score_unique([list(seq) for seq in unique], ids)
        return LogOdds([[values[k] for k in row] for row in slots], truncated, self.max_length)

    def plan(self, seqs: list[list[int]], yes: Sequence[str], no: Sequence[str]) -> CallPlan:
        """The passes a call scoring these token lists runs (see `planner`)."""
        with self._lock:
            return self._plan(seqs, self._check(self.answer_ids(yes, no)))

    def _plan(self, seqs: list[list[int]], checked: Checked) -> CallPlan:
        # where padding changes a model's numbers, padded batches hold one query each
        rows = self.batch_size if checked.padding or checked.layout != "padded" else 1
        cached = list(self.runner.prefix.key) if self.runner.prefix.key is not None else []
        return plan_call(seqs, checked.layout, self.token_budget, rows, cached=cached)

    def _score_unique(self, seqs: list[list[int]], ids: AnswerIds) -> list[float]:
        """Log-odds of each distinct query, in the order given."""
        if not seqs:
            return []
        # the first call rides along the checks' fingerprint pass where it fits
        along = Along(seqs, self.token_budget, self.batch_size) \
            if self._checked is None and self.answer_rows is not False else None
        checked = self._check(ids, along)
        if along is not None and along.values is not None:
            return along.values
        return self.runner.run(self._plan(seqs, checked), ids, self._paths(ids))

    @torch.inference_mode()
    def _check(self, ids: AnswerIds, along: Along | None = None) -> Checked:
        """The checks' results, run once per model (and the head once per answer set)."""
        if self._checked is None:
            probe = probe_queries(self.tokenizer)
            self._checked = check_model(self.runner, probe, ids, self.layout,
                                        blockwise=self.model.config._attn_implementation == "sdpa",
                                        trim=self.trim_last_layer, along=along)
            if self.kernels == "onednn" and not any(isinstance(m, OneDNNLinear) for m in self.model.modules()):
                self.kernels = "default"  # a kept swap failed its deferred check and was undone
            self._after_head_check(ids)
        if ids not in self._checked.head:
            self._checked.head[ids] = check_head(self.runner, probe_queries(self.tokenizer)[0], ids)
            self._after_head_check(ids)
        if self.trim_last_layer and not self._checked.paths(ids).trim:
            raise ZynError("trim_last_layer=True, but running the last layer at the answers only does not "
                           "reproduce this model's numbers (or the layout is not packed); leave it None")
        return self._checked

    def _paths(self, ids: AnswerIds) -> Paths:
        paths = self._checked.paths(ids)
        if self.answer_rows is False:
            return Paths(blockwise=paths.blockwise)
        return paths

    def _after_head_check(self, ids: AnswerIds) -> None:
        """The check read the whole output layer (a 0.5B model's 151k x 896 embedding:
        0.5 GB of a checkpoint-mapped file); where only its answer rows are read from
        now on, those pages are released."""
        if self._checked.head[ids] and self.answer_rows is not False:
            release_file_pages(self.model.get_output_embeddings().weight)


# ---------------------------------------------------------------------- helpers

def model_lock(model) -> threading.RLock:
    """The lock that every backend on `model` holds while it runs a call."""
    with _LOCKS_LOCK:
        if model not in _LOCKS:
            _LOCKS[model] = threading.RLock()
        return _LOCKS[model]


def _layout(layout: str | None, share_prefix: bool, pack: bool | None, on_gpu: bool, padded_only: bool) -> str:
    """The layout asked for (see HFBackend's arguments)."""
    if layout is None:
        layout = ("rows" if on_gpu else "packed") if pack is None else ("packed" if pack else "rows")
    if layout not in LAYOUTS:
        raise ZynError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return "padded" if padded_only or not share_prefix else layout


def _positions(model) -> int | None:
    """The most positions the model has embeddings for; None where it has no such limit (T5)."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(model.config, "n_positions", None)]
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else None


def _context_length(model, tokenizer) -> int:
    positions = _positions(model)
    limits = [positions] if positions else []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 10**9:
        limits.append(tok_max)
    return min(limits + [DEFAULT_MAX_LENGTH])


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


