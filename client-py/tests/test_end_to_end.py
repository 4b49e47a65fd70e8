"""Queries against the real flightbear server, checked against independent readers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa
import pytest
from flightbear_testing import Server, read_delimited, read_fasta

import flightbear


def rows_by_id(table: pa.Table, key: str = "id") -> dict:
    return {row[key]: row for row in table.to_pylist()}


def test_tables_lists_the_served_tables(conn):
    assert {"reads", "samples", "big_record"} <= set(conn.tables())


def test_fasta_table_schema_is_id_description_sequence(conn):
    schema = conn.table_schema("reads")
    assert schema.names == ["id", "description", "sequence"]
    assert schema.field("id").type == pa.string() or schema.field("id").type == pa.string_view()
    assert not schema.field("id").nullable
    assert schema.field("description").nullable
    assert not schema.field("sequence").nullable


def test_table_schema_of_unknown_table_is_a_lookup_error_naming_it(conn):
    with pytest.raises(flightbear.NotFoundError, match="no_such_table") as info:
        conn.table_schema("no_such_table")
    assert isinstance(info.value, LookupError)


def test_select_star_returns_every_fasta_record(conn, data_files):
    expected = {r.id: r for r in read_fasta(data_files.fasta)}
    table = conn.sql("SELECT * FROM reads").to_arrow_table()
    assert table.num_rows == len(expected)
    got = rows_by_id(table)
    assert got.keys() == expected.keys()
    for name, record in expected.items():
        assert got[name]["description"] == record.description, name
        assert got[name]["sequence"] == record.sequence, name


def test_aggregates_match_the_reference_reader(conn, data_files):
    records = read_fasta(data_files.fasta)
    table = conn.sql(
        "SELECT count(*) AS n, sum(length(sequence)) AS bases, "
        "count(description) AS described FROM reads"
    ).to_arrow_table()
    assert table.to_pylist() == [
        {
            "n": len(records),
            "bases": sum(len(r.sequence) for r in records),
            "described": sum(r.description is not None for r in records),
        }
    ]


def test_question_mark_parameters_filter_rows(conn, data_files):
    records = read_fasta(data_files.fasta)
    result = conn.sql(
        "SELECT id, length(sequence) AS n FROM reads WHERE length(sequence) > ? ORDER BY id",
        [500],
    )
    expected = sorted((r.id, len(r.sequence)) for r in records if len(r.sequence) > 500)
    assert [(row["id"], row["n"]) for row in result.to_arrow_table().to_pylist()] == expected


def test_dollar_parameters_bind_in_order(conn, data_files):
    records = read_fasta(data_files.fasta)
    lo, hi, prefix = 100, 300, "seq0001"
    table = conn.sql(
        "SELECT id FROM reads WHERE length(sequence) BETWEEN $1 AND $2 "
        "AND starts_with(id, $3) ORDER BY id",
        (lo, hi, prefix),
    ).to_arrow_table()
    expected = sorted(
        r.id for r in records if lo <= len(r.sequence) <= hi and r.id.startswith(prefix)
    )
    assert table.column("id").to_pylist() == expected


def test_parameters_may_be_a_pyarrow_record_batch(conn):
    params = pa.record_batch([pa.array([41])], names=["p"])
    assert conn.sql("SELECT $1 + 1 AS answer", params).to_arrow_table().to_pylist() == [
        {"answer": 42}
    ]


def test_parameters_reject_strings_and_mappings(conn):
    with pytest.raises(TypeError, match="sequence"):
        conn.sql("SELECT $1", "abc")
    with pytest.raises(TypeError, match="sequence"):
        conn.sql("SELECT $1", {"a": 1})


def test_csv_table_matches_the_csv_module(conn, data_files):
    expected = read_delimited(data_files.csv)
    table = conn.sql("SELECT * FROM samples ORDER BY sample_id").to_arrow_table()
    assert table.column_names == ["sample_id", "species", "read_count", "score"]
    got = table.to_pylist()
    assert len(got) == len(expected)
    for want, row in zip(sorted(expected, key=lambda r: r["sample_id"]), got):
        assert row["sample_id"] == want["sample_id"]
        assert row["species"] == want["species"]
        assert row["read_count"] == int(want["read_count"])
        assert row["score"] == pytest.approx(float(want["score"]))


def test_group_by_on_csv_matches_python(conn, data_files):
    expected: dict[str, int] = {}
    for row in read_delimited(data_files.csv):
        expected[row["species"]] = expected.get(row["species"], 0) + int(row["read_count"])
    table = conn.sql(
        "SELECT species, sum(read_count) AS total FROM samples GROUP BY species"
    ).to_arrow_table()
    assert {r["species"]: r["total"] for r in table.to_pylist()} == expected


def test_read_fasta_file_registers_and_reads_a_server_side_file(server, tmp_path: Path):
    path = tmp_path / "it's here.fa"  # a quote in the path must survive SQL quoting
    path.write_text(">a first record\nACGT\nAC\n>b\nTT\n\n>c  spaced   words\nG\n")
    with flightbear.connect(server.uri) as conn:
        before = set(conn.tables())
        table = conn.read_fasta_file(path).to_arrow_table()
        assert table.to_pylist() == [
            {"id": r.id, "description": r.description, "sequence": r.sequence}
            for r in read_fasta(path)
        ]
        registered = set(conn.tables()) - before
        assert len(registered) == 1
    with flightbear.connect(server.uri) as conn:
        # close() drops the tables this connection registered.
        assert not registered & set(conn.tables())


def test_read_csv_file_reads_every_row(conn, data_files):
    expected = read_delimited(data_files.csv)
    table = conn.read_csv_file(str(data_files.csv)).to_arrow_table()
    assert table.num_rows == len(expected)
    assert sorted(table.column("sample_id").to_pylist()) == sorted(r["sample_id"] for r in expected)


def test_read_csv_file_without_header_and_other_delimiter(conn, tmp_path: Path):
    path = tmp_path / "plain.tsv"
    path.write_text("1\tx\n2\ty\n")
    table = conn.read_csv_file(path, has_header=False, delimiter="\t").to_arrow_table()
    assert table.num_rows == 2
    assert table.column(1).to_pylist() == ["x", "y"]
    with pytest.raises(ValueError, match="delimiter"):
        conn.read_csv_file(path, delimiter="::")


def test_read_fasta_file_of_a_missing_file_names_it(conn, tmp_path: Path):
    missing = tmp_path / "missing.fa"
    with pytest.raises(flightbear.Error, match=r"missing\.fa"):
        conn.read_fasta_file(missing).to_arrow_table()


def test_to_pandas_matches_the_arrow_table(conn):
    pytest.importorskip("pandas")
    result = conn.sql("SELECT id, length(sequence) AS n FROM reads ORDER BY id")
    frame = result.to_pandas()
    table = result.to_arrow_table()
    assert list(frame.columns) == ["id", "n"]
    assert frame["id"].tolist() == table.column("id").to_pylist()
    assert frame["n"].tolist() == table.column("n").to_pylist()


def test_schema_is_known_before_fetching(conn):
    result = conn.sql("SELECT id, length(sequence) AS n FROM reads")
    assert result.schema.names == ["id", "n"]
    assert result.schema.field("n").type == pa.int32() or pa.types.is_integer(
        result.schema.field("n").type
    )
    assert "QueryResult" in repr(result)


def test_empty_result_keeps_its_schema(conn):
    result = conn.sql("SELECT id, sequence FROM reads WHERE id = 'nothing'")
    table = result.to_arrow_table()
    assert table.num_rows == 0
    assert table.schema.names == ["id", "sequence"]
    assert result.to_arrow_record_batch_reader().read_all().num_rows == 0


def test_a_result_can_be_fetched_again(conn):
    result = conn.sql("SELECT count(*) AS n FROM reads")
    assert result.to_arrow_table().equals(result.to_arrow_table())


def test_iterating_a_result_yields_record_batches(conn, data_files):
    batches = list(conn.sql("SELECT id FROM reads"))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert sum(b.num_rows for b in batches) == len(read_fasta(data_files.fasta))


def test_pyarrow_consumes_the_capsule_stream(conn):
    result = conn.sql("SELECT id FROM reads ORDER BY id LIMIT 5")
    reader = pa.RecordBatchReader.from_stream(result)
    assert reader.read_all().column("id").to_pylist() == [f"seq{i:06d}" for i in range(5)]


@pytest.mark.skipif(importlib.util.find_spec("polars") is None, reason="polars not installed")
def test_polars_consumes_a_result_directly(conn, data_files):
    import polars as pl

    frame = pl.DataFrame(conn.sql("SELECT id, length(sequence) AS n FROM reads"))
    records = read_fasta(data_files.fasta)
    assert frame.height == len(records)
    assert frame["n"].sum() == sum(len(r.sequence) for r in records)


@pytest.mark.skipif(importlib.util.find_spec("duckdb") is None, reason="duckdb not installed")
def test_duckdb_consumes_a_result_directly(conn, data_files):
    import duckdb

    result = conn.sql("SELECT id, length(sequence) AS n FROM reads")  # noqa: F841
    total = duckdb.sql("SELECT count(*), sum(n) FROM result").fetchall()[0]
    records = read_fasta(data_files.fasta)
    assert total == (len(records), sum(len(r.sequence) for r in records))


def test_execute_runs_ddl(conn):
    conn.execute("CREATE VIEW e2e_short_reads AS SELECT id FROM reads WHERE length(sequence) < 50")
    try:
        assert "e2e_short_reads" in conn.tables()
        n = conn.sql("SELECT count(*) AS n FROM e2e_short_reads").to_arrow_table()
        assert n.column("n")[0].as_py() >= 0
    finally:
        conn.execute("DROP VIEW e2e_short_reads")


def test_server_sample_tables_when_started_without_tables(tmp_path: Path):
    with Server([], tmp_path / "sample.log", sample_data=True) as sample:
        with flightbear.connect(sample.uri) as conn:
            # The sample tables, without the information_schema views.
            assert conn.tables() == ["samples", "sequences"]
            assert "column_name" in conn.table_schema("information_schema.columns").names
            count = conn.sql("SELECT count(*) AS n FROM sequences").to_arrow_table()
            assert count.column("n")[0].as_py() > 0
