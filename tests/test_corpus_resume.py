"""Resumable `zyn score`: a run killed mid-way (SIGKILL, Ctrl-C) continues with --resume,
and its output equals an uninterrupted run's, row by row."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from zyn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _reviews(n: int) -> str:
    return "".join(json.dumps({"id": i, "text": f"review number {i} " + "good " * (i % 7)}) + "\n"
                   for i in range(1, n + 1))


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _parts(out: Path) -> list[str]:
    folder = Path(f"{out}.parts")
    return sorted(p.name for p in folder.glob("rows-*.jsonl")) if folder.exists() else []


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tiny_causal_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(_reviews(1200))
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    args = ["score", "--model", tiny_causal_dir, "--input", str(src), "--chunk-rows", "40"]
    assert main(args + ["--output", str(whole)]) == 0

    with subprocess.Popen([sys.executable, "-m", "zyn", *args, "--output", str(out)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while len(_parts(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    committed = _parts(out)
    assert proc.returncode == -signal.SIGKILL and 3 <= len(committed) < 30, committed
    assert not out.exists()

    # without --resume the folder is refused, with a hint
    assert main(args + ["--output", str(out)]) == 2
    assert main(args + ["--output", str(out), "--resume"]) == 0
    assert _rows(out) == _rows(whole)  # every row once, in order, same numbers (same chunks)
    assert not Path(f"{out}.parts").exists()


def test_an_unfinished_folder_without_resume_is_a_clear_error(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_reviews(300))
    args = ["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--chunk-rows", "64"]
    _interrupt_at(monkeypatch, "review number 200 ")
    assert main(args) == 130
    assert "rows committed" in capsys.readouterr().err and len(_parts(out)) == 3
    monkeypatch.undo()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds an unfinished run (192 rows committed): pass --resume" in err
    # options the parts depend on must match
    assert main(args + ["--resume", "--prompt", "Is this text positive?"]) == 2
    assert "written with prompt = 'sentiment'" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert [r["id"] for r in _rows(out)] == list(range(1, 301))
    assert "resuming: 192 rows already committed" in capsys.readouterr().err


def _interrupted_run(tiny_causal_dir, tmp_path, monkeypatch):
    """A run of 200 reviews in chunks of 64, stopped (Ctrl-C) at review 150: (input, output, arguments)."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_reviews(200))
    args = ["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--chunk-rows", "64"]
    _interrupt_at(monkeypatch, "review number 150 ")
    assert main(args) == 130
    monkeypatch.undo()
    return src, out, args


def test_a_changed_input_is_not_resumed(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    src, out, args = _interrupted_run(tiny_causal_dir, tmp_path, monkeypatch)
    src.write_text(_reviews(201))
    assert main(args + ["--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_skip_bad_resume_keeps_bad_rows_of_committed_parts(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = _reviews(200).splitlines()
    lines[9] = "not json"
    src.write_text("\n".join(lines) + "\n")
    args = ["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--chunk-rows", "64",
            "--skip-bad"]
    _interrupt_at(monkeypatch, "review number 150 ")
    assert main(args) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    assert len(_rows(out)) == 199 and "skipped line 10: not valid JSON" in capsys.readouterr().err


def test_a_bad_row_stop_keeps_the_parts_for_resume_skip_bad(tiny_causal_dir, tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = _reviews(200).splitlines()
    lines[149] = '{"text": 3}'
    src.write_text("\n".join(lines) + "\n")
    args = ["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--chunk-rows", "64"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "line 150: field 'text' is not a string" in err and "128 rows scored before them are kept" in err
    assert main(args + ["--resume", "--skip-bad"]) == 0
    assert [r["id"] for r in _rows(out)] == [i for i in range(1, 201) if i != 150]


def _interrupt_at(monkeypatch, marker: str):
    from zyn import ZeroShotRewardModel

    real = ZeroShotRewardModel.score_detailed

    def score_detailed(self, inputs):
        if any(marker in str(x) for x in inputs):
            raise KeyboardInterrupt
        return real(self, inputs)

    monkeypatch.setattr(ZeroShotRewardModel, "score_detailed", score_detailed)


def test_an_edited_prompt_file_is_not_resumed(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    """The same --prompt path with other contents would mix two rewards in one output."""
    src, out, yaml = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "my.yaml"
    src.write_text(_reviews(200))
    yaml.write_text("name: my\nquestions:\n  - {name: q, template: 'Review: {{ text }}\\nIs it positive?'}\n")
    args = ["score", "--model", tiny_causal_dir, "--prompt", str(yaml), "--input", str(src), "--output", str(out),
            "--chunk-rows", "64"]
    _interrupt_at(monkeypatch, "review number 150 ")
    assert main(args) == 130
    monkeypatch.undo()
    yaml.write_text(yaml.read_text().replace("{name: q,", "{name: q, reward_answer: no,"))
    assert main(args + ["--resume"]) == 2
    assert "written with prompt_set = " in capsys.readouterr().err


def test_resume_from_standard_input_is_refused(tiny_causal_dir, tmp_path, capsys):
    assert main(["score", "--model", tiny_causal_dir, "--input", "-", "--output", str(tmp_path / "o.jsonl"),
                 "--resume"]) == 2
    assert "--resume needs --input FILE" in capsys.readouterr().err


def test_a_stop_on_bad_rows_before_any_commit_leaves_no_folder(tiny_causal_dir, tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"text": 5}\n{"text": "fine"}\n')
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    assert "field 'text' is not a string" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.jsonl.parts").exists()


def test_a_resume_with_another_max_length_is_refused(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    """--max-length changes the scores of long texts: the parts of one run must share it."""
    _, _, args = _interrupted_run(tiny_causal_dir, tmp_path, monkeypatch)
    assert main(args + ["--resume", "--max-length", "200"]) == 2
    assert "written with max_length = None, this run has 200" in capsys.readouterr().err
