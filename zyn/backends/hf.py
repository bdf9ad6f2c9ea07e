"""Transformers backend: causal and seq2seq LMs, batched, reading one logit row per query.

Causal LMs never compute a token twice within a call, and never compute padding:

    prefix  tokens every query of the call starts with (chat template, system
            message, template head), run once with batch 1 and reused across calls
    tree    the rest of each query; queries that start alike (an ensemble's questions
            after one text, completions of one prompt) share those tokens in a trie
            (`zyn.packing`), packed into one row with a mask that lets each token see
            the prefix, its ancestors and itself

The answer is read at each query's last token, through the output layer's answer
rows only. Positions are passed explicitly (prefix length + depth in the trie), so
the numbers equal a full recomputation of each query alone. On a GPU the tree is laid
out one padded row per block instead (wide batched products beat packing there).
Seq2seq LMs, and causal ones with `share_prefix=False` (the reference path), run
length-sorted padded batches: the encoder over the whole input and one decoder step.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch

from ..answers import AnswerIds, resolve_answer_ids
from ..attention import Blocks, blockwise, can_trim, last_layer_at
from ..errors import ZynError
from ..kernels import onednn_is_faster, release_file_pages, use_fused_norms, use_onednn_linears
from ..packing import attention_mask, common_prefix_len, pack, plan, plan_rows
from ..scoring import answer_logodds
from ..api import LogOdds, Query

DEFAULT_MAX_LENGTH = 8192  # longer judge inputs are rarely judged well and cost quadratic memory
# Queries merge into one block of the token trie only when they share at least this
# many tokens (after the call's common prefix): texts that merely start with the same
# word would otherwise make one big block, whose attention costs more than the word.
MIN_SHARED = 8


class HFBackend:
    """Scores queries with a loaded transformers model.

    Args:
        model: a causal or seq2seq LM (an ``nn.Module`` with ``.config``).
        tokenizer: its tokenizer.
        batch_size: most queries in one forward pass (rows, where rows are padded).
        token_budget: most tokens in one forward pass (rows x padded length where
            rows are padded).
        max_length: longest input in tokens; longer texts are cut inside the text.
        share_prefix: compute tokens that queries share once (causal LMs only); False
            gives the plain padded path, the reference the shared one is checked against.
        pack: lay the tokens of a forward pass out as one packed row (no padding);
            default on CPU. On a GPU one padded row per block of queries is faster.
        fast_kernels: on CPU, compute the linear layers with oneDNN where a measurement
            shows it faster, and RMSNorms as one fused op (this changes the model in
            place, so zyn does it only for models it loaded itself unless asked).
    """

    name = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int | None = None, token_budget: int | None = None,
                 max_length: int | None = None, share_prefix: bool = True, pack: bool | None = None,
                 fast_kernels: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        on_gpu = self.device.type != "cpu"
        # CPU: ~512 packed tokens per pass measured fastest (budget scan in
        # benchmarks/RESULTS.md): larger passes gain nothing in the products and lose
        # cache locality. A GPU wants wide batches.
        self.batch_size = batch_size or 64
        self.token_budget = token_budget or (65536 if on_gpu else 512)
        self.pack = (not on_gpu) if pack is None else bool(pack)
        self.max_length = max_length or _context_length(model, tokenizer)
        self.share_prefix = share_prefix and not self.is_seq2seq and _cache_is_plain(model)
        self.pad_id = _pad_id(tokenizer)
        # Models without `logits_to_keep` compute every position's logits; we still
        # read only the last, but say so in the docs of such models' speed.
        self._keep_kw = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._cache_kw = cache_keyword(model)
        self._body = _body(model) if not self.is_seq2seq else None
        self._head_checked: dict[AnswerIds, bool] = {}
        self.kernels = "default"
        if fast_kernels and not on_gpu:
            use_fused_norms(self.model)
            if onednn_is_faster(self.model.dtype):
                use_onednn_linears(self.model)
                self.kernels = "onednn"
        self._answer_ids: dict[tuple, AnswerIds] = {}
        self._prefix: tuple[tuple[int, ...], list] | None = None
        self._trim: bool | None = None  # last layer at the answers only: unchecked, fits, does not

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
        return self._encode(query)[0]

    def _encode(self, query: Query) -> tuple[list[int], bool]:
        """`encode`, and whether the query had to be cut."""
        ids = self._tokenize(query)
        if len(ids) <= self.max_length:
            return ids, False
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
        return ids[-self.max_length:], True

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
    def logodds(self, groups: list[list[Query]], yes: Sequence[str], no: Sequence[str]) -> LogOdds:
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

    def _score_unique(self, seqs: list[list[int]], ids: AnswerIds) -> list[float]:
        """Log-odds of each distinct query, in the order given."""
        if not seqs:
            return []
        if self.is_seq2seq or not self.share_prefix:
            # one query per row (nothing counts as shared): plain length-sorted batches
            passes = plan_rows(seqs, self.token_budget, self.batch_size, min_shared=self.max_length + 1)
            return self._run_passes(passes, seqs, [], ids)
        prefix = _common_prefix(seqs)
        rest = [seq[len(prefix):] for seq in seqs]
        if self.pack:
            passes = plan(rest, self.token_budget, self.batch_size, MIN_SHARED)
        else:
            passes = plan_rows(rest, self.token_budget, self.batch_size, MIN_SHARED)
        return self._run_passes(passes, rest, prefix, ids)

    def _run_passes(self, passes: list[list[list[int]]], seqs: list[list[int]], prefix: list[int],
                    ids: AnswerIds) -> list[float]:
        """Run each pass (a list of blocks of query indices); caller's order out."""
        out: list[float | None] = [None] * len(seqs)
        for blocks in passes:
            queries = [q for block in blocks for q in block]
            for q, value in zip(queries, self._forward_safe(blocks, seqs, prefix, ids)):
                out[q] = value
        assert all(v is not None for v in out), "a pass lost a query"
        return out  # type: ignore[return-value]

    def _forward_safe(self, blocks: list[list[int]], seqs: list[list[int]], prefix: list[int],
                      ids: AnswerIds) -> list[float]:
        """Forward a pass; on out-of-memory split it in two and retry each half."""
        try:
            return self._forward(blocks, seqs, prefix, ids)
        except torch.OutOfMemoryError:
            if len(blocks) == 1 and len(blocks[0]) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(blocks) == 1:  # one block: split its queries
                half = len(blocks[0]) // 2
                first, second = [blocks[0][:half]], [blocks[0][half:]]
            else:
                half = len(blocks) // 2
                first, second = blocks[:half], blocks[half:]
            return self._forward_safe(first, seqs, prefix, ids) + self._forward_safe(second, seqs, prefix, ids)

    def _forward(self, blocks: list[list[int]], seqs: list[list[int]], prefix: list[int],
                 ids: AnswerIds) -> list[float]:
        """Log-odds of a pass's queries, in block order."""
        if self.is_seq2seq:
            logits = self._seq2seq_logits([seqs[q] for block in blocks for q in block])
            return answer_logodds(logits, ids.yes, ids.no).tolist()
        if not self.share_prefix:
            return self._padded_logodds([seqs[q] for block in blocks for q in block], ids).tolist()
        if self.pack:
            return self._packed_logodds([seqs[q] for block in blocks for q in block], prefix, ids).tolist()
        return self._rows_logodds([[seqs[q] for q in block] for block in blocks], prefix, ids).tolist()

    def _seq2seq_logits(self, seqs: list[list[int]]) -> torch.Tensor:
        input_ids, mask = _pad(seqs, self.pad_id, left=False, device=self.device)
        start = self.model.config.decoder_start_token_id
        if start is None:
            start = self.pad_id
        decoder_ids = torch.full((len(seqs), 1), start, dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_ids)
        return out.logits[:, -1]  # (B, V)

    def _padded_logodds(self, seqs: list[list[int]], ids: AnswerIds) -> torch.Tensor:
        """The plain path: one left-padded row per query, nothing shared."""
        input_ids, mask = _pad(seqs, self.pad_id, left=True, device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        last = torch.full((len(seqs),), input_ids.shape[1] - 1, device=self.device)
        return self._read(input_ids, mask, positions, None, torch.arange(len(seqs), device=self.device), last, ids)

    def _packed_logodds(self, seqs: list[list[int]], prefix: list[int], ids: AnswerIds) -> torch.Tensor:
        """The queries' trie in one row after the cached prefix: (Q,) log-odds."""
        tree = pack(seqs, MIN_SHARED)
        p, dev = len(prefix), self.device
        input_ids = torch.tensor([tree.tokens], device=dev)  # (1, S)
        positions = torch.tensor([tree.depths], device=dev) + p
        mask = attention_mask(tree.allowed(), p, self.model.dtype)[None, None].to(dev)  # (1, 1, S, p + S)
        ends = torch.tensor(tree.ends, device=dev)
        rows = torch.zeros_like(ends)
        with blockwise(self.model) as switched:
            extra = {"zyn_blocks": Blocks.of(tree.blocks, mask)} if switched else {}

            def run(trim: bool) -> torch.Tensor:
                cache = self._prefix_cache(prefix, 1)
                if not trim:
                    return self._read(input_ids, mask, positions, cache, rows, ends, ids, **extra)
                keep, where = torch.unique(ends, return_inverse=True)
                with last_layer_at(self._body, keep):
                    hidden = self._body(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                        **{self._cache_kw: cache}, use_cache=True, **extra).last_hidden_state
                return self._answer_head(hidden[0, where], ids)

            if not (switched and self._trim is not False and self._head_ok(ids) and can_trim(self._body)):
                return run(trim=False)
            if self._trim is None:  # once per model: the trimmed last layer must match the full one
                full = run(trim=False)
                try:
                    fast = run(trim=True)
                    self._trim = bool((fast - full).abs().max() <= self._tolerance)
                except Exception:  # noqa: BLE001 - an architecture it does not fit: keep the full layer
                    self._trim = False
                return fast if self._trim else full  # the numbers every later call gives
            return run(trim=True)

    def _rows_logodds(self, blocks: list[list[list[int]]], prefix: list[int], ids: AnswerIds) -> torch.Tensor:
        """One right-padded row per block's trie after the cached prefix: (Q,) log-odds."""
        trees = [pack(seqs, MIN_SHARED) for seqs in blocks]
        width, p, dev = max(len(t) for t in trees), len(prefix), self.device
        input_ids = torch.full((len(trees), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((len(trees), width), dtype=torch.long)
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1)  # padding sees itself
        rows, ends = [], []
        for r, tree in enumerate(trees):
            n = len(tree)
            input_ids[r, :n] = torch.tensor(tree.tokens)
            positions[r, :n] = torch.tensor(tree.depths) + p
            allowed[r, :n, :n] = tree.allowed()
            rows += [r] * len(tree.ends)
            ends += tree.ends
        mask = attention_mask(allowed, p, self.model.dtype)[:, None].to(dev)  # (R, 1, W, p + W)
        return self._read(input_ids.to(dev), mask, positions.to(dev), self._prefix_cache(prefix, len(trees)),
                          torch.tensor(rows, device=dev), torch.tensor(ends, device=dev), ids)

    def _read(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache,
              rows: torch.Tensor, cols: torch.Tensor, ids: AnswerIds, **extra) -> torch.Tensor:
        """Run the model over new tokens and read the answer log-odds at (rows, cols).

        The transformer body alone runs when reading the output layer's answer rows
        gives the full model's numbers (checked once per answer set); otherwise the
        whole model runs, keeping the logits of the read positions only.
        """
        args = dict(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                    use_cache=cache is not None, **{self._cache_kw: cache}, **extra)
        if self._head_ok(ids):
            hidden = self._body(**args).last_hidden_state[rows, cols]  # (Q, D)
            return self._answer_head(hidden, ids)
        if self._keep_kw:
            keep = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
            keep[rows, cols] = True
            logits = self.model(**args, logits_to_keep=keep).logits  # (Q, V), row-major order
            flat = rows * input_ids.shape[1] + cols
            logits = logits[torch.argsort(torch.argsort(flat))]
        else:
            logits = self.model(**args).logits[rows, cols]
        return answer_logodds(logits, ids.yes, ids.no)

    def _answer_head(self, hidden: torch.Tensor, ids: AnswerIds) -> torch.Tensor:
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

    @property
    def _tolerance(self) -> float:
        """Largest log-odds difference the self-checks accept between two ways of
        computing the same numbers: float rounding passes, a different function does
        not (a soft-capped or rescaled head moves log-odds by whole units). In 16-bit
        precision a logit of ~20 is only known to within 0.125."""
        return 1e-3 if self.model.dtype == torch.float32 else 0.3

    def _head_ok(self, ids: AnswerIds) -> bool:
        """Whether reading only the answer rows gives the full model's numbers (checked
        once per answer set on a short input, since some models rescale their logits)."""
        if self._body is None:
            return False
        if ids not in self._head_checked:
            probe = self.tokenizer("Is this sentence a question? Answer:", add_special_tokens=True)["input_ids"]
            x = torch.tensor([probe], device=self.device)
            mask = torch.ones_like(x)
            full = answer_logodds(self.model(input_ids=x, attention_mask=mask).logits[:, -1], ids.yes, ids.no)
            fast = self._answer_head(self._body(input_ids=x, attention_mask=mask).last_hidden_state[:, -1], ids)
            self._head_checked[ids] = bool((fast - full).abs().max() <= self._tolerance)
            # The full output layer just read every row of a checkpoint-mapped weight (a
            # 0.5B model's 151k x 896 embedding: 0.5 GB); only the answer rows are needed.
            release_file_pages(self.model.get_output_embeddings().weight)
        return self._head_checked[ids]

    def _prefix_cache(self, prefix: list[int], n: int):
        """A fresh cache holding the shared prefix for `n` rows (computed once, then reused)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if not prefix:
            return cache
        key = tuple(prefix)
        if self._prefix is None or self._prefix[0] != key:
            x = torch.tensor([prefix], device=self.device)
            out = (self._body or self.model)(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True,
                                             **{self._cache_kw: DynamicCache(config=self.model.config)})
            filled = out.cache if self._cache_kw == "cache" else out.past_key_values
            self._prefix = (key, [(layer.keys, layer.values) for layer in filled.layers])
        for layer, (keys, values) in zip(cache.layers, self._prefix[1]):
            layer.update(keys.expand(n, -1, -1, -1), values.expand(n, -1, -1, -1))
        return cache


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


def cache_keyword(model) -> str:
    """The name under which `model.forward` takes a KV cache: ``cache`` since
    transformers 5.24 (``past_key_values`` is deprecated there), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


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
    first = seqs[0]
    n = min(min(common_prefix_len(first, s), len(s) - 1) for s in seqs)
    return first[:max(n, 0)]
