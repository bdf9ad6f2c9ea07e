"""One reward model per process, built on first use from arguments or ZYN_* variables.

Trainers that load a reward hook from a file (verl, OpenRLHF, ms-swift plugins) give
it no constructor arguments, so the hooks read their configuration here:

    ZYN_MODEL            model: hub id, folder, .gguf, preset, or openai+http:// / vllm+http:// URL
    ZYN_PROMPT           prompt set name or YAML path (default: sentiment)
    ZYN_REWARD           reward shape override: prob, logodds, zyn, logprob
    ZYN_DEVICE, ZYN_DTYPE, ZYN_BATCH_SIZE    as ZeroShotRewardModel's arguments
    ZYN_FAILURE_REWARD   what a hook that must return a number gives for an item that
                         cannot be scored (default 0.0)

The model is loaded once per process, under a lock, however many threads ask at once;
prompt sets over the same model share its weights (`ZeroShotRewardModel.with_prompt`).

Each hook puts its trainer's reference answer where the shipped prompt sets read it,
the ``reference`` field (prompts/answer_grader.yaml): verl's ``ground_truth``, OpenRLHF's
label, and for TRL, trlx and ms-swift a ``reference`` column, else a ``solution`` one (the
column TRL's and ms-swift's accuracy rewards read). A reference that is None is no
reference: the field stays absent, so a prompt set that needs it raises
`MissingFieldError` instead of grading against "" or "None" (TRL and ms-swift, which take
None for "does not apply", get None for that row instead: `judged_rows`).
"""
from __future__ import annotations

import math
import os
import threading
from typing import Any

from ..api import Scores
from ..errors import InputError, MissingFieldError, PromptError, ZynError
from ..model import ZeroShotRewardModel
from ..prompts import is_missing

_lock = threading.Lock()
_models: dict[tuple, ZeroShotRewardModel] = {}    # (model, options) -> first reward model loaded
_rewards: dict[tuple, ZeroShotRewardModel] = {}   # (model, options, prompt, reward) -> reward model


def settings(model: str | None = None, prompt: str | None = None, reward: str | None = None,
             **options: Any) -> dict[str, Any]:
    """Arguments given here, else the ZYN_* variables, as ZeroShotRewardModel's arguments."""
    model = model or os.environ.get("ZYN_MODEL")
    if not model:
        raise ZynError("no judge model: set ZYN_MODEL (a hub id, folder, .gguf, preset or "
                       "openai+http://host:port/v1 URL) or pass model=")
    env = {"device": "ZYN_DEVICE", "dtype": "ZYN_DTYPE", "batch_size": "ZYN_BATCH_SIZE"}
    for key, var in env.items():
        if options.get(key) is None and os.environ.get(var):
            options[key] = _env_int(var) if key == "batch_size" else os.environ[var]
    return dict(model=model, prompt=prompt or os.environ.get("ZYN_PROMPT") or "sentiment",
                reward=reward or os.environ.get("ZYN_REWARD") or None,
                **{k: v for k, v in options.items() if v is not None})


def shared_reward_model(model: str | None = None, prompt: str | None = None, reward: str | None = None,
                        **options: Any) -> ZeroShotRewardModel:
    """The process's reward model for these settings (see `settings`), loaded on first use.

    Thread-safe: concurrent first calls load the model once; later calls only look it up.
    """
    s = settings(model, prompt, reward, **options)
    model_key = (s.pop("model"), tuple(sorted((k, repr(v)) for k, v in s.items() if k not in ("prompt", "reward"))))
    key = model_key + (s["prompt"], s["reward"])
    found = _rewards.get(key)
    if found is not None:
        return found
    with _lock:
        if key not in _rewards:
            base = _models.get(model_key)
            if base is None:
                failure_reward()  # a bad $ZYN_FAILURE_REWARD is an error now, not when an item first fails
                base = _models[model_key] = ZeroShotRewardModel(model_key[0], **s)
                _rewards[key] = base
            else:
                _rewards[key] = base.with_prompt(s["prompt"], s["reward"])
        return _rewards[key]


def failure_reward() -> float:
    """$ZYN_FAILURE_REWARD (default 0.0): the number a hook returns for an unscorable item."""
    raw = os.environ.get("ZYN_FAILURE_REWARD") or "0.0"
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ZynError(f"ZYN_FAILURE_REWARD={raw!r}: expected a finite number, such as 0 or -1 (a NaN or infinite "
                       "reward would poison the batch's advantages)")
    return value


def _env_int(var: str) -> int:
    raw = os.environ[var]
    try:
        return int(raw)
    except ValueError:
        raise ZynError(f"{var}={raw!r}: expected a whole number") from None


def score_each(rm: ZeroShotRewardModel, items: list[dict]) -> list[tuple[float, float, dict] | None]:
    """(reward, p_yes, per question) per item; an item that cannot be scored is None
    (`scores_each`)."""
    s, failed = scores_each(rm, items)
    return [None if failed[i] else (s.rewards[i], s.p_yes[i], {n: v[i] for n, v in s.per_question.items()})
            for i in range(len(items))]


def scores_each(rm: ZeroShotRewardModel, items: list[Any], strict: bool = False) -> tuple[Scores, list[bool]]:
    """The judge's scores of `items`, and which of them could not be scored (their values NaN).

    The items are scored together; if that fails on content, each is scored alone so
    one bad item does not cost the others their rewards. A field the prompt set needs
    and the data lacks (`MissingFieldError`) is raised: it would fail every item alike;
    with `strict`, so is the first item's error where no item could be scored (a batch
    in a format the judge cannot read, rather than a few bad items).
    """
    try:
        return rm.score_detailed(items), [False] * len(items)
    except MissingFieldError:
        raise
    except (InputError, PromptError):
        if len(items) <= 1:
            if strict:
                raise
            return _unscored(rm, len(items)), [True] * len(items)
    parts = [scores_each(rm, [item]) for item in items]
    failed = [f for _, fs in parts for f in fs]
    if strict and all(failed):
        scores_each(rm, items[:1], strict=True)  # raises the first item's error
    return _joined([p for p, _ in parts]), failed


def _unscored(rm: ZeroShotRewardModel, n: int) -> Scores:
    nan = [math.nan] * n
    names = [q.name for q in rm.prompt_set.questions]
    return Scores(list(nan), list(nan), {q: list(nan) for q in names}, {q: list(nan) for q in names},
                  [math.nan] * n if rm.prompt_set.penalties else [])


def _joined(parts: list[Scores]) -> Scores:
    """One call's Scores from those of its items scored apart."""
    names = list(parts[0].per_question)
    flags = {q: [f for p in parts for f in p.flags.get(q, ["ok"] * len(p.p_yes))] for q in names} \
        if any(p.flags for p in parts) else {}
    return Scores([v for p in parts for v in p.p_yes], [v for p in parts for v in p.rewards],
                  {q: [v for p in parts for v in p.per_question[q]] for q in names},
                  {q: [v for p in parts for v in p.logodds[q]] for q in names},
                  [v for p in parts for v in p.penalty], sum(p.truncated for p in parts), flags)


REFERENCE = "reference"  # the field the shipped prompt sets read a reference answer from
SOLUTION = "solution"    # TRL's and ms-swift's name for it (trl.rewards.accuracy_reward, swift's accuracy ORM)


def set_reference(record: dict, value: Any) -> dict:
    """`record` with a trainer's reference answer as its ``reference`` field (as text: a
    number as written, an array's items joined by "or"); None (or NaN) leaves the field
    absent, as a reference the trainer does not have.

    >>> set_reference({"completion": "42"}, 42), set_reference({"completion": "42"}, None)
    ({'completion': '42', 'reference': '42'}, {'completion': '42'})
    >>> set_reference({}, ["42", "42.0"])   # several accepted answers (a list, an array)
    {'reference': '42 or 42.0'}
    """
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy, torch: a scalar or a list
        value = value.tolist()
    if isinstance(value, (list, tuple)):  # several accepted answers
        value = [v for v in value if not is_missing(v)]
        value = " or ".join(v if isinstance(v, str) else str(v) for v in value) if value else None
    if not is_missing(value):
        record[REFERENCE] = value if isinstance(value, str) else str(value)
    return record


def reference_from_columns(records: list[dict]) -> list[dict]:
    """Records whose dataset columns gave the reference answer as ``solution`` get it as
    ``reference`` too (a ``reference`` column wins); a None (or NaN) reference is removed,
    so that a prompt set reading it raises `MissingFieldError` rather than render "None".

    >>> reference_from_columns([{"solution": "4"}, {"reference": None, "solution": None}, {"reference": "5"}])
    [{'solution': '4', 'reference': '4'}, {'solution': None}, {'reference': '5'}]
    """
    for record in records:
        if is_missing(record.get(REFERENCE)):
            record.pop(REFERENCE, None)
            set_reference(record, record.get(SOLUTION))
    return records


def columns_read(fields: Any) -> set[str]:
    """The dataset columns a prompt set with `fields` reads: its fields, and ``solution``
    where it reads ``reference`` (the trainers' other name for it)."""
    return set(fields) | ({SOLUTION} if REFERENCE in fields else set())


def judged_rows(records: list[dict], fields: Any, columns: Any) -> list[int]:
    """The indices of the records the judge scores, for trainers that take None as "this
    reward does not apply here" (TRL, ms-swift: a multi-task dataset's rows of another task).

    A record that lacks a field the prompt set reads (`fields`), or holds no value in it,
    is left out where the trainer passed that column (a ``solution`` column gives
    ``reference``): its reward is None, as TRL's and ms-swift's own accuracy rewards give
    for a row without a usable solution. Where the column was not passed at all, the
    dataset and the prompt set differ: such a record is kept, so that scoring raises
    `MissingFieldError` naming the field.

    >>> judged_rows([{"reference": "4"}, {}, {"reference": None}], ["reference"], ["solution"])
    [0]
    >>> judged_rows([{"reference": "4"}, {}], ["reference"], [])
    [0, 1]
    """
    given = set(columns) | ({REFERENCE} if SOLUTION in columns else set())
    kept = []
    for i, record in enumerate(records):
        lacking = [f for f in fields if is_missing(record.get(f))]
        if not lacking or not all(f in given for f in lacking):
            kept.append(i)
    return kept


def with_advice(error: MissingFieldError, advice: str) -> MissingFieldError:
    """`error` with a hook's advice on where its trainer's data reaches the judge."""
    return MissingFieldError(f"{error}; {advice}")


def clear() -> None:
    """Forget the loaded models (tests; a process that changes ZYN_MODEL)."""
    with _lock:
        _models.clear()
        _rewards.clear()
