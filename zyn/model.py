"""ZeroShotRewardModel: a prompt set plus a backend, speaking the trainers' contracts.

    texts / records --render--> queries --backend--> log-odds --scoring--> P(yes), reward

It is deliberately not an ``nn.Module``: TRL treats any module passed as a reward
as a sequence classifier.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Sequence

from .api import Backend, LogOdds, Scores
from .errors import InputError, TruncationWarning, ZynError
from .prompts import PromptSet, load_prompt_set
from .scoring import SHAPES, combine

#: Keyword arguments the trainers pass that are not dataset columns.
TRAINER_KWARGS = {"trainer_state", "log_metric", "log_extra", "completion_ids", "tokenizer", "environments"}


class ZeroShotRewardModel:
    """Turns an instruction-tuned LM into a reward model by asking it yes/no questions.

    Args:
        model: a hub id, a local folder, a ``.gguf`` file, an offline preset name, an
            ``openai+http://host:port/v1`` URL, a loaded transformers model (give
            `tokenizer` too) or a backend object.
        tokenizer: the tokenizer of a loaded model.
        prompt: a prompt-set YAML path, a name under ``prompts/``, a PromptSet, or a
            bare question ("Is this movie review positive?").
        reward: override the prompt set's reward shape: prob, logodds, zyn, logprob.
        batch_size: most queries per forward pass (default 64).
        device, dtype: where and in which precision to run a model loaded by name.
        **backend_options: passed to the backend (`zyn.backends.hf.HFBackend`: token_budget,
            most tokens per pass, default 512 on CPU and 65536 on GPU; max_length; layout,
            "packed", "rows" or "padded"; trim_last_layer; fast_kernels).

    >>> rm = ZeroShotRewardModel("qwen2.5-coder-0.5b-instruct", prompt="sentiment")  # doctest: +SKIP
    >>> rm.score(["A wonderful, moving film.", "Two hours I will never get back."])  # doctest: +SKIP
    [0.19, 0.04]

    (`sentiment` v2 shifts its log-odds by -1.5 so that injected text stays below 0.5 on the
    default judge: its P ranks texts, it is not a calibrated probability; see ROBUSTNESS.md.)
    """

    def __init__(self, model: Any, tokenizer: Any = None, prompt: Any = "sentiment", reward: str | None = None,
                 batch_size: int | None = None, device: str | None = None, dtype: Any = None,
                 **backend_options: Any):
        self.prompt_set: PromptSet = load_prompt_set(prompt)
        self.reward_shape = _check_shape(reward or self.prompt_set.reward)
        spec = os.fspath(model) if isinstance(model, os.PathLike) else model
        self._model_spec = spec if isinstance(spec, str) else None
        # a tokenizer given beside a name (a remote judge's, say) is kept: an unpickled copy rebuilds with it
        self._tokenizer = tokenizer if self._model_spec is not None else None
        #: what the model was built from, for logs and served responses
        self.model_name: str = public_name(self._model_spec) if self._model_spec else _describe(model)
        self._backend_args = dict(batch_size=batch_size, device=device, dtype=dtype, **backend_options)
        self.backend: Backend | None = build_backend(model, tokenizer, **self._backend_args)

    # ------------------------------------------------------------------ scoring

    def with_prompt(self, prompt: Any, reward: str | None = None) -> "ZeroShotRewardModel":
        """A reward model with another prompt set that shares this one's loaded model."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.prompt_set = load_prompt_set(prompt)
        other.reward_shape = _check_shape(reward or other.prompt_set.reward)
        return other

    def score(self, inputs: Sequence[Any]) -> list[float]:
        """Combined P(yes) in [0, 1] for each text or record."""
        return self.score_detailed(inputs).p_yes

    def score_detailed(self, inputs: Sequence[Any]) -> Scores:
        """P(yes), shaped rewards and per-question values for each text or record.

        Args:
            inputs: strings (the text to judge) or records with "text", or "prompt" and
                "completion", or chat "messages", plus any template fields.
        """
        inputs = _check_inputs(inputs)
        ps = self.prompt_set
        groups = [ps.render(item, i) for i, item in enumerate(inputs)]
        backend = self._ensure_backend()
        out = LogOdds.of(backend.logodds(groups, ps.answers[0], ps.answers[1])) if groups else LogOdds([])
        if out.truncated:
            queries = sum(len(g) for g in groups)
            of = (f"{out.truncated} of {len(inputs)} inputs were" if queries == len(inputs) else
                  f"{out.truncated} of {queries} queries ({len(inputs)} inputs x {len(ps.questions)} questions) were")
            limit = f"the judge's limit of {out.context} tokens" if out.context else "the judge's limit"
            warnings.warn(f"zyn: {of} longer than {limit} (max_length, else the model's context) and were cut "
                          "inside their text", TruncationWarning, stacklevel=_outside_zyn())
        flags = getattr(out, "flags", None)  # a remote judge's, one per query
        by_question = ({q.name: [row[j] for row in flags] for j, q in enumerate(ps.questions)}
                       if flags and len(flags) == len(groups) else {})
        return dataclasses.replace(self._assemble(out.values, ps.penalty(inputs)), truncated=out.truncated,
                                   flags=by_question)

    def _assemble(self, raw: list[list[float]], penalty: list[float] | None = None) -> Scores:
        ps = self.prompt_set
        qs = ps.questions
        c = combine(raw, [q.calibration for q in qs], [q.reward_answer for q in qs], [q.weight for q in qs],
                    ps.combine, self.reward_shape, penalty)
        names = [q.name for q in qs]
        return Scores(p_yes=c.p_rewarded, rewards=c.rewards, per_question=dict(zip(names, c.p_yes)),
                      logodds=dict(zip(names, c.logodds)), penalty=list(penalty or []))

    # ------------------------------------------------------------------ trainer contracts

    def __call__(self, samples: Sequence[str] | None = None, prompts: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        """trlx's ``reward_fn``: one shaped reward per sample (samples = prompt + output)."""
        return self.score_detailed(self._trlx_records(samples, prompts, outputs, kwargs)).rewards

    def metric_fn(self, samples: Sequence[str] | None = None, prompts: Sequence[str] | None = None,
                  outputs: Sequence[str] | None = None, **kwargs: Any) -> dict[str, list[float]]:
        """trlx's ``metric_fn``: P(yes) per question and combined, and the reward."""
        return self.metrics(self.score_detailed(self._trlx_records(samples, prompts, outputs, kwargs)))

    def _trlx_records(self, samples, prompts, outputs, kwargs: dict) -> list[dict]:
        return _trlx_records(samples, prompts, outputs, kwargs, self.prompt_set.fields)

    def metrics(self, scores: Scores) -> dict[str, list[float]]:
        """Scores as trlx-style metric lists: ``p_yes``, ``reward``, ``p_yes/<question>``."""
        out = {"p_yes": scores.p_yes, "reward": scores.rewards}
        if len(self.prompt_set.questions) > 1:
            out.update({f"p_yes/{name}": v for name, v in scores.per_question.items()})
        return out

    def as_trl_reward(self, async_: bool = False) -> Any:
        """A picklable reward function for TRL's GRPOTrainer and RLOOTrainer (see
        `zyn.integrations.trl`); ``async_=True`` gives one that TRL awaits alongside
        its other async rewards, scoring in a worker thread (for remote backends)."""
        from .integrations.trl import AsyncTRLReward, TRLReward

        return AsyncTRLReward(self) if async_ else TRLReward(self)

    # ------------------------------------------------------------------ pickling

    def _ensure_backend(self) -> Backend:
        if self.backend is None:  # unpickled from a model name: load on first use
            self.backend = build_backend(self._model_spec, getattr(self, "_tokenizer", None), **self._backend_args)
        return self.backend

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._model_spec is not None:
            state["backend"] = None  # reload by name rather than pickle the weights
        return state

    def __repr__(self) -> str:
        backend = getattr(self.backend, "name", type(self.backend).__name__)
        return (f"ZeroShotRewardModel(prompt={self.prompt_set.name!r}, questions={len(self.prompt_set.questions)}, "
                f"reward={self.reward_shape!r}, backend={backend!r})")


# ---------------------------------------------------------------------- helpers

def build_backend(model: Any, tokenizer: Any = None, *, batch_size=None, device=None, dtype=None,
                  **options: Any) -> Backend:
    """A backend for any accepted `model` argument (see ZeroShotRewardModel)."""
    if isinstance(model, Backend):
        return model
    from .models import DEFAULT_JUDGE, load_pretrained, resolve

    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if model is None or isinstance(model, (bytes, int, float, dict, list, tuple)):
        raise ZynError(f"model: expected a model name (preset, folder, .gguf file, hub id or openai+http(s):// "
                       f"URL) or a loaded model with its tokenizer, got {model!r:.60}; the offline default is "
                       f"{DEFAULT_JUDGE!r} (zyn models list)")
    from .backends.hf import HFBackend

    if tokenizer is not None and (isinstance(tokenizer, (str, bytes))
                                  or not callable(getattr(tokenizer, "encode", None))):
        hint = " (a prompt set goes in prompt=...)" if isinstance(tokenizer, str) else ""
        raise ZynError(f"tokenizer: expected the loaded model's tokenizer, got {type(tokenizer).__name__} "
                       f"{tokenizer!r:.40}{hint}")
    if isinstance(model, str) and resolve(model).kind == "remote":
        from .backends.remote import OpenAIBackend

        check_options(options, OpenAIBackend.__init__, "a remote judge",
                      exclude={"base_url", "transport", "tokenizer", "model"},
                      extra={"cooldown"} if "," in model else ())
        if batch_size is not None:
            options.setdefault("completion_batch", batch_size)
        if tokenizer is not None:  # else the URL's ?tokenizer= (a keyword wins over the URL)
            options["tokenizer"] = tokenizer
        if "," in model:  # several servers: load-balanced, a dead one skipped
            from .backends.remote.pool import PoolBackend

            return PoolBackend.from_url(model, **options)
        return OpenAIBackend.from_url(model, **options)
    check_options(options, HFBackend.__init__, "a transformers judge", exclude={"model", "tokenizer", "batch_size"})
    if isinstance(model, str):
        from .backends.hf.precision import resolve_device, resolve_dtype

        dev = resolve_device(device)
        # With no device named and a GPU present, accelerate places (and if need be
        # splits) the model over the GPUs; a named device gets the whole model.
        device_map = "auto" if device in (None, "auto") and dev.type == "cuda" else None
        model, loaded_tok = load_pretrained(model, device=str(dev), dtype=resolve_dtype(dtype, dev),
                                            device_map=device_map)
        tokenizer = tokenizer or loaded_tok
        options.setdefault("fast_kernels", True)  # our own copy: free to swap its kernels
    elif tokenizer is None:
        raise ZynError("a loaded model needs its tokenizer: ZeroShotRewardModel(model, tokenizer, ...)")
    elif device is not None or dtype is not None:
        from .backends.hf.precision import resolve_device, resolve_dtype

        dev = resolve_device(device)
        want = resolve_dtype(dtype, dev) if dtype is not None else None
        before = (getattr(model, "device", None), getattr(model, "dtype", None))
        model = model.to(device=dev, dtype=want)
        if (getattr(model, "device", None), getattr(model, "dtype", None)) != before:
            warnings.warn(f"zyn: the model you passed was moved to {model.device} / {model.dtype} in place (torch "
                          "modules convert themselves, not a copy); pass a copy to keep yours as it was",
                          stacklevel=_outside_zyn())
    return HFBackend(model, tokenizer, batch_size=batch_size, **options)


def check_options(options: dict, init: Any, what: str, exclude: Iterable[str] = (), extra: Iterable[str] = ()) -> None:
    """Refuse keyword options that `init` (a backend's constructor) does not take, naming
    each and the nearest known one, before anything is loaded."""
    import difflib
    import inspect

    known = {name for name, p in inspect.signature(init).parameters.items()
             if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - set(exclude)
    known |= {"batch_size", "device", "dtype", *extra}
    for name in options:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known | {"model", "tokenizer", "prompt", "reward"}), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ZynError(f"{name!r} is not an option of ZeroShotRewardModel with {what}; {hint}"
                           f"the options are {', '.join(sorted(known))}")


_SECRET_PARAM = re.compile(r"([?&][^=&#\s]*(?:key|token|secret|passw|auth)[^=&#\s]*=)[^&#\s]*", re.IGNORECASE)
_USERINFO = re.compile(r"(://)[^/\s?#,]*@")  # up to the last "@" of the authority: a password may hold one


def public_name(text: str) -> str:
    """A model string, or any message holding URLs, fit for logs and served responses:
    a URL's user and password, and query parameters that carry keys or tokens
    (``?api_key=``), replaced by ``***``.

    >>> public_name("openai+http://user:pw@10.0.0.2:8000/v1?model=m&api_key=sk-1")
    'openai+http://***@10.0.0.2:8000/v1?model=m&api_key=***'
    >>> public_name("POST http://u:p@ss@h:1/v1/completions failed")
    'POST http://***@h:1/v1/completions failed'
    """
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def _outside_zyn() -> int:
    """The `stacklevel` that points a warning at the first caller outside zyn (the
    user's line, or the trainer's that called a zyn hook)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__") or "").split(".")[0] == "zyn":
        frame, level = frame.f_back, level + 1
    return level


def _describe(model: Any) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", "") or getattr(model, "name", "") or type(model).__name__


def _check_shape(shape: str) -> str:
    if shape not in SHAPES:
        raise ZynError(f"reward: unknown shape {shape!r}; use one of {', '.join(SHAPES)}")
    return shape


def as_batch(name: str, value: Any, what: str = "texts or records") -> list[Any]:
    """`value` as a list, refusing what would be read item by item by mistake: a bare
    string (one text per character), a record, None."""
    if value is None or isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InputError(f"{name}: expected a list of {what}, got {type(value).__name__}; "
                         "wrap a single one in a list")
    if hasattr(value, "columns") and hasattr(value, "iloc"):  # a pandas DataFrame iterates over its column names
        raise InputError(f"{name}: expected a list of {what}, got a DataFrame, whose items are its column names; "
                         "pass a column (df['text']) or its records (df.to_dict('records'))")
    if isinstance(value, (set, frozenset)):
        raise InputError(f"{name}: expected a list of {what}, got a {type(value).__name__}, which has no order for "
                         "the scores to follow; pass a list")
    return list(value)


def same_length(**batches: list[Any]) -> None:
    """Refuse batches of different lengths, naming them."""
    if len({len(b) for b in batches.values()}) > 1:
        raise InputError("one entry per sample is needed in each of " + ", ".join(batches) + "; got "
                         + ", ".join(f"{len(b)} {name}" for name, b in batches.items()))


def _check_inputs(inputs: Any) -> list[Any]:
    items = as_batch("inputs", inputs)
    for i, item in enumerate(items):
        if item is None:
            raise InputError(f"item {i} is None; pass a string (it may be empty) or a record")
        if not isinstance(item, (str, Mapping)):
            raise InputError(f"item {i}: expected a string or a record (dict), got {type(item).__name__}")
    return items


def _trlx_records(samples, prompts, outputs, kwargs, fields=()) -> list[dict]:
    if prompts is not None and outputs is not None:
        prompts, outputs = as_batch("prompts", prompts, "strings"), as_batch("outputs", outputs, "strings")
        same_length(prompts=prompts, outputs=outputs)
        records = [{"prompt": p, "completion": o} for p, o in zip(prompts, outputs)]
        if samples is not None:
            samples = as_batch("samples", samples, "strings")
            same_length(samples=samples, prompts=prompts)
            for r, s in zip(records, samples):
                r["text"] = s
    elif samples is not None:
        records = [{"text": s} for s in _check_inputs(samples)]
    else:
        raise InputError("reward_fn needs samples=, or prompts= and outputs=")
    add_columns(records, kwargs, fields)
    return records


def add_columns(records: list[dict], kwargs: dict, fields: Iterable[str] = ()) -> None:
    """Per-sample columns become template fields: lists and tuples as long as the batch,
    and arrays (numpy, pandas, torch: anything with ``tolist()``). The trainers' own
    keywords (`TRAINER_KWARGS`) and the input keys are left out, and so is any other
    value, unless the prompt set's `fields` name it: such a column must hold one value
    per sample."""
    fields = set(fields)
    for key, values in kwargs.items():
        if key in TRAINER_KWARGS or key in ("prompt", "completion", "text", "messages"):
            continue
        column = as_column(values)
        if column is not None and len(column) == len(records):
            for record, value in zip(records, column):
                record[key] = value
        elif key in fields:
            got = (f"{len(column)} values" if column is not None
                   else f"a single {type(values).__name__}")
            raise InputError(f"column {key!r}: {got} for {len(records)} samples; it gives a field the prompt set "
                             "reads, one value per sample: give a list as long as the batch")


def as_column(values: Any) -> list | None:
    """`values` as a list if it is a column of per-sample values (a list, a tuple, a 1-d
    array), else None."""
    if isinstance(values, (list, tuple)):
        return list(values)
    if callable(getattr(values, "tolist", None)) and getattr(values, "ndim", None) == 1:
        column = values.tolist()
        return column if isinstance(column, list) else None
    return None