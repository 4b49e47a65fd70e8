"""Connection options, authentication, and gRPC failures as flightbear exceptions."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flightbear_testing import Server, free_port

import flightbear
from fake_flight import (
    PASSWORD,
    TOKEN,
    USER,
    BasicToBearer,
    HeaderRecorder,
    NoHandshakeProtocol,
    ScriptedServer,
    fails_after_first_batch,
)


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    """Collects the fake servers a test starts and shuts them down afterwards."""
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.shutdown()


def start(servers: list[ScriptedServer], **kwargs) -> ScriptedServer:
    server = ScriptedServer(**kwargs)
    servers.append(server)
    return server


# --- the exception classes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("FlightConnectionError", ConnectionError),
        ("AuthenticationError", PermissionError),
        ("InvalidQueryError", ValueError),
        ("NotFoundError", LookupError),
        ("FlightTimeoutError", TimeoutError),
        ("NotSupportedError", NotImplementedError),
        ("InternalError", RuntimeError),
        ("ResourceExhaustedError", RuntimeError),
        ("ConnectionClosedError", RuntimeError),
        ("QueryCancelledError", Exception),
    ],
)
def test_every_exception_is_a_flightbear_error_and_its_builtin(name, builtin):
    cls = getattr(flightbear, name)
    assert issubclass(cls, flightbear.Error)
    assert issubclass(cls, builtin)
    assert str(cls("the message")) == "the message"


# --- gRPC status codes -> classes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("server_error", "expected", "code"),
    [
        (flight.FlightUnauthenticatedError("who are you"), flightbear.AuthenticationError,
         "UNAUTHENTICATED"),
        (flight.FlightUnauthorizedError("not yours"), flightbear.AuthenticationError,
         "PERMISSION_DENIED"),
        (flight.FlightUnavailableError("going away"), flightbear.FlightConnectionError,
         "UNAVAILABLE"),
        (flight.FlightTimedOutError("too slow"), flightbear.FlightTimeoutError,
         "DEADLINE_EXCEEDED"),
        (flight.FlightCancelledError("stopped"), flightbear.QueryCancelledError, "CANCELLED"),
        (flight.FlightInternalError("broken"), flightbear.InternalError, "INTERNAL"),
        (flight.FlightServerError("odd"), flightbear.InternalError, "UNKNOWN"),
        (NotImplementedError("no such feature"), flightbear.NotSupportedError, "UNIMPLEMENTED"),
        (KeyError("missing thing"), flightbear.NotFoundError, "NOT_FOUND"),
        (ValueError("bad query text"), flightbear.InvalidQueryError, "INVALID_ARGUMENT"),
    ],
)  # fmt: skip
def test_grpc_codes_become_matching_exceptions_with_the_servers_message(
    scripted, server_error, expected, code
):
    def on_info(descriptor):
        raise server_error

    server = start(scripted, on_info=on_info)
    conn = flightbear.connect(server.uri)
    with pytest.raises(expected) as info:
        conn.sql("SELECT 1")
    assert info.value.grpc_code == code
    assert str(server_error.args[0]) in str(info.value)


def test_unknown_table_names_the_table(conn):
    with pytest.raises(flightbear.InvalidQueryError, match="no_such_table") as info:
        conn.sql("SELECT * FROM no_such_table")
    assert isinstance(info.value, ValueError)
    assert info.value.grpc_code == "INVALID_ARGUMENT"


def test_bad_sql_is_an_invalid_query(conn):
    with pytest.raises(flightbear.InvalidQueryError, match=r"(?i)sql|parser|expected"):
        conn.sql("SELEC nonsense FROM")


def test_error_while_streaming_raises_from_to_arrow_table(conn):
    result = conn.sql("SELECT 1 / (length(sequence) - length(sequence)) AS boom FROM reads")
    with pytest.raises(flightbear.Error, match=r"(?i)divide by zero"):
        result.to_arrow_table()
    with pytest.raises(flightbear.Error, match=r"(?i)divide by zero"):
        list(result)


def test_error_while_streaming_reaches_pyarrow_readers_with_the_servers_message(conn):
    result = conn.sql("SELECT 1 / (length(sequence) - length(sequence)) AS boom FROM reads")
    with pytest.raises(pa.ArrowException, match=r"(?i)divide by zero"):
        result.to_arrow_record_batch_reader().read_all()


def test_failure_after_some_batches_keeps_the_servers_message(scripted):
    server = start(scripted, batches=fails_after_first_batch(ValueError("disk on fire")))
    result = flightbear.connect(server.uri).sql("anything")
    with pytest.raises(flightbear.InvalidQueryError, match="disk on fire"):
        result.to_arrow_table()
    reader = result.to_arrow_record_batch_reader()
    assert reader.read_next_batch().num_rows == 1
    with pytest.raises(pa.ArrowException, match=r"INVALID_ARGUMENT\]: disk on fire"):
        reader.read_next_batch()


# --- connecting -----------------------------------------------------------------------------


def test_unreachable_server_is_a_connection_error():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(flightbear.FlightConnectionError, match=f"127.0.0.1:{port}") as info:
        flightbear.connect(f"grpc://127.0.0.1:{port}", timeout=5)
    assert isinstance(info.value, ConnectionError)
    assert info.value.grpc_code == "UNAVAILABLE"
    assert time.monotonic() - started < 5


def test_server_that_goes_away_is_a_connection_error(data_files, tmp_path):
    server = Server(["--fasta", f"r={data_files.fasta}"], tmp_path / "dying.log")
    conn = flightbear.connect(server.uri)
    assert "r" in conn.tables()
    server.stop()
    with pytest.raises(flightbear.FlightConnectionError):
        conn.sql("SELECT * FROM r")


@pytest.mark.parametrize(
    "uri",
    ["http://localhost:1", "grpc+unix:///tmp/x", "localhost:50051", "grpc://", "grpc://h:1/db"],
)
def test_bad_uris_are_value_errors(uri):
    with pytest.raises(ValueError, match="URI"):
        flightbear.connect(uri)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"username": "u"},
        {"password": "p"},
        {"username": "u", "password": "p", "token": "t"},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"headers": {"bad header": "x"}},
        {"headers": {"x-ok": "line\nbreak"}},
        {"tls_root_certs": "-----BEGIN CERTIFICATE-----"},  # only with grpc+tls://
    ],
)
def test_bad_connect_options_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        flightbear.connect("grpc://127.0.0.1:1", **kwargs)


@pytest.mark.parametrize("kwargs", [{"headers": ["x"]}, {"tls_root_certs": 5}])
def test_wrongly_typed_connect_options_are_type_errors(kwargs):
    with pytest.raises(TypeError):
        flightbear.connect("grpc+tls://127.0.0.1:1", **kwargs)


def test_all_uri_schemes_reach_a_plain_server(server):
    port = server.port
    for uri in (
        f"grpc://127.0.0.1:{port}",
        f"grpc+tcp://127.0.0.1:{port}",
        f"GRPC://localhost:{port}",
    ):
        with flightbear.connect(uri) as conn:
            assert "reads" in conn.tables()


def test_tls_to_a_plain_server_fails_as_a_connection_error(server):
    with pytest.raises(flightbear.FlightConnectionError):
        flightbear.connect(f"grpc+tls://127.0.0.1:{server.port}", timeout=5).tables()


def test_timeout_bounds_a_slow_answer(scripted):
    server = start(scripted, on_info=lambda descriptor: time.sleep(3))
    conn = flightbear.connect(server.uri, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(flightbear.FlightTimeoutError) as info:
        conn.sql("SELECT 1")
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started < 2


# --- authentication and headers -------------------------------------------------------------


def auth_server(scripted) -> tuple[ScriptedServer, BasicToBearer]:
    middleware = BasicToBearer()
    server = start(scripted, auth_handler=NoHandshakeProtocol(), middleware={"auth": middleware})
    return server, middleware


def test_username_and_password_are_traded_for_a_bearer_token(scripted):
    server, middleware = auth_server(scripted)
    conn = flightbear.connect(server.uri, username=USER, password=PASSWORD)
    assert conn.sql("q").to_arrow_table().column("x").to_pylist() == [1, 2, 3]
    after_handshake = middleware.seen_headers[1:]
    assert after_handshake
    assert all(h["authorization"] == [f"Bearer {TOKEN}"] for h in after_handshake)


def test_wrong_password_is_an_authentication_error(scripted):
    server, _ = auth_server(scripted)
    with pytest.raises(flightbear.AuthenticationError, match="wrong password") as info:
        flightbear.connect(server.uri, username=USER, password="nope")
    assert isinstance(info.value, PermissionError)


def test_missing_credentials_are_an_authentication_error(scripted):
    server, _ = auth_server(scripted)
    conn = flightbear.connect(server.uri)
    with pytest.raises(flightbear.AuthenticationError, match="bearer token"):
        conn.sql("q")


def test_token_is_sent_as_a_bearer_header(scripted):
    server, _ = auth_server(scripted)
    conn = flightbear.connect(server.uri, token=TOKEN)
    assert conn.sql("q").to_arrow_table().num_rows == 3


def test_without_a_handshake_basic_credentials_go_with_every_call(scripted):
    recorder = HeaderRecorder()
    server = start(scripted, middleware={"rec": recorder})  # no auth handler: UNIMPLEMENTED
    conn = flightbear.connect(server.uri, username="bob", password="pw")
    conn.sql("q").to_arrow_table()
    assert recorder.seen_headers[-1]["authorization"][0].startswith("Basic ")


def test_custom_headers_go_with_every_call(scripted):
    recorder = HeaderRecorder()
    server = start(scripted, middleware={"rec": recorder})
    conn = flightbear.connect(server.uri, headers={"X-Request-Source": "tests"})
    conn.sql("q").to_arrow_table()
    assert len(recorder.seen_headers) >= 2  # GetFlightInfo and DoGet
    assert all(h["x-request-source"] == ["tests"] for h in recorder.seen_headers)


# --- the connection's life cycle ------------------------------------------------------------


def test_close_is_idempotent_and_later_calls_raise(server):
    conn = flightbear.connect(server.uri)
    assert not conn.closed
    conn.close()
    conn.close()
    assert conn.closed
    assert "closed" in repr(conn)
    with pytest.raises(flightbear.ConnectionClosedError):
        conn.sql("SELECT 1")
    with pytest.raises(flightbear.ConnectionClosedError):
        conn.tables()


def test_context_manager_closes_and_does_not_swallow_errors(server):
    with pytest.raises(ZeroDivisionError):
        with flightbear.connect(server.uri) as conn:
            assert conn.uri == server.uri
            _ = 1 / 0
    assert conn.closed


def test_results_outlive_their_connection_object(server):
    # A result holds its own handle on the channel, like a cursor that was already executed.
    conn = flightbear.connect(server.uri)
    result = conn.sql("SELECT count(*) AS n FROM reads")
    del conn
    assert result.to_arrow_table().num_rows == 1
