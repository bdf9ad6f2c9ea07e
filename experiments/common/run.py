"""The run: `main` (the scripts' entry point) and `Run` (checks, loading, training, saving, Ctrl-C)."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import inspect
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .callbacks import Evaluator, ProgressBar
from .config import T_START, Experiment, ExperimentError, build_config, one_line
from .data import load_prompts
from .hacking import Monitor, judge_monitor, vader_monitor
from .precision import choose_precision, resolve_device
from .report import append_jsonl, jsonable, new_console, plot_metrics, print_summary, summarize
from .trainers import freeze, trl_classes, trlx_config


def main(exp: Experiment, argv: Sequence[str] | None = None) -> int:
    """Run an experiment from the command line; return the exit code (0, 2 on a usage error, 130)."""
    from zyn.errors import ZynError

    _quiet_libraries()
    try:
        cfg = build_config(exp, argv)
        return Run(exp, cfg).run()
    except (ExperimentError, ZynError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
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


def _over_prompts(key: str, prompt_set: Any) -> Any:
    """`prompt_set`, if it reads only what the experiments' data gives: prompts and completions."""
    if prompt_set.fields:
        raise ExperimentError(f"{key}: prompt set {prompt_set.name!r} reads the field(s) "
                              f"{', '.join(prompt_set.fields)}, which these experiments' datasets do not give (a row "
                              "is a prompt, judged with its completion); pick a set over the text, such as "
                              "sentiment, sentiment_norepeat or detox")
    return prompt_set


def _nearest(name: str, known: list[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


class Run:
    """One experiment run: loads everything, trains, evaluates, plots."""

    def __init__(self, exp: Experiment, cfg: dict[str, Any]):
        self.exp, self.cfg = exp, cfg
        self.out = Path(cfg["output_dir"])
        self.console = new_console()
        self.evals: list[dict[str, Any]] = []
        self.interrupted = 0
        self.stop_reason: str | None = None

    # ---------------------------------------------------------------- checks before any model loads

    def preflight(self) -> None:
        from zyn import load_prompt_set
        from zyn.errors import ZynError
        from zyn.models import resolve

        cfg = self.cfg
        if cfg["trainer"] == "trlx" and importlib.util.find_spec("trlx") is None:
            raise ExperimentError("--trainer trlx needs trlx, which is not installed (it is archived and not on "
                                  "the package registry: install it from github.com/CarperAI/trlx); "
                                  "or use --trainer grpo / rloo")
        self.prompt_set = _over_prompts("prompts", load_prompt_set(cfg["prompts"]))
        self.device = resolve_device(cfg["device"])
        resolve(cfg["judge"])  # an unknown preset, a missing file: a one-line ModelError
        if resolve(cfg["policy"]).kind == "remote":
            raise ExperimentError(f"policy {cfg['policy']!r} is a remote server; the policy is trained here, "
                                  "so it must be weights: a preset, a local folder or a hub id (a remote "
                                  "server may be the judge)")
        if cfg["judge_dtype"] not in (None, "auto", "fast"):
            from zyn.backends.hf.precision import parse_dtype

            try:
                parse_dtype(cfg["judge_dtype"])
            except ZynError as e:
                raise ExperimentError(f"judge_dtype: {one_line(e)}") from None
        if cfg["trainer"] != "trlx":
            _, config_class = trl_classes(cfg["trainer"])
            known = [f.name for f in dataclasses.fields(config_class)]
            unknown = sorted(set(cfg["trl"]) - set(known))
            if unknown:
                raise ExperimentError(f"{config_class.__name__} has no field(s) {', '.join(unknown)} (config key "
                                      f"'trl'){_nearest(unknown[0], known)}")
        self.monitor_sets = {}
        for name in cfg["monitors"]:
            if name != "vader":
                try:
                    monitor = load_prompt_set(name)
                except ZynError as e:
                    raise ExperimentError(f"monitors: {name!r} is neither vader nor a prompt set ({one_line(e)})") \
                        from None
                self.monitor_sets[name] = _over_prompts("monitors", monitor)
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
        judge_dtype = self.rm_dtype = cfg["judge_dtype"] or ("bfloat16" if self.precision == "bf16" else "float32")
        with self.console.status(f"Loading the judge {cfg['judge']} ..."):
            self.rm = self.exp.build_reward_model(cfg["judge"], prompt=self.prompt_set, device=self.device,
                                                  dtype=judge_dtype, batch_size=cfg["judge_batch_size"])
        self.monitors = self.build_monitors()
        if cfg["trainer"] == "trlx":
            return
        with self.console.status(f"Loading the policy {cfg['policy']} ..."):
            self.policy, self.tokenizer = load_pretrained(cfg["policy"], device=self.device, dtype=torch.float32)
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.trainable = freeze(self.policy, cfg["freeze_embeddings"], cfg["freeze_layers"])

    def build_monitors(self) -> dict[str, Monitor]:
        """The independent evaluators of `monitors`, in order; a prompt set shares the judge's model.
        A missing vaderSentiment package drops that monitor with a warning (the run still trains)."""
        monitors: dict[str, Monitor] = {}
        for name in self.cfg["monitors"]:
            if name == "vader":
                try:
                    monitors[name] = vader_monitor()
                except ImportError:
                    self.console.print("[yellow]monitor 'vader' skipped: the vaderSentiment package is not "
                                       "installed (pip install vaderSentiment, or install zyn's [experiments] "
                                       "extra)[/]")
                continue
            share = getattr(self.rm, "with_prompt", None)
            rm = share(self.monitor_sets[name]) if share else self.exp.build_reward_model(
                self.cfg["judge"], prompt=self.monitor_sets[name], device=self.device, dtype=self.rm_dtype,
                batch_size=self.cfg["judge_batch_size"])
            monitors[name] = judge_monitor(rm)
        return monitors

    # ---------------------------------------------------------------- main

    def run(self) -> int:
        self.preflight()
        cfg = self.cfg
        self._header()
        self.load_models()
        self.log({"kind": "start", "load_seconds": round(time.monotonic() - T_START, 1),
                   "config": jsonable(cfg), "precision": self.precision, "device": self.device,
                  "monitors": list(self.monitors)})
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
        Trainer, Config = trl_classes(cfg["trainer"])
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
        unknown = sorted(set(kwargs) - fields)  # the config's trl keys were checked in preflight: these are ours
        if unknown:
            raise ExperimentError(f"this TRL's {Config.__name__} has no field(s) {', '.join(unknown)}, which the "
                                  "experiments set; install the tested versions: pip install -c constraints.txt ...")
        try:
            args = Config(**kwargs)
        except (ValueError, TypeError) as e:
            raise ExperimentError(f"invalid {Config.__name__}: {one_line(e)}") from None
        self.reward_fn = self.rm.as_trl_reward()
        reward_funcs = [self.reward_fn]
        self.evaluator = Evaluator(self)
        trainer = Trainer(model=self.policy, reward_funcs=reward_funcs, args=args,
                          train_dataset=Dataset.from_dict({"prompt": self.train_prompts}),
                          processing_class=self.tokenizer, callbacks=[self.evaluator])
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(ProgressBar(self))
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
            f"output in {self.out}\n"
            f"  independent evaluators (logged, not optimised): {', '.join(cfg['monitors']) or 'none'}")

    def log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl (the Evaluator logs through this too)."""
        append_jsonl(self.metrics_path, [record])

    def save(self, trainer, name: str) -> None:
        if not self.cfg["save_model"]:
            return
        path = self.out / name
        try:
            trainer.save_model(str(path))
            self.tokenizer.save_pretrained(str(path))
            self.console.print(f"Saved the policy to {path}")
        except Exception as e:  # a failed save must not lose the metrics and plots
            self.console.print(f"[red]Could not save the policy to {path}: {one_line(e)}[/]")

    def finish(self, steps: int) -> None:
        elapsed = time.monotonic() - T_START
        plots = plot_metrics(self.metrics_path, self.out, title=self.exp.name)
        summary = summarize(self.evals, steps, elapsed, self.stop_reason)
        (self.out / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
        self.log({"kind": "end", "steps": steps, "seconds": round(elapsed, 1), "stopped": self.stop_reason})
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
