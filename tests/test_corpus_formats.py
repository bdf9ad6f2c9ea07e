"""Inputs and outputs at corpus scale: Parquet and `datasets` in, Parquet out, read in
chunks; bad rows named by row number; reading from a row range."""
import json
import re

import pytest

from zyn.cli import main
from zyn.corpus.readers import open_input
from zyn.errors import InputError

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
    assert "input: line 2: field 'x' holds 's', of another type than in the rows before it" in capsys.readouterr().err
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


def test_a_line_cut_before_its_closing_brace_names_the_column_where_it_ends(tmp_path):
    j = tmp_path / "in.jsonl"
    j.write_text('{"text": "abc", "x": 1\n{"text": "ok"}\n')
    assert [r.value for r in open_input(str(j)).rows()] == ["not valid JSON (Expecting ',' delimiter at column 23)",
                                                           {"text": "ok"}]  # not "column 1" of the line break


@pytest.mark.parametrize("pack", ["gzip", "bz2", "lzma"])
def test_compressed_jsonl_and_csv_are_read_as_they_are(tmp_path, pack):
    import importlib

    module = importlib.import_module(pack)
    j, c = tmp_path / "in.jsonl.x", tmp_path / "in.csv.gz"  # known by their bytes; a CSV by its name under .gz
    j.write_bytes(module.compress(b'{"text": "a"}\n\n{"text": "b"}\n'))
    c.write_bytes(module.compress(b"text,id\nhello,1\n"))
    r = open_input(str(j))
    assert r.count() == 2 and [(x.index, x.number, x.value["text"]) for x in r.rows(1)] == [(1, 3, "b")]
    assert [x.value for x in open_input(str(c)).rows()] == [{"text": "hello", "id": "1"}]


def test_compressed_inputs_zyn_cannot_read_are_named(tmp_path):
    import gzip

    for name, data, said in [("in.jsonl.zst", b"\x28\xb5\x2f\xfd" + b"\0" * 8, "zstd-compressed; decompress it"),
                             ("in.parquet.gz", gzip.compress(b"PAR1"), "gzip-compressed; decompress it first "
                              "(Parquet compresses its columns itself)")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=re.escape(said)):
            open_input(str(tmp_path / name))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:-20])
    with pytest.raises(InputError, match="its gzip data is damaged or cut short"):
        open_input(str(cut)).count()
    text = tmp_path / "bz.csv"  # text that starts like a bzip2 file is still text
    text.write_text("BZh9,id\nx,1\n")
    assert [x.value for x in open_input(str(text)).rows()] == [{"BZh9": "x", "id": "1"}]


def test_compressed_standard_input_is_named(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    import gzip
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(b'{"text": "a"}\n'))))
    assert main(["score", "--model", tiny_causal_dir, "--input", "-"]) == 2
    assert "standard input is gzip-compressed; decompress it in the pipe" in capsys.readouterr().err


@pytest.mark.parametrize("name, said", [
    ("o.jsonl.gz", "compressed output is not supported; write {d}/o.jsonl and compress it afterwards"),
    ("o.parquet.zst", "write {d}/o.parquet and compress"),
    ("o.tsv", "unknown extension '.tsv'; name the output with one of .jsonl, .csv, .parquet, .pq"),
    ("o.json", "unknown extension '.json'"), ("o.txt", "unknown extension '.txt'"),
    ("o", "unknown extension '(none)'")])
def test_an_output_extension_zyn_does_not_write_is_refused_before_the_model_loads(
        tiny_causal_dir, tmp_path, capsys, monkeypatch, name, said):
    import zyn.cli.score as score

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n')
    monkeypatch.setattr(score, "load_reward_model", lambda args: pytest.fail("the model was loaded"))
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(tmp_path / name)]) == 2
    assert said.format(d=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / name).exists()


def test_compressed_input_scores_like_plain_in_shards(tiny_causal_dir, tmp_path):
    import gzip

    plain = "".join(json.dumps({"id": i, "text": f"review {i}"}) + "\n" for i in range(1, 13))
    (tmp_path / "in.jsonl").write_text(plain)
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(plain.encode()))
    for name in ("in.jsonl", "in.jsonl.gz"):
        for i in range(2):
            assert main(["score", "--model", tiny_causal_dir, "--input", str(tmp_path / name), "--chunk-rows", "4",
                         "--output", str(tmp_path / f"{name}.out.jsonl"), "--shard", f"{i}/2"]) == 0
    for i in range(2):
        a = (tmp_path / f"in.jsonl.out-{i:05d}-of-00002.jsonl").read_text()
        assert a == (tmp_path / f"in.jsonl.gz.out-{i:05d}-of-00002.jsonl").read_text() and a
