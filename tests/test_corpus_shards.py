"""Shards: contiguous row ranges, named so that name order is input order; `zyn merge`."""
import json
from pathlib import Path

import pytest

from zyn.cli import main
from zyn.corpus.shards import order_shards, parse_shard, shard_from_env, shard_path, shard_range
from zyn.errors import InputError


@pytest.mark.parametrize("total", [0, 1, 7, 10, 1001])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_shard_ranges_tile_the_rows_in_order(total, n):
    ranges = [shard_range(i, n, total) for i in range(n)]
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert max(hi - lo for lo, hi in ranges) - min(hi - lo for lo, hi in ranges) <= 1


def test_shard_options_and_environment():
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/2", "a/b", "3"):
        with pytest.raises(InputError, match="expected I/N"):
            parse_shard(bad)
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (1, 4)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None and shard_from_env({}) is None
    # zero-padded names: name order is input order up to 99999 shards
    names = [shard_path("out/s.jsonl", i, 12) for i in range(12)]
    assert sorted(names) == names and names[2] == "out/s-00002-of-00012.jsonl"


def test_order_shards_wants_the_complete_set(tmp_path):
    for i in (0, 2):
        (tmp_path / f"s-{i:05d}-of-00003.jsonl").write_text("")
    with pytest.raises(InputError, match=r"shard\(s\) \[1\] of 3 missing"):
        order_shards([str(tmp_path)])
    (tmp_path / "s-00001-of-00003.jsonl").write_text("")
    assert [Path(p).name[:7] for p in order_shards([str(tmp_path)])] == ["s-00000", "s-00001", "s-00002"]


def _reviews(n):
    return "".join(json.dumps({"id": i, "text": f"review number {i}"}) + "\n" for i in range(1, n + 1))


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_three_shards_merge_to_the_unsharded_run(tiny_causal_dir, tmp_path, monkeypatch, ext):
    pytest.importorskip("pyarrow")
    src = tmp_path / "in.jsonl"
    src.write_text(_reviews(50))
    base = ["score", "--model", tiny_causal_dir, "--input", str(src), "--chunk-rows", "8"]
    assert main(base + ["--output", str(tmp_path / "whole.jsonl")]) == 0
    (tmp_path / "shards").mkdir()
    out = tmp_path / "shards" / f"scored.{ext}"
    assert main(base + ["--output", str(out), "--shard", "0/3"]) == 0
    monkeypatch.setenv("RANK", "2")  # as under `accelerate launch`: one shard per process
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(base + ["--output", str(out)]) == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["merge", str(tmp_path / "m.jsonl"), str(tmp_path / "shards")]) == 2  # shard 1 missing
    assert main(base + ["--output", str(out), "--shard", "1/3"]) == 0
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert names == [f"scored-{i:05d}-of-00003.{ext}" for i in range(3)]
    assert main(["merge", str(tmp_path / "m.jsonl"), str(tmp_path / "shards")]) == 0
    merged = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    whole = [json.loads(x) for x in (tmp_path / "whole.jsonl").read_text().splitlines()]
    assert [r["id"] for r in merged] == list(range(1, 51))
    assert [r["p_yes"] for r in merged] == pytest.approx([r["p_yes"] for r in whole], abs=1e-5)  # float32: batches differ


def test_csv_shards_merge_with_numbers_and_selections(tiny_causal_dir, tmp_path):
    """CSV keeps text only: the merged scores are numbers again, so --min-p and --pairs work."""
    src = tmp_path / "in.jsonl"
    src.write_text(_reviews(12))
    (tmp_path / "shards").mkdir()
    for i in range(2):
        assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output",
                     str(tmp_path / "shards" / "s.csv"), "--shard", f"{i}/2"]) == 0
    assert main(["merge", str(tmp_path / "m.jsonl"), str(tmp_path / "shards"), "--min-p", "0"]) == 0
    merged = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(merged) == 12 and all(isinstance(r["p_yes"], float) and isinstance(r["reward"], float) for r in merged)
    with pytest.raises(SystemExit):  # argparse: "expected a probability from 0 to 1, got 2"
        main(["merge", str(tmp_path / "m2.jsonl"), str(tmp_path / "shards"), "--min-p", "2"])


def test_group_by_is_refused_with_shards(tiny_causal_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(_reviews(4))
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(tmp_path / "o.jsonl"),
                 "--shard", "0/2", "--group-by", "id", "--keep", "best"]) == 2
    assert "pass it to `zyn merge`" in capsys.readouterr().err


@pytest.mark.parametrize("shard_ext", ["jsonl", "parquet"])
@pytest.mark.parametrize("out_ext", ["csv", "parquet"])
def test_merge_keeps_a_field_only_a_later_shard_holds(tmp_path, shard_ext, out_ext):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    shards = [[{"id": 1, "text": "a", "p_yes": 0.5, "reward": 0.0}],
              [{"id": 2, "text": "b", "score": 7, "p_yes": 0.25, "reward": -2.5}]]
    for i, rows in enumerate(shards):
        path = tmp_path / f"s-{i:05d}-of-00002.{shard_ext}"
        if shard_ext == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)
    out = tmp_path / f"m.{out_ext}"
    assert main(["merge", str(out), *(str(p) for p in sorted(tmp_path.glob("s-*")))]) == 0
    if out_ext == "csv":
        import csv

        with out.open() as f:
            rows = list(csv.DictReader(f))
        assert rows[0]["score"] == "" and rows[1]["score"] == "7"
    else:
        rows = pq.read_table(out).to_pylist()
        assert rows[0]["score"] is None and rows[1]["score"] == 7 and rows[1]["p_yes"] == 0.25
