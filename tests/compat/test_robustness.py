"""Robustness: many clients at once, clients that walk away, garbage input, and shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from compat_support import Dataset
from flightbear_testing import Server, server_binary
from server_probes import grpc_status

CLIENTS = 12
# 3000 x 3000 rows: far more than any client reads in these tests, so a server that does not
# notice a departed client would still be producing it long after the test has moved on.
ENDLESS = "SELECT a.id AS {marker}, b.id AS other FROM reads a CROSS JOIN reads b"


def any_message(type_name: str, value: bytes) -> bytes:
    """A google.protobuf.Any, encoded by hand (field 1: type_url, field 2: value)."""
    url = f"type.googleapis.com/{type_name}".encode()
    return bytes([0x0A, len(url)]) + url + bytes([0x12, len(value)]) + value


def count_answer(client: flight.FlightClient, table: str) -> int:
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(f"SELECT COUNT(*) AS n FROM {table}".encode())
    )
    return int(client.do_get(info.endpoints[0].ticket).read_all().column("n")[0].as_py())


def assert_server_healthy(server: Server, dataset: Dataset) -> None:
    assert server.alive(), server.log()
    client = flight.FlightClient(server.uri)
    try:
        assert count_answer(client, "reads") == len(dataset.fasta["reads"])
    finally:
        client.close()
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM samples")
        assert cur.fetchall() == [(len(dataset.delimited["samples"]),)]


# ------------------------------------------------------------------------------------------------
# Concurrency
# ------------------------------------------------------------------------------------------------


def test_a_dozen_clients_at_once(uri: str, dataset: Dataset) -> None:
    """12 threads, each with its own client (ADBC or pyarrow.flight), each checks its own answer."""
    # "ranged" (12 MB, scanned as 4 byte ranges) keeps every query busy long enough to overlap.
    reads = dataset.fasta["ranged"]
    barrier = threading.Barrier(CLIENTS)
    failures: list[str] = []

    def expected_for(k: int) -> dict[str, int]:
        return {r.id: len(r.sequence) for r in reads if len(r.sequence) % CLIENTS == k}

    def adbc_worker(k: int) -> None:
        with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
            barrier.wait(timeout=30)
            for _round in range(3):
                cur.execute(
                    "SELECT id, length(sequence) AS len FROM ranged "
                    "WHERE length(sequence) % 12 = ?",
                    parameters=(k,),
                )
                got = {row["id"]: row["len"] for row in cur.fetch_arrow_table().to_pylist()}
                if got != expected_for(k):
                    failures.append(f"ADBC client {k}: wrong answer ({len(got)} rows)")

    def flight_worker(k: int) -> None:
        client = flight.FlightClient(uri)
        try:
            barrier.wait(timeout=30)
            for _round in range(3):
                sql = (
                    "SELECT id, length(sequence) AS len FROM ranged "
                    f"WHERE length(sequence) % 12 = {k}"
                )
                info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
                table = client.do_get(info.endpoints[0].ticket).read_all()
                got = {row["id"]: row["len"] for row in table.to_pylist()}
                if got != expected_for(k):
                    failures.append(f"Flight client {k}: wrong answer ({len(got)} rows)")
        finally:
            client.close()

    def run(k: int) -> None:
        try:
            (adbc_worker if k % 2 else flight_worker)(k)
        except Exception as error:  # reported below, with the client number
            failures.append(f"client {k}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------------
# Clients that abandon a stream half-way
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def logged_server(launch: Any) -> Server:
    """A private server logging at info level, so the end of each query stream is visible."""
    server: Server = launch("--batch-rows", "256", "--log-format", "json", rust_log="info")
    return server


def stream_closed_rows(server: Server, marker: str, timeout: float = 15.0) -> int:
    """Rows the server sent before it closed the stream of the query holding ``marker``.

    The server logs one JSON line per query when it ends (``query finished`` or ``query
    failed``, with ``sql`` and ``rows``), whether the stream ran to its end or the client went
    away.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log_path.read_text(errors="replace").splitlines():
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            ended = fields.get("message") in ("query finished", "query failed")
            if ended and marker in fields.get("sql", ""):
                return int(fields["rows"])
        time.sleep(0.1)
    pytest.fail(f"the server never closed the stream of {marker!r}:\n{server.log()}")


def assert_server_noticed_the_client_leave(server: Server, dataset: Dataset, marker: str) -> None:
    """The stream of ``marker`` ended long before its 9 million rows; the server still answers."""
    total = len(dataset.fasta["reads"]) ** 2
    assert stream_closed_rows(server, marker) < total
    assert_server_healthy(server, dataset)


def test_flight_client_abandons_stream(logged_server: Server, dataset: Dataset) -> None:
    marker = "abandoned_by_flight"
    client = flight.FlightClient(logged_server.uri)
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(ENDLESS.format(marker=marker).encode())
    )
    reader = client.do_get(info.endpoints[0].ticket)
    for _ in range(3):
        assert reader.read_chunk().data.num_rows > 0
    reader.cancel()
    client.close()

    assert_server_noticed_the_client_leave(logged_server, dataset, marker)


def test_adbc_client_abandons_stream(logged_server: Server, dataset: Dataset) -> None:
    marker = "abandoned_by_adbc"
    with flightsql.connect(logged_server.uri, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(ENDLESS.format(marker=marker))
        reader = cur.fetch_record_batch()
        assert reader.read_next_batch().num_rows > 0
        reader.close()
        cur.close()
    assert_server_noticed_the_client_leave(logged_server, dataset, marker)


CLIENT_SCRIPT = """
import sys, time
import pyarrow.flight as flight
client = flight.FlightClient(sys.argv[1])
info = client.get_flight_info(flight.FlightDescriptor.for_command(sys.argv[2].encode()))
reader = client.do_get(info.endpoints[0].ticket)
reader.read_chunk()
print("reading", flush=True)
time.sleep(600)
"""


def test_client_process_killed_mid_stream(logged_server: Server, dataset: Dataset) -> None:
    marker = "abandoned_by_killed_process"
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, logged_server.uri, ENDLESS.format(marker=marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "reading"
    finally:
        child.kill()
        child.wait()
    assert_server_noticed_the_client_leave(logged_server, dataset, marker)


def test_abandoned_streams_do_not_disturb_other_clients(uri: str, dataset: Dataset) -> None:
    """Several half-read streams stay open while another client gets a full, correct answer."""
    clients = [flight.FlightClient(uri) for _ in range(4)]
    readers = []
    try:
        for n, client in enumerate(clients):
            sql = ENDLESS.format(marker=f"half_read_{n}")
            info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
            reader = client.do_get(info.endpoints[0].ticket)
            reader.read_chunk()
            readers.append(reader)
        other = flight.FlightClient(uri)
        try:
            info = other.get_flight_info(flight.FlightDescriptor.for_path("packed"))
            table = other.do_get(info.endpoints[0].ticket).read_all()
            assert sorted(table.column("id").to_pylist()) == sorted(
                r.id for r in dataset.fasta["packed"]
            )
        finally:
            other.close()
    finally:
        for reader in readers:
            reader.cancel()
        for client in clients:
            client.close()


# ------------------------------------------------------------------------------------------------
# Garbage input
# ------------------------------------------------------------------------------------------------

SQL_TICKET = "arrow.flight.protocol.sql.TicketStatementQuery"
GARBAGE_TICKETS = {
    "empty": b"",
    "all-bytes": bytes(range(256)),
    "invalid-utf8": b"\xff\xfe\xfd",
    "not-sql": b"hello, flight",
    "statement-handle-garbage": any_message(SQL_TICKET, b"\x0a\x03\xff\xff\xff"),
    "statement-handle-truncated": any_message(SQL_TICKET, b"\x0a\x50abc"),
    "unknown-any-type": any_message("no.such.Message", b"\x08\x01"),
}
GARBAGE_COMMANDS = {
    "empty": b"",
    "invalid-utf8": b"\xff\xfe\xfd",
    "nul-bytes": b"\x00\x00\x00",
    "unknown-any-type": any_message("no.such.Message", b"\x08\x01"),
    "truncated-any": b"\x0a\x7ftype.googleapis.com/arrow",
    "sql-command-garbage": any_message(
        "arrow.flight.protocol.sql.CommandStatementQuery", b"\x0a\x05\xff\xff"
    ),
}


@pytest.mark.parametrize("ticket", GARBAGE_TICKETS.values(), ids=GARBAGE_TICKETS.keys())
def test_garbage_ticket_is_invalid_argument(
    flight_client: flight.FlightClient, server: Server, ticket: bytes
) -> None:
    with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
        flight_client.do_get(flight.Ticket(ticket)).read_all()
    assert server.alive()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT {long} FROM (SELECT 1 AS one)",  # an unknown column, named in the error
        "SELECT CAST('{long}' AS INT)",  # a value echoed by the cast error
        "SELECT * FROM {long}",  # an unknown table
    ],
)
def test_an_error_echoing_a_long_input_keeps_its_code_and_text(
    flight_client: flight.FlightClient, server: Server, sql: str
) -> None:
    """Errors travel in a gRPC header, which clients cap at 16 KiB: an error that echoes 100 KB
    of the query is cut, so the client still gets INVALID_ARGUMENT and what went wrong (not
    RESOURCE_EXHAUSTED "metadata size exceeds hard limit")."""
    command = sql.format(long="é" * 50_000).encode()
    with pytest.raises(pa.ArrowException) as raised:
        flight_client.get_flight_info(flight.FlightDescriptor.for_command(command))
    status = grpc_status(raised.value)
    assert status.code == "INVALID_ARGUMENT", status
    assert "message cut" in status.message and len(status.message) < 8192, status
    assert server.alive()


@pytest.mark.parametrize("command", GARBAGE_COMMANDS.values(), ids=GARBAGE_COMMANDS.keys())
def test_garbage_command_descriptor_is_invalid_argument(
    flight_client: flight.FlightClient, server: Server, command: bytes
) -> None:
    descriptor = flight.FlightDescriptor.for_command(command)
    for call in (flight_client.get_flight_info, flight_client.get_schema):
        with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
            call(descriptor)
    assert server.alive()


@pytest.mark.parametrize(
    "path",
    [("\x00",), ("a/b",), ("x" * 10_000,), ("flightbear", "no_schema", "reads")],
    ids=["nul", "slash", "huge", "unknown-schema"],
)
def test_odd_path_descriptor_is_an_error_not_a_crash(
    flight_client: flight.FlightClient, server: Server, path: tuple[str, ...]
) -> None:
    with pytest.raises((pa.ArrowInvalid, pa.ArrowKeyError)):
        flight_client.get_flight_info(flight.FlightDescriptor.for_path(*path))
    assert server.alive()


def test_do_put_is_refused(flight_client: flight.FlightClient, server: Server) -> None:
    schema = pa.schema([("a", pa.int64())])
    with pytest.raises(pa.ArrowException):
        writer, _ = flight_client.do_put(flight.FlightDescriptor.for_path("reads"), schema)
        writer.write_table(pa.table({"a": [1, 2, 3]}))
        writer.close()
    assert server.alive()


def test_server_survives_garbage(server: Server, dataset: Dataset) -> None:
    assert_server_healthy(server, dataset)


# ------------------------------------------------------------------------------------------------
# Health check and shutdown
# ------------------------------------------------------------------------------------------------


def test_healthcheck_command(server: Server) -> None:
    ok = subprocess.run(
        [str(server_binary()), "healthcheck", "--addr", f"http://127.0.0.1:{server.port}"],
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        failed = subprocess.run(
            [str(server_binary()), "healthcheck", "--addr", f"http://127.0.0.1:{port}"],
            capture_output=True,
            timeout=60,
        )
    assert failed.returncode != 0


def port_is_free(port: int) -> bool:
    """Nobody listens on the port any more (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_idle_server_cleanly(launch: Any, dataset: Dataset, sig: int) -> None:
    server: Server = launch()
    assert_server_healthy(server, dataset)
    started = time.monotonic()
    server.process.send_signal(sig)
    assert server.process.wait(timeout=5) == 0, server.log()
    assert time.monotonic() - started < 5
    assert port_is_free(server.port)


def test_sigterm_with_a_stalled_stream_exits_after_grace(launch: Any) -> None:
    """A client that holds a stream open and stops reading cannot keep the server alive."""
    server: Server = launch("--shutdown-grace", "2", "--batch-rows", "256")
    client = flight.FlightClient(server.uri)
    try:
        sql = ENDLESS.format(marker="stalled")
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
        reader = client.do_get(info.endpoints[0].ticket)
        reader.read_chunk()
        started = time.monotonic()
        code = server.terminate(timeout=10)
        elapsed = time.monotonic() - started
        assert code == 0, server.log()
        assert elapsed < 8, f"took {elapsed:.1f} s with --shutdown-grace 2"
        # Whatever the client still reads, the stream ends (data or an error), it never hangs.
        with pytest.raises((flight.FlightError, pa.ArrowException, StopIteration)):
            while True:
                reader.read_chunk()
    finally:
        client.close()


def test_sigterm_lets_a_short_query_finish(launch: Any, dataset: Dataset) -> None:
    """A stream already being read completes normally when SIGTERM arrives mid-way."""
    server: Server = launch("--shutdown-grace", "10", "--batch-rows", "64")
    client = flight.FlightClient(server.uri)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_path("reads"))
        reader = client.do_get(info.endpoints[0].ticket)
        first = reader.read_chunk().data
        server.process.send_signal(signal.SIGTERM)
        rest = reader.read_all()
        ids = first.column("id").to_pylist() + rest.column("id").to_pylist()
        assert sorted(ids) == sorted(r.id for r in dataset.fasta["reads"])
        assert server.process.wait(timeout=10) == 0, server.log()
    finally:
        client.close()
