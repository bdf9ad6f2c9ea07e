"""`zyn score` and `zyn prompts` on a tiny model saved to a local folder."""
import csv
import json

import pytest

from zyn.cli import main


def test_score_jsonl_keeps_fields_and_adds_scores(tiny_causal_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "great film"}\n{"id": 2, "text": "awful", "extra": [1]}\n'
                   '{"id": 3, "text": "so good so good so good"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", tiny_causal_dir, "--prompt", "sentiment_robust", "--input", str(src),
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3] and rows[1]["extra"] == [1]
    assert [r["penalty"] for r in rows] == [0.0, 0.0, 5.0]  # the set's repetition penalty, in log-odds
    for r in rows:
        assert 0 <= r["p_yes"] <= 1 and r["reward"] == pytest.approx((r["p_yes"] - 0.5) * 10)
        assert {"p_yes/positive", "p_yes/repetitive", "p_yes/instructs", "p_yes/coherent", "p_yes/sysline"} <= set(r)


def test_score_csv_with_field(tiny_causal_dir, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,review\n1,great film\n2,\"awful, boring\"\n")
    out = tmp_path / "out.csv"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--field", "review",
                 "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["id"] for r in rows] == ["1", "2"] and all(0 <= float(r["p_yes"]) <= 1 for r in rows)


def test_malformed_line_stops_before_writing(tiny_causal_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\nnot json\n{"text": 3}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err and "line 3: field 'text' is not a string" in err
    assert not out.exists()


def test_skip_bad_writes_good_rows_and_lists_bad(tiny_causal_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\nnot json\n{"text": "fine"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--skip-bad"]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "skipped line 2" in capsys.readouterr().err


@pytest.mark.parametrize("to", ["file", "stdout"])
def test_skip_bad_with_every_row_bad_fails_and_writes_nothing(tiny_causal_dir, tmp_path, capsys, to):
    src = tmp_path / "in.jsonl"  # a reference-grading set over rows whose reference is missing: a wrong column
    src.write_text('{"prompt": "2+2?", "completion": "4", "reference": null}\n'
                   '{"prompt": "3+3?", "completion": "6", "answer": "6"}\n')
    out = tmp_path / "out.jsonl"
    args = ["score", "--model", tiny_causal_dir, "--prompt", "answer_grader", "--input", str(src), "--skip-bad"]
    assert main(args + ["--output", str(out) if to == "file" else "-"]) == 2
    captured = capsys.readouterr()
    assert "every one of the 2 line(s) was bad, nothing was scored" in captured.err
    assert "skipped line 1" in captured.err and "skipped line 2" in captured.err
    assert "with no value (None, NaN or an empty cell" in captured.err and "missing field(s) ['reference']" in captured.err
    assert not out.exists() and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no out.jsonl.parts/ left


def test_unknown_prompt_is_one_line_error(tiny_causal_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n')
    assert main(["score", "--model", tiny_causal_dir, "--prompt", "nope", "--input", str(src)]) == 2
    assert "no prompt set named 'nope'" in capsys.readouterr().err


def test_prompts_validate_and_show(tmp_path, capsys, tiny_causal_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nquestions: [{template: 'no variable here?'}]\n")
    assert main(["prompts", "validate", "prompts/sentiment.yaml", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "ok" in out and "uses no input variable" in out
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert main(["prompts", "validate", str(broken)]) == 1
    assert "expected ',' or ']'" in capsys.readouterr().out  # YAML's own brackets, not read as markup
    assert main(["prompts", "show", "sentiment", "--model", tiny_causal_dir]) == 0
    out = capsys.readouterr().out
    assert "Is the reviewer's opinion of the film favourable?" in out and "<|assistant|>" in out and "yes:" in out
    assert main(["prompts", "show", "sentiment_norepeat", "--text", "so good so good so good"]) == 0
    out = capsys.readouterr().out  # 2 of its 4 trigrams seen before: 10 x 0.5
    assert "penalty: 10 x repeated_ngrams (n=3) off the combined log-odds; this text: 5.000" in out


# ----------------------------------------------------------------------------- nothing half-written

def _reviews(n: int, bad_at: dict[int, str] | None = None) -> str:
    """n JSONL lines; line numbers in `bad_at` get the given raw line instead."""
    bad_at = bad_at or {}
    return "".join(bad_at.get(i, json.dumps({"id": i, "text": f"review number {i}"})) + "\n" for i in range(1, n + 1))


def _fail_on(monkeypatch, marker: str, error=RuntimeError):
    """Make scoring raise `error` for any chunk holding a text with `marker`."""
    from zyn import ZeroShotRewardModel

    real = ZeroShotRewardModel.score_detailed

    def score_detailed(self, inputs):
        if any(marker in str(x) for x in inputs):
            raise error(f"cannot score {marker}")
        return real(self, inputs)

    monkeypatch.setattr(ZeroShotRewardModel, "score_detailed", score_detailed)


def _no_partial_files(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".partial")]


def test_a_record_failing_at_render_time_is_named_by_line_and_nothing_is_written(tiny_causal_dir, tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_reviews(500, {451: '{"completion": 5}'}))
    out.write_text("previous output\n")
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 451:" in err and "'completion' must be a string" in err and "item" not in err
    assert out.read_text() == "previous output\n" and _no_partial_files(tmp_path)


def test_a_record_failing_late_in_the_model_keeps_the_previous_output(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_reviews(600))
    out.write_text("previous output\n")
    _fail_on(monkeypatch, "review number 555")  # in the third chunk: two were scored before it fails
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 555: RuntimeError: cannot score review number 555" in err
    assert out.read_text() == "previous output\n" and _no_partial_files(tmp_path)
    # --skip-bad skips just that record
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--skip-bad"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [i for i in range(1, 601) if i != 555]
    assert "skipped line 555" in capsys.readouterr().err


def test_output_equal_to_input_is_refused_and_the_input_kept(tiny_causal_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(_reviews(3))
    before = src.read_text()
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(src)]) == 2
    assert "is the input file" in capsys.readouterr().err and src.read_text() == before
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)  # the same file under another name
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(link)]) == 2
    assert src.read_text() == before


def test_ctrl_c_mid_run_leaves_the_previous_output(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_reviews(600))
    out.write_text("previous output\n")
    _fail_on(monkeypatch, "review number 300", KeyboardInterrupt)
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 130
    assert out.read_text() == "previous output\n" and _no_partial_files(tmp_path)


@pytest.mark.parametrize("case", ["not utf-8", "directory", "no folder"])
def test_unusable_input_or_output_is_a_one_line_error(tiny_causal_dir, tmp_path, capsys, case):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_reviews(2))
    if case == "not utf-8":
        src.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    elif case == "directory":
        out = tmp_path
    else:
        out = tmp_path / "missing" / "out.jsonl"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zyn: error:") and len(err.splitlines()) == 1
    assert {"not utf-8": "not UTF-8 text (line 2", "directory": "is a directory",
            "no folder": "does not exist"}[case] in err


def test_an_output_that_is_a_pipe_is_written_into_not_replaced(tiny_causal_dir, tmp_path):
    """A device or a named pipe (/dev/null, mkfifo) is streamed into; renaming a finished
    file over it would replace the device (as root, /dev/null itself)."""
    import os
    import stat
    import threading

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "great film"}\n{"text": "awful"}\n')
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(fifo)]) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the pipe
    assert [json.loads(line)["text"] for line in got[0].splitlines()] == ["great film", "awful"]
    assert not (tmp_path / "pipe.jsonl.parts").exists()
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", os.devnull]) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_outputs_get_the_mode_the_umask_gives(tiny_causal_dir, tmp_path):
    import os

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "great film"}\n')
    old = os.umask(0o022)
    try:
        for name in ("out.jsonl", "out.csv", "out.parquet"):
            assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output",
                         str(tmp_path / name)]) == 0
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # mkstemp alone gave 0600
    finally:
        os.umask(old)


def test_answers_the_tokenizer_cannot_read_stop_the_run_even_with_skip_bad(tiny_causal_dir, tmp_path, capsys):
    """Every row would fail alike: one error and a failed exit, not every row skipped and 0."""
    src, yaml, out = tmp_path / "in.jsonl", tmp_path / "oui.yaml", tmp_path / "out.jsonl"
    src.write_text('{"text": "great film"}\n{"text": "awful"}\n')
    yaml.write_text('name: t\nanswers: {yes: [Oui], no: [Non]}\nquestions: [{template: "{{ text }} ok?"}]\n')
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--prompt", str(yaml), "--skip-bad",
                 "--output", str(out)]) == 2
    assert "answer word 'Oui' (yes) is not a single token" in capsys.readouterr().err and not out.exists()


def test_verbose_after_the_subcommand(tiny_causal_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "great film"}\n')
    from zyn.cli import build_parser

    assert build_parser().parse_args(["score", "--input", str(src), "-v"]).verbose is True
    assert build_parser().parse_args(["-v", "prompts", "validate", "x.yaml"]).verbose is True
    assert build_parser().parse_args(["prompts", "validate", "x.yaml", "--verbose"]).verbose is True
    assert build_parser().parse_args(["prompts", "validate", "x.yaml"]).verbose is False


def test_a_symlinked_output_stays_a_link_to_the_new_file(tiny_causal_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "great film"}\n')
    (tmp_path / "runs").mkdir()
    real, link = tmp_path / "runs" / "scores.jsonl", tmp_path / "latest.jsonl"
    real.write_text("old\n")
    link.symlink_to(real)
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(link)]) == 0
    assert link.is_symlink() and json.loads(real.read_text())["text"] == "great film"


def test_a_repeated_prompt_is_a_usage_error(tiny_causal_dir, tmp_path, capsys):
    """argparse keeps the last value of an option given twice: two prompt sets would score with the second."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "great film"}\n')
    with pytest.raises(SystemExit) as e:
        main(["score", "--model", tiny_causal_dir, "--input", str(src), "--prompt", "sentiment",
              "--prompt", "sentiment_ensemble"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--prompt: zyn score takes one prompt set" in err and "use zyn eval --prompt A --prompt B" in err
    from zyn.cli import build_parser

    assert build_parser().parse_args(["score", "--input", "x"]).prompt == "sentiment"  # the default stays
    assert build_parser().parse_args(["score", "--input", "x", "--prompt", "toxicity"]).prompt == "toxicity"


@pytest.mark.parametrize("lines, option, said", [
    # the first good record is checked: a blank line and a bad one before it are not records to group
    ('\nnot json\n{"prompt": "q", "text": "great film"}\n', ["--group-by", "promt", "--keep", "best"],
     "--group-by promt: line 3 has no such field; did you mean 'prompt'? its fields: 'prompt', 'text'"),
    ('{"prompt": "q", "review": "great film"}\n{"prompt": "q", "review": "awful"}\n', ["--field", "reviw"],
     "--field reviw: none of the first 2 records has such a field, nor completion or messages; did you mean "
     "'review'? line 1's fields: 'prompt', 'review'; pass --field with the one holding the text to judge")])
@pytest.mark.parametrize("output", ["out.jsonl", "-"])
def test_a_misspelt_field_option_fails_before_the_model_loads(tiny_causal_dir, tmp_path, capsys, monkeypatch,
                                                              lines, option, said, output):
    import zyn.cli.score as score

    src = tmp_path / "in.jsonl"
    src.write_text(lines)
    monkeypatch.setattr(score, "load_reward_model", lambda args: pytest.fail("the model was loaded"))
    out = output if output == "-" else str(tmp_path / output)
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", out, *option]) == 2
    assert said in capsys.readouterr().err


def test_max_length_cuts_long_texts_with_a_warning(tiny_causal_dir, tmp_path, capsys):
    from zyn.errors import TruncationWarning

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"text": "great film " * 20}) + "\n" + json.dumps({"text": "awful"}) + "\n")
    base = ["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]
    assert main(base) == 0  # within the tiny model's 256 positions: nothing cut
    whole = [json.loads(line)["p_yes"] for line in out.read_text().splitlines()]
    with pytest.warns(TruncationWarning, match=r"1 of 2 inputs were longer than the judge's limit of 110 tokens"):
        assert main(base + ["--max-length", "110"]) == 0  # the bare prompt takes about 100
    cut = [json.loads(line)["p_yes"] for line in out.read_text().splitlines()]
    assert cut[0] != pytest.approx(whole[0], abs=1e-6) and cut[1] == pytest.approx(whole[1], abs=1e-5)
