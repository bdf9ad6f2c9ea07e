"""`zyn eval` end to end on a fake backend (no model files): table, JSON, plots, errors."""
import csv
import json
import math
import re

import pytest

import zyn.model
from zyn import load_prompt_set
from zyn.cli import main


class FakeBackend:
    """Log-odds read from "v=<number>" in the text; content-free inputs read 0.7."""

    name = "fake"

    def logodds(self, groups, yes, no):
        out = []
        for g in groups:
            row = []
            for q in g:
                m = re.search(r"v=(-?[\d.]+)", q.user)
                lo = float(m.group(1)) if m else 0.7
                row.append(-lo if "negative?" in q.user else lo)
            out.append(row)
        return out


@pytest.fixture(autouse=True)
def fake_model(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # a wide table, so words are not folded
    monkeypatch.setattr(zyn.model, "build_backend", lambda *a, **k: FakeBackend())


ROWS = [("v=2.5 lovely", 1), ("v=-3 awful", 0), ("v=1.0 fine", 1), ("v=-0.5 meh", 0), ("v=0.4 odd", 0),
        ("v=3.2 superb", 1), ("v=-1.2 dull", 0), ("v=-0.2 quiet", 1), ("v=4 wow", 1), ("v=-2 bad", 0)]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS))
    return path


def run(capsys, *argv):
    rc = main(["eval", "--model", "fake", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_eval_compares_prompt_sets_and_writes_outputs(tmp_path, data, capsys):
    two = tmp_path / "two.yaml"
    two.write_text("name: two\nquestions:\n  - name: pos\n    template: '{{ text }} positive?'\n"
                   "  - name: neg\n    template: '{{ text }} negative?'\n    reward_answer: no\n")
    out_dir = tmp_path / "out"
    rc, out, err = run(capsys, "--prompt", "sentiment", "--prompt", two, "--input", data, "--calibrate", "platt",
                       "--save-calibrated", tmp_path / "cal_{name}.yaml", "--output-dir", out_dir)
    assert rc == 0, err
    # one table: both prompt sets, the two-question set with its questions, the columns asked for
    for word in ("sentiment", "two", "  pos", "  neg", "AUROC", "acc@0.5", "Brier", "ECE", "platt"):
        assert word in out
    res = json.loads((out_dir / "results.json").read_text())
    assert [(r["prompt_set"], r["variant"]) for r in res["runs"]] == [
        ("sentiment", "as given"), ("sentiment", "platt 2-fold"), ("two", "as given"), ("two", "platt 2-fold")]
    # positives 2.5 1 3.2 -0.2 4 vs negatives -3 -0.5 0.4 -1.2 -2: only -0.2 < 0.4 is out of order -> 24/25
    assert res["runs"][0]["metrics"]["combined"]["auroc"] == pytest.approx(24 / 25)
    # Platt keeps the ranking of a single question
    assert res["runs"][1]["metrics"]["combined"]["auroc"] == pytest.approx(24 / 25)
    # "neg" rewards no and reads -v: its score is its own P(yes) = sigmoid(-2.5) on the first row, and it is
    # measured against flipped labels, so it ranks as well as "pos" (24/25), not backwards (1/25)
    two = res["runs"][2]
    assert two["reward_answers"] == {"pos": "yes", "neg": "no"}
    assert two["scores"]["neg"][0] == pytest.approx(1 / (1 + math.exp(2.5)))
    assert two["metrics"]["neg"]["auroc"] == pytest.approx(24 / 25)
    assert two["metrics"]["combined"]["auroc"] == pytest.approx(24 / 25)
    assert (out_dir / "reliability.png").stat().st_size > 1000
    assert (out_dir / "histograms.png").stat().st_size > 1000
    cal = load_prompt_set(str(tmp_path / "cal_two.yaml"))
    assert all(q.calibration != (1.0, 0.0) and q.calibration[0] > 0 for q in cal.questions)


def test_a_calibrated_copy_has_a_name_of_its_own_and_compares_with_its_original(tmp_path, data, capsys):
    rc, _, err = run(capsys, "--input", data, "--calibrate", "platt", "--save-calibrated", tmp_path / "cal.yaml",
                     "--output-dir", tmp_path / "o1")
    assert rc == 0, err
    assert load_prompt_set(str(tmp_path / "cal.yaml")).name == "sentiment_calibrated"
    rc, out, err = run(capsys, "--prompt", "sentiment", "--prompt", tmp_path / "cal.yaml", "--input", data,
                       "--output-dir", tmp_path / "o2")  # the next step: the fit against the original
    assert rc == 0, err
    res = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert [r["prompt_set"] for r in res["runs"]] == ["sentiment", "sentiment_calibrated"]
    rc, _, err = run(capsys, "--prompt", "sentiment", "--prompt", "sentiment", "--input", data)
    assert rc == 2 and "2 prompt sets are named 'sentiment'" in err and "give each file its own `name:`" in err


def test_eval_csv_with_positive_value_and_content_free(tmp_path, capsys):
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for t, y in ROWS:
            w.writerow([t, "pos" if y else "neg"])
    rc, out, err = run(capsys, "--input", path, "--field", "review", "--label-field", "sentiment",
                       "--positive", "pos", "--calibrate", "contentfree", "--output-dir", tmp_path / "o",
                       "--save-calibrated", tmp_path / "cf.yaml")
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    # content-free inputs read 0.7 in the fake, so the shift is -0.7 with scale 1
    assert res["runs"][1]["calibration"] == {"positive": [1.0, pytest.approx(-0.7)]}
    assert load_prompt_set(str(tmp_path / "cf.yaml")).questions[0].calibration == (1.0, pytest.approx(-0.7))


@pytest.mark.parametrize("rows,args,message", [
    ([{"text": "v=1", "label": 1}, {"text": "v=2"}], [], "no label field 'label'"),
    ([{"text": "v=1", "y": 1}, {"text": "v=2", "y": 0}], [], "no label field 'label'"),
    ([{"text": "v=1", "label": 1}, {"text": "v=2", "label": 2}], [], "not binary"),
    ([{"text": "v=1", "label": "a"}, {"text": "v=2", "label": "b"}, {"text": "v", "label": "c"}],
     ["--positive", "a"], "not binary"),
    ([{"text": "v=1", "label": 1}, {"text": "v=2", "label": 1}], [], "both classes"),
])
def test_eval_label_errors_are_one_line(tmp_path, capsys, rows, args, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, out, err = run(capsys, "--input", path, "--output-dir", tmp_path / "o" / "run1", *args)
    assert rc == 2
    assert message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()  # a failed run leaves no empty folders behind


def test_a_failed_run_keeps_a_folder_that_was_there(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "earlier.json").write_text("{}")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n')
    rc, _, err = run(capsys, "--input", path, "--output-dir", tmp_path / "o")
    assert rc == 2 and (tmp_path / "o" / "earlier.json").read_text() == "{}"


def test_eval_unreadable_inputs(tmp_path, capsys):
    # missing file, a directory, and bytes that are not UTF-8: each one line, exit 2
    for path in (tmp_path / "nope.jsonl", tmp_path, tmp_path / "bin.jsonl"):
        if path.name == "bin.jsonl":
            path.write_bytes(b"\xff\xfe\x00bad")
        rc, out, err = run(capsys, "--input", path, "--output-dir", tmp_path / "o")
        assert rc == 2 and err.startswith("zyn: error:") and err.strip().count("\n") == 0, err


def test_outputs_that_would_destroy_the_input_or_cannot_be_written_are_refused_first(tmp_path, data, capsys):
    before = data.read_text()
    rc, _, err = run(capsys, "--input", data, "--calibrate", "platt", "--save-calibrated", data)
    assert rc == 2 and "--save-calibrated: " in err and "is the input file" in err
    assert data.read_text() == before  # the labelled data is still there
    rc, _, err = run(capsys, "--input", data, "--calibrate", "platt", "--save-calibrated", tmp_path / "no" / "x.yaml")
    assert rc == 2 and "--save-calibrated: the folder" in err and "does not exist" in err
    rc, _, err = run(capsys, "--input", data, "--output-dir", data)
    assert rc == 2 and "--output-dir: " in err and "is a file; give a folder" in err


def test_save_calibrated_into_a_new_output_dir(tmp_path, data, capsys):
    rc, _, err = run(capsys, "--input", data, "--calibrate", "platt", "--output-dir", tmp_path / "ev",
                     "--save-calibrated", tmp_path / "ev" / "{name}.yaml")
    assert rc == 0, err
    assert (tmp_path / "ev" / "sentiment.yaml").is_file()


def test_max_length_reaches_the_judge_and_is_left_out_when_not_given(tmp_path, data, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(zyn.model, "build_backend", lambda *a, **k: seen.append(k) or FakeBackend())
    assert run(capsys, "--input", data, "--output-dir", tmp_path / "a", "--max-length", "64")[0] == 0
    assert run(capsys, "--input", data, "--output-dir", tmp_path / "b")[0] == 0
    assert seen[0]["max_length"] == 64 and "max_length" not in seen[1]  # a remote judge has no such option
    with pytest.raises(SystemExit):
        run(capsys, "--input", data, "--max-length", "0")
    assert "--max-length: expected a whole number of at least 1, got 0" in capsys.readouterr().err


def test_two_bare_questions_are_compared_under_their_own_names(tmp_path, data, capsys):
    rc, out, err = run(capsys, "--input", data, "--prompt", "Is this review positive?",
                       "--prompt", "Is this review favourable?", "--output-dir", tmp_path / "o")
    assert rc == 0, err
    runs = json.loads((tmp_path / "o" / "results.json").read_text())["runs"]
    assert {r["prompt_set"] for r in runs} == {"is_this_review_positive", "is_this_review_favourable"}


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".csv.gz", ".jsonl.xz"])
def test_a_compressed_labelled_file_is_read_as_it_is(tmp_path, capsys, suffix):
    import gzip
    import lzma

    if ".csv" in suffix:
        body = "text,label\n" + "".join(f"{t},{y}\n" for t, y in ROWS)
    else:
        body = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS)
    path = tmp_path / f"data{suffix}"
    path.write_bytes((gzip.compress if suffix.endswith(".gz") else lzma.compress)(body.encode()))
    rc, out, err = run(capsys, "--input", path, "--output-dir", tmp_path / "o")
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["n"] == len(ROWS)
