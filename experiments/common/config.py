"""Configuration: the defaults, the paper's trlx setting, what a script declares, flags + config file.

Importing this module starts the run's clock (T_START), puts the checkout on sys.path and sets
TOKENIZERS_PARALLELISM=false unless it is set; HERE is experiments/, DATA experiments/data.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

T_START = time.monotonic()  # the run's clock: the time limit and the reported seconds count from here
HERE = Path(__file__).resolve().parents[1]  # experiments/ (this file is experiments/common/config.py)
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
    "monitors": ["vader"],                    # independent evaluators logged at each evaluation, never
                                              # optimised: "vader" (lexicon sentiment) or a prompt set
                                              # scored by the judge (see common/hacking.py)
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
        dataset / eval_dataset: default training prompts and held-out openers.
        description: one line for --help.
        defaults: config values this experiment changes.
        reward_model: ``factory(judge, prompt=..., **options)`` replacing zyn's ZeroShotRewardModel;
            None (every experiment of the paper) builds the ZeroShotRewardModel.
    """

    name: str
    prompts: str
    dataset: str
    eval_dataset: str
    description: str = ""
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    reward_model: Callable[..., Any] | None = None

    def build_reward_model(self, judge: Any, prompt: Any, **options: Any) -> Any:
        """The reward model the run trains against; the trainer gets its ``.as_trl_reward()``
        (trlx: the model itself)."""
        if self.reward_model is not None:
            return self.reward_model(judge, prompt=prompt, **options)
        from zyn import ZeroShotRewardModel

        return ZeroShotRewardModel(judge, prompt=prompt, **options)


def one_line(e: BaseException) -> str:
    """The exception's message on one line, for the scripts' ``error: ...``."""
    return " ".join(str(e).split()) or type(e).__name__


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
    a("--monitors", help="independent evaluators, comma-separated: vader and/or prompt sets scored by the "
      "judge (e.g. vader,sentiment); '' for none")
    return p


def build_config(exp: Experiment, argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser(exp).parse_args(argv)
    cfg = dict(DEFAULTS)
    cfg.update(prompts=exp.prompts, dataset=exp.dataset, eval_dataset=exp.eval_dataset)
    cfg.update(exp.defaults)
    if args.config:
        cfg.update(read_config(args.config))
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    if "monitors" in flags:
        flags["monitors"] = [m.strip() for m in flags["monitors"].split(",") if m.strip()]
    cfg.update(flags)
    if cfg["output_dir"] is None:
        cfg["output_dir"] = str(HERE / "runs" / exp.name)
    _check_config(cfg)
    return cfg


def read_config(path: str) -> dict[str, Any]:
    """The config keys of a YAML or JSON file; an unknown key is an ExperimentError."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ExperimentError(f"--config {path}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ExperimentError(f"--config {path}: cannot parse it ({one_line(e)})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ExperimentError(f"--config {path}: expected a mapping of config keys, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(DEFAULTS))
    if "repetition_penalty" in unknown:  # the experiments' own lexical term, now a prompt set's `penalties`
        raise ExperimentError(f"--config {path}: repetition_penalty is gone; use a prompt set with a penalty "
                              "instead, e.g. prompts: sentiment_norepeat (prompts/sentiment_norepeat.yaml)")
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
    for key, low, may_be_none in (("learning_rate", 0.0, False), ("temperature", 0.0, False),
                                  ("kl_coef", 0.0, True), ("time_limit_minutes", 0.0, True)):
        value = cfg[key]
        if value is None and may_be_none:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < low or (value == low and key != "kl_coef"):
            need = "0 or more" if key == "kl_coef" else "a positive number"
            raise ExperimentError(f"{key.replace('_', '-')} must be {need}{' or null' if may_be_none else ''}, "
                                  f"got {value!r}")
    for key in ("freeze_layers", "top_k"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 0:
            raise ExperimentError(f"{key.replace('_', '-')} must be a whole number of at least 0, got {cfg[key]!r}")
    for key in ("save_model", "freeze_embeddings"):
        if not isinstance(cfg[key], bool):  # "no" would be true
            raise ExperimentError(f"{key} must be true or false, got {cfg[key]!r}")
    if cfg["precision"] not in ("auto", "bf16", "fp32"):
        raise ExperimentError(f"precision must be auto, bf16 or fp32, got {cfg['precision']!r}")
    monitors = cfg["monitors"]
    if not isinstance(monitors, list) or not all(isinstance(m, str) and m.strip() for m in monitors):
        raise ExperimentError(f"monitors must be a list of names (vader, or prompt sets such as sentiment), "
                              f"got {monitors!r}")
    if len(set(monitors)) != len(monitors):
        raise ExperimentError(f"monitors lists a name twice: {monitors!r}")
    for key in ("trl", "trlx"):
        if not isinstance(cfg[key], dict):
            raise ExperimentError(f"config key {key!r} must be a mapping")
