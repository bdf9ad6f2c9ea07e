"""Prompt sets: yes/no questions as validated data, loaded from YAML and rendered.

A prompt set is one reward: one or more questions (an ensemble), the answer words,
the reward shape and how questions combine. Templates are Jinja2, rendered in a
sandbox with undefined variables as errors. Everything that can be checked at load
time is checked there, and errors name the file and the field.

Rendering keeps track of where each input variable landed (`Query.segments`), so a
backend can shorten an over-long text inside the text itself and never cut the
question or the answer cue.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .api import Query
from .errors import InputError, PromptError
from .scoring import COMBINES, SHAPES

INPUT_VARIABLES = ("text", "prompt", "completion", "messages")
CHAT_MODES = ("auto", "always", "never")
_SET_KEYS = {"name", "version", "description", "chat_template", "system", "answers", "reward",
             "combine", "fields", "questions"}
_QUESTION_KEYS = {"name", "template", "reward_answer", "weight", "calibration"}
_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
# Private-use code points mark where each variable lands in a rendered template.
_MARK = "\ue000{}\ue001"
_MARK_RE = re.compile("\ue000(\\d+)\ue001")


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads only true/false as booleans (YAML 1.2), so the words
    yes and no stay strings: `reward_answer: no` means the answer "no"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


@dataclass(frozen=True)
class Question:
    """One yes/no question.

    Attributes:
        name: short identifier, used as the metric name.
        template: Jinja2 template of the user message.
        reward_answer: "yes", or "no" for a question phrased the other way round.
        weight: positive weight in the ensemble.
        calibration: (scale, shift) applied to the raw log-odds: scale * lo + shift.
    """

    name: str
    template: str
    reward_answer: str = "yes"
    weight: float = 1.0
    calibration: tuple[float, float] = (1.0, 0.0)


@dataclass(frozen=True)
class PromptSet:
    """A reward defined by yes/no questions. Build with `load_prompt_set`."""

    name: str
    questions: tuple[Question, ...]
    version: str = "1"
    description: str = ""
    answers: tuple[tuple[str, ...], tuple[str, ...]] = (("Yes",), ("No",))
    chat_template: str = "auto"
    system: str | None = None
    reward: str = "zyn"
    combine: str = "mean"
    fields: tuple[str, ...] = ()
    source: str = field(default="<object>", compare=False)

    def __post_init__(self):
        _validate(self)

    @property
    def variables(self) -> tuple[str, ...]:
        """Names a record may fill: the input variables and the declared fields."""
        return INPUT_VARIABLES + self.fields

    def render(self, item: Any, index: int = 0) -> list[Query]:
        """Render every question for one text or record, in question order."""
        context = make_context(item, index, self.fields)
        return [_render_query(self, q, context, index) for q in self.questions]

    def with_calibration(self, calibration: Mapping[str, tuple[float, float]]) -> "PromptSet":
        """A copy whose named questions carry new (scale, shift) calibrations."""
        unknown = set(calibration) - {q.name for q in self.questions}
        if unknown:
            raise PromptError(f"{self.source}: no question named {sorted(unknown)} in {self.name!r}")
        questions = tuple(
            dataclasses.replace(q, calibration=tuple(map(float, calibration[q.name])))
            if q.name in calibration else q for q in self.questions)
        return dataclasses.replace(self, questions=questions)

    def to_dict(self) -> dict:
        """The YAML form of this prompt set (what `load_prompt_set` reads back)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description:
            out["description"] = self.description
        out.update(chat_template=self.chat_template, system=self.system,
                   answers={"yes": list(self.answers[0]), "no": list(self.answers[1])},
                   reward=self.reward, combine=self.combine)
        if self.fields:
            out["fields"] = list(self.fields)
        out["questions"] = [_question_dict(q) for q in self.questions]
        return out

    def to_yaml(self, path: str | os.PathLike) -> None:
        """Write this prompt set as a YAML file."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def _question_dict(q: Question) -> dict:
    d: dict[str, Any] = {"name": q.name, "template": q.template,
                         "reward_answer": q.reward_answer, "weight": q.weight}
    if q.calibration != (1.0, 0.0):
        d["calibration"] = {"scale": q.calibration[0], "shift": q.calibration[1]}
    return d


# --------------------------------------------------------------------------- validation

def _validate(ps: PromptSet) -> None:
    where = ps.source
    if not ps.questions:
        raise PromptError(f"{where}: questions: at least one question is required")
    _check_choice(where, "chat_template", ps.chat_template, CHAT_MODES)
    _check_choice(where, "reward", ps.reward, SHAPES)
    _check_choice(where, "combine", ps.combine, COMBINES)
    for side, words in zip(("yes", "no"), ps.answers):
        if not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise PromptError(f"{where}: answers.{side}: must be a non-empty list of words")
    clash = set(ps.fields) & set(INPUT_VARIABLES)
    if clash:
        raise PromptError(f"{where}: fields: {sorted(clash)} are built-in variables; remove them")
    names = [q.name for q in ps.questions]
    if len(set(names)) != len(names):
        raise PromptError(f"{where}: questions: names must be unique, got {names}")
    for i, q in enumerate(ps.questions):
        _validate_question(ps, q, f"{where}: questions[{i}]")


def _check_choice(where: str, key: str, value: str, choices: Iterable[str]) -> None:
    if value not in choices:
        raise PromptError(f"{where}: {key}: {value!r} is not one of {', '.join(choices)}")


def _validate_question(ps: PromptSet, q: Question, where: str) -> None:
    if not isinstance(q.name, str) or not q.name:
        raise PromptError(f"{where}.name: a non-empty string is required")
    _check_choice(where, "reward_answer", q.reward_answer, ("yes", "no"))
    if not isinstance(q.weight, (int, float)) or not q.weight > 0:
        raise PromptError(f"{where}.weight: must be a positive number, got {q.weight!r}")
    scale, shift = q.calibration
    if not (isinstance(scale, (int, float)) and isinstance(shift, (int, float)) and scale > 0):
        raise PromptError(f"{where}.calibration: needs a positive scale and a numeric shift")
    if not isinstance(q.template, str) or not q.template.strip():
        raise PromptError(f"{where}.template: a non-empty template string is required")
    try:
        used = meta.find_undeclared_variables(_ENV.parse(q.template))
    except jinja2.TemplateSyntaxError as e:
        raise PromptError(f"{where}.template: Jinja syntax error on line {e.lineno}: {e.message}") from None
    unknown = used - set(ps.variables)
    if unknown:
        raise PromptError(
            f"{where}.template: undefined variable(s) {sorted(unknown)}; use {', '.join(INPUT_VARIABLES)} "
            f"or declare extra record fields under `fields:`")
    if not used:
        raise PromptError(
            f"{where}.template: uses no input variable, so every text would get the same score; "
            "put {{ text }} (or prompt, completion, messages) where the text goes")
    example = {v: "example" for v in ps.variables}
    example["messages"] = [{"role": "user", "content": "example"}]
    try:
        _ENV.from_string(q.template).render(example)
    except Exception as e:  # a template error of any kind is the author's to fix
        raise PromptError(f"{where}.template: cannot render: {e}") from None


# --------------------------------------------------------------------------- rendering

def make_context(item: Any, index: int = 0, fields: Iterable[str] = ()) -> dict[str, Any]:
    """Template variables for one text or record.

    A string s is {"text": s}. A record may give "text", or "prompt" and
    "completion" (text = prompt + completion, what trlx calls a sample), or chat
    "messages" (completion = the last assistant turn, prompt = the turns before it).
    Extra keys pass through as template fields.
    """
    if isinstance(item, str):
        return {"text": item, "prompt": "", "completion": item, "messages": _as_messages("", item)}
    if not isinstance(item, Mapping):
        raise InputError(f"item {index}: expected a string or a record (dict), got {type(item).__name__}")
    ctx = dict(item)
    if "messages" in ctx:
        ctx.update(_from_messages(ctx["messages"], index))
    for key in ("text", "prompt", "completion"):
        if key in ctx and not isinstance(ctx[key], str):
            raise InputError(f"item {index}: field {key!r} must be a string, got {type(ctx[key]).__name__}")
    if "text" not in ctx:
        if "completion" not in ctx:
            raise InputError(f"item {index}: a record needs 'text', 'completion' (with optional "
                             f"'prompt') or 'messages'; got keys {sorted(item)}")
        ctx["text"] = ctx.get("prompt", "") + ctx["completion"]
    ctx.setdefault("prompt", "")
    ctx.setdefault("completion", ctx["text"])
    ctx.setdefault("messages", _as_messages(ctx["prompt"], ctx["completion"]))
    missing = [f for f in fields if f not in ctx]
    if missing:
        raise InputError(f"item {index}: missing field(s) {missing} that the prompt set's templates use")
    return ctx


def _as_messages(prompt: str, completion: str) -> list[dict]:
    turns = [{"role": "user", "content": prompt}] if prompt else []
    return turns + [{"role": "assistant", "content": completion}]


def _from_messages(messages: Any, index: int) -> dict[str, Any]:
    ok = isinstance(messages, list) and messages and all(
        isinstance(m, Mapping) and isinstance(m.get("content"), str) for m in messages)
    if not ok:
        raise InputError(f"item {index}: 'messages' must be a non-empty list of "
                         "{'role': ..., 'content': str} dicts")
    last = messages[-1]
    before = [m["content"] for m in messages[:-1] if m.get("role") != "system"]
    prompt = "\n\n".join(before)
    completion = last["content"]
    return {"prompt": prompt, "completion": completion,
            "text": f"{prompt}\n\n{completion}" if prompt else completion}


def _render_query(ps: PromptSet, q: Question, ctx: dict[str, Any], index: int) -> Query:
    # Render with every string variable replaced by a marker, then split there: the
    # pieces between markers are template text (never cut), the variables are
    # cuttable. A filter that changes a marker makes the split impossible; then the
    # whole message is one uncuttable piece.
    # Empty strings render as themselves: a marker would make `{% if var %}` true.
    names = [k for k, v in ctx.items() if isinstance(v, str) and v]
    marked = {**ctx, **{k: _MARK.format(i) for i, k in enumerate(names)}}
    template = _compiled(q.template)
    try:
        out = template.render(marked)
    except jinja2.UndefinedError as e:
        raise InputError(f"item {index}: question {q.name!r}: {e.message}") from None
    parts = _MARK_RE.split(out)
    mangled = any("\ue000" in p or "\ue001" in p for p in parts[::2])
    if len(parts) == 1 or mangled:
        return Query(((template.render(ctx), False),), ps.system, ps.chat_template)
    segments = []
    for i, piece in enumerate(parts):
        if i % 2 == 0:
            if piece:
                segments.append((piece, False))
        else:
            value = ctx[names[int(piece)]]
            if value:
                segments.append((value, True))
    return Query(tuple(segments), ps.system, ps.chat_template)


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    """Templates compile once, not once per rendered item."""
    return _ENV.from_string(template)


# --------------------------------------------------------------------------- loading

def prompt_dirs() -> list[Path]:
    """Where prompt-set names are looked up, in order: $ZYN_PROMPTS_PATH (os.pathsep
    separated), the checkout's prompts/ folder, the installed package's copy."""
    dirs = [Path(p) for p in os.environ.get("ZYN_PROMPTS_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "prompts")
    try:
        from importlib.resources import files
        dirs.append(Path(str(files("zyn.builtin_prompts"))))
    except (ModuleNotFoundError, TypeError):
        pass
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def available_prompt_sets() -> list[str]:
    """Names of the prompt sets found in `prompt_dirs()`."""
    return sorted({p.stem for d in prompt_dirs() for p in d.glob("*.y*ml")})


def load_prompt_set(spec: Any) -> PromptSet:
    """A prompt set from a YAML path, a name, a PromptSet, a dict, or a bare question.

    A string containing whitespace or ending in "?" that is not a file is taken as a
    single question about {{ text }}.
    """
    if isinstance(spec, PromptSet):
        return spec
    if isinstance(spec, Mapping):
        return from_dict(spec, "<dict>")
    if isinstance(spec, os.PathLike) or isinstance(spec, str) and spec.endswith((".yaml", ".yml")):
        return _load_file(Path(spec))
    if not isinstance(spec, str) or not spec.strip():
        raise PromptError(f"prompt: expected a YAML path, a prompt-set name or a question, got {spec!r}")
    for d in prompt_dirs():
        for ext in (".yaml", ".yml"):
            if (d / f"{spec}{ext}").is_file():
                return _load_file(d / f"{spec}{ext}")
    if any(c.isspace() for c in spec.strip()) or spec.strip().endswith("?"):
        return question_prompt_set(spec.strip())
    raise PromptError(f"prompt: no prompt set named {spec!r}; available: "
                      f"{', '.join(available_prompt_sets()) or 'none'} (or pass a YAML path or a question)")


def question_prompt_set(question: str) -> PromptSet:
    """A one-question prompt set asking `question` about the text."""
    return PromptSet(name="question", source="<question>",
                     questions=(Question("question", "{{ text }}\n\n{% raw %}" + question + "{% endraw %}"),))


def _load_file(path: Path) -> PromptSet:
    if not path.is_file():
        raise PromptError(f"{path}: no such prompt file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
    except yaml.YAMLError as e:
        raise PromptError(f"{path}: not valid YAML: {e}") from None
    return from_dict(data, str(path))


def from_dict(data: Any, source: str) -> PromptSet:
    """Build a PromptSet from its YAML form, naming `source` in every error."""
    if not isinstance(data, Mapping):
        raise PromptError(f"{source}: the top level must be a mapping of keys")
    _no_unknown(data, _SET_KEYS, source)
    if "name" not in data:
        raise PromptError(f"{source}: name: required")
    raw_questions = data.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        raise PromptError(f"{source}: questions: a non-empty list of questions is required")
    answers = data.get("answers") or {}
    if not isinstance(answers, Mapping):
        raise PromptError(f"{source}: answers: expected {{yes: [...], no: [...]}}")
    _no_unknown(answers, {"yes", "no"}, f"{source}: answers")
    fields = data.get("fields") or []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise PromptError(f"{source}: fields: expected a list of field names")
    return PromptSet(
        name=str(data["name"]), version=str(data.get("version", "1")),
        description=str(data.get("description") or ""),
        questions=tuple(_question(q, f"{source}: questions[{i}]") for i, q in enumerate(raw_questions)),
        answers=(_words(answers.get("yes", ["Yes"])), _words(answers.get("no", ["No"]))),
        chat_template=str(data.get("chat_template", "auto")), system=data.get("system"),
        reward=str(data.get("reward", "zyn")), combine=str(data.get("combine", "mean")),
        fields=tuple(fields), source=source)


def _words(value: Any) -> tuple:
    # YAML reads True/False as booleans; as answer words they are the words.
    values = value if isinstance(value, list) else [value]
    return tuple(str(v) if isinstance(v, bool) else v for v in values)


def _question(raw: Any, where: str) -> Question:
    if not isinstance(raw, Mapping):
        raise PromptError(f"{where}: expected a mapping with name and template")
    _no_unknown(raw, _QUESTION_KEYS, where)
    if "template" not in raw:
        raise PromptError(f"{where}.template: required")
    cal = raw.get("calibration") or {}
    if not isinstance(cal, Mapping):
        raise PromptError(f"{where}.calibration: expected {{scale: ..., shift: ...}}")
    _no_unknown(cal, {"scale", "shift"}, f"{where}.calibration")
    return Question(name=str(raw.get("name", "q")), template=raw["template"],
                    reward_answer=str(raw.get("reward_answer", "yes")), weight=raw.get("weight", 1.0),
                    calibration=(cal.get("scale", 1.0), cal.get("shift", 0.0)))


def _no_unknown(data: Mapping, allowed: set[str], where: str) -> None:
    unknown = set(map(str, data)) - allowed
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
