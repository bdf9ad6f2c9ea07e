"""Selections over scored rows: best of n, TRL preference pairs, a P(yes) floor; adjacency."""
import json

import pytest

from zyn.cli import main
from zyn.corpus.select import Selector
from zyn.errors import InputError


def _row(q, text, reward, p=0.5):
    return {"q": q, "text": text, "reward": reward, "p_yes": p}


def _run(selector, batches):
    out = []
    for b in batches:
        out += selector.feed(b)
    return out + selector.finish()


def test_best_of_n_keeps_the_highest_reward_per_group_across_batches():
    rows = [_row("a", "a1", 1.0), _row("a", "a2", 3.0), _row("b", "b1", -1.0), _row("b", "b2", -1.0),
            _row("c", "c1", float("nan")), _row("c", "c2", 0.0)]
    # the group "a" spans the batch edge; ties keep the first; NaN ranks last
    assert [r["text"] for r in _run(Selector("q", keep="best"), [rows[:1], rows[1:]])] == ["a2", "b1", "c2"]


def test_pairs_are_trl_preference_rows_with_margin():
    rows = [_row("p", "good", 2.0), _row("p", "mid", 0.5), _row("p", "bad", -1.0),
            _row("tie", "x", 1.0), _row("tie", "y", 1.0), _row("alone", "z", 1.0)]
    pairs = _run(Selector("q", pairs=True), [rows])
    # ties and single rows give no pair: no preference to learn
    assert pairs == [{"prompt": "p", "chosen": "good", "rejected": "bad", "margin": 3.0,
                      "score_chosen": 2.0, "score_rejected": -1.0}]


def test_pairs_of_prompt_completion_and_chat_records():
    rows = [{"prompt": "P", "completion": "c1", "reward": 1.0, "p_yes": .7},
            {"prompt": "P", "completion": "c2", "reward": 0.0, "p_yes": .5}]
    assert _run(Selector("prompt", pairs=True), [rows])[0]["chosen"] == "c1"
    chat = [{"id": 1, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": a}],
             "reward": r, "p_yes": .5} for a, r in (("A", 1.0), ("B", -1.0))]
    [pair] = _run(Selector("id", pairs=True), [chat])
    assert pair["prompt"] == [{"role": "user", "content": "hi"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "A"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "B"}]


def test_min_p_filters_before_grouping():
    rows = [_row("a", "a1", 3.0, p=0.2), _row("a", "a2", 1.0, p=0.8), _row("b", "b1", 0.0, p=float("nan"))]
    assert [r["text"] for r in _run(Selector(min_p=0.5), [rows])] == ["a2"]
    assert [r["text"] for r in _run(Selector("q", keep="best", min_p=0.5), [rows])] == ["a2"]
    # an unscored row as the parts and shards store it (JSONL null) or without the column: dropped
    unscored = [{**rows[1], "text": "n1", "p_yes": None}, {"q": "c", "text": "n2", "reward": 1.0}]
    assert [r["text"] for r in _run(Selector(min_p=0.5), [rows + unscored])] == ["a2"]


def test_a_group_coming_back_is_an_error_naming_the_sort():
    rows = [_row("a", "1", 0.0), _row("b", "2", 0.0), _row("a", "3", 0.0)]
    with pytest.raises(InputError, match=r"the group \"a\" comes back at scored row 3.*sort the input by 'q'"):
        _run(Selector("q", keep="best"), [rows])


def test_option_errors():
    with pytest.raises(InputError, match="need --group-by"):
        Selector(keep="best")
    with pytest.raises(InputError, match="one of"):
        Selector("q", keep="best", pairs=True)


def test_score_pairs_end_to_end(tiny_causal_dir, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"q{i // 4}", "completion": f"answer {i} " + "great " * (i % 4)})
                           + "\n" for i in range(20)))
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--field",
                 "completion", "--group-by", "prompt", "--pairs", "--chunk-rows", "3"]) == 0
    pairs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [p["prompt"] for p in pairs] == [f"q{i}" for i in range(5)]
    assert all(p["margin"] > 0 and set(p) >= {"prompt", "chosen", "rejected"} for p in pairs)

