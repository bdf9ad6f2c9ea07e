"""`zyn probe` end to end: plumbing on a tiny random model, exact figures on a fake backend."""
import json
import re

import pytest

import zyn.model
from zyn import ZeroShotRewardModel
from zyn.cli import main
from zyn.cli.probe import probe_prompt_sets
from zyn.probe import PERTURBATIONS
from pathlib import Path

# the frozen v1 sentiment (plain template) and v2 robust set: tests of mechanics that need their shape
FROZEN = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "prompts_v1"
SENTIMENT_V1, ROBUST_V2 = str(FROZEN / "sentiment_v1.yaml"), str(FROZEN / "sentiment_robust_v2.yaml")


ROWS = [("v=2 lovely film", 1), ("v=-3 awful film", 0), ("v=1 fine", 1), ("v=-1 dull", 0)]


class FakeBackend:
    """Log-odds v from "v=<number>" in the text, +3 if it asks the grader for "Yes",
    -1 per extra copy of "v=" (so repetition costs)."""

    name = "fake"

    def logodds(self, groups, yes, no):
        out = []
        for g in groups:
            row = []
            for q in g:
                text = q.user
                v = float(re.search(r"v=(-?[\d.]+)", text, re.I).group(1))
                v += 3.0 * ("Answer Yes" in text) - (len(re.findall("v=", text, re.I)) - 1)
                row.append(v)
            out.append(row)
        return out


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS))
    return path


def run(capsys, *argv):
    rc = main(["probe", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_probe_on_a_tiny_model_writes_table_json_and_plot(tmp_path, data, capsys, monkeypatch, tiny_causal):
    build = zyn.model.build_backend
    monkeypatch.setattr(zyn.model, "build_backend", lambda model, tokenizer=None, **kw: build(*tiny_causal, **kw))
    monkeypatch.setenv("COLUMNS", "200")
    out_dir = tmp_path / "out"
    rc, out, err = run(capsys, "--model", "tiny", "--prompt", "sentiment", "--prompt", "sentiment_robust",
                       "--input", data, "--output-dir", out_dir)
    assert rc == 0, err
    for word in ("sentiment (mean)", "sentiment_robust", "grader_note", "fake_chat", "lower", "AUROC"):
        assert word in out
    res = json.loads((out_dir / "probe.json").read_text())
    assert res["perturbations"] == list(PERTURBATIONS) and res["n"] == 4 and res["labels"] == [1, 0, 1, 0]
    robust = res["runs"][1]
    assert robust["questions"] == {"positive": "yes", "repetitive": "no", "instructs": "no", "coherent": "yes",
                                   "sysline": "no"}
    assert len(robust["scores"]["p"]) == 4 * (1 + len(PERTURBATIONS))
    for rep in robust["perturbations"].values():
        assert 0 <= rep["lower_rate"] <= 1 and 0 <= rep["auroc_attacked"] <= 1
        assert set(rep["question_shift_p_yes"]) == {"positive", "repetitive", "instructs", "coherent", "sysline"}
    assert (out_dir / "probe.png").stat().st_size > 1000


def test_probe_scores_each_variant_as_scored_alone(tiny_causal):
    # the batched probe gives each perturbed text the score it gets on its own
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    records = [{"text": t} for t, _ in ROWS]
    res = probe_prompt_sets(rm, [rm.prompt_set], records, None, ["repeat", "upper"])
    alone = rm.score([PERTURBATIONS["upper"](t) for t, _ in ROWS])
    assert res["runs"][0]["scores"]["p"][8:] == pytest.approx(alone, abs=1e-5)
    assert "auroc" not in res["runs"][0]["perturbations"]["repeat"]


def test_probe_figures_are_exact_on_a_fake_backend(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(zyn.model, "build_backend", lambda *a, **k: FakeBackend())
    rc, out, err = run(capsys, "--model", "fake", "--prompt", SENTIMENT_V1, "--input", data, "--perturb", "grader_note",
                       "--perturb", "repeat", "--output-dir", tmp_path / "o")
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "probe.json").read_text())
    note, rep = res["runs"][0]["perturbations"]["grader_note"], res["runs"][0]["perturbations"]["repeat"]
    # the note adds 3 to every log-odds: nothing scores lower; -3 -> 0 and -1 -> 2 cross 0.5 (1 -> 2 stays)
    assert note["lower_rate"] == 0.0
    assert note["flip_up"] == 0.5 and note["neg_flip_up"] == 1.0
    assert note["auroc"] == 1.0 and note["auroc_attacked"] == 1.0
    # four copies cost 3 in log-odds: every pair scores lower, -1 + ... none crosses up
    assert rep["lower_rate"] == 1.0 and rep["flip_up"] == 0.0
    assert rep["flip_rate"] == 0.5  # 2 -> -1 and 1 -> -2 cross down


def test_probe_without_labels_and_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(zyn.model, "build_backend", lambda *a, **k: FakeBackend())
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"text": "v=1 a"}\n{"text": "v=-1 b"}\n')
    rc, out, err = run(capsys, "--input", plain, "--perturb", "upper", "--output-dir", tmp_path / "o")
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "probe.json").read_text())
    assert res["labels"] is None and "auroc" not in res["runs"][0]["perturbations"]["upper"]
    half = tmp_path / "half.jsonl"
    half.write_text('{"text": "v=1 a", "label": 1}\n{"text": "v=-1 b"}\n')
    rc, out, err = run(capsys, "--input", half, "--output-dir", tmp_path / "o")
    assert rc == 2 and "no label 'label' on 1 row(s) (first: line 2)" in err
    rc, out, err = run(capsys, "--input", half, "--no-labels", "--perturb", "lower", "--output-dir", tmp_path / "o")
    assert rc == 0, err
    with pytest.raises(SystemExit):
        main(["probe", "--input", str(plain), "--perturb", "shout"])
    capsys.readouterr()
    from zyn.errors import ModelNotFoundError

    def missing(*a, **k):
        raise ModelNotFoundError("no such file or folder: 'gone'")

    monkeypatch.setattr(zyn.model, "build_backend", missing)
    rc, out, err = run(capsys, "--input", plain, "--model", "gone", "--output-dir", tmp_path / "new" / "o")
    assert rc == 2 and "no such file or folder" in err
    assert not (tmp_path / "new").exists()  # the model failed to load: no empty folders left behind


def test_prompt_completion_records_perturb_the_completion_by_default(tmp_path, capsys, monkeypatch):
    seen = []

    class Recording(FakeBackend):
        def logodds(self, groups, yes, no):
            seen.extend(q.user for g in groups for q in g)
            return super().logodds(groups, yes, no)

    monkeypatch.setattr(zyn.model, "build_backend", lambda *a, **k: Recording())
    path = tmp_path / "pc.jsonl"
    path.write_text("".join(json.dumps({"prompt": "Write a review:", "completion": t, "label": y}) + "\n"
                            for t, y in ROWS))
    rc, out, err = run(capsys, "--input", path, "--perturb", "upper", "--output-dir", tmp_path / "o")
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "probe.json").read_text())["field"] == "completion"
    upper = [u for u in seen if "V=2 LOVELY FILM" in u]
    assert upper and all("Write a review:" in u for u in upper)  # the prompt kept as it is, the completion attacked
