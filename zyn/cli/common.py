"""Options shared by the subcommands that load a model."""
from __future__ import annotations

import argparse
import contextlib
import math

from ..models import DEFAULT_JUDGE
from ..scoring import SHAPE_FORMULAS, SHAPES


MODEL_HELP = f"hub id, local folder, .gguf file, preset or openai+http://host:port/v1 (default: {DEFAULT_JUDGE})"


def _number(kind: type, test, need: str):
    """An argparse type: `kind` parsed, then refused unless `test(value)` (``need`` says what is)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {need}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {need}, got {text}")
        return value
    parse.__name__ = need  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "a whole number of at least 1")
positive_float = _number(float, lambda v: 0 < v < math.inf, "a positive number")
non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a number of at least 0")
finite_float = _number(float, math.isfinite, "a finite number")
port_number = _number(int, lambda v: 0 <= v <= 65535, "a port from 0 to 65535")
probability = _number(float, lambda v: 0 <= v <= 1, "a probability from 0 to 1")


def console(stderr: bool = False):
    """A rich Console for the command line: as wide as the terminal, or, when the output is a
    file or a pipe (where rich assumes 80 columns), wide enough that tables keep whole words
    (``COLUMNS`` still decides where it is set)."""
    import os
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=160 if wide else None)


class _OnePromptSet(argparse.Action):
    """--prompt given twice is an error: argparse would keep the last one without a word."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, "_prompt_given", False):
            parser.error(f"{option_string}: zyn {parser.prog.split()[-1]} takes one prompt set; to compare several "
                         "on a labelled set, use zyn eval --prompt A --prompt B")
        namespace._prompt_given = True
        setattr(namespace, self.dest, values)


def add_model_options(p: argparse.ArgumentParser, prompt_help: str = "prompt-set name, YAML path or a question",
                      several: bool = False) -> None:
    """--model, --prompt (one, or with `several` repeatable: a list, None when not given), --reward
    and the run options."""
    p.add_argument("--model", default=DEFAULT_JUDGE, help=MODEL_HELP)
    if several:
        p.add_argument("--prompt", action="append", help=prompt_help)
    else:
        p.add_argument("--prompt", default="sentiment", action=_OnePromptSet, help=prompt_help)
    p.add_argument("--reward", choices=SHAPES, help="override the prompt set's reward shape, in p = P(rewarded "
                   "answer): " + ", ".join(f"{name} = {formula}" for name, formula in SHAPE_FORMULAS.items()))
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--batch-size, --device and --dtype: how a model loaded by name runs."""
    p.add_argument("--batch-size", type=positive_int, help="most queries per forward pass (default 64)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU if present)")
    p.add_argument("--dtype", help="float32, bfloat16, float16, auto (GPU bf16, CPU float32) or fast "
                                   "(bf16 on CPUs that measure it faster; P(yes) drift up to ~0.015 on the "
                                   "benchmark's texts)")
    p.add_argument("--max-length", type=positive_int, metavar="TOKENS",
                   help="longest input in tokens; a longer one is cut inside its text, never in the question "
                        "(default: the model's context; for a remote judge, the server's where it says it)")


def run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ZeroShotRewardModel that `add_run_options` collected."""
    options = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype}
    if args.max_length is not None:  # passed only when asked for: None would override a backend's own default
        options["max_length"] = args.max_length
    return options


def load_reward_model(args: argparse.Namespace, prompt=None):
    from ..model import ZeroShotRewardModel

    return ZeroShotRewardModel(args.model, prompt=prompt or args.prompt, reward=args.reward, **run_options(args))


def add_judge_options(p: argparse.ArgumentParser) -> None:
    """--model, and --prompt repeatable: several prompt sets compared on one judge."""
    p.add_argument("--model", default=DEFAULT_JUDGE, help=MODEL_HELP)
    p.add_argument("--prompt", action="append", dest="prompts", metavar="PROMPT",
                   help="prompt-set name, YAML path or question; repeat to compare several (default: sentiment)")


@contextlib.contextmanager
def output_folder(path: str, option: str = "--output-dir"):
    """`path` as a folder that exists (made if need be), checked before any scoring; the
    folders made here are removed again if the block fails before writing into them."""
    from pathlib import Path

    from ..errors import InputError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option}: {path} is a file; give a folder")
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{option}: cannot make the folder {path}: {e.strerror}") from None
    try:
        yield folder
    except BaseException:
        for p in made:
            try:
                p.rmdir()  # only while empty: nothing written is removed
            except OSError:
                break
        raise
