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
    layout    packed or rows (cached prefix, tries; packed also with the prefix in
              the pass, as a small call runs) -> padded rows -> one query a pass
    blockwise attention per block; trim: the last layer at the answers only
    head      the output layer's answer rows only (per answer set)

For a model zyn loaded from its own cache (`load_pretrained` marks it with the cached
checkpoint's identity, ``model.zyn_checkpoint``), both outcomes are kept in the choices
file of `kernels.cached_choice` (``<zyn cache>/choices/cpu-<machine key>.json``, the
machine key holding the CPU, torch's build and the thread count), under a name hashing
the checkpoint's identity, the dtype, the model's module types (which kernels are in),
the probe's tokens, the layout and options asked for, the answer ids, the attention
implementation, the zyn and transformers versions and a digest of this package's code.
A later process reads them instead of measuring, and checks a kept outcome cheaply
before using it: the kept entry holds the plain forwards' log-odds on the probe (its
fingerprint), and the probe is run once through the paths the entry allows (one
pass, its prefix in the pass: the cached-prefix step is the same code on the same
weights, and a code change is a new name); only if
they give those log-odds within `tolerance` is the entry used, else everything is
measured again and the entry replaced. The kernel swap's own logits check is then
deferred to that first call: its fingerprint run is on the swapped kernels, and a miss
runs the kernel check before measuring anything (`_verify_kernels`).

What the fingerprint guarantees, and what it does not: it re-proves, on this process's
model and kernels, that the allowed paths give the plain forwards' numbers on the
probe as they were measured; a changed or corrupted entry, other weights under the same
identity, a broken kernel or changed code all show as a mismatch (or fail to parse) and
are measured over. It does not re-run the plain forwards themselves (that is the cost
saved): the reference is the one measured with the same checkpoint, dtype, code and
machine key, so an entry could only mislead if something outside the key changed a
plain forward while leaving the fast path's numbers equal to the old ones. Entries that
allow only the slow paths (padded, one query a pass, the full output layer) are exact
whatever they say. Models from a hub id, a local folder or memory are checked in every
process, as is everything with ``ZYN_NO_CHOICE_CACHE`` set or on a GPU.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ...answers import AnswerIds
from ...scoring import answer_logodds
from . import kernels
from .planner import LAYOUTS, plan_call
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


@dataclass
class Along:
    """A first call's distinct token lists, scored in the fingerprint's pass where a kept
    outcome is read and they fit in one packed pass with the probe (`values` is then
    set, in their order): a fresh process's first call then costs one pass, not two.
    Its numbers differ from the same call run apart by float rounding only (another
    packing); ``ZYN_NO_CHOICE_CACHE=1`` makes every process measure its checks and run
    its first call apart, for runs that must repeat bit for bit across processes.

    Attributes:
        seqs: the call's token lists; budget, max_queries: the backend's pass limits.
        values: their log-odds through the kept paths, or None.
    """

    seqs: list[list[int]]
    budget: int
    max_queries: int
    values: list[float] | None = None


def check_model(runner: Runner, probe: list[list[int]], ids: AnswerIds, layout: str, *, blockwise: bool,
                trim: bool | None, along: Along | None = None) -> Checked:
    """The layout and fast paths `runner` may use, each compared with plain forwards
    of `probe` (`layout` is the one asked for; `trim` False skips the trim).

    The fastest combination is tried first and the first that matches is kept (one
    forward pass each, the shared ones reusing the probe's prefix): a trimmed last
    layer runs every other layer blockwise, so where it matches both hold. For a model
    from zyn's cache the outcome is kept, and read back after one fingerprint pass
    (see the module's notes), which also scores `along` where it fits.
    """
    name = _kept_name("checks", runner, probe=probe, yes=list(ids.yes), no=list(ids.no), layout=layout,
                      blockwise=blockwise, trim=trim, can_trim=runner.can_trim(), seq2seq=runner.is_seq2seq)
    if name is None:
        _verify_kernels(runner)
        return _check_model(runner, probe, ids, layout, blockwise=blockwise, trim=trim)[0]
    got: list[Checked] = []

    def measure() -> Any:
        # measured on the kernels it checks, once they are checked; if the deferred
        # kernel check undid the swaps, `name` (which holds the modules) is not theirs
        same_kernels = _verify_kernels(runner)
        checked, want = _check_model(runner, probe, ids, layout, blockwise=blockwise, trim=trim)
        got.append(checked)
        entry = {"layout": checked.layout, "padding": checked.padding, "blockwise": checked.blockwise,
                 "trim": checked.trim, "head": checked.head[ids], "want": want.tolist()}
        return entry if same_kernels else kernels.Unsettled(entry)

    def valid(entry: Any) -> bool:
        checked = _read_entry(entry, ids, layout)
        want = torch.tensor(entry["want"], dtype=torch.float32)
        if want.shape != (len(probe),) or not _verify(runner, probe, ids, checked, want, along):
            return False
        got.append(checked)
        return True

    try:
        kernels.cached_choice(name, measure, valid)
    finally:
        runner.prefix.clear()  # the probe's prefix is of no use to a call
    runner.unverified_kernels = None  # measured on them, or the fingerprint held on them
    return got[-1]


def _check_model(runner: Runner, probe: list[list[int]], ids: AnswerIds, layout: str, *, blockwise: bool,
                 trim: bool | None) -> tuple[Checked, torch.Tensor]:
    """`check_model`, measured; also returns the plain forwards' log-odds on `probe`."""
    tol = tolerance(runner.model.dtype)
    want = torch.cat([_plain(runner, seq, ids) for seq in probe])  # (Q,)
    runner.plain_memo = None
    head = check_head(runner, probe[0], ids, want[:1])
    checked = Checked("padded", padding=True, head={ids: head})
    if not runner.is_seq2seq and layout != "padded":
        for paths in _fastest_first(layout, head, blockwise, trim is not False and runner.can_trim()):
            if _matches(lambda: _run(runner, probe, ids, layout, paths), want, tol) \
                    and _matches(lambda: _run(runner, probe, ids, layout, paths, inline=True), want, tol):
                checked.layout, checked.blockwise, checked.trim = layout, paths.blockwise, paths.trim
                break
    if checked.layout == "padded":  # does padding change the numbers?
        checked.padding = _matches(lambda: _run(runner, probe, ids, "padded", Paths()), want, tol)
    runner.prefix.clear()  # the probe's prefix is of no use to a call
    return checked, want


def _read_entry(entry: Any, ids: AnswerIds, layout: str) -> Checked:
    """A kept outcome as `Checked`; raises if it is not one `check_model` could have given."""
    flags = [entry[k] for k in ("padding", "blockwise", "trim", "head")]
    if entry["layout"] not in (layout, "padded") or entry["layout"] not in LAYOUTS \
            or not all(isinstance(f, bool) for f in flags):
        raise ValueError("not a kept check")
    padding, blockwise, trim, head = flags
    return Checked(entry["layout"], padding, blockwise=blockwise, trim=trim, head={ids: head})


def _verify(runner: Runner, probe: list[list[int]], ids: AnswerIds, checked: Checked, want: torch.Tensor,
            along: Along | None = None) -> bool:
    """Whether the paths `checked` allows give `want` on the probe: one pass in its
    layout, its prefix computed in the pass (one query alone where padding is not
    allowed). A packed pass also scores `along` where the probe and it fit in one."""
    paths, tol = checked.paths(ids), tolerance(runner.model.dtype)
    if checked.layout == "padded" and not checked.padding:
        probe, want = probe[:1], want[:1]
    if along is not None and checked.layout == "packed":
        plan = plan_call(probe + along.seqs, "packed", along.budget, along.max_queries, cached=[])
        if len(plan.passes) == 1 and not plan.prefix:
            values: list[float] = []

            def run() -> torch.Tensor:
                values.extend(runner.run(plan, ids, paths))
                return torch.tensor(values[:len(probe)])

            if not _matches(run, want, tol):
                return False
            along.values = values[len(probe):]
            return True
    return _matches(lambda: _run(runner, probe, ids, checked.layout, paths, inline=True), want, tol)


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
    model's logits on `probe` stay within rounding. Returns the kernels in use.

    For a model from zyn's cache whose outcome is kept, the swaps are made as that
    outcome says and their check is left to the first call's (`check_model`)."""
    name = _kept_name("kernels", runner, probe=probe, onednn=onednn)
    if name is None:
        return _use_fast_kernels(runner, probe, onednn)
    measured: list[str] = []

    def measure() -> dict:
        measured.append(_use_fast_kernels(runner, probe, onednn))
        return {"kept": measured[0] != "default" or _count(runner.model, kernels.FusedRMSNorm) > 0,
                "fused_mlps": _count(runner.model, kernels.OneDNNGatedMLP)}

    kept = kernels.cached_choice(name, measure, lambda entry: isinstance(entry["kept"], bool)
                                 and type(entry["fused_mlps"]) is int)
    if measured:
        return measured[0]
    if not kept["kept"]:
        return "default"
    swaps: list = []
    kernels.use_fused_norms(runner.model, swaps)
    if onednn:
        # the MLPs fused then are fused again without their random-input check
        kernels.use_onednn_linears(runner.model, swaps, check_mlps=kept["fused_mlps"] == 0)
        if _count(runner.model, kernels.OneDNNGatedMLP) != kept["fused_mlps"]:  # not as kept: measure
            kernels.undo(swaps)
            return _use_fast_kernels(runner, probe, onednn)
    runner.unverified_kernels = (list(probe), swaps, name)
    return "onednn" if onednn else "default"


def _count(model, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _verify_kernels(runner: Runner) -> bool:
    """The kernel swap's logits check, where a kept outcome let construction skip it:
    the swapped model's logits on the probe against those of the model's own modules.
    On a mismatch the swaps are undone (the backend then runs its own kernels), the
    kept outcome is replaced by "not kept", and False is returned (the backend's
    ``kernels`` then says "default"; only a wrong kept entry leads here, and the next
    process reads "not kept")."""
    if runner.unverified_kernels is None:
        return True
    probe, swaps, kept_name = runner.unverified_kernels
    runner.unverified_kernels = None
    swapped = [(parent, name, getattr(parent, name)) for parent, name, _ in swaps]
    got = runner.plain_logits(probe)
    kernels.undo(swaps)
    want = runner.plain_logits(probe)
    if _matches(lambda: got, want, _logits_tolerance(runner.model.dtype, want)):
        for parent, name, new in swapped:
            setattr(parent, name, new)
        _remember(runner, probe, got)
        return True
    _remember(runner, probe, want)
    kernels.cached_choice(kept_name, lambda: {"kept": False, "fused_mlps": 0}, lambda entry: False)
    return False


def _logits_tolerance(dtype: torch.dtype, want: torch.Tensor) -> float:
    # relative to the logits' scale: float32 rounding, or a few 16-bit steps
    return (1e-4 if dtype == torch.float32 else 5e-2) * float(want.abs().max().clamp(min=1))


def _use_fast_kernels(runner: Runner, probe: list[int], onednn: bool) -> str:
    """`use_fast_kernels`, measured."""
    model = runner.model
    want = runner.plain_logits(probe)
    swaps: list = []
    kernels.use_fused_norms(model, swaps)
    if onednn:
        kernels.use_onednn_linears(model, swaps)
    got: list[torch.Tensor] = []
    if _matches(lambda: got.append(runner.plain_logits(probe)) or got[0], want, _logits_tolerance(model.dtype, want)):
        _remember(runner, probe, got[0])
        return "onednn" if onednn else "default"
    kernels.undo(swaps)
    _remember(runner, probe, want)
    return "default"


def _remember(runner: Runner, seq: list[int], logits: torch.Tensor) -> None:
    """Keep the plain logits of `seq` on the kernels now in use: the first call's
    checks start from the same forward (`_plain`)."""
    runner.plain_memo = (tuple(seq), _weights_version(runner.model), logits)


def _plain(runner: Runner, seq: list[int], ids: AnswerIds) -> torch.Tensor:
    """`runner.plain`, reusing the kernel check's forward of the same tokens while no
    weight has changed since (in place: torch counts each tensor's writes)."""
    memo = runner.plain_memo
    if memo is not None and memo[0] == tuple(seq) and memo[1] == _weights_version(runner.model):
        return answer_logodds(memo[2][None], ids.yes, ids.no)
    return runner.plain(seq, ids)


def _weights_version(model) -> tuple:
    return tuple((id(p), p._version) for p in model.parameters())


def _run(runner: Runner, probe: list[list[int]], ids: AnswerIds, layout: str, paths: Paths,
         inline: bool = False) -> torch.Tensor:
    """The probe's log-odds in one pass of `layout` (padded: all rows in one batch) after
    a cached prefix, or (`inline`) with the prefix in the pass itself, as a small call
    whose prefix is not cached runs (`planner.plan_call`)."""
    plan = plan_call(probe, layout, budget=10**6, max_queries=len(probe), cached=[] if inline else None)
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


# ---------------------------------------------------------------------- kept outcomes

def _kept_name(kind: str, runner: Runner, **parts: Any) -> str | None:
    """The name under which `kind`'s outcome for this model is kept in the choices file,
    or None where it is not kept (a model not from zyn's cache, or not on the CPU)."""
    model = runner.model
    checkpoint = getattr(model, "zyn_checkpoint", None)
    if not isinstance(checkpoint, str) or not checkpoint or runner.device.type != "cpu":
        return None
    key = {"checkpoint": checkpoint, "class": f"{type(model).__module__}.{type(model).__qualname__}",
           "dtype": str(model.dtype), "modules": sorted({type(m).__qualname__ for m in model.modules()}),
           "attention": str(getattr(model.config, "_attn_implementation", None)), "code": _code_version(),
           **parts}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return f"{kind}/{digest}"


@functools.cache
def _code_version() -> str:
    """zyn's and transformers' versions and a digest of the code a check runs (this
    package, the log-odds): an edited checkout measures again."""
    import transformers

    from ... import __version__

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.glob("*.py")) + [root.parents[1] / "scoring.py", root.parents[1] / "answers.py"]:
        try:
            digest.update(path.name.encode() + path.read_bytes())
        except OSError:
            digest.update(path.name.encode())
    return f"{__version__}/{transformers.__version__}/{digest.hexdigest()[:16]}"
