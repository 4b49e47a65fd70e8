"""adbc-driver-flightsql (the Go ADBC driver behind the Python DB-API) against the real server."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from compat_support import FASTA_SCHEMA, Dataset, gc_count, rows_by
from flightbear_testing import Server, read_fasta

FASTA_TABLES = ["reads", "crlf", "packed", "shards", "big_record", "mixedcase", "tiled", "ranged"]
STRING, BIGINT = 12, -5  # XDBC / JDBC type codes


def connect(uri: str) -> flightsql.Connection:
    # autocommit=True: the server is read-only and reports no transactions, so asking the
    # driver to turn autocommit off would only produce a DB-API warning.
    return flightsql.connect(uri, autocommit=True)


@pytest.fixture
def conn(uri: str) -> Iterator[flightsql.Connection]:
    with connect(uri) as connection:
        yield connection


@pytest.fixture
def cur(conn: flightsql.Connection) -> Iterator[Any]:
    with conn.cursor() as cursor:
        yield cursor


def query(cur: Any, sql: str, parameters: Any = None) -> pa.Table:
    cur.execute(sql, parameters=parameters)
    return cur.fetch_arrow_table()


def schema_without_metadata(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.remove_metadata() for f in schema]).remove_metadata()


# ------------------------------------------------------------------------------------------------
# Whole tables and aggregates
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", FASTA_TABLES)
def test_fasta_table_matches_reference_reader(cur: Any, dataset: Dataset, table: str) -> None:
    result = query(cur, f"SELECT * FROM {table}")
    assert schema_without_metadata(result.schema) == FASTA_SCHEMA
    expected = sorted((r.row() for r in dataset.fasta[table]), key=lambda row: row["id"])
    assert len(expected) > 0
    got = rows_by(result)
    assert len(got) == len(expected)
    assert got == expected


def test_fixture_covers_the_tricky_cases(dataset: Dataset) -> None:
    """Guards the generator: the cases the suite claims to cover are really in the files."""
    records = [r for table in FASTA_TABLES for r in dataset.fasta[table]]
    assert any(r.sequence == "" for r in dataset.fasta["crlf"])
    assert any(r.sequence == "" for r in dataset.fasta["packed"] if r.id.startswith("gzB"))
    assert any(r.description is None for r in records)
    assert any(r.sequence != r.sequence.upper() for r in records)
    assert b"\r\n" in dataset.files["crlf"].read_bytes()
    assert dataset.files["packed"].read_bytes().count(b"\x1f\x8b\x08") >= 2
    assert max(len(r.sequence) for r in dataset.fasta["big_record"]) > 4 * 1024 * 1024
    # Byte-range partitions: above DataFusion's 10 MiB threshold, and for "tiled" the four
    # ranges of --target-partitions 4 start exactly on a header.
    for name in ("tiled", "ranged"):
        assert dataset.files[name].stat().st_size > 10 * 1024 * 1024
    tiled = dataset.files["tiled"].read_bytes()
    quarter = -(-len(tiled) // 4)
    assert all(tiled[k * quarter : k * quarter + 1] == b">" for k in range(4))


def test_fasta_aggregates(cur: Any, dataset: Dataset) -> None:
    records = dataset.fasta["reads"]
    result = query(
        cur,
        "SELECT COUNT(*) AS n, SUM(length(sequence)) AS bases, "
        "SUM(length(sequence) - length(translate(upper(sequence), 'GC', ''))) AS gc, "
        "COUNT(description) AS described, MAX(length(sequence)) AS longest, "
        "SUM(CASE WHEN sequence = '' THEN 1 ELSE 0 END) AS empty "
        "FROM reads",
    ).to_pylist()[0]
    assert result == {
        "n": len(records),
        "bases": sum(len(r.sequence) for r in records),
        "gc": sum(gc_count(r.sequence) for r in records),
        "described": sum(r.description is not None for r in records),
        "longest": max(len(r.sequence) for r in records),
        "empty": sum(r.sequence == "" for r in records),
    }


@pytest.mark.parametrize("table", ["samples", "samples_gz"])
def test_csv_table_matches_csv_module(cur: Any, dataset: Dataset, table: str) -> None:
    result = query(cur, f"SELECT * FROM {table}")
    assert result.schema.names == ["sample_id", "species", "read_count", "score"]
    assert result.schema.field("read_count").type == pa.int64()
    assert result.schema.field("score").type == pa.float64()
    expected = [
        {
            "sample_id": row["sample_id"],
            "species": row["species"],
            "read_count": int(row["read_count"]),
            "score": float(row["score"]),
        }
        for row in dataset.delimited[table]
    ]
    assert rows_by(result, "sample_id") == sorted(expected, key=lambda row: row["sample_id"])


def test_tsv_join_and_group_by(cur: Any, dataset: Dataset) -> None:
    species_of = {row["sample_id"]: row["species"] for row in dataset.delimited["samples"]}
    expected: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for run in dataset.delimited["runs"]:
        totals = expected[species_of[run["sample_id"]]]
        totals[0] += 1
        totals[1] += int(run["bases"])
    result = query(
        cur,
        "SELECT s.species, COUNT(*) AS runs, SUM(r.bases) AS bases "
        "FROM runs r JOIN samples s ON r.sample_id = s.sample_id GROUP BY s.species",
    )
    got = {row["species"]: [row["runs"], row["bases"]] for row in result.to_pylist()}
    assert got == dict(expected)


def test_order_by_over_a_join_comes_back_in_order(cur: Any, dataset: Dataset) -> None:
    """A join's result is cast back to the query's types above its ORDER BY; that cast ran in
    parallel over a round-robin repartition, and the sorted partitions came back interleaved."""
    by_length: dict[int, list[str]] = collections.defaultdict(list)
    for record in dataset.fasta["reads"]:
        by_length[len(record.sequence)].append(record.id)
    expected = sorted((a, b) for ids in by_length.values() for a in ids for b in ids)
    assert len(expected) > 10_000
    for order, rows in [("", expected), (" DESC", expected[::-1])]:
        result = query(
            cur,
            "SELECT a.id AS a, b.id AS b FROM reads a JOIN reads b "
            f"ON length(a.sequence) = length(b.sequence) ORDER BY a.id{order}, b.id{order}",
        )
        assert list(zip(result.column("a").to_pylist(), result.column("b").to_pylist())) == rows


def test_fetch_record_batch_streams_many_batches(cur: Any, dataset: Dataset) -> None:
    cur.execute("SELECT id, length(sequence) AS len FROM reads")
    reader = cur.fetch_record_batch()
    assert reader.schema.names == ["id", "len"]
    seen: dict[str, int] = {}
    batches = 0
    for batch in reader:
        batches += 1
        assert batch.schema.names == ["id", "len"]
        for row in batch.to_pylist():
            seen[row["id"]] = row["len"]
    assert batches > 1, "the server runs with --batch-rows 256; one batch means no streaming"
    assert seen == {r.id: len(r.sequence) for r in dataset.fasta["reads"]}


def test_dbapi_fetch_methods_and_description(cur: Any, dataset: Dataset) -> None:
    expected = sorted((r.id, len(r.sequence)) for r in dataset.fasta["crlf"])
    cur.execute("SELECT id, length(sequence) AS len FROM crlf ORDER BY id")
    assert [d[0] for d in cur.description] == ["id", "len"]
    assert cur.fetchone() == expected[0]
    assert cur.fetchmany(5) == expected[1:6]
    assert cur.fetchall() == expected[6:]
    assert cur.fetchone() is None


def test_empty_result_keeps_real_schema(cur: Any) -> None:
    result = query(cur, "SELECT id, sequence FROM reads WHERE id = 'no such id'")
    assert result.num_rows == 0
    assert result.schema.names == ["id", "sequence"]
    assert result.schema.field("id").type == pa.string()


def test_execute_schema_matches_result(cur: Any) -> None:
    sql = "SELECT id, length(sequence) AS len, description FROM packed"
    schema = cur.adbc_execute_schema(sql)
    result = query(cur, sql)
    assert schema_without_metadata(schema) == schema_without_metadata(result.schema)


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0, 150, 650, 10_000])
def test_integer_parameter(cur: Any, dataset: Dataset, threshold: int) -> None:
    result = query(cur, "SELECT id FROM reads WHERE length(sequence) > ?", (threshold,))
    expected = {r.id for r in dataset.fasta["reads"] if len(r.sequence) > threshold}
    assert set(result.column("id").to_pylist()) == expected


def test_string_and_like_parameters(cur: Any, dataset: Dataset) -> None:
    target = dataset.fasta["reads"][123]
    result = query(cur, "SELECT * FROM reads WHERE id = ?", (target.id,))
    assert result.to_pylist() == [target.row()]

    result = query(cur, "SELECT id FROM reads WHERE description LIKE ?", ("%kinase%",))
    expected = {r.id for r in dataset.fasta["reads"] if r.description and "kinase" in r.description}
    assert expected and set(result.column("id").to_pylist()) == expected


def test_parameters_of_several_types_keep_their_order(cur: Any) -> None:
    cur.execute(
        "SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e", parameters=(7, "x", 2.5, None, True)
    )
    assert cur.fetchall() == [(7, "x", 2.5, None, True)]


def test_twelve_parameters_keep_their_order(cur: Any) -> None:
    values = tuple(range(100, 112))
    sql = "SELECT " + ", ".join(f"? AS p{i}" for i in range(len(values)))
    cur.execute(sql, parameters=values)
    assert cur.fetchall() == [values]


def test_question_mark_inside_a_string_literal_is_not_a_parameter(cur: Any) -> None:
    cur.execute("SELECT '?' AS q, ? AS p, 'a?b' AS r", parameters=(5,))
    assert cur.fetchall() == [("?", 5, "a?b")]


def test_dollar_placeholders(cur: Any) -> None:
    cur.execute("SELECT $2 AS a, $1 AS b", parameters=(1, 2))
    assert cur.fetchall() == [(2, 1)]


def test_repeated_execution_with_new_parameters(cur: Any, dataset: Dataset) -> None:
    """The DB-API cursor reuses one prepared statement; each binding must give its own answer."""
    sql = "SELECT COUNT(*) AS n FROM samples WHERE read_count < ?"
    counts = [int(row["read_count"]) for row in dataset.delimited["samples"]]
    for limit in [0, 10**8, 5 * 10**8, 10**9 + 1, 3 * 10**8]:
        cur.execute(sql, parameters=(limit,))
        assert cur.fetchall() == [(sum(c < limit for c in counts),)]


def test_parameter_of_another_type_is_coerced_like_a_literal(cur: Any, dataset: Dataset) -> None:
    """Binding "1" where the column is an integer works the way the literal would."""
    counts = [int(row["read_count"]) for row in dataset.delimited["samples"]]
    limit = sorted(counts)[150]
    cur.execute("SELECT COUNT(*) FROM samples WHERE read_count < ?", parameters=(str(limit),))
    assert cur.fetchall() == [(sum(c < limit for c in counts),)]


def test_float_parameter_against_integer_column(cur: Any, dataset: Dataset) -> None:
    counts = [int(row["read_count"]) for row in dataset.delimited["samples"]]
    limit = sorted(counts)[150] + 0.5
    expected = [(sum(c < limit for c in counts),)]
    cur.execute(f"SELECT COUNT(*) FROM samples WHERE read_count < {limit}")
    assert cur.fetchall() == expected  # the literal is right
    cur.execute("SELECT COUNT(*) FROM samples WHERE read_count < ?", parameters=(limit,))
    assert cur.fetchall() == expected


def test_int64_parameter_against_int32_expression(cur: Any) -> None:
    cur.execute("SELECT COUNT(*) FROM reads WHERE length(sequence) > 10000000000")
    assert cur.fetchall() == [(0,)]
    cur.execute("SELECT COUNT(*) FROM reads WHERE length(sequence) > ?", parameters=(10**10,))
    assert cur.fetchall() == [(0,)]


def test_prepare_reports_parameter_schema(cur: Any) -> None:
    schema = cur.adbc_prepare("SELECT id FROM reads WHERE length(sequence) > ? AND id <> ?")
    assert len(schema) == 2


# ------------------------------------------------------------------------------------------------
# Metadata
# ------------------------------------------------------------------------------------------------


def only_catalog(conn: flightsql.Connection, **kwargs: Any) -> dict[str, Any]:
    catalogs = conn.adbc_get_objects(**kwargs).read_all().to_pylist()
    assert [c["catalog_name"] for c in catalogs] == ["flightbear"]
    return catalogs[0]


def public_tables(catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas = {s["db_schema_name"]: s for s in catalog["catalog_db_schemas"]}
    assert "public" in schemas
    return {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}


def test_get_objects_catalogs(conn: flightsql.Connection) -> None:
    catalog = only_catalog(conn, depth="catalogs")
    assert catalog["catalog_db_schemas"] is None


def test_get_objects_db_schemas(conn: flightsql.Connection) -> None:
    catalog = only_catalog(conn, depth="db_schemas")
    names = [s["db_schema_name"] for s in catalog["catalog_db_schemas"]]
    assert "public" in names
    assert all(s["db_schema_tables"] is None for s in catalog["catalog_db_schemas"])


def test_get_objects_tables(conn: flightsql.Connection, dataset: Dataset) -> None:
    tables = public_tables(only_catalog(conn, depth="tables"))
    assert set(tables) == dataset.table_names
    assert {t["table_type"] for t in tables.values()} == {"TABLE"}
    assert all(t["table_columns"] is None for t in tables.values())


@pytest.mark.parametrize("depth", ["columns", "all"])
def test_get_objects_columns(conn: flightsql.Connection, dataset: Dataset, depth: str) -> None:
    tables = public_tables(only_catalog(conn, depth=depth))
    assert set(tables) == dataset.table_names
    for name in dataset.fasta:
        columns = tables[name]["table_columns"]
        assert [(c["column_name"], c["ordinal_position"]) for c in columns] == [
            ("id", 1),
            ("description", 2),
            ("sequence", 3),
        ]
        assert {c["xdbc_data_type"] for c in columns} == {STRING}
    samples = {c["column_name"]: c for c in tables["samples"]["table_columns"]}
    assert list(samples) == list(dataset.delimited["samples"][0])
    assert samples["read_count"]["xdbc_data_type"] == BIGINT
    assert samples["sample_id"]["xdbc_data_type"] == STRING


def test_get_objects_filters(conn: flightsql.Connection, dataset: Dataset) -> None:
    assert conn.adbc_get_objects(catalog_filter="nope").read_all().num_rows == 0

    by_catalog = public_tables(only_catalog(conn, depth="tables", catalog_filter="flightbear"))
    assert set(by_catalog) == dataset.table_names

    catalog = only_catalog(conn, depth="tables", db_schema_filter="no_such_schema")
    assert catalog["catalog_db_schemas"] == []

    # LIKE-style patterns: % and _.
    starting_with_r = public_tables(only_catalog(conn, depth="tables", table_name_filter="r%"))
    assert set(starting_with_r) == {n for n in dataset.table_names if n.startswith("r")}
    underscore = public_tables(only_catalog(conn, depth="tables", table_name_filter="r_ns"))
    assert set(underscore) == {"runs"}

    only_views = only_catalog(conn, depth="tables", table_types_filter=["VIEW"])
    # The only views are information_schema's; the data tables are all base tables.
    for schema in only_views["catalog_db_schemas"]:
        if schema["db_schema_name"] != "information_schema":
            assert not schema["db_schema_tables"], schema
        else:
            assert {t["table_type"] for t in schema["db_schema_tables"]} == {"VIEW"}

    columns = public_tables(
        only_catalog(conn, depth="columns", table_name_filter="samples", column_name_filter="s%")
    )
    assert [c["column_name"] for c in columns["samples"]["table_columns"]] == [
        "sample_id",
        "species",
        "score",
    ]


def test_get_objects_lists_information_schema(conn: flightsql.Connection) -> None:
    catalog = only_catalog(conn, depth="tables", db_schema_filter="information_schema")
    schemas = {s["db_schema_name"]: s for s in catalog["catalog_db_schemas"]}
    assert "tables" in {t["table_name"] for t in schemas["information_schema"]["db_schema_tables"]}


@pytest.mark.parametrize("table", [*FASTA_TABLES, "samples", "runs"])
def test_get_table_schema(conn: flightsql.Connection, cur: Any, table: str) -> None:
    schema = conn.adbc_get_table_schema(table)
    streamed = query(cur, f"SELECT * FROM {table} LIMIT 3").schema
    assert schema_without_metadata(schema) == schema_without_metadata(streamed)
    if table in FASTA_TABLES:
        assert schema_without_metadata(schema) == FASTA_SCHEMA
    qualified = conn.adbc_get_table_schema(
        table, catalog_filter="flightbear", db_schema_filter="public"
    )
    assert schema_without_metadata(qualified) == schema_without_metadata(schema)


def test_get_table_schema_unknown_table(conn: flightsql.Connection) -> None:
    with pytest.raises(adbc_driver_manager.Error) as info:
        conn.adbc_get_table_schema("no_such_table")
    assert "NOT_FOUND" in str(info.value)


def test_get_table_types(conn: flightsql.Connection) -> None:
    assert sorted(conn.adbc_get_table_types()) == ["LOCAL TEMPORARY", "TABLE", "VIEW"]


def test_get_info(conn: flightsql.Connection) -> None:
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "flightbear"
    assert info["vendor_version"]
    assert str(info["vendor_arrow_version"]).startswith("59.")
    assert info["driver_name"]


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELEC id FROM reads", "SELEC"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELECT no_such_column FROM reads", "no_such_column"),
        ("SELECT ? + ? AS s", "$2"),
        ("INSERT INTO samples VALUES ('x', 'y', 1, 2.0)", "Insert"),
        ("COPY (SELECT 1) TO '/tmp/flightbear-compat-must-not-exist.csv'", "COPY"),
    ],
)
def test_errors_are_invalid_argument(cur: Any, sql: str, needle: str) -> None:
    params = (1,) if "?" in sql else None
    with pytest.raises(adbc_driver_manager.ProgrammingError) as info:
        cur.execute(sql, parameters=params)
        cur.fetchall()
    message = str(info.value)
    assert "INVALID_ARGUMENT" in message
    assert needle in message
    assert not Path("/tmp/flightbear-compat-must-not-exist.csv").exists()
    # The connection and the cursor stay usable.
    cur.execute("SELECT COUNT(*) FROM samples")
    assert cur.fetchall() == [(300,)]


def test_error_while_streaming(cur: Any) -> None:
    with pytest.raises(adbc_driver_manager.Error) as info:
        cur.execute("SELECT 1 / (length(sequence) - length(sequence)) FROM reads")
        cur.fetchall()
    assert "INVALID_ARGUMENT" in str(info.value) or "INTERNAL" in str(info.value)
    cur.execute("SELECT 2 AS two")
    assert cur.fetchall() == [(2,)]


# ------------------------------------------------------------------------------------------------
# DDL, on a private server so the shared one keeps its table list
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def ddl_server(launch: Any, tmp_path_factory: pytest.TempPathFactory) -> Server:
    # Every file the tests make (the dataset and each test's tmp_path) is under the base temp.
    root = str(tmp_path_factory.getbasetemp())
    server: Server = launch("--data-root", root, tables=False)
    return server


def catalog_tables(conn: flightsql.Connection) -> dict[str, str]:
    catalogs = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    return {
        t["table_name"]: t["table_type"]
        for c in catalogs
        for s in c["catalog_db_schemas"]
        if s["db_schema_name"] == "public"
        for t in s["db_schema_tables"]
    }


def test_ddl_external_tables_views_and_drop(ddl_server: Server, dataset: Dataset) -> None:
    with connect(ddl_server.uri) as conn, conn.cursor() as cur:
        assert catalog_tables(conn) == {}
        reads = dataset.files["reads"]
        cur.execute(f"CREATE EXTERNAL TABLE Ext_Reads STORED AS FASTA LOCATION '{reads}'")
        cur.execute(
            f"CREATE EXTERNAL TABLE ext_dir STORED AS FASTA LOCATION '{dataset.files['shards']}'"
        )
        glob = dataset.files["shards"] / "*.fna"
        cur.execute(f"CREATE EXTERNAL TABLE ext_glob STORED AS FASTA LOCATION '{glob}'")
        cur.execute(
            f"CREATE EXTERNAL TABLE ext_csv STORED AS CSV LOCATION '{dataset.files['samples']}' "
            "OPTIONS ('format.has_header' 'true')"
        )
        cur.execute(
            "CREATE VIEW long_reads AS SELECT id FROM ext_reads WHERE length(sequence) > 500"
        )
        assert catalog_tables(conn) == {
            "ext_reads": "TABLE",
            "ext_dir": "TABLE",
            "ext_glob": "TABLE",
            "ext_csv": "TABLE",
            "long_reads": "VIEW",
        }
        views = only_catalog(conn, depth="tables", table_types_filter=["VIEW"])
        assert set(public_tables(views)) == {"long_reads"}

        assert rows_by(query(cur, "SELECT * FROM ext_reads")) == sorted(
            (r.row() for r in dataset.fasta["reads"]), key=lambda row: row["id"]
        )
        assert rows_by(query(cur, "SELECT * FROM ext_dir")) == sorted(
            (r.row() for r in dataset.fasta["shards"]), key=lambda row: row["id"]
        )
        globbed = [r for p in sorted(dataset.files["shards"].glob("*.fna")) for r in read_fasta(p)]
        assert set(query(cur, "SELECT id FROM ext_glob").column("id").to_pylist()) == {
            r.id for r in globbed
        }
        total = sum(int(row["read_count"]) for row in dataset.delimited["samples"])
        assert query(cur, "SELECT SUM(read_count) AS s FROM ext_csv").to_pylist() == [{"s": total}]
        assert set(query(cur, "SELECT id FROM long_reads").column("id").to_pylist()) == {
            r.id for r in dataset.fasta["reads"] if len(r.sequence) > 500
        }
        assert schema_without_metadata(conn.adbc_get_table_schema("ext_reads")) == FASTA_SCHEMA

        cur.execute("DROP VIEW long_reads")
        cur.execute("DROP TABLE ext_reads")
        assert set(catalog_tables(conn)) == {"ext_dir", "ext_glob", "ext_csv"}
        with pytest.raises(adbc_driver_manager.ProgrammingError, match="ext_reads"):
            cur.execute("SELECT * FROM ext_reads")


def test_ddl_missing_location_is_an_error(ddl_server: Server, tmp_path: Path) -> None:
    missing = tmp_path / "nope.fa"
    with connect(ddl_server.uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as info:
            cur.execute(f"CREATE EXTERNAL TABLE gone STORED AS FASTA LOCATION '{missing}'")
        assert str(missing) in str(info.value)
        assert "gone" not in catalog_tables(conn)
