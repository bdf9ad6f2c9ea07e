"""Evaluation and progress during training: the Evaluator callback, the progress bar, greedy generation."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from .config import T_START
from .hacking import repeated_ngram_rate, text_stats, words
from .precision import autocast
from .report import append_jsonl, eval_table, mean, tqdm_paused

try:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback
except ImportError:  # pragma: no cover
    TrainerCallback = ProgressCallback = object  # type: ignore[misc,assignment]


class RunState(Protocol):
    """What the callbacks read from and write to the run; run.Run is one (declared here so that
    this module does not import run.py, which imports it)."""

    cfg: dict[str, Any]
    policy: Any
    tokenizer: Any
    rm: Any                             # the reward model: score_detailed(records)
    monitors: dict[str, Any]            # independent evaluators: (prompts, completions) -> scores
    eval_prompts: list[str]
    device: str
    precision: str
    out: Path
    console: Any
    evals: list[dict[str, Any]]         # appended to by Evaluator.evaluate
    interrupted: int                    # Ctrl-C presses so far
    stop_reason: str | None             # set when the time limit stops training

    def log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl."""


class Evaluator(TrainerCallback):
    """Evaluation #n: greedy continuations of the held-out openers, scored by the judge.

    Runs before training (#0), every `eval_every` steps, and at the end; also appends the
    trainer's logs to metrics.jsonl and ends training early when the time limit nears.
    """

    def __init__(self, run: RunState):
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
            self.run.log({"kind": "train", "step": state.global_step, **logs})

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
        monitored = {f"monitor/{name}": monitor(run.eval_prompts, outputs) for name, monitor in run.monitors.items()}
        n = len(run.evals)
        result = {
            "kind": "eval", "eval": n, "step": step, "n": len(records),
            "reward": mean(scores.rewards), "p_yes": mean(scores.p_yes),
            **{f"p_yes/{q}": mean(v) for q, v in scores.per_question.items()},
            **text_stats(outputs),
            **{key: mean(values) for key, values in monitored.items()},
            "seconds": round(time.monotonic() - t, 2),
        }
        run.evals.append(result)
        run.log(result)
        append_jsonl(run.out / "samples.jsonl", _sample_rows(n, step, run.eval_prompts, outputs, scores, monitored))
        table = eval_table(n, step, run.eval_prompts, outputs, scores, run.cfg["eval_show"], result)
        with tqdm_paused():
            run.console.print(table)
        self.eval_seconds = time.monotonic() - t
        self.last_step = step
        return result


def _sample_rows(n: int, step: int, prompts: list[str], outputs: list[str], scores,
                 monitored: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One samples.jsonl row per held-out opener of evaluation #n."""
    return [{"eval": n, "step": step, "prompt": p, "output": c, "reward": scores.rewards[i],
             "p_yes": scores.p_yes[i], **{f"p_yes/{q}": v[i] for q, v in scores.per_question.items()},
             "repeat_2gram": repeated_ngram_rate(c, 2), "repeat_3gram": repeated_ngram_rate(c, 3),
             "words": len(words(c)),
             **{key: values[i] for key, values in monitored.items()}}
            for i, (p, c) in enumerate(zip(prompts, outputs))]


class ProgressBar(ProgressCallback):
    """transformers' progress bar, showing the batch reward instead of printing every log dict."""

    def __init__(self, run: RunState):
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
