"""The `zyn` command line. The only place that sets up logging and prints.

Each subcommand group lives in its own module with a `register(subparsers)`
function; a group whose optional dependencies are missing says so when used.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from ..errors import TruncationWarning, ZynError

_GROUPS = ("score", "merge", "prompts", "models", "eval", "probe", "serve")


class CommandError(ZynError):
    """A command-line usage problem, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zyn", description="Zero-shot yes/no reward models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info-level logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _GROUPS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:  # an optional extra is missing
            sub.add_parser(name, help=f"(unavailable: {e.name} is not installed)").set_defaults(
                func=_missing(name, e.name))
            continue
        module.register(sub)
    for command in sub.choices.values():  # -v after the subcommand too (zyn score ... -v)
        _add_verbose(command)
    return parser


def _add_verbose(p: argparse.ArgumentParser) -> None:
    if "-v" not in p._option_string_actions:
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show info-level logs")
    for action in p._actions:  # nested subcommands (zyn prompts validate ... -v)
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child)


def _missing(group: str, package: str):
    def run(args):
        raise CommandError(f"`zyn {group}` needs {package}: pip install -e '.[all]'")
    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args) or 0
    except (ZynError, FileNotFoundError) as e:
        print(f"zyn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zyn: interrupted", file=sys.stderr)
        return 130


_python_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """zyn's own warnings as their message alone (they say what happened; where in zyn's
    code they were raised is of no use on the command line); others as Python formats them."""
    if issubclass(category, TruncationWarning) or str(message).startswith("zyn:"):
        return str(message)
    return _python_format(message, category, filename, lineno, line)


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False)])
    logging.captureWarnings(True)
    logging.getLogger("zyn.cli").setLevel(logging.INFO)  # the commands' own news (serve's address) at INFO
    warnings.simplefilter("default")
    warnings.simplefilter("always", TruncationWarning)  # each call's count (a chunk's), not only the first
    warnings.formatwarning = _format_warning
    # transformers is chatty about generation flags that do not apply to a single forward
    # pass, and draws a progress bar for every weight load
    logging.getLogger("transformers").setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
