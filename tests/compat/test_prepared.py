"""Prepared statements for both kinds of clients: flightsql-dbapi (InfluxData's pure-Python DB-API
client, which binds with DoPut and keeps using its original handle) and ADBC (which adopts the
handle DoPut returns), parameter checks, several parameter rows, and the server-side store's
limits (expiry, close, eviction, bytes)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flightsql import FlightSQLClient
from flightsql import connect as dbapi_connect
from flightsql.client import PreparedStatement
from flightsql.dbapi import ParameterRecordBuilder

from compat_support import Dataset
from flightbear_testing import Server


def dbapi_client(uri: str) -> FlightSQLClient:
    host, port = uri.removeprefix("grpc://").rsplit(":", 1)
    return FlightSQLClient(host=host, port=int(port), insecure=True)


@contextlib.contextmanager
def private_client(launch: Any, *flags: str) -> Iterator[tuple[Server, FlightSQLClient]]:
    """A flightsql-dbapi client of a private server started with `flags` (no tables)."""
    server: Server = launch(*flags, tables=False)
    client = dbapi_client(server.uri)
    try:
        yield server, client
    finally:
        client.close()


@pytest.fixture
def dbapi(uri: str) -> Iterator[Any]:
    client = dbapi_client(uri)
    connection = dbapi_connect(client)
    yield connection.cursor()
    client.close()


@pytest.fixture
def adbc_cur(uri: str) -> Iterator[Any]:
    with adbc.connect(uri, autocommit=True) as connection, connection.cursor() as cursor:
        yield cursor


def samples(dataset: Dataset) -> list[dict[str, Any]]:
    return [
        {
            "sample_id": r["sample_id"],
            "species": r["species"],
            "read_count": int(r["read_count"]),
            "score": float(r["score"]),
        }
        for r in dataset.delimited["samples"]
    ]


def bind(statement: PreparedStatement, *values: Any) -> flight.FlightInfo:
    """Binds one row through flightsql-dbapi: DoPut, then GetFlightInfo on the original handle."""
    return statement.execute(ParameterRecordBuilder(values).build_record())


def rows_of(client: FlightSQLClient, info: flight.FlightInfo) -> list[dict[str, Any]]:
    return client.do_get(info.endpoints[0].ticket).read_all().to_pylist()


# ------------------------------------------------------------------------------------------------
# flightsql-dbapi: binds, then reuses the original handle
# ------------------------------------------------------------------------------------------------


def test_dbapi_integer_string_and_float_parameters(dbapi: Any, dataset: Dataset) -> None:
    rows = samples(dataset)
    threshold, species, score = sorted(r["read_count"] for r in rows)[150], rows[0]["species"], 0.5
    dbapi.execute(
        "SELECT sample_id, read_count FROM samples "
        "WHERE read_count > ? AND species <> ? AND score < ? ORDER BY sample_id",
        [threshold, species, score],
    )
    expected = sorted(
        (r["sample_id"], r["read_count"])
        for r in rows
        if r["read_count"] > threshold and r["species"] != species and r["score"] < score
    )
    assert len(expected) > 10
    assert [tuple(row) for row in dbapi.fetchall()] == expected


def test_dbapi_fasta_rows_by_sequence_length(dbapi: Any, dataset: Dataset) -> None:
    records = dataset.fasta["reads"]
    length = sorted(len(r.sequence) for r in records)[len(records) // 2]
    dbapi.execute("SELECT id FROM reads WHERE length(sequence) >= ? ORDER BY id", [length])
    expected = sorted(r.id for r in records if len(r.sequence) >= length)
    assert [row[0] for row in dbapi.fetchall()] == expected


def test_dbapi_values_keep_their_types(dbapi: Any) -> None:
    dbapi.execute(
        "SELECT ? AS i, ? AS f, ? AS s, ? AS b, ? AS t", [7, 2.5, "chr1", b"\x00AC", True]
    )
    assert dbapi.fetchall() == [[7, 2.5, "chr1", b"\x00AC", True]]


def test_dbapi_limit_parameter(dbapi: Any, dataset: Dataset) -> None:
    dbapi.execute("SELECT sample_id FROM samples ORDER BY sample_id LIMIT ?", [3])
    expected = sorted(r["sample_id"] for r in dataset.delimited["samples"])[:3]
    assert [row[0] for row in dbapi.fetchall()] == expected


def test_dbapi_executemany_runs_every_row(dbapi: Any) -> None:
    # flightsql-dbapi fetches and drops each row's results; every row must plan and run.
    dbapi.executemany("SELECT ? + 1 AS v", [[1], [2], [3]])
    with pytest.raises(Exception, match="2 placeholder"):
        dbapi.executemany("SELECT ? + ? AS v", [[1, 2], [3]])


def test_dbapi_wrong_parameter_counts_name_both(dbapi: Any) -> None:
    with pytest.raises(pa.ArrowInvalid, match=r"invalid argument.*2 placeholder\(s\) but 1"):
        dbapi.execute("SELECT ? AS a, ? AS b", [1])
    with pytest.raises(pa.ArrowInvalid, match=r"invalid argument.*1 placeholder\(s\) but 3"):
        dbapi.execute("SELECT ? AS a", [1, 2, 3])


def test_dbapi_value_of_unusable_type_is_invalid_argument(dbapi: Any) -> None:
    with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
        dbapi.execute("SELECT sample_id FROM samples WHERE read_count > ?", [b"\x01\x02"])


def test_dbapi_metadata(uri: str, dataset: Dataset) -> None:
    client = dbapi_client(uri)
    try:
        connection = dbapi_connect(client)
        assert dataset.table_names <= set(connection.flightsql_get_table_names())
        assert "public" in connection.flightsql_get_schema_names()
        columns = [c["name"] for c in connection.flightsql_get_columns("samples")]
        assert columns == ["sample_id", "species", "read_count", "score"]
        info = connection.flightsql_get_sql_info([0])  # FLIGHT_SQL_SERVER_NAME
        assert info[0] == "flightbear"
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------
# ADBC: several parameter rows, and updates
# ------------------------------------------------------------------------------------------------


def test_adbc_several_rows_return_each_rows_results_in_order(
    adbc_cur: Any, dataset: Dataset
) -> None:
    thresholds = [10**9 // 2, 0, 10**9 // 4 * 3]
    params = pa.record_batch({"t": pa.array(thresholds, pa.int64())})
    adbc_cur.execute(
        "SELECT $1 AS t, count(*) AS n FROM samples WHERE read_count > $1", parameters=params
    )
    got = adbc_cur.fetch_arrow_table()
    rows = samples(dataset)
    assert got.to_pylist() == [
        {"t": t, "n": sum(1 for r in rows if r["read_count"] > t)} for t in thresholds
    ]
    assert got.schema.types == [pa.int64(), pa.int64()]


def test_adbc_one_row_results_match_python(adbc_cur: Any, dataset: Dataset) -> None:
    adbc_cur.execute(
        "SELECT count(*) FROM samples WHERE species = ?", parameters=["H. sapiens, cell line"]
    )
    expected = sum(
        1 for r in dataset.delimited["samples"] if r["species"] == "H. sapiens, cell line"
    )
    assert adbc_cur.fetchone() == (expected,)


def test_adbc_executemany_of_a_query_is_refused_clearly(adbc_cur: Any) -> None:
    # ADBC runs executemany as an update (DoPut CommandPreparedStatementUpdate).
    with pytest.raises(adbc_driver_manager.Error, match="returns rows"):
        adbc_cur.executemany("SELECT ? AS v", [[1], [2]])


def test_adbc_executemany_update_runs_each_row_in_order(launch: Any) -> None:
    server: Server = launch()
    with adbc.connect(server.uri, autocommit=True) as connection:
        with connection.cursor() as cur:
            cur.executemany("CREATE OR REPLACE TABLE last_bound AS SELECT ? AS v", [[1], [2], [3]])
            cur.execute("SELECT v FROM last_bound")
            assert cur.fetchall() == [(3,)]


def test_adbc_wrong_parameter_counts_are_invalid_argument(adbc_cur: Any) -> None:
    with pytest.raises(adbc_driver_manager.Error, match=r"1 placeholder\(s\) but 3") as info:
        adbc_cur.execute("SELECT ? AS v", parameters=[1, 2, 3])
    assert "INVALID_ARGUMENT" in str(info.value)


# ------------------------------------------------------------------------------------------------
# The server-side store: close, expiry, eviction, bounds
# ------------------------------------------------------------------------------------------------


def test_close_frees_the_bound_parameters(uri: str) -> None:
    client = dbapi_client(uri)
    try:
        statement = client.prepare("SELECT ? * 2 AS v")
        assert rows_of(client, bind(statement, 21)) == [{"v": 42}]
        # The original handle finds the parameters again, without binding.
        assert rows_of(client, statement.execute(None)) == [{"v": 42}]
        statement.close()
        statement.closed = False
        with pytest.raises(pa.ArrowInvalid, match="bind parameters again"):
            statement.execute(None)
    finally:
        client.close()


def test_idle_parameters_expire(launch: Any) -> None:
    with private_client(launch, "--prepared-ttl", "1") as (_, client):
        statement = client.prepare("SELECT ? AS v")
        assert rows_of(client, bind(statement, 5)) == [{"v": 5}]
        time.sleep(2.5)
        with pytest.raises(pa.ArrowInvalid, match=r"invalid argument.*bind parameters again"):
            statement.execute(None)


def test_least_recently_used_statement_is_evicted(launch: Any) -> None:
    with private_client(launch, "--max-prepared-statements", "2") as (_, client):
        statements = [client.prepare("SELECT ? AS v") for _ in range(3)]
        for n, statement in enumerate(statements):
            bind(statement, n)
        with pytest.raises(pa.ArrowInvalid, match="bind parameters again"):
            statements[0].execute(None)
        assert rows_of(client, statements[1].execute(None)) == [{"v": 1}]
        assert rows_of(client, statements[2].execute(None)) == [{"v": 2}]


def test_a_client_binding_without_closing_cannot_grow_the_store(launch: Any) -> None:
    flags = ("--max-prepared-statements", "1000", "--max-prepared-bytes", "1MiB")
    with private_client(launch, *flags) as (server, client):
        value = "x" * 300_000  # at most three of these fit in 1 MiB
        statements = []
        for _ in range(40):
            statement = client.prepare("SELECT length(?) AS n")
            bind(statement, value)
            statements.append(statement)
        kept = []
        for n, statement in enumerate(statements):
            try:
                assert rows_of(client, statement.execute(None)) == [{"n": len(value)}]
                kept.append(n)
            except pa.ArrowInvalid as error:
                assert "bind parameters again" in str(error)
        assert kept == [37, 38, 39]
        # One binding larger than the whole budget is refused (flightsql-dbapi drops DoPut's
        # error and then finds nothing bound; ADBC reports it).
        with pytest.raises(pa.ArrowInvalid, match="bind parameters again"):
            bind(client.prepare("SELECT length(?) AS n"), "y" * 1_200_000)
        with adbc.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error, match="ResourceExhausted") as info:
                cur.execute("SELECT length(?) AS n", parameters=["y" * 1_200_000])
            assert "--max-prepared-bytes" in str(info.value)
        assert server.alive()


def test_too_many_parameter_rows_are_refused(adbc_cur: Any) -> None:
    params = pa.record_batch({"v": pa.array(range(10_001), pa.int64())})
    with pytest.raises(adbc_driver_manager.Error, match="at most 10000 parameter rows"):
        adbc_cur.execute("SELECT ? AS v", parameters=params)
