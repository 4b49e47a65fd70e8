"""Connections: silent sockets are closed, a flood of them cannot lock real clients out, and
healthy clients (idle ones, and ones waiting for a slow query) are never cut.

The servers run with small limits: ``--max-connections 4 --idle-timeout 3
--keepalive-interval 1``. Raw sockets that never say anything stand in for the attacker;
pyarrow.flight and ADBC are the real clients.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pytest

from flightbear_testing import Server, free_port, metric_key, scrape_metrics

if not os.path.isdir("/proc/self/fd"):
    pytest.skip("counting a process' file descriptors needs /proc", allow_module_level=True)

CAP = 4
IDLE = 3
KEEPALIVE = 1
# The server writes its HTTP/2 SETTINGS frame as soon as it accepts a connection: the
# first bytes a served socket receives. A refused socket receives nothing.
SETTINGS_FRAME_TYPE = 0x4
# Generous bound for anything that should happen after the idle timeout.
PATIENCE = 30.0


def start(launch: Any, *extra: str, cap: int = CAP) -> Server:
    args = [
        "--max-connections",
        str(cap),
        "--idle-timeout",
        str(IDLE),
        "--keepalive-interval",
        str(KEEPALIVE),
        *extra,
    ]
    server: Server = launch(*args, tables=False)
    return server


def open_fds(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def settled_fds(server: Server) -> int:
    """The server's open descriptors once the count has not moved for a second (the startup
    check's connection closes shortly after the server answered it)."""
    deadline = time.monotonic() + PATIENCE
    count, since = open_fds(server), time.monotonic()
    while time.monotonic() - since < 1.0 and time.monotonic() < deadline:
        time.sleep(0.1)
        if (now := open_fds(server)) != count:
            count, since = now, time.monotonic()
    return count


def wait_for_fds(server: Server, at_most: int) -> int:
    """Polls the server's open descriptors until they are ``at_most`` (or PATIENCE runs out)."""
    deadline = time.monotonic() + PATIENCE
    while (count := open_fds(server)) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def silent_sockets(server: Server, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.settimeout(PATIENCE)
        sockets.append(sock)
    return sockets


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the socket (fails if it never does)."""
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"the server left a silent socket open for {PATIENCE} s")
    finally:
        sock.close()
    return received


def is_served(received: bytes) -> bool:
    """True when the server spoke HTTP/2 on the socket (its first frame is SETTINGS)."""
    return len(received) >= 9 and received[3] == SETTINGS_FRAME_TYPE


def count_rows(uri: str, n: int, timeout: float = 120.0) -> int:
    """``SELECT count(*)`` over ``n`` generated rows with pyarrow.flight."""
    client = flight.FlightClient(uri)
    try:
        options = flight.FlightCallOptions(timeout=timeout)
        sql = f"SELECT count(*) AS n FROM generate_series(1, {n})"
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        return int(table.column("n")[0].as_py())
    finally:
        client.close()


def test_silent_sockets_are_closed_after_the_idle_timeout(launch: Any) -> None:
    server = start(launch, cap=2 * CAP)
    baseline = settled_fds(server)
    started = time.monotonic()
    sockets = silent_sockets(server, CAP)
    time.sleep(0.5)
    assert open_fds(server) >= baseline + CAP, "each accepted socket holds a descriptor"

    received = [read_until_closed(sock) for sock in sockets]
    closed_after = time.monotonic() - started
    assert all(is_served(r) for r in received), "the sockets were accepted, then closed"
    # The server must not have cut them before the timeout (the preface deadline is
    # min(10 s, --idle-timeout) = 3 s here).
    assert closed_after >= IDLE - 0.5
    assert wait_for_fds(server, at_most=baseline) <= baseline
    assert count_rows(server.uri, 10) == 10


def test_a_flood_of_silent_sockets_cannot_lock_clients_out(launch: Any) -> None:
    server = start(launch)
    baseline = settled_fds(server)
    sockets = silent_sockets(server, 2 * CAP)
    started = time.monotonic()

    # While the silent sockets hold every slot, real clients are refused, not queued forever.
    with pytest.raises((flight.FlightUnavailableError, flight.FlightTimedOutError)):
        count_rows(server.uri, 10, timeout=2)

    received = [read_until_closed(sock) for sock in sockets]
    served = sum(is_served(r) for r in received)
    refused = sum(r == b"" for r in received)
    assert served <= CAP, f"{served} connections open at once with --max-connections {CAP}"
    assert refused >= CAP, "connections beyond the cap are closed without being served"

    # Once the silent ones are gone, real clients are served again.
    answered = None
    while answered is None and time.monotonic() - started < PATIENCE:
        try:
            answered = count_rows(server.uri, 1000, timeout=5)
        except (flight.FlightUnavailableError, flight.FlightTimedOutError):
            time.sleep(0.5)
    assert answered == 1000
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 41 + 1")
        assert cur.fetchall() == [(42,)]
    assert wait_for_fds(server, at_most=baseline + 1) <= baseline + 1

    # The refusals were logged, but not once per connection.
    warnings = server.log().count("connection limit reached")
    elapsed = time.monotonic() - started
    assert 1 <= warnings <= 1 + math.ceil(elapsed / 5)
    assert server.alive()


def calibrated_rows(uri: str, at_least_seconds: float) -> int:
    """Rows that ``count_rows`` takes at least ``at_least_seconds`` to count on this machine."""
    probe = 10**9
    started = time.monotonic()
    assert count_rows(uri, probe) == probe
    per_probe = max(time.monotonic() - started, 0.05)
    return min(probe * math.ceil(at_least_seconds / per_probe), 200 * probe)


def test_a_slow_query_that_streams_nothing_outlives_the_idle_timeout(launch: Any) -> None:
    """The client answers keepalive pings while it waits, so the connection is not silent."""
    server = start(launch)
    rows = calibrated_rows(server.uri, at_least_seconds=2.5 * IDLE)

    started = time.monotonic()
    assert count_rows(server.uri, rows) == rows
    assert time.monotonic() - started > IDLE, "the query was too quick to prove anything"

    started = time.monotonic()
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM generate_series(1, {rows})")
        assert cur.fetchall() == [(rows,)]
    assert time.monotonic() - started > IDLE


def test_an_idle_client_keeps_its_connection(launch: Any) -> None:
    metrics_address = f"127.0.0.1:{free_port()}"
    server = start(launch, "--metrics-bind", metrics_address)
    client = flight.FlightClient(server.uri)
    try:
        list(client.list_flights())
        before = scrape_metrics(metrics_address)
        time.sleep(2.5 * IDLE)
        list(client.list_flights())
        after = scrape_metrics(metrics_address)
    finally:
        client.close()
    # The same connection served both calls: nothing new accepted, nothing timed out.
    for name in ("flightbear_connections_accepted_total", "flightbear_connections_timed_out_total"):
        assert after[metric_key(name)] == before[metric_key(name)], name
    assert after[metric_key("flightbear_connections_open")] >= 1
