"""bench_scoring's llama.cpp peer row: skipped with a reason, never a crash; a real run
reads the same tokens and answer ids as zyn."""
from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_scoring  # noqa: E402
from zyn import models  # noqa: E402

F32 = {"queries": [["text", [1, 2, 3]]], "answer_ids": [[1], [2]], "scores": [0.5], "token_budget": 512}


def args(**kw) -> Namespace:
    base = dict(peer="llama.cpp", device=None, model="qwen2.5-coder-0.5b-instruct", prompt="sentiment", repeats=1,
                peer_threads=None, peer_timeout=60)
    return Namespace(**{**base, **kw})


def test_not_installed_is_a_reason(monkeypatch):
    real = bench_scoring.importlib.util.find_spec
    monkeypatch.setattr(bench_scoring.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    res = bench_scoring.run_peer(args(), F32)
    assert res["dtype"] == "llama.cpp" and "not installed" in res["skipped"]
    bench_scoring.print_peer(res)  # prints the reason, no table
    bench_scoring.print_versus([res])


def test_other_reasons(monkeypatch):
    monkeypatch.setattr(bench_scoring.importlib.util, "find_spec", lambda name, *a: object())
    assert "--peer none" in bench_scoring.run_peer(args(peer="none"), F32)["skipped"]
    assert "float32" in bench_scoring.run_peer(args(), None)["skipped"]
    assert "random" in bench_scoring.run_peer(args(model="random:qwen2.5-1.5b"), F32)["skipped"]


def test_a_crashing_peer_is_reported(monkeypatch, tmp_path):
    """A segfault (the native build on Intel AMX CPUs) ends the peer's process, not the benchmark."""
    monkeypatch.setattr(bench_scoring.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(bench_scoring, "peer_gguf", lambda model: (str(tmp_path / "m.gguf"), ""))
    monkeypatch.setattr(bench_scoring.subprocess, "run",
                        lambda *a, **kw: subprocess.CompletedProcess(a[0], -11, "", "ggml_compute_forward\n"))
    res = bench_scoring.run_peer(args(), F32)
    assert "signal 11 (SIGSEGV)" in res["skipped"] and ".ci/llama_cmake_args" in res["skipped"]


@pytest.mark.real
def test_peer_worker_on_the_preset(tmp_path):
    pytest.importorskip("llama_cpp")
    if next(s for s in models.preset_status() if s.name == models.DEFAULT_JUDGE).missing:
        pytest.skip("the default judge's packages are not installed")
    from transformers import AutoTokenizer

    from zyn.answers import resolve_answer_ids
    from zyn.prompts import load_prompt_set

    tok = AutoTokenizer.from_pretrained(str(models.prepare(models.DEFAULT_JUDGE)))
    ps = load_prompt_set("sentiment")
    queries = []
    for i, text in enumerate(["A wonderful, moving film.", "Dull and far too long."]):
        (q,) = ps.render(text, i)
        turns = ([{"role": "system", "content": q.system}] if q.system else []) + [{"role": "user", "content": q.user}]
        s = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        queries.append([s, tok(s, add_special_tokens=False)["input_ids"]])
    ids = resolve_answer_ids(tok, *ps.answers)
    gguf, _ = bench_scoring.peer_gguf(models.DEFAULT_JUDGE)
    job = {"gguf": gguf, "queries": queries, "answer_ids": [list(ids.yes), list(ids.no)], "prompt": "sentiment",
           "n_texts": 2, "reference": [0.9, 0.1], "repeats": 1, "threads": 2, "budget": 512}
    (tmp_path / "job.json").write_text(json.dumps(job))
    bench_scoring.peer_worker(str(tmp_path / "job.json"), str(tmp_path / "out.json"))
    res = json.loads((tmp_path / "out.json").read_text())
    assert res["same_tokens"] == 2 and res["answer_ids_same"]
    assert res["prefix_tokens"] > 10
    for way in bench_scoring.PEER_WAYS:
        p = res["scores"][way]
        assert p[0] > p[1] + 0.05  # the judge ranks them as zyn's does (raw P: no calibration shift)
        assert abs(p[0] - res["scores"]["naive"][0]) < 0.1  # the ways agree up to llama.cpp's rounding
