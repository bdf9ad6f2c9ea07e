"""Which fast paths reproduce a plain forward of this model: checked once, on a probe.

The fast paths are exact for the decoders zyn was built on, but an architecture may
read its inputs its own way: Bloom builds its ALiBi biases from a 2D mask (a packed
row's 4D mask breaks it), Falcon's attention reads a mask that a 4D one leaves unset,
T5's MLP reads its output projection's ``weight`` (gone once oneDNN packs it), a model
may rescale its logits after the output layer. So zyn runs a short probe through each
path once per model (the kernels at construction, the rest before the first call) and
compares it with plain single-query forwards (`Runner.plain`). A path that raises or
moves the log-odds by more than rounding is not used, and the next slower one is tried:

    kernels   oneDNN linears and fused norms, or the model's own (swapped back)
    layout    packed or rows (cached prefix, tries) -> padded rows -> one query a pass
    blockwise attention per block; trim: the last layer at the answers only
    head      the output layer's answer rows only (per answer set)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ...answers import AnswerIds
from . import kernels
from .planner import plan_call
from .runner import Paths, Runner

PROBE_TEXT = ("Is this movie review positive? The film was long, but the acting was wonderful and the story "
              "kept me watching until the very end. Answer yes or no. Review: a dull, boring plot.")


@dataclass
class Checked:
    """What the probe showed for one model.

    Attributes:
        layout: the layout calls use ("packed", "rows" or "padded").
        padding: padded rows give single-query numbers (else one query per pass).
        blockwise, trim: see `Paths`.
        head: answer-row head reproduces the full output layer, per answer set.
    """

    layout: str
    padding: bool
    blockwise: bool = False
    trim: bool = False
    head: dict[AnswerIds, bool] = field(default_factory=dict)

    def paths(self, ids: AnswerIds) -> Paths:
        head = self.head.get(ids, False)
        return Paths(head=head, blockwise=self.blockwise, trim=self.trim and head)


def tolerance(dtype: torch.dtype) -> float:
    """Largest log-odds difference accepted between two ways of computing the same
    numbers: float rounding passes, a different function does not (a soft-capped or
    rescaled head moves log-odds by whole units). In 16-bit precision a logit of ~20
    is only known to within 0.125."""
    return 1e-3 if dtype == torch.float32 else 0.3


def probe_queries(tokenizer) -> list[list[int]]:
    """Token lists that exercise every layout: a common prefix, a trie with a branch,
    a query ending inside another, a block of its own, rows of different lengths."""
    t = tokenizer(PROBE_TEXT, add_special_tokens=True)["input_ids"]
    while len(t) < 40:
        t = t + t
    return [t[:20], t[:12] + t[25:30], t[:14], t[:3] + t[30:38]]


def check_model(runner: Runner, probe: list[list[int]], ids: AnswerIds, layout: str, *, blockwise: bool,
                trim: bool | None) -> Checked:
    """The layout and fast paths `runner` may use, each compared with plain forwards
    of `probe` (`layout` is the one asked for; `trim` False skips the trim).

    The fastest combination is tried first and the first that matches is kept (one
    forward pass each, the shared ones reusing the probe's prefix): a trimmed last
    layer runs every other layer blockwise, so where it matches both hold.
    """
    tol = tolerance(runner.model.dtype)
    want = torch.cat([runner.plain(seq, ids) for seq in probe])  # (Q,)
    head = check_head(runner, probe[0], ids, want[:1])
    checked = Checked("padded", padding=True, head={ids: head})
    if not runner.is_seq2seq and layout != "padded":
        for paths in _fastest_first(layout, head, blockwise, trim is not False and runner.can_trim()):
            if _matches(lambda: _run(runner, probe, ids, layout, paths), want, tol):
                checked.layout, checked.blockwise, checked.trim = layout, paths.blockwise, paths.trim
                break
    if checked.layout == "padded":  # does padding change the numbers?
        checked.padding = _matches(lambda: _run(runner, probe, ids, "padded", Paths()), want, tol)
    runner.prefix.clear()  # the probe's prefix is of no use to a call
    return checked


def _fastest_first(layout: str, head: bool, blockwise: bool, trim: bool) -> list[Paths]:
    """The fast paths to try for a shared layout, fastest first."""
    if layout != "packed" or not blockwise:
        return [Paths(head=head)]
    faster = [Paths(head=True, blockwise=True, trim=True)] if head and trim else []
    return faster + [Paths(head=head, blockwise=True), Paths(head=head)]


def check_head(runner: Runner, seq: list[int], ids: AnswerIds, want: torch.Tensor | None = None) -> bool:
    """Whether reading only the answer rows of the output layer gives the full model's
    log-odds on `seq` (`want`, if already computed; some models rescale or cap their
    logits after that layer)."""
    if runner.body is None:
        return False
    x = torch.tensor([seq], device=runner.device)

    def fast() -> torch.Tensor:
        return runner.answer_head(runner.body(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[:, -1],
                                  ids)

    return _matches(fast, runner.plain(seq, ids) if want is None else want, tolerance(runner.model.dtype))


def use_fast_kernels(runner: Runner, probe: list[int], onednn: bool) -> str:
    """Swap in fused RMSNorms and (if `onednn`) oneDNN linears; keep them only if the
    model's logits on `probe` stay within rounding. Returns the kernels in use."""
    model = runner.model
    want = runner.plain_logits(probe)
    swaps: list = []
    kernels.use_fused_norms(model, swaps)
    if onednn:
        kernels.use_onednn_linears(model, swaps)
    # relative to the logits' scale: float32 rounding, or a few 16-bit steps
    tol = (1e-4 if model.dtype == torch.float32 else 5e-2) * float(want.abs().max().clamp(min=1))
    if _matches(lambda: runner.plain_logits(probe), want, tol):
        return "onednn" if onednn else "default"
    kernels.undo(swaps)
    return "default"


def _run(runner: Runner, probe: list[list[int]], ids: AnswerIds, layout: str, paths: Paths) -> torch.Tensor:
    """The probe's log-odds in one pass of `layout` (padded: all rows in one batch)."""
    plan = plan_call(probe, layout, budget=10**6, max_queries=len(probe))
    return torch.tensor(runner.run(plan, ids, paths))


def _matches(run: Callable[[], torch.Tensor], want: torch.Tensor, tol: float) -> bool:
    """Whether `run()` gives `want` within `tol` (NaN never does); raising counts as no."""
    try:
        got = run()
    except torch.OutOfMemoryError:  # a full device, not a path that does not fit
        raise
    except Exception:  # noqa: BLE001 - an architecture this path does not fit
        return False
    return got.shape == want.shape and bool((got.float() - want.float()).abs().max() <= tol)
