"""Observability: ``--metrics-bind`` serves Prometheus text at ``/metrics`` whose counters move
by exactly what clients did, and the log has one line per statement.

Each test runs queries with known outcomes (OK, bad SQL, an abandoned stream, a query stopped
by ``--query-timeout 1``, DDL, a query that spills) against a private server and checks the
difference between two scrapes.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightbear_testing import Server, free_port, metric_key, scrape_metrics, server_binary

# Counting to 10^11 takes minutes: only the timeout ends it.
ENDLESS_COUNT = "SELECT count(*) AS n FROM generate_series(1, 100000000000)"
# Millions of rows, streamed in many batches: a client reads one and walks away.
LONG_STREAM = "SELECT value FROM generate_series(1, 1000000000)"
# About a million groups: with --memory-limit 32MiB the aggregation has to spill.
SPILLING = (
    "SELECT count(*) AS n, sum(c) AS s FROM "
    "(SELECT value % 1000000 AS k, count(*) AS c FROM generate_series(1, 4000000) "
    "GROUP BY value % 1000000)"
)
MEMORY_LIMIT = 32 * 1024 * 1024
PATIENCE = 20.0


class Scraper:
    """Scrapes one server's /metrics; ``delta`` is what moved since ``mark``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.base = scrape_metrics(address)
        self.current = self.base

    def mark(self) -> None:
        self.base = scrape_metrics(self.address)

    def delta(self, expected: dict[str, float]) -> dict[str, float]:
        """The changes of the ``expected`` keys, once they have all moved at least as much
        (statements are counted when their query task ends, just after the client is told)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            now = scrape_metrics(self.address)
            moved = {key: now.get(key, 0.0) - self.base.get(key, 0.0) for key in expected}
            if all(moved[k] >= v for k, v in expected.items()) or time.monotonic() > deadline:
                self.current = now
                return moved
            time.sleep(0.05)


def rpc(method: str, code: str) -> str:
    return metric_key("flightbear_rpcs_total", method=method, code=code)


def query(kind: str, code: str) -> str:
    return metric_key("flightbear_queries_total", kind=kind, code=code)


def duration_count(kind: str) -> str:
    return metric_key("flightbear_query_duration_seconds_count", kind=kind)


CANCELLED = metric_key("flightbear_queries_cancelled_total")
TIMED_OUT = metric_key("flightbear_queries_timed_out_total")
ROWS = metric_key("flightbear_query_rows_total")
BYTES = metric_key("flightbear_query_bytes_total")
SPILLS = metric_key("flightbear_query_spills_total")
SPILLED_BYTES = metric_key("flightbear_query_spilled_bytes_total")
RUNNING = metric_key("flightbear_queries_running")
QUEUED = metric_key("flightbear_queries_queued")


@pytest.fixture
def metered(launch: Any) -> tuple[Server, Scraper]:
    """A server with metrics, a 1 s query timeout and a small memory limit, logging queries."""
    address = f"127.0.0.1:{free_port()}"
    server: Server = launch(
        "--metrics-bind",
        address,
        "--query-timeout",
        "1",
        "--memory-limit",
        "32MiB",
        tables=False,
        rust_log="info",
    )
    return server, Scraper(address)


def flight_info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    return client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))


def run(client: flight.FlightClient, sql: str) -> pa.Table:
    return client.do_get(flight_info(client, sql).endpoints[0].ticket).read_all()


def with_client(server: Server, body: Callable[[flight.FlightClient], Any]) -> Any:
    client = flight.FlightClient(server.uri)
    try:
        return body(client)
    finally:
        client.close()


def test_a_successful_query_counts_its_rpcs_rows_bytes_and_duration(
    metered: tuple[Server, Scraper],
) -> None:
    server, metrics = metered
    table = with_client(server, lambda c: run(c, "SELECT 1 AS one UNION ALL SELECT 2"))
    assert table.num_rows == 2
    expected = {
        rpc("GetFlightInfo", "OK"): 1,
        rpc("DoGet", "OK"): 1,
        query("query", "OK"): 1,
        duration_count("query"): 1,
        ROWS: 2,
    }
    assert metrics.delta(expected) == expected
    assert metrics.delta({BYTES: 1})[BYTES] > 0
    assert metrics.current[CANCELLED] == metrics.base.get(CANCELLED, 0)


def test_bad_sql_is_an_invalid_argument_rpc_and_a_failed_planning(
    metered: tuple[Server, Scraper],
) -> None:
    server, metrics = metered
    with pytest.raises(pa.ArrowInvalid):
        with_client(server, lambda c: flight_info(c, "SELEC 1 FROM nowhere"))
    expected = {
        rpc("GetFlightInfo", "INVALID_ARGUMENT"): 1,
        query("planning", "INVALID_ARGUMENT"): 1,
    }
    assert metrics.delta(expected) == expected
    assert "query failed" in server.log() and "SELEC 1 FROM nowhere" in server.log()


def test_an_abandoned_stream_is_cancelled(metered: tuple[Server, Scraper]) -> None:
    server, metrics = metered

    def abandon(client: flight.FlightClient) -> None:
        reader = client.do_get(flight_info(client, LONG_STREAM).endpoints[0].ticket)
        assert reader.read_chunk().data.num_rows > 0
        reader.cancel()

    with_client(server, abandon)
    expected = {
        rpc("DoGet", "CANCELLED"): 1,
        query("query", "CANCELLED"): 1,
        CANCELLED: 1,
    }
    assert metrics.delta(expected) == expected
    assert metrics.current.get(rpc("DoGet", "OK"), 0) == metrics.base.get(rpc("DoGet", "OK"), 0)


def test_a_query_stopped_by_the_timeout_counts_as_timed_out_and_ran_meanwhile(
    metered: tuple[Server, Scraper],
) -> None:
    server, metrics = metered
    outcome: list[BaseException] = []

    def endless() -> None:
        try:
            with_client(server, lambda c: run(c, ENDLESS_COUNT))
        except BaseException as error:  # the outcome is checked below
            outcome.append(error)

    worker = threading.Thread(target=endless)
    worker.start()
    # The gauges are read at scrape time: the running query shows while it runs.
    seen_running = metrics.delta({RUNNING: 1})[RUNNING]
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert seen_running == 1
    assert len(outcome) == 1 and isinstance(outcome[0], flight.FlightTimedOutError), outcome
    expected = {
        rpc("DoGet", "DEADLINE_EXCEEDED"): 1,
        query("query", "DEADLINE_EXCEEDED"): 1,
        TIMED_OUT: 1,
    }
    assert metrics.delta(expected) == expected
    metrics.mark()
    assert metrics.base[RUNNING] == 0 and metrics.base[QUEUED] == 0


def test_ddl_is_counted_and_logged_as_a_statement(metered: tuple[Server, Scraper]) -> None:
    server, metrics = metered
    info = with_client(server, lambda c: flight_info(c, "CREATE VIEW answer AS SELECT 42 AS x"))
    assert info.total_records == 0
    expected = {
        rpc("GetFlightInfo", "OK"): 1,
        query("statement", "OK"): 1,
        duration_count("statement"): 1,
    }
    assert metrics.delta(expected) == expected
    logged = [line for line in server.log().splitlines() if "CREATE VIEW answer" in line]
    assert len(logged) == 1 and 'kind="statement"' in logged[0], logged


def test_ddl_stopped_by_the_timeout_is_one_timed_out_statement(
    metered: tuple[Server, Scraper],
) -> None:
    """A CREATE TABLE AS stopped by --query-timeout is logged and counted once, as a statement
    that ran out of time (not as a client that went away, nor also as a failed planning)."""
    server, metrics = metered
    ddl = f"CREATE TABLE endless AS {ENDLESS_COUNT}"
    with pytest.raises(flight.FlightTimedOutError, match="--query-timeout"):
        with_client(server, lambda c: flight_info(c, ddl))
    expected = {
        rpc("GetFlightInfo", "DEADLINE_EXCEEDED"): 1,
        query("statement", "DEADLINE_EXCEEDED"): 1,
    }
    assert metrics.delta(expected) == expected
    now, base = metrics.current, metrics.base
    assert failed(now, "planning") == failed(base, "planning"), "not also a failed planning"
    logged = [line for line in server.log().splitlines() if "CREATE TABLE endless" in line]
    assert len(logged) == 1, logged
    assert "code=DeadlineExceeded" in logged[0] and "--query-timeout" in logged[0], logged
    assert "went away" not in logged[0], logged


def failed(samples: dict[str, float], kind: str) -> float:
    """Statements of ``kind`` that ended with any code but OK."""
    prefix = 'flightbear_queries_total{code="'
    return sum(
        value
        for key, value in samples.items()
        if key.startswith(prefix) and f'kind="{kind}"' in key and 'code="OK"' not in key
    )


def test_each_failure_is_counted_and_logged_once_as_what_failed(
    metered: tuple[Server, Scraper],
) -> None:
    """A DDL that fails while running is a failed statement, not also a failed planning; a
    prepared statement with bad SQL (how ADBC and JDBC send most SQL) is a failed planning."""
    server, metrics = metered
    ddl = "CREATE VIEW twice AS SELECT 1 AS x"
    with_client(server, lambda c: flight_info(c, ddl))
    with pytest.raises(pa.ArrowInvalid, match="already exists"):
        with_client(server, lambda c: flight_info(c, ddl))
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(flightsql.ProgrammingError):
            cur.adbc_prepare("SELEC prepared_nonsense")
    expected = {query("statement", "OK"): 1, query("planning", "INVALID_ARGUMENT"): 1}
    metrics.delta(expected)
    now, base = metrics.current, metrics.base
    assert now[query("statement", "OK")] - base.get(query("statement", "OK"), 0) == 1
    assert failed(now, "statement") - failed(base, "statement") == 1
    assert failed(now, "planning") - failed(base, "planning") == 1
    log = server.log()
    assert log.count("twice AS SELECT") == 2, "one line per statement"
    assert log.count("prepared_nonsense") == 1


def test_spills_are_counted(metered: tuple[Server, Scraper]) -> None:
    server, metrics = metered
    table = with_client(server, lambda c: run(c, SPILLING))
    assert table.to_pylist() == [{"n": 1_000_000, "s": 4_000_000}]
    moved = metrics.delta({query("query", "OK"): 1, SPILLS: 1, SPILLED_BYTES: 1})
    assert moved[query("query", "OK")] == 1
    assert moved[SPILLS] >= 1 and moved[SPILLED_BYTES] > 0, moved

    metrics.mark()
    with_client(server, lambda c: run(c, "SELECT 1"))
    assert metrics.delta({query("query", "OK"): 1})[query("query", "OK")] == 1
    assert metrics.current[SPILLS] == metrics.base[SPILLS], "a query that fits spills nothing"


def test_health_checks_are_counted_and_gauges_describe_the_server(
    metered: tuple[Server, Scraper],
) -> None:
    server, metrics = metered
    done = subprocess.run(
        [str(server_binary()), "healthcheck", "--addr", f"http://127.0.0.1:{server.port}"],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    expected = {rpc("Check", "OK"): 1}
    assert metrics.delta(expected) == expected
    now = metrics.current
    assert now[metric_key("flightbear_memory_limit_bytes")] == MEMORY_LIMIT
    assert now[metric_key("flightbear_memory_reserved_bytes")] == 0
    assert now[metric_key("flightbear_connections_limit")] == 1024
    assert now[metric_key("flightbear_connections_accepted_total")] >= 2


def test_other_paths_are_not_found_and_other_methods_not_allowed(
    metered: tuple[Server, Scraper],
) -> None:
    _server, metrics = metered
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://{metrics.address}/nope", timeout=10)
    assert missing.value.code == 404
    post = urllib.request.Request(f"http://{metrics.address}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 405
    with urllib.request.urlopen(f"http://{metrics.address}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_the_text_log_has_no_colour_codes_when_not_on_a_terminal(
    metered: tuple[Server, Scraper],
) -> None:
    server, _metrics = metered
    with_client(server, lambda c: run(c, "SELECT 1"))
    deadline = time.monotonic() + PATIENCE
    while "query finished" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "query finished" in server.log()
    assert "\x1b[" not in server.log()


def test_multi_line_sql_is_logged_on_one_line(metered: tuple[Server, Scraper]) -> None:
    server, _ = metered
    sql = "CREATE VIEW multi_line_marker AS\n  SELECT 42 AS x"
    with_client(server, lambda c: flight_info(c, sql))
    logged = [line for line in server.log().splitlines() if "multi_line_marker" in line]
    assert len(logged) == 1, logged
    assert "multi_line_marker AS\\n  SELECT 42" in logged[0], logged
