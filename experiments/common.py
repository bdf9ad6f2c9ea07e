"""The shared loop of the ZYN experiments: RLAIF with a zyn reward on TRL (GRPO or RLOO), or trlx PPO.

Each experiment script names its question set and its data and hands a reward-model
factory to `main`; everything else lives here:

    arguments + config file -> checks (fail fast, one line, exit 2) -> data -> judge + policy
    -> trainer (TRL GRPOTrainer | RLOOTrainer | trlx PPO) with an evaluation callback
    -> metrics.jsonl, samples.jsonl, reward.png, p_yes.png, summary.json, final checkpoint

Evaluation #0 runs before the first update and one more every ``eval_every`` steps and at
the end: the policy continues the held-out openers greedily (deterministic) and the judge
scores the continuations with ``score_detailed``. The before/after table compares the first
and the last evaluation.

The default configuration is sized for a 2-core CPU (short completions, small groups,
frozen embeddings, bf16 autocast where the CPU runs bf16 faster); ``configs/paper_gpu.yaml``
is the paper's setting. Precedence: DEFAULTS < the script's defaults < --config FILE < flags.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import importlib.util
import inspect
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

T_START = time.monotonic()
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

TRAINERS = ("grpo", "rloo", "trlx")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The CPU default: one run of the sentiment experiment fits in 20 minutes on 2 cores.
DEFAULTS: dict[str, Any] = {
    "trainer": "grpo",
    "policy": "gemma-3-270m",                 # zyn.models preset (offline); any hub id or local folder
    "judge": "qwen2.5-coder-0.5b-instruct",   # zyn.models preset (offline)
    "prompts": None,                          # prompt-set name or YAML path; None = the script's own
    "dataset": None,                          # .txt/.jsonl/.csv file or a datasets hub name[:split]
    "eval_dataset": None,                     # held-out openers; None = the script's own (hub: test split)
    "dataset_words": 4,                       # hub/text datasets: the first N words are the prompt (paper)
    "eval_size": 64,                          # most held-out openers evaluated
    "steps": 40,
    "seed": 0,
    "eval_every": 10,
    "output_dir": None,                       # None = experiments/runs/<experiment>
    "device": "auto",                         # auto | cpu | cuda | cuda:N
    "precision": "auto",                      # auto (measured) | bf16 | fp32
    "learning_rate": 2.0e-5,
    "batch_size": 16,                         # completions per optimisation step
    "num_generations": 4,                     # completions per prompt (the GRPO/RLOO group)
    "max_new_tokens": 20,
    "temperature": 1.0,
    "top_k": 0,
    "kl_coef": None,                          # None = the trainer's default (GRPO 0.0, RLOO 0.05)
    "freeze_embeddings": True,                # the tied embedding/LM-head matrix is most of a small LM
    "freeze_layers": 0,                       # also freeze the N lowest transformer blocks
    "judge_batch_size": None,                 # None = the backend's default
    "judge_dtype": None,                      # None = follow `precision`
    "eval_show": 6,                           # rows shown in each evaluation table (means use all)
    "time_limit_minutes": 19.0,               # stop training early so the whole run ends in time; null = off
    "save_model": True,                       # final / interrupted checkpoint under output_dir
    "trl": {},                                # extra GRPOConfig / RLOOConfig fields, passed as they are
    "trlx": {},                               # overrides of the paper's trlx PPO config (see TRLX_PAPER)
}

# The paper's trlx PPO setting (ZYN, arXiv 2308.06385, and its code).
TRLX_PAPER: dict[str, Any] = {
    "batch_size": 64,
    "learning_rate": 1.0e-4,
    "init_kl_coef": 0.05,
    "max_new_tokens": 40,
    "eval_interval": 50,
    "total_steps": 450,
    "num_rollouts": 128,
    "chunk_size": 64,
    "ppo_epochs": 4,
    "seq_length": 1024,
    "num_layers_unfrozen": 2,
}


class ExperimentError(Exception):
    """A problem the user can fix (bad flag, missing file, no GPU): one line, exit code 2."""


@dataclasses.dataclass
class Experiment:
    """What an experiment script declares.

    Attributes:
        name: short name; the default output folder is experiments/runs/<name>.
        prompts: the prompt set (name under prompts/ or a YAML path).
        reward_model: ``factory(judge, prompt=..., **options) -> ZeroShotRewardModel``.
        dataset / eval_dataset: default training prompts and held-out openers.
        description: one line for --help.
        defaults: config values this experiment changes.
    """

    name: str
    prompts: str
    reward_model: Callable[..., Any]
    dataset: str
    eval_dataset: str
    description: str = ""
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


# ============================================================================ entry point

def main(exp: Experiment, argv: Sequence[str] | None = None) -> int:
    """Run an experiment from the command line; return the exit code (0, 2 on a usage error, 130)."""
    from zyn.errors import ZynError

    _quiet_libraries()
    try:
        cfg = build_config(exp, argv)
        return Run(exp, cfg).run()
    except (ExperimentError, ZynError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


def _quiet_libraries() -> None:
    """Keep the console for the progress bar and the tables: no per-file loading bars, no
    deprecation chatter from the libraries."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ============================================================================ configuration

def parser(exp: Experiment) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python experiments/{exp.name}.py",
        description=exp.description or f"RLAIF with the zyn reward '{exp.prompts}'.",
        epilog="Defaults suit a small CPU; configs/paper_gpu.yaml is the paper's setting. "
               "Precedence: defaults < --config FILE < flags.")
    a = p.add_argument
    a("--config", metavar="FILE", help="YAML or JSON file overriding the defaults (any config key)")
    a("--trainer", choices=TRAINERS, help="grpo (TRL GRPOTrainer, default), rloo (TRL RLOOTrainer), "
      "trlx (the paper's PPO; needs trlx installed)")
    a("--policy", help="policy model: preset, local folder or hub id (default gemma-3-270m)")
    a("--judge", help="judge model: preset, local folder, .gguf or hub id (default qwen2.5-coder-0.5b-instruct)")
    a("--prompts", help=f"prompt set: name under prompts/ or a YAML path (default {exp.prompts})")
    a("--dataset", help="training prompts: .txt (one per line), .jsonl/.csv (prompt or text column) "
      "or a datasets hub name[:split] such as imdb (first 4 words of each text)")
    a("--eval-dataset", help="held-out openers, same forms as --dataset")
    a("--steps", type=int, help="optimisation steps")
    a("--seed", type=int, help="random seed")
    a("--eval-every", type=int, help="evaluate on the held-out openers every N steps")
    a("--output-dir", help="where metrics.jsonl, plots and checkpoints go")
    a("--device", help="auto, cpu, cuda or cuda:N")
    return p


def build_config(exp: Experiment, argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser(exp).parse_args(argv)
    cfg = dict(DEFAULTS)
    cfg.update(prompts=exp.prompts, dataset=exp.dataset, eval_dataset=exp.eval_dataset)
    cfg.update(exp.defaults)
    if args.config:
        cfg.update(_read_config(args.config))
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    cfg.update(flags)
    if cfg["output_dir"] is None:
        cfg["output_dir"] = str(HERE / "runs" / exp.name)
    _check_config(cfg)
    return cfg


def _read_config(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ExperimentError(f"--config {path}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ExperimentError(f"--config {path}: cannot parse it ({_one_line(e)})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ExperimentError(f"--config {path}: expected a mapping of config keys, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ExperimentError(f"--config {path}: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(DEFAULTS)}")
    return data


def _check_config(cfg: dict[str, Any]) -> None:
    if cfg["trainer"] not in TRAINERS:
        raise ExperimentError(f"trainer {cfg['trainer']!r} is not one of {', '.join(TRAINERS)}")
    for key in ("steps", "eval_every", "batch_size", "num_generations", "max_new_tokens", "eval_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ExperimentError(f"{key.replace('_', '-')} must be a positive integer, got {cfg[key]!r}")
    if cfg["trainer"] != "trlx":
        if cfg["num_generations"] < 2:
            raise ExperimentError("num_generations must be at least 2 (GRPO/RLOO compare completions in a group)")
        if cfg["batch_size"] % cfg["num_generations"]:
            raise ExperimentError(f"batch_size ({cfg['batch_size']}) must be a multiple of num_generations "
                                  f"({cfg['num_generations']})")
    if cfg["precision"] not in ("auto", "bf16", "fp32"):
        raise ExperimentError(f"precision must be auto, bf16 or fp32, got {cfg['precision']!r}")
    for key in ("trl", "trlx"):
        if not isinstance(cfg[key], dict):
            raise ExperimentError(f"config key {key!r} must be a mapping")


# ============================================================================ data

def load_prompts(spec: str, *, words: int, limit: int | None = None, split: str = "train",
                 seed: int = 0) -> list[str]:
    """Prompts from a local .txt/.jsonl/.csv file or a datasets hub name[:split].

    A .txt file holds one prompt per line. A .jsonl/.csv file gives a ``prompt`` column
    (taken as is) or a ``text`` column (its first `words` words, as the paper did with IMDB).
    A hub dataset gives ``prompt`` or ``text`` the same way; `split` applies unless the
    name carries one (``imdb:test``).
    """
    path = Path(spec)
    if path.suffix.lower() in (".txt", ".jsonl", ".json", ".csv") or path.exists():
        rows = _read_local(path, words)
    else:
        rows = _read_hub(spec, words, split, seed, limit)
    rows = list(dict.fromkeys(r for r in rows if r))  # drop empties and duplicates, keep order
    if not rows:
        raise ExperimentError(f"dataset {spec}: no prompts found")
    return rows[:limit] if limit else rows


def _first_words(text: str, n: int) -> str:
    return " ".join(str(text).split()[:n])


def _read_local(path: Path, words: int) -> list[str]:
    if not path.is_file():
        raise ExperimentError(f"dataset {path}: no such file (give a .txt/.jsonl/.csv file or a hub name)")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if suffix in (".jsonl", ".json"):
        records = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise ExperimentError(f"dataset {path}: line {i} is not JSON") from None
    elif suffix == ".csv":
        records = list(csv.DictReader(text.splitlines()))
    else:
        raise ExperimentError(f"dataset {path}: unknown file type {suffix!r}; use .txt, .jsonl or .csv")
    return [_record_prompt(r, words, path) for r in records]


def _record_prompt(record: Any, words: int, where: Any) -> str:
    if isinstance(record, str):
        return _first_words(record, words)
    if isinstance(record, dict):
        if record.get("prompt"):
            return str(record["prompt"]).strip()
        if record.get("text"):
            return _first_words(record["text"], words)
    raise ExperimentError(f"dataset {where}: each record needs a 'prompt' or a 'text' field")


def _read_hub(spec: str, words: int, split: str, seed: int, limit: int | None) -> list[str]:
    name, _, given_split = spec.partition(":")
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency of trl
        raise ExperimentError("hub datasets need the 'datasets' package; give a local file instead") from None
    try:
        with _quiet_hub():
            ds = datasets.load_dataset(name, split=given_split or split)
    except Exception as e:  # offline, unknown name, unknown split: all the user's to fix
        raise ExperimentError(f"could not load the dataset {spec!r} ({_one_line(e)[:200]}); without hub "
                              f"access pass a local .txt/.jsonl/.csv file") from None
    column = "prompt" if "prompt" in ds.column_names else "text" if "text" in ds.column_names else None
    if column is None:
        raise ExperimentError(f"dataset {spec}: needs a 'prompt' or 'text' column, has {ds.column_names}")
    ds = ds.shuffle(seed=seed)
    if limit:
        ds = ds.select(range(min(len(ds), limit * 2)))
    return [_record_prompt({column: t}, words, spec) for t in ds[column]]


@contextlib.contextmanager
def _quiet_hub():
    """Silence the hub client's retry warnings (an offline machine would print one per retry)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ============================================================================ devices and precision

def resolve_device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ExperimentError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu (or auto)")
        try:
            index = torch.device(name).index or 0
        except RuntimeError:
            raise ExperimentError(f"--device {name}: not a device name; use cpu, cuda or cuda:N") from None
        if index >= torch.cuda.device_count():
            raise ExperimentError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here")
        return name
    if name != "cpu":
        raise ExperimentError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return name


def choose_precision(setting: str, device: str) -> str:
    """bf16 or fp32. On a GPU bf16 where supported; on a CPU whichever multiplies faster here.

    CPUs differ (an AVX512-BF16 core runs bf16 several times faster than float32, an AVX2-only
    one several times slower), so "auto" times a small product of each kind, once.
    """
    import torch

    if setting != "auto":
        return setting
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_bf16_speedup() >= 1.5 else "fp32"


def _cpu_bf16_speedup() -> float:
    import torch

    a, b = torch.randn(256, 640), torch.randn(640, 2048)

    def best(x, y):
        x @ y  # warm-up (kernel selection)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a, b) / best(a.bfloat16(), b.bfloat16())


def autocast(device: str, precision: str):
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)


# ============================================================================ the run

class Run:
    """One experiment run: loads everything, trains, evaluates, plots."""

    def __init__(self, exp: Experiment, cfg: dict[str, Any]):
        self.exp, self.cfg = exp, cfg
        self.out = Path(cfg["output_dir"])
        self.console = _console()
        self.evals: list[dict[str, Any]] = []
        self.interrupted = 0
        self.stop_reason: str | None = None

    # ---------------------------------------------------------------- checks before any model loads

    def preflight(self) -> None:
        from zyn import load_prompt_set
        from zyn.models import resolve

        cfg = self.cfg
        if cfg["trainer"] == "trlx" and importlib.util.find_spec("trlx") is None:
            raise ExperimentError("--trainer trlx needs trlx, which is not installed (it is archived and not on "
                                  "the package registry: install it from github.com/CarperAI/trlx); "
                                  "or use --trainer grpo / rloo")
        self.prompt_set = load_prompt_set(cfg["prompts"])
        self.device = resolve_device(cfg["device"])
        for role in ("policy", "judge"):
            resolve(cfg[role])  # unknown preset, missing file: raises a one-line ModelError
        eval_rows = load_prompts(cfg["eval_dataset"], words=cfg["dataset_words"], limit=cfg["eval_size"],
                                 split="test", seed=cfg["seed"] + 1)
        held_out = set(eval_rows)
        train_rows = [p for p in load_prompts(cfg["dataset"], words=cfg["dataset_words"], split="train",
                                              seed=cfg["seed"]) if p not in held_out]
        if not train_rows:
            raise ExperimentError("no training prompts left after removing the held-out openers")
        self.train_prompts, self.eval_prompts = train_rows, eval_rows
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.metrics_path = self.out / "metrics.jsonl"
            self.metrics_path.write_text("")
            (self.out / "samples.jsonl").write_text("")
        except OSError as e:
            raise ExperimentError(f"--output-dir {self.out}: cannot write there ({e.strerror})") from None

    # ---------------------------------------------------------------- loading

    def load_models(self) -> None:
        import torch
        from zyn.models import load_pretrained

        cfg = self.cfg
        self.precision = choose_precision(cfg["precision"], self.device)
        judge_dtype = cfg["judge_dtype"] or ("bfloat16" if self.precision == "bf16" else "float32")
        with self.console.status(f"Loading the judge {cfg['judge']} ..."):
            self.rm = self.exp.reward_model(cfg["judge"], prompt=self.prompt_set, device=self.device,
                                            dtype=judge_dtype, batch_size=cfg["judge_batch_size"])
        if cfg["trainer"] == "trlx":
            return
        with self.console.status(f"Loading the policy {cfg['policy']} ..."):
            self.policy, self.tokenizer = load_pretrained(cfg["policy"], device=self.device, dtype=torch.float32)
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.trainable = freeze(self.policy, cfg["freeze_embeddings"], cfg["freeze_layers"])

    # ---------------------------------------------------------------- main

    def run(self) -> int:
        self.preflight()
        cfg = self.cfg
        self._header()
        self.load_models()
        self._log({"kind": "start", "load_seconds": round(time.monotonic() - T_START, 1),
                   "config": _jsonable(cfg), "precision": self.precision, "device": self.device})
        if cfg["trainer"] == "trlx":
            return self.run_trlx()
        trainer = self.build_trainer()
        code = 0
        with self._sigint():
            try:
                trainer.train()
            except KeyboardInterrupt:
                self.interrupted = 2
                code = 130
        if self.interrupted:
            self.console.print(f"[yellow]Interrupted at step {trainer.state.global_step}; "
                               "keeping the metrics and saving a checkpoint.[/]")
            code = 130
            if self.interrupted == 1 and self.evaluator.last_step != trainer.state.global_step:
                self.evaluator.evaluate(trainer.state.global_step)  # Ctrl-C once: still measure "after"
        self.save(trainer, "checkpoint-interrupted" if self.interrupted else "final")
        self.finish(trainer.state.global_step)
        return code

    def build_trainer(self):
        from datasets import Dataset
        from transformers.trainer_callback import ProgressCallback

        cfg = self.cfg
        Trainer, Config = _trl_classes(cfg["trainer"])
        fields = {f.name for f in dataclasses.fields(Config)}
        kwargs: dict[str, Any] = dict(
            output_dir=str(self.out), max_steps=cfg["steps"], learning_rate=cfg["learning_rate"],
            per_device_train_batch_size=cfg["batch_size"], gradient_accumulation_steps=1,
            num_generations=cfg["num_generations"], max_completion_length=cfg["max_new_tokens"],
            temperature=cfg["temperature"], top_k=cfg["top_k"], seed=cfg["seed"],
            gradient_checkpointing=False, bf16=self.precision == "bf16", use_cpu=self.device == "cpu",
            logging_steps=1, save_strategy="no", report_to=[], lr_scheduler_type="constant",
            warmup_steps=0, dataloader_num_workers=0, disable_tqdm=False, log_completions=False,
        )
        if cfg["kl_coef"] is not None:
            kwargs["beta"] = float(cfg["kl_coef"])
        kwargs.update(cfg["trl"])
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise ExperimentError(f"{Config.__name__} has no field(s) {', '.join(unknown)} (config key 'trl')")
        try:
            args = Config(**kwargs)
        except (ValueError, TypeError) as e:
            raise ExperimentError(f"invalid {Config.__name__}: {_one_line(e)}") from None
        self.reward_fn = self.rm.as_trl_reward()
        self.evaluator = Evaluator(self)
        trainer = Trainer(model=self.policy, reward_funcs=self.reward_fn, args=args,
                          train_dataset=Dataset.from_dict({"prompt": self.train_prompts}),
                          processing_class=self.tokenizer, callbacks=[self.evaluator])
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_Progress(self))
        return trainer

    def run_trlx(self) -> int:  # pragma: no cover - trlx is not installable here
        import trlx

        config = trlx_config(self.cfg)
        sig = inspect.signature(trlx.train).parameters
        metric_key = "metric_fn" if "metric_fn" in sig else "metrics_fn"
        self.console.print("Training with trlx PPO (the paper's configuration); trlx logs its own metrics.")
        trlx.train(reward_fn=self.rm, prompts=self.train_prompts, eval_prompts=self.eval_prompts,
                   config=config, **{metric_key: self.rm.metric_fn})
        return 0

    # ---------------------------------------------------------------- output

    def _header(self) -> None:
        cfg = self.cfg
        q = ", ".join(f"{x.name} ({x.reward_answer})" for x in self.prompt_set.questions)
        self.console.print(
            f"[bold]{self.exp.name}[/]: trainer={cfg['trainer']} policy={cfg['policy']} judge={cfg['judge']} "
            f"device={self.device} steps={cfg['steps']}\n  prompt set '{self.prompt_set.name}': {q}\n"
            f"  {len(self.train_prompts)} training prompts, {len(self.eval_prompts)} held-out openers; "
            f"output in {self.out}")

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")

    def save(self, trainer, name: str) -> None:
        if not self.cfg["save_model"]:
            return
        path = self.out / name
        try:
            trainer.save_model(str(path))
            self.tokenizer.save_pretrained(str(path))
            self.console.print(f"Saved the policy to {path}")
        except Exception as e:  # a failed save must not lose the metrics and plots
            self.console.print(f"[red]Could not save the policy to {path}: {_one_line(e)}[/]")

    def finish(self, steps: int) -> None:
        elapsed = time.monotonic() - T_START
        plots = plot_metrics(self.metrics_path, self.out, title=self.exp.name)
        summary = summarize(self.evals, steps, elapsed, self.stop_reason)
        (self.out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
        self._log({"kind": "end", "steps": steps, "seconds": round(elapsed, 1), "stopped": self.stop_reason})
        print_summary(self.console, summary, self.exp.name)
        self.console.print(f"Metrics: {self.metrics_path}; plots: {', '.join(str(p) for p in plots)}")

    # ---------------------------------------------------------------- Ctrl-C

    @contextlib.contextmanager
    def _sigint(self):
        """First Ctrl-C: stop after the current step; second: stop now. Both keep metrics and a checkpoint."""
        def handler(signum, frame):
            self.interrupted += 1
            if self.interrupted >= 2:
                raise KeyboardInterrupt
            self.stop_reason = "interrupted"
            print("\nCtrl-C: stopping after this step (press again to stop now)", file=sys.stderr, flush=True)

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _trl_classes(name: str):
    if name == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOTrainer, RLOOConfig
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def trlx_config(cfg: dict[str, Any]):  # pragma: no cover - trlx is not installable here
    """The paper's trlx PPO config (TRLX_PAPER, overridden by the config's ``trlx`` mapping)."""
    from trlx.data.default_configs import default_ppo_config

    p = {**TRLX_PAPER, **cfg["trlx"]}
    c = default_ppo_config()
    c.model.model_path = cfg["policy"]
    c.model.num_layers_unfrozen = p["num_layers_unfrozen"]
    c.tokenizer.tokenizer_path = cfg["policy"]
    c.train.batch_size = p["batch_size"]
    c.train.total_steps = p["total_steps"]
    c.train.eval_interval = p["eval_interval"]
    c.train.seq_length = p["seq_length"]
    c.train.seed = cfg["seed"]
    c.train.checkpoint_dir = str(Path(cfg["output_dir"]) / "trlx")
    c.train.tracker = None
    c.optimizer.kwargs["lr"] = p["learning_rate"]
    c.scheduler.kwargs["eta_min"] = p["learning_rate"]
    c.method.init_kl_coef = p["init_kl_coef"]
    c.method.num_rollouts = p["num_rollouts"]
    c.method.chunk_size = p["chunk_size"]
    c.method.ppo_epochs = p["ppo_epochs"]
    c.method.gen_kwargs["max_new_tokens"] = p["max_new_tokens"]
    return c


def freeze(model, embeddings: bool, layers: int) -> int:
    """Freeze the input embeddings (and a tied LM head) and the `layers` lowest blocks; return trainable count."""
    if embeddings:
        emb = model.get_input_embeddings()
        if emb is not None:
            emb.weight.requires_grad_(False)
        pos = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2 position embeddings
        if pos is not None:
            pos.weight.requires_grad_(False)
    if layers:
        blocks = _blocks(model)
        if blocks is None:
            raise ExperimentError("freeze_layers: cannot find this model's list of transformer blocks")
        for block in list(blocks)[:layers]:
            block.requires_grad_(False)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise ExperimentError("every policy parameter is frozen; lower freeze_layers")
    return n


def _blocks(model):
    import torch

    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    return None


# ============================================================================ callbacks

try:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback
except ImportError:  # pragma: no cover
    TrainerCallback = ProgressCallback = object  # type: ignore[misc,assignment]


class Evaluator(TrainerCallback):
    """Evaluation #n: greedy continuations of the held-out openers, scored by the judge.

    Runs before training (#0), every `eval_every` steps, and at the end; also appends the
    trainer's logs to metrics.jsonl and ends training early when the time limit nears.
    """

    def __init__(self, run: Run):
        self.run = run
        self.last_step: int | None = None
        self.eval_seconds = 0.0
        self.step_started = time.monotonic()
        self.step_seconds = 0.0

    # transformers callback hooks
    def on_train_begin(self, args, state, control, **kw):
        self.evaluate(0)
        self.step_started = time.monotonic()

    def on_step_end(self, args, state, control, **kw):
        now = time.monotonic()
        self.step_seconds = now - self.step_started
        step = state.global_step
        if step % self.run.cfg["eval_every"] == 0 or step >= state.max_steps:
            self.evaluate(step)
        if self.run.interrupted:
            control.should_training_stop = True
        elif self._out_of_time(state):
            control.should_training_stop = True
        self.step_started = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "train_runtime" not in logs:
            self.run._log({"kind": "train", "step": state.global_step, **logs})

    def on_train_end(self, args, state, control, **kw):
        if self.last_step != state.global_step and not self.run.interrupted:
            self.evaluate(state.global_step)

    def _out_of_time(self, state) -> bool:
        limit = self.run.cfg["time_limit_minutes"]
        if not limit or state.global_step >= state.max_steps:
            return False
        remaining = limit * 60 - (time.monotonic() - T_START)
        need = self.step_seconds + 2 * self.eval_seconds + 30  # one more step, the final eval, saving
        if remaining < need:
            self.run.stop_reason = f"time limit ({limit:g} min) after step {state.global_step}"
            self.run.console.print(f"[yellow]Stopping early: {self.run.stop_reason}; "
                                   f"set time_limit_minutes: null to run every step.[/]")
            return True
        return False

    # the evaluation itself
    def evaluate(self, step: int) -> dict[str, Any]:
        run = self.run
        t = time.monotonic()
        outputs = generate(run.policy, run.tokenizer, run.eval_prompts, max_new_tokens=run.cfg["max_new_tokens"],
                           device=run.device, precision=run.precision)
        records = [{"prompt": p, "completion": c} for p, c in zip(run.eval_prompts, outputs)]
        scores = run.rm.score_detailed(records)
        n = len(run.evals)
        result = {
            "kind": "eval", "eval": n, "step": step, "n": len(records),
            "reward": _mean(scores.rewards), "p_yes": _mean(scores.p_yes),
            **{f"p_yes/{q}": _mean(v) for q, v in scores.per_question.items()},
            "seconds": round(time.monotonic() - t, 2),
        }
        run.evals.append(result)
        run._log(result)
        with open(run.out / "samples.jsonl", "a", encoding="utf-8") as f:
            for i, (p, c) in enumerate(zip(run.eval_prompts, outputs)):
                row = {"eval": n, "step": step, "prompt": p, "output": c, "reward": scores.rewards[i],
                       "p_yes": scores.p_yes[i], **{f"p_yes/{q}": v[i] for q, v in scores.per_question.items()}}
                f.write(json.dumps(_jsonable(row)) + "\n")
        table = eval_table(n, step, run.eval_prompts, outputs, scores, run.cfg["eval_show"])
        with _tqdm_paused():
            run.console.print(table)
        self.eval_seconds = time.monotonic() - t
        self.last_step = step
        return result


class _Progress(ProgressCallback):
    """transformers' progress bar, showing the batch reward instead of printing every log dict."""

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    def on_log(self, args, state, control, logs=None, **kw):
        bar = getattr(self, "training_bar", None)
        if bar is None or not logs:
            return
        reward = logs.get("reward")
        post = {}
        if reward is not None:
            post["reward"] = f"{reward:.3f}"
        if self.run.evals:
            post["eval P(yes)"] = f"{self.run.evals[-1]['p_yes']:.3f}"
        bar.set_postfix(post, refresh=False)


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, device: str, precision: str,
             batch_size: int = 16) -> list[str]:
    """Greedy continuations (deterministic), decoded without special tokens."""
    import torch

    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            with torch.no_grad(), autocast(device, precision):
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            outputs += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return outputs


# ============================================================================ tables, plots, summary

def _console():
    from rich.console import Console

    return Console(highlight=False)


@contextlib.contextmanager
def _tqdm_paused():
    try:
        from tqdm import tqdm

        with tqdm.external_write_mode():
            yield
    except ImportError:  # pragma: no cover
        yield


def eval_table(n: int, step: int, prompts, outputs, scores, show: int):
    from rich.table import Table

    questions = list(scores.per_question)
    many = len(questions) > 1
    table = Table(title=f"Evaluation #{n} (step {step})", show_lines=False, expand=False,
                  caption=f"{min(show, len(prompts))} of {len(prompts)} held-out openers shown; "
                          f"means over all {len(prompts)}, greedy decoding")
    table.add_column("prompt", style="cyan", max_width=28, overflow="fold")
    table.add_column("output", max_width=60, overflow="fold")
    table.add_column("reward", justify="right")
    table.add_column("P(yes)", justify="right")
    if many:
        for q in questions:
            table.add_column(f"P(yes) {q}", justify="right")
    for i in range(min(show, len(prompts))):
        row = [prompts[i], outputs[i].replace("\n", " "), f"{scores.rewards[i]:+.2f}", f"{scores.p_yes[i]:.3f}"]
        if many:
            row += [f"{scores.per_question[q][i]:.3f}" for q in questions]
        table.add_row(*row)
    means = ["[bold]mean[/]", "", f"[bold]{_mean(scores.rewards):+.3f}[/]", f"[bold]{_mean(scores.p_yes):.3f}[/]"]
    if many:
        means += [f"[bold]{_mean(scores.per_question[q]):.3f}[/]" for q in questions]
    table.add_section()
    table.add_row(*means)
    return table


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows


def plot_metrics(metrics_path: Path, out: Path, title: str = "") -> list[Path]:
    """reward.png and p_yes.png over steps, from metrics.jsonl (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("kind") == "train" and r.get("reward") is not None]
    evals = [r for r in rows if r.get("kind") == "eval"]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        xs, ys = [r["step"] for r in train], [r["reward"] for r in train]
        ax.plot(xs, ys, color="tab:blue", alpha=0.35, lw=1, label="training batch (mean)")
        ax.plot(xs, _smooth(ys), color="tab:blue", lw=2, label="training batch (moving mean)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["reward"] for r in evals], "o-", color="tab:red",
                label="held-out openers (greedy)")
    ax.set(xlabel="step", ylabel="reward", title=f"{title}: reward")
    paths.append(_save(fig, ax, out / "reward.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    if evals:
        steps = [r["step"] for r in evals]
        ax.plot(steps, [r["p_yes"] for r in evals], "o-", color="tab:red", lw=2, label="P(yes) combined")
        per_q = sorted({k for r in evals for k in r if k.startswith("p_yes/")})
        if len(per_q) > 1:
            for k in per_q:
                ax.plot(steps, [r.get(k, math.nan) for r in evals], "s--", lw=1, label=k.replace("p_yes/", "P(yes) "))
    train_q = sorted({k for r in train for k in r if "/p_yes_" in k})
    for k in train_q:
        ax.plot([r["step"] for r in train if k in r], _smooth([r[k] for r in train if k in r]), lw=1, alpha=0.6,
                label=f"training {k.split('/p_yes_')[-1]} (moving mean)")
    ax.set(xlabel="step", ylabel="P(yes)", ylim=(0, 1), title=f"{title}: P(yes) on held-out openers")
    paths.append(_save(fig, ax, out / "p_yes.png"))
    return paths


def _save(fig, ax, path: Path) -> Path:
    """Grid, legend, tight layout, PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smooth(ys: list[float], k: int = 5) -> list[float]:
    out = []
    for i in range(len(ys)):
        window = [y for y in ys[max(0, i - k + 1):i + 1] if y is not None and not math.isnan(y)]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def summarize(evals: list[dict[str, Any]], steps: int, seconds: float, stopped: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"steps": steps, "seconds": round(seconds, 1), "stopped": stopped}
    if evals:
        before, after = evals[0], evals[-1]
        keys = [k for k in before if k == "reward" or k == "p_yes" or k.startswith("p_yes/")]
        summary.update(before_step=before["step"], after_step=after["step"],
                       before={k: before[k] for k in keys}, after={k: after.get(k) for k in keys},
                       change={k: after.get(k, math.nan) - before[k] for k in keys})
    return summary


def print_summary(console, summary: dict[str, Any], name: str) -> None:
    from rich.table import Table

    table = Table(title=f"{name}: before vs after training (held-out openers, greedy)")
    table.add_column("metric")
    table.add_column(f"before (step {summary.get('before_step', '-')})", justify="right")
    table.add_column(f"after (step {summary.get('after_step', '-')})", justify="right")
    table.add_column("change", justify="right")
    for key, before in summary.get("before", {}).items():
        after, change = summary["after"][key], summary["change"][key]
        label = {"reward": "mean reward", "p_yes": "mean P(yes)"}.get(key, "mean P(yes) " + key[6:])
        table.add_row(label, f"{before:.3f}", f"{after:.3f}", f"[bold]{change:+.3f}[/]")
    note = f"{summary['steps']} steps, {summary['seconds'] / 60:.1f} min in all"
    if summary.get("stopped"):
        note += f"; stopped early: {summary['stopped']}"
    table.caption = note
    console.print(table)


def _mean(values: Sequence[float]) -> float:
    good = [v for v in values if v is not None and not math.isnan(v)]
    return sum(good) / len(good) if good else math.nan


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
