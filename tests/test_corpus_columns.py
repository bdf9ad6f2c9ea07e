"""CSV and Parquet outputs keep every field of every row: columns are the union of the
rows' fields (absent: empty or null), gathered before the first row is written where
`zyn score` can, and a field that comes too late for that is an error, never dropped."""
import csv
import io
import json

import pytest

from zyn.cli import main
from zyn.corpus.writers import CsvWriter, ParquetWriter, merge_fields
from zyn.errors import InputError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

LATE = '{"text": "great film"}\n{"text": "awful", "score": 1}\n'  # "score" only in row 2
EARLY = '{"text": "great film", "score": 1}\n{"text": "awful"}\n'  # "score" only in row 1
NULL_FIRST = '{"text": "great film", "score": null}\n{"text": "awful", "score": 1}\n'


def test_merge_fields_keeps_each_records_order():
    assert merge_fields(["text", "p_yes"], [{"text": "a", "score": 1, "p_yes": 0.5}]) == ["text", "score", "p_yes"]
    assert merge_fields([], [{"a": 1}, {"z": 2, "a": 1}, {"a": 1, "b": 2}]) == ["z", "a", "b"]


def test_writers_take_every_field_of_the_first_batch():
    out = io.StringIO()
    w = CsvWriter(out)
    w.write([{"text": "a"}, {"text": "b", "score": 1}])
    assert out.getvalue().splitlines() == ["text,score", "a,", "b,1"]


def test_a_field_after_the_header_is_an_error_naming_it_and_the_row(tmp_path):
    w = CsvWriter(io.StringIO())
    w.write([{"text": "a"}])
    with pytest.raises(InputError, match=r"field\(s\) \['score'\] first appear in row 3, after the CSV header.*"
                                         r"write \.jsonl instead"):
        w.write([{"text": "b"}, {"text": "c", "score": 1}])
    p = ParquetWriter(str(tmp_path / "o.parquet"), fix="do X")
    p.write([{"text": "a"}])
    with pytest.raises(InputError, match=r"\['score'\] first appear in row 2, after the Parquet schema.*; do X"):
        p.write([{"text": "b", "score": 1}])


def test_parquet_batches_fit_the_schema(tmp_path):
    path = tmp_path / "o.parquet"
    w = ParquetWriter(str(path))
    w.write([{"x": None, "y": 1.5, "z": "a"}])
    w.write([{"x": None, "y": 2}])  # z absent: null; a whole number in a double column: 2.0
    with pytest.raises(InputError, match=r"field 'x' holds int64 values in rows 3-3, and was empty in every row "
                                         r"before them"):  # the schema is fixed: null-typed x cannot take 1
        w.write([{"x": 1, "y": 3.0}])
    w.close()
    assert pq.read_table(path).to_pylist() == [{"x": None, "y": 1.5, "z": "a"}, {"x": None, "y": 2.0, "z": None}]


def test_parquet_refuses_text_where_numbers_were(tmp_path):
    w = ParquetWriter(str(tmp_path / "o.parquet"))
    w.write([{"x": 1}])
    with pytest.raises(InputError, match=r"field 'x' holds string values in rows 2-2, and its column holds int64"):
        w.write([{"x": "1"}])


@pytest.mark.parametrize("src", [LATE, EARLY, NULL_FIRST], ids=["late", "early", "null-first"])
@pytest.mark.parametrize("ext", ["parquet", "csv"])
@pytest.mark.parametrize("chunk", ["1", "1024"])
def test_score_keeps_a_field_that_some_rows_lack(tiny_causal_dir, tmp_path, src, ext, chunk):
    (tmp_path / "in.jsonl").write_text(src)
    out = tmp_path / f"out.{ext}"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                 "--chunk-rows", chunk]) == 0
    if ext == "parquet":
        table = pq.read_table(out)
        assert table.column_names[:2] == ["text", "score"] and table.schema.field("score").type == pa.int64()
        scores = table.column("score").to_pylist()
    else:
        rows = list(csv.DictReader(out.read_text().splitlines()))
        assert list(rows[0])[:2] == ["text", "score"]
        scores = [int(r["score"]) if r["score"] else None for r in rows]
    assert scores == [json.loads(line).get("score") for line in src.splitlines()]


def test_a_resumed_run_keeps_the_fields_of_the_parts_before_it(tiny_causal_dir, tmp_path, monkeypatch):
    from zyn import ZeroShotRewardModel

    src, out = tmp_path / "in.jsonl", tmp_path / "out.csv"
    src.write_text("".join(json.dumps({"text": f"review {i}", **({"late": i} if i > 5 else {})}) + "\n"
                           for i in range(10)))
    args = ["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out), "--chunk-rows", "3"]
    real = ZeroShotRewardModel.score_detailed

    def interrupted(self, inputs):
        if any("review 7" in str(x) for x in inputs):
            raise KeyboardInterrupt
        return real(self, inputs)

    monkeypatch.setattr(ZeroShotRewardModel, "score_detailed", interrupted)
    assert main(args) == 130
    monkeypatch.undo()
    assert main(args + ["--resume"]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["late"] for r in rows] == [""] * 6 + ["6", "7", "8", "9"]


def test_a_parquet_type_clash_fails_before_the_model_loads(tiny_causal_dir, tmp_path, capsys, monkeypatch):
    import zyn.cli.score as score

    src = tmp_path / "in.jsonl"
    # numbers up to line 1024, then nulls, then text from line 1501: the clash is between blocks of 1024
    lines = [json.dumps({"text": f"t{i}", "x": i if i <= 1024 else None if i <= 1500 else str(i)})
             for i in range(1, 2000)]
    lines[10] = json.dumps({"text": 5, "x": "bad row: skipped, so not counted"})
    src.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(score, "load_reward_model", lambda args: pytest.fail("the model was loaded"))
    out = tmp_path / "out.parquet"
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "input: line 1501: field 'x' holds string where line 1 holds int64" in err and "write .jsonl" in err
    lines[1500:] = [json.dumps({"text": "t", "x": 2.5})]  # a fraction after whole numbers: one double column
    lines[2] = json.dumps({"text": "t", "x": "s"})  # within the first block
    src.write_text("\n".join(lines) + "\n")
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out)]) == 2
    assert "input: line 3: field 'x' holds 's', of another type than in the rows before it" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.parquet.parts").exists()


def test_whole_and_fractional_numbers_share_a_double_column(tiny_causal_dir, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    src.write_text('{"text": "a", "x": 1}\n{"text": "b", "x": null}\n{"text": "c", "x": 2.5}\n')
    assert main(["score", "--model", tiny_causal_dir, "--input", str(src), "--output", str(out),
                 "--chunk-rows", "1"]) == 0
    assert pq.read_table(out).column("x").to_pylist() == [1.0, None, 2.5]


def test_the_type_check_widens_like_the_output_does(tmp_path):
    from zyn.corpus.output import check_parquet_types
    from zyn.corpus.readers import open_input

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": "t", "x": 1 if i < 3 else None if i < 6 else 2.5,
                                       "m": {"a": 1} if i < 3 else {"b": "s"}}) + "\n" for i in range(9)))
    check_parquet_types(open_input(str(src)).chunks(0, None, 2), "text")  # int, null, double; struct fields merge
