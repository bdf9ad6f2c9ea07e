"""`zyn prompts`: list, validate and show prompt sets."""
from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from ..errors import ZynError
from ..prompts import available_prompt_sets, load_prompt_set
from .common import console as cli_console

EXAMPLE = "A gripping story with wonderful performances; I would watch it again."


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompts", help="list, validate and show prompt sets")
    psub = p.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)
    psub.add_parser("list", help="the prompt sets zyn can find by name").set_defaults(func=run_list)
    v = psub.add_parser("validate", help="check prompt-set YAML files")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=run_validate)
    s = psub.add_parser("show", help="render a worked example of a prompt set")
    s.add_argument("name", help="prompt-set name, YAML path or a question")
    s.add_argument("--text", default=EXAMPLE, help="the text to render")
    s.add_argument("--field", action="append", default=[], metavar="KEY=VALUE",
                   help="extra template field (repeatable)")
    s.add_argument("--model", help="also show the exact model input (chat template) and answer token ids")
    s.set_defaults(func=run_show)


def run_list(args) -> int:
    table = Table("name", "questions", "reward", "combine", "description")
    for name in available_prompt_sets():
        ps = load_prompt_set(name)
        qs = ", ".join(f"{q.name} ({q.reward_answer})" for q in ps.questions)
        table.add_row(name, qs, ps.reward, ps.combine, ps.description)
    cli_console().print(table)
    return 0


def run_validate(args) -> int:
    console, failed = cli_console(), 0
    for path in args.files:
        try:
            ps = load_prompt_set(path if path.endswith((".yaml", ".yml")) else path + ".yaml")
            console.print(Text("ok", style="green") + Text(f"  {path}: {ps.name} ({len(ps.questions)} question(s))"),
                          highlight=False)
        except ZynError as e:
            failed += 1
            console.print(Text("bad", style="red") + Text(f" {e}"), highlight=False)  # the error's own brackets kept
    return 1 if failed else 0


def run_show(args) -> int:
    ps = load_prompt_set(args.name)
    record = {"text": args.text, "completion": args.text}
    for item in args.field:
        key, sep, value = item.partition("=")
        if not sep:
            raise ZynError(f"--field {item!r}: expected KEY=VALUE")
        record[key] = value
    console = cli_console()
    console.print(Text(ps.name, style="bold") + Text(f" v{ps.version}  reward={ps.reward}  combine={ps.combine}  "
                  f"answers yes={list(ps.answers[0])} no={list(ps.answers[1])}  chat_template={ps.chat_template}"),
                  highlight=False)  # Text: brackets in names and answers are not markup
    for p in ps.penalties:
        console.print(f"penalty: {p.weight:g} x {p.kind} (n={p.n}) off the combined log-odds; "
                      f"this text: {p.of(record['completion']):.3f}", markup=False, highlight=False)
    backend = _backend(args.model) if args.model else None
    for q, query in zip(ps.questions, ps.render(record)):
        console.rule(f"{q.name}  (rewards {q.reward_answer!r}, weight {q.weight})")
        console.print(backend.format(query) if backend else query.user, markup=False, highlight=False)
    if backend:
        ids = backend.answer_ids(*ps.answers)
        tok = backend.tokenizer
        console.rule("answer tokens")
        console.print(f"yes: {[(i, tok.convert_ids_to_tokens(i)) for i in ids.yes]}", markup=False)
        console.print(f"no:  {[(i, tok.convert_ids_to_tokens(i)) for i in ids.no]}", markup=False)
    return 0


def _backend(model: str):
    from ..api import Formats
    from ..model import build_backend

    backend = build_backend(model)
    if not isinstance(backend, Formats):
        raise ZynError(f"--model {model!r}: showing the exact input needs a local transformers model")
    return backend
