"""grpc+tls:// against a TLS Flight server (pyarrow's), with certificates made by openssl:
server verification with ``tls_root_certs``, and mutual TLS with ``tls_cert_chain`` and
``tls_private_key``, each given as PEM text, PEM bytes or a file path."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.flight as flight
import pytest
from flightbear_testing import Pki, make_test_pki

import flightbear
from fake_flight import ScriptedServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("tls"))


def server_identity(pki: Pki) -> list[flight.CertKeyPair]:
    return [flight.CertKeyPair(pki.server.cert.read_bytes(), pki.server.key.read_bytes())]


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[ScriptedServer]:
    server = ScriptedServer(tls_certificates=server_identity(pki), tls=True)
    yield server
    server.shutdown()


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[ScriptedServer]:
    server = ScriptedServer(
        tls_certificates=server_identity(pki),
        verify_client=True,
        root_certificates=pki.ca.read_bytes(),
        tls=True,
    )
    yield server
    server.shutdown()


def pem_forms(path: Path) -> list[str | bytes | Path]:
    """The ways a PEM file can be given: its path (str or Path), its text and its bytes."""
    return [path, str(path), path.read_text(), path.read_bytes()]


def query(uri: str, **options) -> list[int]:
    with flightbear.connect(uri, timeout=10, **options) as conn:
        return conn.sql("q").to_arrow_table().column("x").to_pylist()


def test_tls_with_the_servers_root_certificate_works(tls_server, pki):
    for roots in pem_forms(pki.ca):
        assert query(f"grpc+tls://localhost:{tls_server.port}", tls_root_certs=roots) == [1, 2, 3]


def test_tls_with_an_untrusted_certificate_is_a_connection_error(tls_server, pki):
    uri = f"grpc+tls://localhost:{tls_server.port}"
    with pytest.raises(flightbear.FlightConnectionError):
        query(uri)
    with pytest.raises(flightbear.FlightConnectionError):
        query(uri, tls_root_certs=pki.other_ca)


def test_mutual_tls_with_a_client_certificate_works(mtls_server, pki):
    uri = f"grpc+tls://localhost:{mtls_server.port}"
    for cert, key in zip(pem_forms(pki.client.cert), pem_forms(pki.client.key)):
        assert query(uri, tls_root_certs=pki.ca, tls_cert_chain=cert, tls_private_key=key) == [
            1,
            2,
            3,
        ]


def test_mutual_tls_without_a_good_client_certificate_is_refused(mtls_server, pki):
    uri = f"grpc+tls://localhost:{mtls_server.port}"
    with pytest.raises(flightbear.Error):
        query(uri, tls_root_certs=pki.ca)
    with pytest.raises(flightbear.Error):
        query(
            uri,
            tls_root_certs=pki.ca,
            tls_cert_chain=pki.other_client.cert,
            tls_private_key=pki.other_client.key,
        )


def test_tls_options_are_checked_before_connecting(pki, tmp_path):
    with pytest.raises(ValueError, match="grpc\\+tls://"):
        flightbear.connect("grpc://localhost:1", tls_root_certs=pki.ca)
    with pytest.raises(ValueError, match="go together"):
        flightbear.connect("grpc+tls://localhost:1", tls_cert_chain=pki.client.cert)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=r"missing\.pem"):
        flightbear.connect("grpc+tls://localhost:1", tls_root_certs=missing)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ValueError, match="no PEM block"):
        flightbear.connect("grpc+tls://localhost:1", tls_root_certs=not_pem)
    with pytest.raises(TypeError, match="tls_private_key"):
        flightbear.connect(
            "grpc+tls://localhost:1", tls_cert_chain=pki.client.cert, tls_private_key=42
        )
