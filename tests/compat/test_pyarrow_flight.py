"""Plain Arrow Flight (pyarrow.flight.FlightClient, no Flight SQL library) against the server."""

from __future__ import annotations

import collections
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from compat_support import FASTA_SCHEMA, Dataset, gc_count, rows_by

FASTA_TABLES = ["reads", "crlf", "packed", "shards", "big_record", "mixedcase", "tiled", "ranged"]


def read_info(client: flight.FlightClient, info: flight.FlightInfo) -> pa.Table:
    """Reads every endpoint of a FlightInfo; the streamed schema must be the announced one."""
    assert info.endpoints, "a FlightInfo without endpoints cannot be read"
    tables = []
    for endpoint in info.endpoints:
        # Empty locations mean "the channel you asked on"; anything else must be a full URI.
        for location in endpoint.locations:
            assert ":" in location.uri.decode()
        reader = client.do_get(endpoint.ticket)
        assert reader.schema == info.schema
        tables.append(reader.read_all())
    return pa.concat_tables(tables)


def run_sql(client: flight.FlightClient, sql: str) -> pa.Table:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
    return read_info(client, info)


def strip(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.remove_metadata() for f in schema]).remove_metadata()


def test_list_flights_lists_every_table(
    flight_client: flight.FlightClient, dataset: Dataset
) -> None:
    infos = list(flight_client.list_flights())
    paths = [tuple(p.decode() for p in info.descriptor.path) for info in infos]
    assert sorted(paths) == sorted((name,) for name in dataset.table_names)
    for info in infos:
        name = info.descriptor.path[0].decode()
        assert info.descriptor.descriptor_type == flight.DescriptorType.PATH
        if name in dataset.fasta:
            assert strip(info.schema) == FASTA_SCHEMA
        else:
            assert info.schema.names == list(dataset.delimited[name][0])
        # The listed endpoint is directly readable.
        table = read_info(flight_client, info)
        expected = len(dataset.fasta.get(name, dataset.delimited.get(name, [])))
        assert table.num_rows == expected


@pytest.mark.parametrize("table", FASTA_TABLES)
def test_path_descriptor_serves_the_whole_table(
    flight_client: flight.FlightClient, dataset: Dataset, table: str
) -> None:
    info = flight_client.get_flight_info(flight.FlightDescriptor.for_path(table))
    assert strip(info.schema) == FASTA_SCHEMA
    result = read_info(flight_client, info)
    expected = sorted((r.row() for r in dataset.fasta[table]), key=lambda row: row["id"])
    assert rows_by(result) == expected


def test_path_descriptor_csv(flight_client: flight.FlightClient, dataset: Dataset) -> None:
    result = read_info(
        flight_client, flight_client.get_flight_info(flight.FlightDescriptor.for_path("runs"))
    )
    expected = [
        {"run_id": r["run_id"], "sample_id": r["sample_id"], "bases": int(r["bases"])}
        for r in dataset.delimited["runs"]
    ]
    assert rows_by(result, "run_id") == sorted(expected, key=lambda row: row["run_id"])


@pytest.mark.parametrize(
    "path", [("reads",), ("public", "reads"), ("flightbear", "public", "reads"), ("READS",)]
)
def test_path_forms(
    flight_client: flight.FlightClient, dataset: Dataset, path: tuple[str, ...]
) -> None:
    info = flight_client.get_flight_info(flight.FlightDescriptor.for_path(*path))
    assert read_info(flight_client, info).num_rows == len(dataset.fasta["reads"])


def test_mixed_case_table_name_is_lower_cased(
    flight_client: flight.FlightClient, dataset: Dataset
) -> None:
    paths = {info.descriptor.path[0].decode() for info in flight_client.list_flights()}
    assert "mixedcase" in paths and "MixedCase" not in paths
    result = run_sql(flight_client, "SELECT id, sequence FROM MixedCase")
    assert {row["id"]: row["sequence"] for row in result.to_pylist()} == {
        r.id: r.sequence for r in dataset.fasta["mixedcase"]
    }


def test_command_descriptor_runs_plain_sql(
    flight_client: flight.FlightClient, dataset: Dataset
) -> None:
    result = run_sql(
        flight_client,
        "SELECT id, length(sequence) AS len, "
        "length(sequence) - length(translate(upper(sequence), 'GC', '')) AS gc "
        "FROM packed WHERE description IS NOT NULL",
    )
    expected = {
        r.id: (len(r.sequence), gc_count(r.sequence))
        for r in dataset.fasta["packed"]
        if r.description is not None
    }
    assert {row["id"]: (row["len"], row["gc"]) for row in result.to_pylist()} == expected


def test_command_group_by(flight_client: flight.FlightClient, dataset: Dataset) -> None:
    expected: dict[str, float] = collections.defaultdict(float)
    for row in dataset.delimited["samples"]:
        expected[row["species"]] += float(row["score"])
    result = run_sql(
        flight_client, "SELECT species, SUM(score) AS total FROM samples GROUP BY species"
    )
    got = {row["species"]: row["total"] for row in result.to_pylist()}
    assert got.keys() == expected.keys()
    for species, total in expected.items():
        assert got[species] == pytest.approx(total, rel=1e-12)


def test_do_get_streams_many_batches(flight_client: flight.FlightClient, dataset: Dataset) -> None:
    info = flight_client.get_flight_info(flight.FlightDescriptor.for_path("reads"))
    reader = flight_client.do_get(info.endpoints[0].ticket)
    batches, ids = 0, []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        batches += 1
        assert chunk.data.schema == info.schema
        ids.extend(chunk.data.column("id").to_pylist())
    assert batches > 1
    assert sorted(ids) == sorted(r.id for r in dataset.fasta["reads"])


def test_record_larger_than_four_mebibytes(
    flight_client: flight.FlightClient, dataset: Dataset
) -> None:
    big = max(dataset.fasta["big_record"], key=lambda r: len(r.sequence))
    result = run_sql(flight_client, f"SELECT sequence FROM big_record WHERE id = '{big.id}'")
    assert result.column("sequence").to_pylist() == [big.sequence]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id, description FROM crlf",
        "SELECT COUNT(*) AS n, SUM(read_count) AS s FROM samples",
        "SELECT id FROM reads WHERE false",
        "SELECT r.run_id, s.species FROM runs r JOIN samples s USING (sample_id)",
    ],
)
def test_get_schema_matches_stream(flight_client: flight.FlightClient, sql: str) -> None:
    descriptor = flight.FlightDescriptor.for_command(sql.encode())
    schema = flight_client.get_schema(descriptor).schema
    info = flight_client.get_flight_info(descriptor)
    assert schema == info.schema
    assert len(schema) > 0, "empty results must still carry the real schema"
    table = read_info(flight_client, info)
    assert table.schema == schema


@pytest.mark.parametrize("table", ["reads", "samples", "mixedcase"])
def test_get_schema_by_path(flight_client: flight.FlightClient, table: str) -> None:
    descriptor = flight.FlightDescriptor.for_path(table)
    schema = flight_client.get_schema(descriptor).schema
    assert schema == flight_client.get_flight_info(descriptor).schema
    assert schema == read_info(flight_client, flight_client.get_flight_info(descriptor)).schema


def test_empty_result(flight_client: flight.FlightClient) -> None:
    result = run_sql(flight_client, "SELECT id, length(sequence) AS len FROM reads WHERE false")
    assert result.num_rows == 0
    assert result.schema.names == ["id", "len"]


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_unknown_path_is_not_found(flight_client: flight.FlightClient) -> None:
    descriptor = flight.FlightDescriptor.for_path("no_such_table")
    for call in (flight_client.get_flight_info, flight_client.get_schema):
        # pyarrow maps gRPC NOT_FOUND to ArrowKeyError.
        with pytest.raises(pa.ArrowKeyError, match="not found") as info:
            call(descriptor)
        assert "no_such_table" in str(info.value)


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELECT no_such_column FROM samples", "no_such_column"),
    ],
)
def test_bad_sql_is_invalid_argument(
    flight_client: flight.FlightClient, sql: str, needle: str
) -> None:
    descriptor = flight.FlightDescriptor.for_command(sql.encode())
    for call in (flight_client.get_flight_info, flight_client.get_schema):
        # pyarrow maps gRPC INVALID_ARGUMENT to ArrowInvalid.
        with pytest.raises(pa.ArrowInvalid, match="invalid argument") as info:
            call(descriptor)
        assert needle in str(info.value)


@pytest.mark.parametrize(
    "path", [(), ("a", "b", "c", "d")], ids=["empty-path", "four-element-path"]
)
def test_malformed_path_is_invalid_argument(
    flight_client: flight.FlightClient, path: tuple[str, ...]
) -> None:
    with pytest.raises(pa.ArrowInvalid):
        flight_client.get_flight_info(flight.FlightDescriptor.for_path(*path))


def test_unknown_action_is_unimplemented(flight_client: flight.FlightClient) -> None:
    with pytest.raises(pa.ArrowNotImplementedError):
        list(flight_client.do_action(flight.Action("no-such-action", b"")))


def test_list_actions(flight_client: flight.FlightClient) -> None:
    types = {action.type for action in flight_client.list_actions()}
    assert {"CreatePreparedStatement", "ClosePreparedStatement"} <= types


def test_server_still_answers_after_errors(
    flight_client: flight.FlightClient, dataset: Dataset
) -> None:
    errors: list[Any] = []
    for sql in ["SELEC", "SELECT * FROM nope", ""]:
        try:
            run_sql(flight_client, sql)
        except flight.FlightError as error:
            errors.append(error)
        except pa.ArrowException as error:
            errors.append(error)
    assert len(errors) == 3
    result = run_sql(flight_client, "SELECT COUNT(*) AS n FROM shards")
    assert result.to_pylist() == [{"n": len(dataset.fasta["shards"])}]
