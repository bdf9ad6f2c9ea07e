"""The shared loop of the ZYN experiments: RLAIF with a zyn reward on TRL (GRPO or RLOO), or trlx PPO.

Each experiment script declares an `Experiment` (its name, question set, data and description)
and hands it to `main`; everything else lives in this package, the reward model included
(zyn's ZeroShotRewardModel on the judge, unless an Experiment passes its own factory):

    arguments + config file -> checks (fail fast, one line, exit 2) -> data -> judge + policy
    -> trainer (TRL GRPOTrainer | RLOOTrainer | trlx PPO) with an evaluation callback
    -> metrics.jsonl, samples.jsonl, reward.png, p_yes.png, hacking.png, summary.json, final checkpoint

Evaluation #0 runs before the first update and one more every ``eval_every`` steps and at
the end: the policy continues the held-out openers greedily (deterministic) and the judge
scores the continuations with ``score_detailed``. Each evaluation also logs the signs of
reward hacking (distinct-1/2, the repeated 3-gram rate, length) and independent evaluators
that are never optimised (``monitors``: the VADER lexicon, or another prompt set on the same
judge), so "reward up, independent score flat" shows in hacking.png. The before/after table
compares the first and the last evaluation.

The default configuration is sized for a 2-core CPU (short completions, small groups,
frozen embeddings, bf16 autocast where the CPU runs bf16 faster); ``configs/paper_gpu.yaml``
is the paper's setting. Precedence: DEFAULTS < the script's defaults < --config FILE < flags.

One concept per module:

    config     DEFAULTS, TRLX_PAPER, the Experiment a script declares (it builds the reward model),
               flags + config file -> checked config; the paths (DATA) and the run's clock (T_START)
    data       prompts from a .txt/.jsonl/.csv file or a datasets hub name[:split]
    precision  the device, bf16 or fp32 (measured on a CPU), autocast
    trainers   the TRL trainer classes, the paper's trlx PPO config, freezing the policy
    run        main and Run: checks before loading, loading, training, saving, Ctrl-C
    callbacks  the Evaluator callback (evaluation #n, time limit), the progress bar, greedy generation
    hacking    diversity, repetition and length of the outputs (pure); the independent evaluators
    report     evaluation tables, metrics.jsonl, plots, the before/after summary
"""
from __future__ import annotations

# Importing any of these runs config.py first (its side effects: T_START, sys.path, TOKENIZERS_PARALLELISM).
from .callbacks import Evaluator, generate
from .config import (DATA, DEFAULTS, HERE, ROOT, T_START, TRAINERS, TRLX_PAPER, Experiment, ExperimentError,
                     build_config, parser)
from .data import load_prompts
from .precision import autocast, choose_precision, resolve_device
from .report import eval_table, plot_metrics, print_summary, read_metrics, summarize
from .run import Run, main
from .trainers import freeze, trlx_config

__all__ = [
    "DATA", "DEFAULTS", "HERE", "ROOT", "T_START", "TRAINERS", "TRLX_PAPER", "Evaluator", "Experiment",
    "ExperimentError", "Run", "autocast", "build_config", "choose_precision", "eval_table", "freeze", "generate",
    "load_prompts", "main", "parser", "plot_metrics", "print_summary", "read_metrics", "resolve_device",
    "summarize", "trlx_config",
]
