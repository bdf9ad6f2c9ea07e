"""Smoke tests of the experiment scripts with tiny random models (seconds, no real weights).

Each script runs as a subprocess, as a user would run it, with a tiny policy and judge saved
to local folders: two training steps, an evaluation after each, metrics.jsonl and the plots.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "experiments" / "common"
SCRIPTS = ["ppo_flan_sentiments", "ppo_d5_movies", "ppo_flan_sentiments_robust", "ppo_flan_detox"]
# Tiny everything: 4 completions per step in groups of 2, 4 new tokens, 4 held-out openers.
TINY = {"batch_size": 4, "num_generations": 2, "max_new_tokens": 4, "eval_size": 4, "eval_show": 2,
        "precision": "fp32", "time_limit_minutes": None, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, tiny_causal):
    """(policy folder, judge folder, config file): the conftest's tiny causal LM saved twice."""
    model, tok = tiny_causal
    base = tmp_path_factory.mktemp("tiny_models")
    policy, judge = base / "policy", base / "judge"
    for folder in (policy, judge):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    config = base / "tiny.json"
    config.write_text(json.dumps(TINY))
    return policy, judge, config


def run_script(name: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(ROOT / "experiments" / f"{name}.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_trains_evaluates_and_plots(script, tiny_dirs, tmp_path):
    policy, judge, config = tiny_dirs
    out = tmp_path / "run"
    r = run_script(script, "--config", str(config), "--policy", str(policy), "--judge", str(judge),
                   "--steps", "2", "--eval-every", "1", "--output-dir", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if row["kind"] == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2]          # before training, then every step
    assert all(0.0 <= e["p_yes"] <= 1.0 for e in evals)
    assert any(row["kind"] == "train" and "reward" in row for row in rows)
    for png in ("reward.png", "p_yes.png", "hacking.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # signs of hacking and the independent evaluators, at every evaluation and in the summary
    watched = {"text/distinct_1", "text/distinct_2", "text/repeat_2gram", "text/repeat_3gram", "text/words",
               "monitor/vader"}
    assert all(watched <= set(e) for e in evals)
    assert all(0.0 <= e["monitor/vader"] <= 1.0 and e["text/words"] >= 0 for e in evals)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and set(summary["change"]) >= {"reward", "p_yes"} | watched
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 4 and all("monitor/vader" in s and "repeat_3gram" in s for s in samples)
    assert (out / "final" / "config.json").is_file()
    assert "Evaluation #2" in r.stdout and "before vs after" in r.stdout


def test_judge_monitors_score_with_another_prompt_set(tiny_dirs, tmp_path):
    """The sentiment experiments watch each other's question set on the judge they already loaded."""
    policy, judge, config = tiny_dirs
    r = run_script("ppo_flan_sentiments_robust", "--config", str(config), "--policy", str(policy), "--judge",
                   str(judge), "--steps", "1", "--eval-every", "1", "--output-dir", str(tmp_path), "--device", "cpu")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert all(0.0 <= e["monitor/sentiment"] <= 1.0 and "monitor/vader" in e for e in evals)
    r = run_script("ppo_flan_sentiments", "--config", str(config), "--policy", str(policy), "--judge", str(judge),
                   "--steps", "1", "--monitors", "", "--output-dir", str(tmp_path / "none"), "--device", "cpu")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    evals = [json.loads(x) for x in (tmp_path / "none" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals and not any(k.startswith("monitor/") for e in evals for k in e)
    assert all("text/repeat_3gram" in e for e in evals)
    # the two runs side by side, as RESULTS.md records them
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "compare_runs.py"), str(tmp_path),
                        str(tmp_path / "none"), "--samples", "2", "--metric", "monitor/sentiment"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {line.split(" | ")[0].strip("| "): line for line in r.stdout.splitlines() if line.startswith("| ")}
    assert {"mean P(yes)", "distinct-2", "repeated 2-grams", "repeated 3-grams", "words", "P sentiment",
            "vader"} <= set(rows)
    assert rows["P sentiment"].rstrip(" |").endswith("-")      # the second run has no monitors
    assert len([line for line in r.stdout.splitlines() if line.startswith("| '")]) == 2


def test_robust_experiment_counts_repetition(tmp_path):
    """The robust run's reward is the sentiment question minus the prompt set's repetition penalty."""
    sys.path.insert(0, str(ROOT))
    from experiments.ppo_flan_sentiments_robust import EXPERIMENT
    from zyn import load_prompt_set

    ps = load_prompt_set(EXPERIMENT.prompts)
    assert ps.penalties and ps.questions == load_prompt_set("sentiment").questions
    assert "sentiment" in EXPERIMENT.defaults["monitors"]  # P(positive), as the plain run reports it
    old = tmp_path / "old.yaml"
    old.write_text("repetition_penalty: 5\n")
    line = _one_line_error(run_script("ppo_flan_sentiments", "--config", str(old), "--output-dir", str(tmp_path)))
    assert "repetition_penalty is gone" in line and "sentiment_norepeat" in line


def test_rloo_trainer(tiny_dirs, tmp_path):
    policy, judge, config = tiny_dirs
    r = run_script("ppo_flan_sentiments", "--config", str(config), "--policy", str(policy), "--judge", str(judge),
                   "--trainer", "rloo", "--steps", "1", "--eval-every", "1", "--output-dir", str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "p_yes.png").is_file()


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_unknown_preset_is_a_one_line_error(tmp_path):
    line = _one_line_error(run_script("ppo_flan_sentiments", "--judge", "qwen2.5-coder-0.5b-instruc",
                                      "--output-dir", str(tmp_path)))
    assert "qwen2.5-coder-0.5b-instruc" in line


def test_missing_prompt_file_is_a_one_line_error(tmp_path):
    line = _one_line_error(run_script("ppo_d5_movies", "--prompts", str(tmp_path / "nope.yaml"),
                                      "--output-dir", str(tmp_path)))
    assert "nope.yaml" in line


def test_other_usage_errors(tmp_path):
    assert "dataset" in _one_line_error(run_script("ppo_flan_detox", "--dataset", str(tmp_path / "none.txt"),
                                                   "--output-dir", str(tmp_path)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1\n")
    assert "learning_rat" in _one_line_error(run_script("ppo_flan_sentiments", "--config", str(bad)))
    import torch

    if not torch.cuda.is_available():
        assert "cuda" in _one_line_error(run_script("ppo_flan_sentiments", "--device", "cuda",
                                                    "--output-dir", str(tmp_path)))
    line = _one_line_error(run_script("ppo_flan_sentiments", "--trainer", "trlx", "--output-dir", str(tmp_path)))
    assert "trlx" in line
    line = _one_line_error(run_script("ppo_flan_sentiments", "--monitors", "vader,no_such_set",
                                      "--output-dir", str(tmp_path)))
    assert "monitors" in line and "no_such_set" in line
    bad.write_text("monitors: vader\n")
    assert "monitors must be a list" in _one_line_error(run_script("ppo_flan_sentiments", "--config", str(bad)))


@pytest.mark.parametrize("key, value, match", [
    ("learning_rate", "abc", "learning-rate must be a positive number, got 'abc'"),
    ("learning_rate", 0, "learning-rate must be a positive number"),
    ("kl_coef", -1, "kl-coef must be 0 or more or null, got -1"),
    ("time_limit_minutes", -5, "time-limit-minutes must be a positive number or null"),
    ("save_model", "no", "save_model must be true or false, got 'no'"),
    ("freeze_layers", -1, "freeze-layers must be a whole number of at least 0"),
    ("temperature", float("nan"), "temperature must be a positive number"),
])
def test_config_values_of_the_wrong_kind_fail_before_anything_loads(key, value, match):
    sys.path.insert(0, str(ROOT))
    from experiments.common.config import DEFAULTS, ExperimentError, _check_config

    _check_config(dict(DEFAULTS))  # the defaults pass
    with pytest.raises(ExperimentError, match=match):
        _check_config({**DEFAULTS, key: value})
    _check_config({**DEFAULTS, "kl_coef": 0.0, "time_limit_minutes": None})  # zero KL and no time limit are fine


@pytest.mark.parametrize("args, match", [
    (["--prompts", "pairwise"], "prompts: prompt set 'pairwise' reads the field(s) a, b, question"),
    (["--monitors", "vader,answer_grader"], "monitors: prompt set 'answer_grader' reads the field(s) reference"),
    (["--policy", "openai+http://127.0.0.1:9/v1"], "policy 'openai+http://127.0.0.1:9/v1' is a remote server"),
    (["--config", {"judge_dtype": "float8"}], "judge_dtype: unknown dtype 'float8'"),
    (["--config", {"trl": {"num_iteration": 2}}], "GRPOConfig has no field(s) num_iteration (config key 'trl'); "
                                                  "did you mean 'num_iterations'?"),
    (["--trainer", "rloo", "--config", {"trl": {"nonsense": 1}}], "RLOOConfig has no field(s) nonsense"),
])
def test_choices_that_would_fail_after_loading_fail_before_any_model_loads(args, match, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT))
    pytest.importorskip("trl")
    from experiments.common import Experiment, main
    from experiments.common import run as run_module

    monkeypatch.setattr(run_module.Run, "load_models", lambda self: pytest.fail("a model was loaded"))
    if "--config" in args:
        i = args.index("--config")
        (tmp_path / "c.json").write_text(json.dumps(args[i + 1]))
        args = args[:i + 1] + [str(tmp_path / "c.json")] + args[i + 2:]
    exp = Experiment(name="t", prompts="sentiment", dataset=str(ROOT / "experiments/data/movie_openers.txt"),
                     eval_dataset=str(ROOT / "experiments/data/movie_openers_eval.txt"))
    assert main(exp, args + ["--output-dir", str(tmp_path / "run")]) == 2
    assert match in capsys.readouterr().err


def test_data_files_are_varied_and_disjoint():
    data = ROOT / "experiments" / "data"
    train = (data / "movie_openers.txt").read_text().splitlines()
    held_out = (data / "movie_openers_eval.txt").read_text().splitlines()
    assert len(set(train)) == len(train) >= 200
    assert 32 <= len(set(held_out)) == len(held_out) <= 64
    assert not set(train) & set(held_out)
    detox = (data / "detox_openers.txt").read_text().splitlines()
    detox_eval = (data / "detox_openers_eval.txt").read_text().splitlines()
    assert len(detox) >= 50 and 32 <= len(detox_eval) <= 64 and not set(detox) & set(detox_eval)


def test_local_dataset_formats(tmp_path):
    sys.path.insert(0, str(ROOT))
    from experiments.common import load_prompts

    (tmp_path / "a.jsonl").write_text('{"text": "one two three four five six"}\n{"prompt": "Keep me whole"}\n')
    assert load_prompts(str(tmp_path / "a.jsonl"), words=4) == ["one two three four", "Keep me whole"]
    (tmp_path / "b.csv").write_text("text,label\nalpha beta gamma delta epsilon,1\n")
    assert load_prompts(str(tmp_path / "b.csv"), words=2) == ["alpha beta"]
    (tmp_path / "c.txt").write_text("First opener\n\nFirst opener\nSecond one\n")
    assert load_prompts(str(tmp_path / "c.txt"), words=4) == ["First opener", "Second one"]


def test_experiment_reward_model_override():
    sys.path.insert(0, str(ROOT))
    from experiments.common import Experiment

    # a script's own factory gets the judge, the prompt set and the run's options as they are
    exp = Experiment("x", "sentiment", "a.txt", "b.txt", reward_model=lambda judge, **kw: (judge, kw))
    assert exp.build_reward_model("j", prompt="p", device="cpu") == ("j", {"prompt": "p", "device": "cpu"})


def test_paper_config_is_valid():
    sys.path.insert(0, str(ROOT))
    from experiments.common.config import DEFAULTS, read_config

    cfg = read_config(str(ROOT / "experiments" / "configs" / "paper_gpu.yaml"))
    assert set(cfg) <= set(DEFAULTS)
    assert cfg["policy"] == "lvwerra/gpt2-imdb" and cfg["judge"] == "google/flan-t5-large"
    assert cfg["batch_size"] == 64 and cfg["dataset"].startswith("imdb")


def common_imports(folder: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports, TYPE_CHECKING imports included."""
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for name in modules:
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        graph[name] = {node.module for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in modules}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path [a, b, ..., a] through the graph, or None when it has no cycle (depth-first search)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph[node]):
            cycle = visit(nxt, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    return next((c for c in (visit(n, []) for n in sorted(graph)) if c), None)


def test_find_cycle():
    # a <-> b through c is a cycle; a diamond is not
    assert find_cycle({"a": {"c"}, "b": {"a"}, "c": {"b"}}) == ["a", "c", "b", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_common_has_no_import_cycle():
    graph = common_imports(COMMON)
    assert graph["run"] >= {"callbacks", "config"}  # the parser sees the imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("module", sorted(common_imports(COMMON)))
def test_common_module_imports_alone(module):
    # A bare package object stands in for experiments.common: the real __init__.py would import
    # every module first, in one fixed order, so a module that works only after another would pass.
    code = (f"import importlib, sys, types; sys.path.insert(0, {str(ROOT)!r}); import experiments; "
            f"pkg = types.ModuleType('experiments.common'); pkg.__path__ = [{str(COMMON)!r}]; "
            f"sys.modules['experiments.common'] = pkg; "
            f"importlib.import_module('experiments.common.{module}'); "
            f"assert 'experiments.common.run' not in sys.modules or {module!r} == 'run'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
