"""TLS and mutual TLS: a server started with ``--tls-cert``/``--tls-key`` (and
``--tls-client-ca``) serves pyarrow.flight, ADBC, the flightbear client and
``flightbear healthcheck`` over ``grpc+tls://``, and refuses plaintext clients, clients that do
not trust its CA and, with mutual TLS, clients without a certificate from the client CA.

Certificates are made by ``openssl`` in the test (``make_test_pki``): a CA, a server
certificate for localhost/127.0.0.1, a client certificate, and an unrelated CA with a client
certificate of its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pytest

from flightbear_testing import Pki, Server, make_test_pki, server_binary

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

QUERY = "SELECT 41 + 1 AS answer"
# Limits small enough to watch the handshake timeout and the connection cap at work.
IDLE = 3
LIMITS = ["--idle-timeout", str(IDLE), "--keepalive-interval", "1"]
PATIENCE = 30.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: Pki, *, client_ca: Path | None = None) -> list[str]:
    args = ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
    if client_ca is not None:
        args += ["--tls-client-ca", str(client_ca)]
    return args


def client_options(pki: Pki, identity: Any = None) -> dict[str, bytes]:
    options = {"tls_root_certs": pki.ca.read_bytes()}
    if identity is not None:
        options["cert_chain"] = identity.cert.read_bytes()
        options["private_key"] = identity.key.read_bytes()
    return options


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("tls") / "server.log"
    with Server([*tls_args(pki), *LIMITS], log, client_tls=client_options(pki)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("mtls") / "server.log"
    args = [*tls_args(pki, client_ca=pki.ca), *LIMITS]
    with Server(args, log, client_tls=client_options(pki, pki.client)) as server:
        yield server


def flight_answer(uri: str, timeout: float = 10, **options: Any) -> int:
    """Runs QUERY as plain Flight (a command descriptor holding SQL) and returns the answer."""
    client = flight.FlightClient(uri, **options)
    try:
        call = flight.FlightCallOptions(timeout=timeout)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(QUERY), call)
        table = client.do_get(info.endpoints[0].ticket, call).read_all()
        return int(table.column("answer")[0].as_py())
    finally:
        client.close()


def refused(uri: str, timeout: float = 5, **options: Any) -> str:
    """The error a query over ``uri`` fails with (the test fails if it succeeds)."""
    with pytest.raises(flight.FlightError) as failure:
        flight_answer(uri, timeout=timeout, **options)
    return str(failure.value)


def localhost(server: Server) -> str:
    return f"grpc+tls://localhost:{server.port}"


def test_pyarrow_flight_queries_over_tls_by_address_and_by_name(tls_server, pki):
    assert flight_answer(tls_server.uri, **client_options(pki)) == 42
    assert flight_answer(localhost(tls_server), **client_options(pki)) == 42


def adbc_rows(uri: str, **client_options: str) -> list[tuple[Any, ...]]:
    """QUERY's rows through ADBC, with ``adbc.flight.sql.client_option.*`` settings."""
    db_kwargs = {f"adbc.flight.sql.client_option.{k}": v for k, v in client_options.items()}
    with flightsql.connect(uri, db_kwargs=db_kwargs) as conn, conn.cursor() as cur:
        cur.execute(QUERY)
        return list(cur.fetchall())


def test_adbc_queries_over_tls(tls_server, pki):
    assert adbc_rows(tls_server.uri, tls_root_certs=pki.ca.read_text()) == [(42,)]


def test_the_flightbear_client_queries_over_tls(tls_server, pki):
    flightbear = pytest.importorskip("flightbear")
    for roots in (pki.ca, str(pki.ca), pki.ca.read_bytes(), pki.ca.read_text()):
        with flightbear.connect(tls_server.uri, tls_root_certs=roots, timeout=10) as conn:
            assert conn.sql(QUERY).to_arrow_table().column("answer").to_pylist() == [42]


def healthcheck(address: str, *options: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(server_binary()), "healthcheck", "--addr", address, "--timeout", "10"]
    return subprocess.run(
        [*command, *map(str, options)], capture_output=True, text=True, timeout=30
    )


def test_healthcheck_speaks_tls_to_https_addresses(tls_server, pki):
    for host in ("127.0.0.1", "localhost"):
        done = healthcheck(f"https://{host}:{tls_server.port}", "--tls-ca", pki.ca)
        assert (done.returncode, done.stdout.strip()) == (0, "SERVING"), done.stderr
    plaintext = healthcheck(f"http://127.0.0.1:{tls_server.port}")
    assert plaintext.returncode == 1
    assert "use https://" in plaintext.stderr, plaintext.stderr
    untrusted = healthcheck(f"https://127.0.0.1:{tls_server.port}", "--tls-ca", pki.other_ca)
    assert untrusted.returncode == 1
    assert "certificate" in untrusted.stderr.lower(), untrusted.stderr


def test_healthcheck_presents_a_client_certificate_to_a_mutual_tls_server(mtls_server, pki):
    address = f"https://127.0.0.1:{mtls_server.port}"
    with_cert = healthcheck(
        address, "--tls-ca", pki.ca, "--tls-cert", pki.client.cert, "--tls-key", pki.client.key
    )
    assert (with_cert.returncode, with_cert.stdout.strip()) == (0, "SERVING"), with_cert.stderr
    assert healthcheck(address, "--tls-ca", pki.ca).returncode == 1


def test_a_plaintext_client_is_refused_and_the_server_keeps_serving(tls_server, pki):
    plaintext_uri = f"grpc://127.0.0.1:{tls_server.port}"
    for _ in range(3):
        refused(plaintext_uri)
    # What a plaintext HTTP/2 client sends is not a TLS record: the server hangs up at once,
    # without a word of HTTP/2, instead of holding the connection until a timeout.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=PATIENCE) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        assert time.monotonic() - started < IDLE
        assert b"HTTP" not in received
    assert tls_server.alive()
    assert flight_answer(tls_server.uri, **client_options(pki)) == 42


def test_the_flightbear_client_says_to_use_tls_against_a_tls_server(tls_server):
    flightbear = pytest.importorskip("flightbear")
    with pytest.raises(flightbear.FlightConnectionError, match="grpc\\+tls://"):
        with flightbear.connect(f"grpc://127.0.0.1:{tls_server.port}", timeout=10) as conn:
            conn.sql(QUERY).to_arrow_table()


def test_a_silent_socket_is_closed_at_the_handshake_timeout(tls_server):
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=PATIENCE) as sock:
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert IDLE - 0.5 <= time.monotonic() - started < PATIENCE


def squat(port: int) -> socket.socket:
    """A socket that holds a connection slot and never says a word."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        sock.settimeout(0.5)
        try:
            # Refused (the slot is still taken by an earlier connection): closed at once.
            sock.recv(1)
        except TimeoutError:
            sock.settimeout(PATIENCE)
            return sock
        sock.close()
        time.sleep(0.2)
    pytest.fail("no free connection slot")


def test_tls_connections_count_against_the_connection_cap(pki, tmp_path):
    idle = 6
    args = [*tls_args(pki), "--idle-timeout", str(idle), "--keepalive-interval", "1"]
    with Server(
        [*args, "--max-connections", "1"], tmp_path / "server.log", client_tls=client_options(pki)
    ) as server:
        with squat(server.port) as squatter:
            started = time.monotonic()
            refused(server.uri, timeout=2, **client_options(pki))
            assert time.monotonic() - started < idle, "the refusal waited for the squatter"
            # The squatter never starts a handshake: it is closed, and its slot freed.
            assert squatter.recv(4096) == b""
        assert flight_answer(server.uri, **client_options(pki)) == 42


def test_a_client_trusting_another_ca_is_refused(tls_server, pki):
    error = refused(tls_server.uri, tls_root_certs=pki.other_ca.read_bytes())
    assert "certificate" in error.lower() or "handshake" in error.lower(), error
    with pytest.raises(flightsql.Error):
        adbc_rows(tls_server.uri, tls_root_certs=pki.other_ca.read_text())


def test_mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca(mtls_server, pki):
    refused(mtls_server.uri, **client_options(pki))
    refused(mtls_server.uri, **client_options(pki, pki.other_client))
    assert mtls_server.alive()


def test_mutual_tls_serves_clients_with_a_good_certificate(mtls_server, pki):
    assert flight_answer(mtls_server.uri, **client_options(pki, pki.client)) == 42
    rows = adbc_rows(
        mtls_server.uri,
        tls_root_certs=pki.ca.read_text(),
        mtls_cert_chain=pki.client.cert.read_text(),
        mtls_private_key=pki.client.key.read_text(),
    )
    assert rows == [(42,)]


def test_the_flightbear_client_presents_its_certificate(mtls_server, pki):
    flightbear = pytest.importorskip("flightbear")
    with flightbear.connect(
        mtls_server.uri,
        tls_root_certs=pki.ca,
        tls_cert_chain=pki.client.cert,
        tls_private_key=pki.client.key,
        timeout=10,
    ) as conn:
        assert conn.sql(QUERY).to_arrow_table().column("answer").to_pylist() == [42]
    with pytest.raises(flightbear.Error):
        with flightbear.connect(mtls_server.uri, tls_root_certs=pki.ca, timeout=10) as conn:
            conn.sql(QUERY).to_arrow_table()


def serve_error(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(server_binary()), "serve", "--bind", "127.0.0.1:0", "--no-sample-data"]
    done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stderr
    return done


def test_start_fails_naming_a_missing_key_file(pki, tmp_path):
    missing = tmp_path / "missing.key"
    done = serve_error("--tls-cert", pki.server.cert, "--tls-key", missing)
    assert str(missing) in done.stderr and "private key" in done.stderr, done.stderr


def test_start_fails_naming_a_file_that_is_not_pem(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    done = serve_error("--tls-cert", garbage, "--tls-key", pki.server.key)
    assert str(garbage) in done.stderr and "PEM" in done.stderr, done.stderr
    done = serve_error("--tls-cert", pki.server.cert, "--tls-key", pki.server.cert)
    assert str(pki.server.cert) in done.stderr and "private key" in done.stderr, done.stderr


def test_start_fails_with_a_key_that_does_not_match_the_certificate(pki):
    done = serve_error("--tls-cert", pki.server.cert, "--tls-key", pki.client.key)
    assert str(pki.server.cert) in done.stderr and str(pki.client.key) in done.stderr, done.stderr


def test_start_fails_with_a_certificate_but_no_key(pki):
    done = serve_error("--tls-cert", pki.server.cert)
    assert "tls_key" in done.stderr, done.stderr
