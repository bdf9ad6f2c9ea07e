"""Inputs and outputs at corpus scale: Parquet and `datasets` in, Parquet out, read in
chunks; bad rows named by row number; reading from a row range."""
import json

import pytest

from zyn.cli import main
from zyn.corpus.readers import open_input

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _table(n):
    return pa.table({"id": list(range(1, n + 1)), "text": [f"review number {i}" for i in range(1, n + 1)]})


def test_parquet_reader_counts_from_metadata_and_slices_row_groups(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(_table(2500), path, row_group_size=300)
    r = open_input(str(path))
    assert r.count() == 2500 and r.unit == "row"
    rows = list(r.rows(599, 1205))  # starts inside the second row group, ends inside the fifth
    assert [x.index for x in rows] == list(range(599, 1205)) and rows[0].value["id"] == 600
    assert rows[0].number == 600


def test_jsonl_and_csv_readers_number_lines_and_skip_blank_ones(tmp_path):
    j = tmp_path / "in.jsonl"
    j.write_text('{"text": "a"}\n\n{"text": "b"}\nnope\n')
    assert [(x.index, x.number) for x in open_input(str(j)).rows()] == [(0, 1), (1, 3), (2, 4)]
    assert open_input(str(j)).count() == 3
    c = tmp_path / "in.csv"
    c.write_text('text\n"multi\nline"\nb\n')
    assert [(x.index, x.number, x.value["text"]) for x in open_input(str(c)).rows(1)] == [(1, 4, "b")]


@pytest.mark.parametrize("reader", ["corpus", "records"])
def test_uneven_csv_rows_boms_long_cells_and_non_objects_are_named(tmp_path, reader):
    """Both readers (zyn score's, and zyn eval's and probe's) name what is wrong with a
    row instead of failing on it; a byte-order mark is not part of the first column."""
    from zyn.records import read_records

    def rows(path):
        if reader == "corpus":
            return [(r.number, r.value) for r in open_input(str(path)).rows()]
        good, bad = read_records(str(path))
        return sorted([(n, v) for n, v in good] + [(b.line, b.reason) for b in bad])

    c = tmp_path / "in.csv"
    c.write_bytes(b"\xef\xbb\xbftext,id\nhello,1,extra\nfine,2\nshort\n" + b"x" * 200_000 + b",3\n")
    got = rows(c)
    assert got[0] == (2, "has 3 cells, more than the header's 2")
    assert got[1] == (3, {"text": "fine", "id": "2"})  # no BOM in the first column's name
    assert got[2] == (4, "has 1 cell, fewer than the header's 2")
    assert got[3][1]["text"] == "x" * 200_000  # over the csv module's default 131,072
    j = tmp_path / "in.jsonl"
    j.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n"str"\n[1]\n')
    assert rows(j) == [(1, {"text": "a"}), (2, 'expected a JSON object such as {"text": ...}, got a JSON str'),
                       (3, 'expected a JSON object such as {"text": ...}, got a JSON list')]


def test_parquet_in_parquet_out_with_a_bad_row_named_by_row(tiny_causal_dir, tmp_path, capsys):
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    t = _table(40)
    texts = t.column("text").to_pylist()
    texts[24] = None  # row 25: no text
    pq.write_table(t.set_column(1, "text", pa.array(texts)), src, row_group_size=16)
    args = ["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--chunk-rows", "10"]
    assert main(args) == 2
    assert "row 25: field 'text' is not a string" in capsys.readouterr().err
    assert main(args + ["--skip-bad"]) == 0
    scored = pq.read_table(out).to_pylist()
    assert [r["id"] for r in scored] == [i for i in range(1, 41) if i != 25]
    assert all(0 <= r["p_yes"] <= 1 for r in scored)
    assert "skipped row 25" in capsys.readouterr().err


def test_a_saved_dataset_folder_is_an_input(tiny_causal_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"id": [1, 2, 3], "review": ["good", "bad", "fine"]}).save_to_disk(str(folder))
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(folder), "--field", "review",
                 "--output", str(out)]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [1, 2, 3]


def test_one_line_errors_for_mixed_parquet_columns_sharded_stdin_and_an_unreachable_hub(
        tiny_causal_dir, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a", "x": 1}\n{"text": "b", "x": "s"}\n')
    out = tmp_path / "out.parquet"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    assert "rows 1-2 mix types in a column" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.parquet.parts").exists()  # nothing left to block a rerun
    assert main(["score", "--model", tiny_causal_dir, "--input", "-", "--output", str(tmp_path / "o.jsonl"),
                 "--shard", "0/2"]) == 2
    assert "--shard needs --input FILE" in capsys.readouterr().err
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'imdb' on the Hub (LocalEntryNotFoundError)")

    from zyn.models import hub

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(hub, "unreachable", lambda: None)  # the hub answers; the load fails all the same
    assert main(["score", "--model", tiny_causal_dir, "--input", "hf:imdb", "--output", str(tmp_path / "h.jsonl")]) == 2
    assert "input: hf:imdb: the dataset could not be loaded (ConnectionError" in capsys.readouterr().err
    # The hub does not answer: datasets runs in its offline mode (no ~23 s of retries), restored afterwards.
    offline_during = []

    def from_cache_only(*a, **k):
        offline_during.append(datasets.config.HF_HUB_OFFLINE)
        raise ConnectionError("Couldn't reach 'imdb' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", from_cache_only)
    monkeypatch.setattr(hub, "unreachable", lambda: "the model hub https://huggingface.co cannot be reached (refused)")
    before = datasets.config.HF_HUB_OFFLINE
    assert main(["score", "--model", tiny_causal_dir, "--input", "hf:imdb", "--output", str(tmp_path / "h.jsonl")]) == 2
    assert ("input: hf:imdb: the dataset could not be loaded (it is not in the local datasets cache and the model hub "
            "https://huggingface.co cannot be reached (refused))") in capsys.readouterr().err
    assert offline_during == [True] and datasets.config.HF_HUB_OFFLINE == before


def test_outputs_are_valid_json_and_csv_cells_hold_json():
    """NaN (a score an engine left undefined, a NaN in the input) is null in JSONL, empty
    in CSV; nested values are JSON in a CSV cell, not Python's repr."""
    import io

    from zyn.corpus.writers import CsvWriter, json_line

    line = json_line({"p_yes": float("nan"), "x": [1.0, float("inf")], "raw": b"ok"})
    assert json.loads(line) == {"p_yes": None, "x": [1.0, None], "raw": "ok"} and "NaN" not in line
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.write([{"a": {"n": [1]}, "p_yes": float("nan")}])
    assert out.getvalue().splitlines()[1] == '"{""n"": [1]}",'
