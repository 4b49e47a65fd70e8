"""Exact schemas: every way a client learns a result's or a table's schema reports real nullability.

What is NOT NULL follows from SQL and the formats, not from the server: a FASTA record always has
an id and a sequence (possibly empty) but not always a description; a non-NULL literal and
COUNT(*) are never NULL; the inner side of an outer join and MAX over no rows can be; CSV columns
are inferred from data that may have empty fields, so they are all nullable. Each query is asked
through pyarrow.flight (GetFlightInfo, GetSchema, DoGet) and ADBC (execute, execute_schema,
which ADBC answers from the prepared statement's dataset schema, and GetTables' table schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from compat_support import FASTA_SCHEMA, Dataset
from flightbear_testing import Server

FASTA_NULLABLE = {f.name: f.nullable for f in FASTA_SCHEMA}

VIEWS = (
    "SELECT arrow_cast(id, 'Utf8View') AS v, arrow_cast(description, 'Utf8View') AS d FROM reads"
)

# SQL -> the nullability of each result column, in order.
CASES: dict[str, list[tuple[str, bool]]] = {
    "SELECT * FROM reads": list(FASTA_NULLABLE.items()),
    "SELECT sequence, id FROM packed": [("sequence", False), ("id", False)],
    "SELECT id, description FROM reads WHERE false": [("id", False), ("description", True)],
    "SELECT 1 AS one, 'x' AS letter, NULL AS nothing": [
        ("one", False),
        ("letter", False),
        ("nothing", True),
    ],
    "SELECT count(*) AS n, max(id) AS last FROM reads": [("n", False), ("last", True)],
    "SELECT count(*) AS n FROM reads WHERE false": [("n", False)],
    "SELECT r.id, s.sample_id FROM reads r LEFT JOIN samples s ON r.id = s.sample_id": [
        ("id", False),
        ("sample_id", True),
    ],
    # Utf8View columns: sent as Utf8 unless --string-view, NOT NULL either way.
    VIEWS: [("v", False), ("d", True)],
}


def nullability(schema: pa.Schema) -> list[tuple[str, bool]]:
    return [(f.name, f.nullable) for f in schema]


def csv_nullability(dataset: Dataset, table: str) -> list[tuple[str, bool]]:
    return [(name, True) for name in dataset.delimited[table][0]]


def command(sql: str) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(sql.encode())


def assert_exact_over_flight(uri: str, sql: str, expected: list[tuple[str, bool]]) -> pa.Schema:
    """GetFlightInfo, GetSchema and DoGet all report ``expected``; the stream's schema, metadata
    included, is the announced one, also when it carries no rows."""
    client = flight.FlightClient(uri)
    try:
        info = client.get_flight_info(command(sql))
        assert nullability(info.schema) == expected, sql
        assert client.get_schema(command(sql)).schema == info.schema
        reader = client.do_get(info.endpoints[0].ticket)
        assert reader.schema == info.schema
        table = reader.read_all()
        assert table.schema == info.schema
        return info.schema
    finally:
        client.close()


@pytest.fixture
def adbc(uri: str) -> Iterator[flightsql.Connection]:
    with flightsql.connect(uri, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize("sql", list(CASES))
def test_flight_schemas_are_exact(uri: str, sql: str) -> None:
    assert_exact_over_flight(uri, sql, CASES[sql])


@pytest.mark.parametrize("sql", list(CASES))
def test_adbc_schemas_are_exact(adbc: flightsql.Connection, sql: str) -> None:
    with adbc.cursor() as cur:
        assert nullability(cur.adbc_execute_schema(sql)) == CASES[sql]
        cur.execute(sql)
        # DB-API's description has no nullability from ADBC (null_ok is always None); the names
        # still come from the same schema.
        assert [d[0] for d in cur.description] == [name for name, _ in CASES[sql]]
        assert nullability(cur.fetch_arrow_table().schema) == CASES[sql]


def test_csv_columns_are_nullable_as_inferred(
    uri: str, adbc: flightsql.Connection, dataset: Dataset
) -> None:
    expected = csv_nullability(dataset, "samples")
    assert_exact_over_flight(uri, "SELECT * FROM samples", expected)
    with adbc.cursor() as cur:
        cur.execute("SELECT * FROM samples")
        assert nullability(cur.fetch_arrow_table().schema) == expected


@pytest.mark.parametrize("table", ["reads", "mixedcase", "shards", "samples", "runs"])
def test_table_schemas_are_exact(adbc: flightsql.Connection, dataset: Dataset, table: str) -> None:
    """ADBC asks GetTables with include_schema for a table's schema."""
    expected = (
        list(FASTA_NULLABLE.items()) if table in dataset.fasta else csv_nullability(dataset, table)
    )
    assert nullability(adbc.adbc_get_table_schema(table)) == expected


def test_prepared_statement_with_parameters_reports_exact_schema(
    adbc: flightsql.Connection,
) -> None:
    sql = "SELECT id, description, length(sequence) AS len FROM reads WHERE id = ?"
    with adbc.cursor() as cur:
        cur.adbc_prepare(sql)
        announced = cur.adbc_execute_schema(sql)
        # length() of a NOT NULL column: DataFusion reports function results as nullable.
        assert nullability(announced)[:2] == [("id", False), ("description", True)]
        cur.execute(sql, parameters=("read000001",))
        result = cur.fetch_arrow_table()
        assert nullability(result.schema) == nullability(announced)
        assert result.column("id").to_pylist() == ["read000001"]


def test_string_view_results_keep_their_nullability(launch: Any) -> None:
    server: Server = launch("--string-view")
    for sql, expected in CASES.items():
        assert_exact_over_flight(server.uri, sql, expected)
    schema = assert_exact_over_flight(server.uri, VIEWS, CASES[VIEWS])
    assert schema.field("v").type == pa.string_view()


def test_views_are_sent_as_utf8_by_default(uri: str) -> None:
    schema = assert_exact_over_flight(uri, VIEWS, CASES[VIEWS])
    assert schema.field("v").type == pa.string()
