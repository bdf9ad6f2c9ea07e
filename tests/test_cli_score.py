"""`zyn score` and `zyn prompts` on a tiny model saved to a local folder."""
import csv
import json

import pytest
from conftest import make_tiny_causal

from zyn.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tok = make_tiny_causal()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_score_jsonl_keeps_fields_and_adds_scores(model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "great film"}\n{"id": 2, "text": "awful", "extra": [1]}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", model_dir, "--prompt", "sentiment_robust", "--input", str(src),
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and rows[1]["extra"] == [1]
    for r in rows:
        assert 0 <= r["p_yes"] <= 1 and r["reward"] == pytest.approx((r["p_yes"] - 0.5) * 10)
        assert {"p_yes/filmaffinity", "p_yes/repetitive"} <= set(r)


def test_score_csv_with_field(model_dir, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,review\n1,great film\n2,\"awful, boring\"\n")
    out = tmp_path / "out.csv"
    assert main(["score", "--model", model_dir, "--input", str(src), "--field", "review",
                 "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["id"] for r in rows] == ["1", "2"] and all(0 <= float(r["p_yes"]) <= 1 for r in rows)


def test_malformed_line_stops_before_writing(model_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\nnot json\n{"text": 3}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", model_dir, "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err and "line 3: field 'text' is not a string" in err
    assert not out.exists()


def test_skip_bad_writes_good_rows_and_lists_bad(model_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\nnot json\n{"text": "fine"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", model_dir, "--input", str(src), "--output", str(out), "--skip-bad"]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "skipped line 2" in capsys.readouterr().err


def test_unknown_prompt_is_one_line_error(model_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n')
    assert main(["score", "--model", model_dir, "--prompt", "nope", "--input", str(src)]) == 2
    assert "no prompt set named 'nope'" in capsys.readouterr().err


def test_prompts_validate_and_show(tmp_path, capsys, model_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nquestions: [{template: 'no variable here?'}]\n")
    assert main(["prompts", "validate", "prompts/sentiment.yaml", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "ok" in out and "uses no input variable" in out
    assert main(["prompts", "show", "sentiment", "--model", model_dir]) == 0
    out = capsys.readouterr().out
    assert "Is this movie review positive?" in out and "<|assistant|>" in out and "yes:" in out
