"""Flight sessions: ADBC's current catalog and schema, per-session ``SET``, and the session actions
(SetSessionOptions, GetSessionOptions, CloseSession) with the ``arrow_flight_session_id`` cookie.

ADBC keeps cookies only with ``adbc.flight.sql.rpc.with_cookie_middleware``; pyarrow.flight gets
a small cookie middleware here (parsing with the standard library's ``http.cookies``). The
session messages are encoded by hand from Arrow's Flight.proto, so the test does not share the
server's definitions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from compat_support import Dataset, length_delimited, varint
from flightbear_testing import Server

# pyarrow raises NOT_FOUND as ArrowKeyError.
SESSION_NOT_FOUND = pa.ArrowKeyError
COOKIES = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}


@contextlib.contextmanager
def adbc_session(uri: str, cookies: bool = True) -> Iterator[Any]:
    """An ADBC connection that keeps the server's cookies (its own session)."""
    with adbc.connect(uri, db_kwargs=COOKIES if cookies else {}, autocommit=True) as connection:
        yield connection


def scalar(connection: Any, sql: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()[0][0]


def execute(connection: Any, sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


# --- protobuf, by hand (Flight.proto: SessionOptionValue and the session messages) ---------


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message: varints as int, others as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        yield number, wire, value


def set_options_request(options: dict[str, str | bool | list[str] | None]) -> bytes:
    """SetSessionOptionsRequest: map<string, SessionOptionValue> session_options = 1."""
    body = b""
    for name, value in options.items():
        if value is None:
            encoded = b""  # no value: remove the option
        elif isinstance(value, bool):
            encoded = varint(2 << 3) + varint(int(value))
        elif isinstance(value, list):
            encoded = length_delimited(5, b"".join(length_delimited(1, v.encode()) for v in value))
        else:
            encoded = length_delimited(1, value.encode())
        entry = length_delimited(1, name.encode()) + length_delimited(2, encoded)
        body += length_delimited(1, entry)
    return body


def map_entries(data: bytes) -> dict[str, bytes]:
    entries = {}
    for _, _, entry in fields(data):
        parts = {number: value for number, _, value in fields(entry)}
        entries[parts[1].decode()] = parts.get(2, b"")
    return entries


def set_options_errors(result: bytes) -> dict[str, int]:
    """SetSessionOptionsResult.errors: option name → ErrorValue (1 name, 2 value, 3 error)."""
    errors = {}
    for name, error in map_entries(result).items():
        errors[name] = dict((n, v) for n, _, v in fields(error)).get(1, 0)
    return errors


def session_options(result: bytes) -> dict[str, str]:
    """GetSessionOptionsResult: every option, all of them string values here."""
    options = {}
    for name, value in map_entries(result).items():
        parts = {number: v for number, _, v in fields(value)}
        options[name] = parts[1].decode()
    return options


# --- pyarrow.flight with cookies -----------------------------------------------------------


class CookieJar(flight.ClientMiddlewareFactory):
    """Keeps the cookies a server sets and sends them back, like a browser (and ADBC)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def start_call(self, info: Any) -> flight.ClientMiddleware:
        return _CookieCall(self)


class _CookieCall(flight.ClientMiddleware):
    def __init__(self, jar: CookieJar) -> None:
        self.jar = jar

    def sending_headers(self) -> dict[str, list[str]]:
        if not self.jar.cookies:
            return {}
        return {"cookie": ["; ".join(f"{k}={v}" for k, v in self.jar.cookies.items())]}

    def received_headers(self, headers: dict[str, list[str]]) -> None:
        for header in headers.get("set-cookie", []):
            self.jar.set_cookie_headers.append(header)
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0":
                    self.jar.cookies.pop(name, None)
                else:
                    self.jar.cookies[name] = morsel.value


def cookie_client(uri: str) -> tuple[flight.FlightClient, CookieJar]:
    jar = CookieJar()
    return flight.FlightClient(uri, middleware=[jar]), jar


def action(client: flight.FlightClient, name: str, body: bytes = b"") -> bytes:
    results = list(client.do_action(flight.Action(name, body)))
    assert len(results) == 1, results
    return results[0].body.to_pybytes()


def run_sql(client: flight.FlightClient, sql: str) -> pa.Table:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
    if not info.endpoints:
        return pa.table({})
    return client.do_get(info.endpoints[0].ticket).read_all()


# --- tests ---------------------------------------------------------------------------------


def test_adbc_current_catalog_and_schema_get_and_set(uri: str, dataset: Dataset) -> None:
    # The schemas are fixed (public and information_schema): the session moves between them.
    count_reads = (
        "SELECT count(*) FROM tables WHERE table_schema = 'public' AND table_name = 'reads'"
    )
    with adbc_session(uri) as connection, adbc_session(uri) as other:
        assert connection.adbc_current_catalog == "flightbear"
        assert connection.adbc_current_db_schema == "public"
        connection.adbc_current_db_schema = "information_schema"
        assert connection.adbc_current_db_schema == "information_schema"
        # Unqualified names now resolve in the session's schema; nobody else's.
        assert scalar(connection, count_reads) == 1
        assert scalar(connection, "SELECT count(*) FROM public.reads") == len(
            dataset.fasta["reads"]
        )
        assert other.adbc_current_db_schema == "public"
        with pytest.raises(adbc_driver_manager.Error, match="tables"):
            scalar(other, count_reads)
        # Prepared statements (ADBC prepares parameterised queries) run in the session too.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM tables WHERE table_name = ? AND table_schema = 'public'",
                parameters=("reads",),
            )
            assert cursor.fetchall() == [(1,)]
        # DDL names resolve in the session's schema as well, where clients may not create.
        with pytest.raises(adbc_driver_manager.Error, match=r"only in flightbear\.public"):
            execute(connection, "CREATE TABLE session_t AS VALUES (1)")

        with pytest.raises(adbc_driver_manager.Error, match="invalid value"):
            connection.adbc_current_db_schema = "no_such_schema"
        with pytest.raises(adbc_driver_manager.Error, match="invalid value"):
            connection.adbc_current_catalog = "no_such_catalog"
        assert connection.adbc_current_db_schema == "information_schema", "nothing changed"
        connection.adbc_current_catalog = "flightbear"
        connection.adbc_current_db_schema = "public"
        assert scalar(connection, "SELECT count(*) FROM reads") == len(dataset.fasta["reads"])


def test_set_statements_last_for_the_session_only(uri: str) -> None:
    typeof_float = "SELECT arrow_typeof(1.5)"
    with adbc_session(uri) as connection, adbc_session(uri) as other:
        execute(connection, "SET datafusion.sql_parser.parse_float_as_decimal = true")
        execute(connection, "SET datafusion.execution.time_zone = '+05:00'")
        assert scalar(connection, typeof_float).startswith("Decimal128")
        assert "+05:00" in scalar(connection, "SELECT arrow_typeof(now())")
        # SHOW reads the session's settings too.
        with connection.cursor() as cursor:
            cursor.execute("SHOW datafusion.execution.time_zone")
            assert cursor.fetchall()[0][1] == "+05:00"
        assert scalar(other, typeof_float) == "Float64"
        assert "+05:00" not in scalar(other, "SELECT arrow_typeof(now())")

        execute(connection, "RESET datafusion.sql_parser.parse_float_as_decimal")
        assert scalar(connection, typeof_float) == "Float64"
        assert "+05:00" in scalar(connection, "SELECT arrow_typeof(now())")
    # A new connection starts a new session, with the server's defaults.
    with adbc_session(uri) as connection:
        assert scalar(connection, typeof_float) == "Float64"


def test_a_client_that_keeps_no_cookies_keeps_no_settings(uri: str) -> None:
    with adbc_session(uri, cookies=False) as connection:
        execute(connection, "SET datafusion.sql_parser.parse_float_as_decimal = true")
        assert scalar(connection, "SELECT arrow_typeof(1.5)") == "Float64"


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SET datafusion.runtime.memory_limit = '1T'", "cannot be changed by clients"),
        ("SET datafusion.runtime.temp_directory = '/'", "cannot be changed by clients"),
        ("SET datafusion.execution.target_partitions = 4096", "cannot be changed by clients"),
        ("SET datafusion.execution.batch_size = 100000000", "cannot be changed by clients"),
        ("SET datafusion.sql_parser.recursion_limit = 100000", "cannot be changed by clients"),
        ("SET datafusion.no_such.setting = 1", "unknown setting"),
        ("SET datafusion.execution.time_zone = 'not a zone'", "Invalid timezone"),
        ("SET datafusion.sql_parser.parse_float_as_decimal = 'perhaps'", "invalid value"),
        (f"SET datafusion.execution.time_zone = '{'x' * 5000}'", "at most 1024"),
    ],
)
def test_settings_that_are_not_the_clients_are_refused(
    uri: str, statement: str, message: str
) -> None:
    client, jar = cookie_client(uri)
    # PERMISSION_DENIED for the operator's settings, INVALID_ARGUMENT for the client's mistakes.
    expected = (
        flight.FlightUnauthorizedError
        if message == "cannot be changed by clients"
        else pa.ArrowInvalid
    )
    with pytest.raises(expected, match=message):
        run_sql(client, statement)
    # A refused setting starts no session.
    assert jar.cookies == {}
    client.close()
    assert run_sql(flight.FlightClient(uri), "SELECT 1 AS one").column("one").to_pylist() == [1]


def test_session_actions_and_the_cookie(uri: str) -> None:
    client, jar = cookie_client(uri)
    # Without a session: the server's defaults, and no cookie.
    defaults = session_options(action(client, "GetSessionOptions"))
    assert defaults == {"catalog": "flightbear", "schema": "public"}
    assert jar.cookies == {}

    result = action(
        client,
        "SetSessionOptions",
        set_options_request(
            {
                "datafusion.execution.time_zone": "+02:00",
                "datafusion.sql_parser.parse_float_as_decimal": True,
                "no_such_option": "x",
                "datafusion.runtime.memory_limit": "1T",
                "schema": "no_such_schema",
                "datafusion.explain.format": ["tree", "indent"],
            }
        ),
    )
    assert set_options_errors(result) == {
        "no_such_option": 1,
        "datafusion.runtime.memory_limit": 1,
        "schema": 2,
        "datafusion.explain.format": 2,
    }
    assert list(jar.cookies) == ["arrow_flight_session_id"]
    session_id = jar.cookies["arrow_flight_session_id"]
    assert session_options(action(client, "GetSessionOptions")) == {
        "catalog": "flightbear",
        "schema": "public",
        "datafusion.execution.time_zone": "+02:00",
        "datafusion.sql_parser.parse_float_as_decimal": "true",
    }

    # The ticket carries the session's settings: a client without the cookie streams it alike.
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(
            b"SELECT arrow_typeof(1.5) AS t, arrow_typeof(now()) AS n"
        )
    )
    plain = flight.FlightClient(uri)
    row = plain.do_get(info.endpoints[0].ticket).read_all().to_pylist()[0]
    assert row["t"].startswith("Decimal128") and "+02:00" in row["n"], row
    plain.close()

    # Removing an option (no value) goes back to the server's default.
    assert (
        set_options_errors(
            action(
                client,
                "SetSessionOptions",
                set_options_request({"datafusion.sql_parser.parse_float_as_decimal": None}),
            )
        )
        == {}
    )
    assert run_sql(client, "SELECT arrow_typeof(1.5) AS t").column("t").to_pylist() == ["Float64"]

    # CloseSession: CLOSED (1), the cookie is expired, and the id is no longer served.
    closed = dict((n, v) for n, _, v in fields(action(client, "CloseSession")))
    assert closed.get(1) == 1
    assert any("Max-Age=0" in header for header in jar.set_cookie_headers)
    assert jar.cookies == {}
    stale = flight.FlightClient(uri)
    headers = [(b"cookie", f"arrow_flight_session_id={session_id}".encode())]
    options = flight.FlightCallOptions(headers=headers)
    with pytest.raises(SESSION_NOT_FOUND, match="unknown here"):
        stale.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1"), options)
    with pytest.raises(SESSION_NOT_FOUND, match="unknown here"):
        list(stale.do_action(flight.Action("GetSessionOptions", b""), options))
    # Closing again is fine.
    assert len(list(stale.do_action(flight.Action("CloseSession", b""), options))) == 1
    stale.close()
    client.close()


def test_forged_session_ids_are_not_found(uri: str) -> None:
    client = flight.FlightClient(uri)
    options = flight.FlightCallOptions(headers=[(b"cookie", b"arrow_flight_session_id=forged")])
    with pytest.raises(SESSION_NOT_FOUND, match="'forged' is unknown here"):
        client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1"), options)
    with pytest.raises(SESSION_NOT_FOUND, match="unknown here"):
        run_sql_with(client, "SET datafusion.execution.time_zone = '+01:00'", options)
    client.close()


def run_sql_with(client: flight.FlightClient, sql: str, options: flight.FlightCallOptions) -> None:
    client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)


def test_sessions_are_bounded_in_number_and_idle_time(launch: Any, dataset: Dataset) -> None:
    server: Server = launch("--max-sessions", "2", "--session-idle-timeout", "2", tables=False)
    clients = [cookie_client(server.uri) for _ in range(3)]
    for client, _ in clients:
        run_sql(client, "SET datafusion.sql_parser.parse_float_as_decimal = true")
    typeof_float = "SELECT arrow_typeof(1.5) AS t"
    # The least recently used session made room for the third.
    with pytest.raises(SESSION_NOT_FOUND, match="unknown here"):
        run_sql(clients[0][0], typeof_float)
    for client, _ in clients[1:]:
        assert run_sql(client, typeof_float).column("t")[0].as_py().startswith("Decimal128")
    time.sleep(2.5)
    for client, _ in clients[1:]:
        with pytest.raises(SESSION_NOT_FOUND, match="unknown here"):
            run_sql(client, typeof_float)
    for client, _ in clients:
        client.close()
    assert server.alive()
