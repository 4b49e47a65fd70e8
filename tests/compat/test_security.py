"""Security, parts 1 and 2 of issue 9: data roots and the protected catalog.

Every attack of the issue runs here against the real binary with clients we did not write
(ADBC and pyarrow.flight) and must now get PERMISSION_DENIED (or RESOURCE_EXHAUSTED for the
table limit), while legitimate use inside a data root keeps working.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow.flight as flight
import pytest

from compat_support import Dataset, rows_by
from flightbear_testing import Server
from server_probes import grpc_status, run_sql

SECRET = "alice,hunter2-do-not-leak"


@dataclass
class Secured:
    server: Server
    root: Path
    secret: Path


@pytest.fixture
def secured(launch: Any, dataset: Dataset, tmp_path: Path) -> Secured:
    """A server with the dataset's tables and one data root holding a copy of the reads, a
    symbolic link to a file outside and a link to a directory outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.csv"
    secret.write_text(f"user,password\n{SECRET}\n")
    root = tmp_path / "root"
    (root / "fasta").mkdir(parents=True)
    shutil.copy(dataset.files["reads"], root / "fasta" / "reads.fa")
    (root / "links").mkdir()
    (root / "links" / "secret.csv").symlink_to(secret)
    (root / "outside_dir").symlink_to(outside, target_is_directory=True)
    server: Server = launch("--data-root", str(root))
    return Secured(server, root, secret)


def connect(uri: str) -> flightsql.Connection:
    return flightsql.connect(uri, autocommit=True)


def adbc_refusal(uri: str, sql: str) -> tuple[str, str]:
    """The gRPC code and message ADBC reports for ``sql``; fails if it succeeds."""
    with connect(uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as info:
            cur.execute(sql)
            cur.fetchall()
    status = grpc_status(info.value)
    return status.code, status.message


def flight_refusal(uri: str, sql: str) -> tuple[str, str]:
    client = flight.FlightClient(uri)
    try:
        with pytest.raises(flight.FlightError) as info:
            run_sql(client, sql)
    finally:
        client.close()
    status = grpc_status(info.value)
    return status.code, status.message


def table_names(uri: str) -> set[str]:
    client = flight.FlightClient(uri)
    try:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        return set(run_sql(client, sql).column("table_name").to_pylist())
    finally:
        client.close()


def query(uri: str, sql: str) -> Any:
    client = flight.FlightClient(uri)
    try:
        return run_sql(client, sql)
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------
# 1. Data roots
# ------------------------------------------------------------------------------------------------


def test_without_a_data_root_clients_cannot_register_files(launch: Any, dataset: Dataset) -> None:
    server: Server = launch()
    reads = dataset.files["reads"]
    code, message = adbc_refusal(
        server.uri, f"CREATE EXTERNAL TABLE mine STORED AS FASTA LOCATION '{reads}'"
    )
    assert code == "PERMISSION_DENIED", message
    assert "no data root is configured" in message
    assert "mine" not in table_names(server.uri)


OUTSIDE_LOCATIONS = [
    # (label, location, stored as)
    ("shadow", "/etc/shadow", "CSV"),
    ("passwd", "/etc/passwd", "CSV"),
    ("file url", "file:///etc/passwd", "CSV"),
    ("glob", "/etc/*.conf", "CSV"),
    ("missing outside", "/no/such/dir/x.csv", "CSV"),
    ("dot dot", "{root}/../outside/secret.csv", "CSV"),
    ("relative dot dot", "../outside/secret.csv", "CSV"),
    ("file url dot dot", "file://{root}/../outside/secret.csv", "CSV"),
    ("glob dot dot", "{root}/*/../../outside/*.csv", "CSV"),
    ("symlink to a file", "{root}/links/secret.csv", "CSV"),
    ("symlink to a directory", "{root}/outside_dir/secret.csv", "CSV"),
    ("directory holding a symlink", "{root}/links", "CSV"),
    ("glob through a symlink", "{root}/*/secret.csv", "CSV"),
    ("remote url", "s3://bucket/reads.fa", "FASTA"),
    ("parquet outside", "/etc/passwd", "PARQUET"),
]


@pytest.mark.parametrize(
    ("location", "stored_as"),
    [(loc, fmt) for _, loc, fmt in OUTSIDE_LOCATIONS],
    ids=[label for label, _, _ in OUTSIDE_LOCATIONS],
)
def test_files_outside_the_data_roots_are_refused(
    secured: Secured, location: str, stored_as: str
) -> None:
    location = location.format(root=secured.root)
    sql = f"CREATE EXTERNAL TABLE stolen STORED AS {stored_as} LOCATION '{location}' " + (
        "OPTIONS ('format.has_header' 'false', 'format.delimiter' ':')"
        if stored_as == "CSV"
        else ""
    )
    code, message = adbc_refusal(secured.server.uri, sql)
    assert code == "PERMISSION_DENIED", message
    assert "data root" in message or "only local files" in message, message
    # The message names the rule and the location given, never what was found there.
    assert SECRET not in message and "root:x:0" not in message
    assert "does not exist" not in message and "secret.csv'" not in message.replace(location, "")
    assert "stolen" not in table_names(secured.server.uri)


def test_refusals_do_not_tell_whether_a_file_exists(secured: Secured) -> None:
    uri = secured.server.uri
    _, existing = flight_refusal(
        uri, "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'"
    )
    _, missing = flight_refusal(uri, "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/nope42'")
    assert existing.replace("/etc/passwd", "PATH") == missing.replace("/etc/nope42", "PATH")


def test_files_inside_a_data_root_can_be_registered_in_every_spelling(
    secured: Secured, dataset: Dataset
) -> None:
    uri = secured.server.uri
    expected = rows_by(query(uri, "SELECT * FROM reads"))
    fasta_dir = secured.root / "fasta"
    for name, location in [
        ("by_path", fasta_dir / "reads.fa"),
        ("by_url", f"file://{fasta_dir / 'reads.fa'}"),
        ("by_relative_path", "fasta/reads.fa"),
        ("by_directory", fasta_dir),
        ("by_glob", fasta_dir / "*.fa"),
        ("by_dot_dot_inside", secured.root / "links" / ".." / "fasta" / "reads.fa"),
    ]:
        with connect(uri) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE EXTERNAL TABLE {name} STORED AS FASTA LOCATION '{location}'")
        assert rows_by(query(uri, f"SELECT * FROM {name}")) == expected, name


def test_a_file_added_to_a_registered_directory_later_is_not_read(secured: Secured) -> None:
    """The table is built over the files that were there, checked, at CREATE time."""
    uri = secured.server.uri
    fasta_dir = secured.root / "fasta"
    with connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE EXTERNAL TABLE snapshot STORED AS FASTA LOCATION '{fasta_dir}'")
    before = query(uri, "SELECT count(*) AS n FROM snapshot").to_pylist()
    (fasta_dir / "late.fa").symlink_to(secured.secret)
    assert query(uri, "SELECT count(*) AS n FROM snapshot").to_pylist() == before


# ------------------------------------------------------------------------------------------------
# 2. The protected catalog
# ------------------------------------------------------------------------------------------------

CATALOG_ATTACKS = [
    "DROP TABLE reads",
    "DROP TABLE IF EXISTS samples",
    "DROP VIEW reads",
    "CREATE OR REPLACE VIEW samples AS SELECT 1 AS hacked",
    "CREATE VIEW reads AS SELECT 1 AS hacked",
    "CREATE TABLE reads AS SELECT 1 AS hacked",
    "CREATE OR REPLACE EXTERNAL TABLE samples STORED AS CSV LOCATION '/etc/passwd'",
    "CREATE EXTERNAL TABLE IF NOT EXISTS samples STORED AS CSV LOCATION '{root}/links/secret.csv'",
    "DROP SCHEMA public CASCADE",
    "DROP SCHEMA public",
    "CREATE SCHEMA evil",
    "CREATE DATABASE evil",
    "CREATE VIEW information_schema.tables2 AS SELECT 1 AS x",
    "CREATE VIEW flightbear.other.v AS SELECT 1 AS x",
]


@pytest.mark.parametrize("sql", CATALOG_ATTACKS)
def test_the_configured_catalog_cannot_be_changed(
    secured: Secured, dataset: Dataset, sql: str
) -> None:
    uri = secured.server.uri
    before = table_names(uri)
    code, message = adbc_refusal(uri, sql.format(root=secured.root))
    assert code == "PERMISSION_DENIED", message
    assert table_names(uri) == before
    assert rows_by(query(uri, "SELECT * FROM reads")) == sorted(
        (r.row() for r in dataset.fasta["reads"]), key=lambda row: row["id"]
    )
    total = sum(int(row["read_count"]) for row in dataset.delimited["samples"])
    assert query(uri, "SELECT SUM(read_count) AS s FROM samples").to_pylist() == [{"s": total}]


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def hand_made_ticket(sql: str) -> flight.Ticket:
    """A Flight SQL TicketStatementQuery whose handle carries ``sql`` (flightbear's handle:
    field 1 is the SQL text), packed in a google.protobuf.Any as clients send it."""
    handle = field(1, sql.encode())
    ticket = field(1, handle)
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.TicketStatementQuery"
    return flight.Ticket(field(1, type_url) + field(2, ticket))


def test_a_hand_made_doget_ticket_cannot_run_ddl(secured: Secured) -> None:
    uri = secured.server.uri
    client = flight.FlightClient(uri)
    try:
        # The hand-made ticket format is right: a query in it runs.
        answer = client.do_get(hand_made_ticket("SELECT 42 AS answer")).read_all()
        assert answer.to_pylist() == [{"answer": 42}]
        for sql in ["CREATE VIEW sneaky AS SELECT 1 AS x", "DROP TABLE reads"]:
            with pytest.raises(flight.FlightError) as info:
                client.do_get(hand_made_ticket(sql)).read_all()
            status = grpc_status(info.value)
            assert status.code == "PERMISSION_DENIED", status
            assert "never from a DoGet ticket" in status.message
    finally:
        client.close()
    assert "sneaky" not in table_names(uri)
    assert "reads" in table_names(uri)


def test_get_schema_never_runs_ddl(secured: Secured) -> None:
    uri = secured.server.uri
    client = flight.FlightClient(uri)
    try:
        descriptor = flight.FlightDescriptor.for_command(
            b"CREATE VIEW from_schema AS SELECT 1 AS x"
        )
        assert len(client.get_schema(descriptor).schema) == 0
    finally:
        client.close()
    assert "from_schema" not in table_names(uri)


def test_client_tables_and_views_are_limited_in_number(launch: Any) -> None:
    server: Server = launch("--max-client-tables", "2")
    uri = server.uri
    with connect(uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE VIEW one AS SELECT 1 AS x")
        cur.execute("CREATE TABLE two AS SELECT 2 AS x")
        # Replacing a client's own view does not add one.
        cur.execute("CREATE OR REPLACE VIEW one AS SELECT 11 AS x")
    code, message = adbc_refusal(uri, "CREATE VIEW three AS SELECT 3 AS x")
    assert code == "RESOURCE_EXHAUSTED", message
    assert "--max-client-tables" in message
    with connect(uri) as conn, conn.cursor() as cur:
        cur.execute("DROP VIEW one")
        cur.execute("CREATE VIEW three AS SELECT 3 AS x")
    assert query(uri, "SELECT x FROM three").to_pylist() == [{"x": 3}]


def test_clients_can_still_manage_their_own_tables(secured: Secured) -> None:
    uri = secured.server.uri
    with connect(uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE VIEW mine AS SELECT id FROM reads")
        cur.execute("CREATE OR REPLACE VIEW mine AS SELECT id, sequence FROM reads")
        cur.execute("DROP VIEW mine")
    assert "mine" not in table_names(uri)
