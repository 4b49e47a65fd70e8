"""grpc+tls:// against a TLS Flight server with a self-signed certificate."""

from __future__ import annotations

import shutil
import subprocess

import pyarrow.flight as flight
import pytest

import flightbear
from fake_flight import ScriptedServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, bytes]:
    """A test CA and a localhost certificate it signed: (CA cert, server cert, server key)."""
    root = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = root / "ca.key", root / "ca.pem"
    key, csr, cert, ext = root / "key.pem", root / "req.csr", root / "cert.pem", root / "ext.cnf"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", str(ca_key), "-out", str(ca_cert),
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    ext.write_text(
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return ca_cert.read_bytes(), cert.read_bytes(), key.read_bytes()


@pytest.fixture
def tls_server(certificate):
    _, cert, key = certificate
    server = ScriptedServer(tls_certificates=[flight.CertKeyPair(cert, key)], tls=True)
    yield server
    server.shutdown()


def test_tls_with_the_servers_root_certificate_works(tls_server, certificate):
    ca, _, _ = certificate
    for roots in (ca, ca.decode()):
        with flightbear.connect(
            f"grpc+tls://localhost:{tls_server.port}", tls_root_certs=roots
        ) as conn:
            assert conn.sql("q").to_arrow_table().column("x").to_pylist() == [1, 2, 3]


def test_tls_with_an_untrusted_certificate_is_a_connection_error(tls_server):
    with pytest.raises(flightbear.FlightConnectionError):
        flightbear.connect(f"grpc+tls://localhost:{tls_server.port}", timeout=5).sql("q")
