"""Python test support shared by tests/compat, client-py/tests and client-py/bench.

- The real server: ``server_binary()`` finds it, ``Server`` runs it on a free loopback port.
- Independent oracles: ``read_fasta`` (plain Python, the README's FASTA rules) and the csv module.
- Seeded data generators for FASTA and CSV files.

Nothing here shares code with the server, and nothing needs the flightbear wheel: the
compatibility suite runs with pyarrow alone. The binary is ``FLIGHTBEAR_BIN``, else
``$CARGO_TARGET_DIR/release/flightbear``, else ``<repo>/target/release/flightbear``.
"""

from __future__ import annotations

import csv
import gzip
import os
import random
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow.flight as flight

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------
# The real server
# ---------------------------------------------------------------------------------------------


class ServerError(RuntimeError):
    """The server binary is missing, or the server did not start."""


def server_binary() -> Path:
    candidates = []
    if os.environ.get("FLIGHTBEAR_BIN"):
        candidates.append(Path(os.environ["FLIGHTBEAR_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "flightbear")
    candidates.append(REPO / "target" / "release" / "flightbear")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError(
        "flightbear server binary not found (tried "
        + ", ".join(map(str, candidates))
        + "); run `cargo build --release` or set FLIGHTBEAR_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One flightbear process on a free loopback port; its output goes to ``log_path``.

    ``args`` follow ``flightbear serve --bind ...``. The built-in sample tables are left out
    unless ``sample_data`` is true; ``FLIGHTBEAR_*`` variables are not passed on, so the
    environment cannot change the configuration under test. Also a context manager (stops it).
    ``client_tls`` (pyarrow.flight.FlightClient TLS arguments: ``tls_root_certs``, ``cert_chain``,
    ``private_key``) is for a server started with ``--tls-cert``: ``uri`` is then ``grpc+tls://``.
    """

    # Another process may take the port between the probe and the server's bind.
    START_ATTEMPTS = 3
    LOG_TAIL = 8000

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        *,
        rust_log: str | None = None,
        sample_data: bool = False,
        start_timeout: float = 60.0,
        client_tls: dict[str, bytes] | None = None,
    ) -> None:
        self.args = list(args)
        self.client_tls = client_tls or {}
        scheme = "grpc+tls" if client_tls is not None else "grpc"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLIGHTBEAR_")}
        env["RUST_LOG"] = rust_log or os.environ.get("RUST_LOG", "warn")
        for _attempt in range(self.START_ATTEMPTS):
            self.port = free_port()
            self.uri = f"{scheme}://127.0.0.1:{self.port}"
            command = [str(server_binary()), "serve", "--bind", f"127.0.0.1:{self.port}"]
            if not sample_data:
                command.append("--no-sample-data")
            self.command = [*command, *self.args]
            self._log = open(log_path, "wb")  # closed by stop()
            self.process = subprocess.Popen(
                self.command, stdout=self._log, stderr=subprocess.STDOUT, env=env
            )
            if self._wait_until_serving(start_timeout):
                return
            self._log.close()
        raise ServerError(
            f"flightbear found no free port in {self.START_ATTEMPTS} attempts:\n{self.log()}"
        )

    def _wait_until_serving(self, timeout: float) -> bool:
        """True once it answers ListFlights; False when the port was taken; raises otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "in use" in self.log().lower():
                    return False
                self._log.close()
                raise ServerError(
                    f"flightbear exited early ({self.process.returncode}):\n{self.log()}"
                )
            if self._answers():
                return True
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"flightbear did not start within {timeout} s:\n{self.log()}")

    def _answers(self) -> bool:
        client = flight.FlightClient(self.uri, **self.client_tls)
        try:
            list(client.list_flights(options=flight.FlightCallOptions(timeout=2)))
            return True
        except flight.FlightUnauthenticatedError:
            # A server with a users file answers, by asking for credentials.
            return True
        except flight.FlightError:
            return False
        finally:
            client.close()

    def log(self) -> str:
        """The end of the server's output so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-self.LOG_TAIL :]

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float) -> int:
        """SIGTERM, then the exit code (raises subprocess.TimeoutExpired when it hangs)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Graceful shutdown, SIGKILL when it takes too long; idempotent."""
        if self.process.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# TLS certificates (made with the openssl command, valid for a day)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertKey:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for localhost and 127.0.0.1 and a client certificate it
    signed, and an unrelated CA with a client certificate of its own."""

    ca: Path
    server: CertKey
    client: CertKey
    other_ca: Path
    other_client: CertKey


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _make_ca(root: Path, name: str) -> CertKey:
    ca = CertKey(root / f"{name}.pem", root / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", f"/CN=flightbear test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", ca.key, "-out", ca.cert,
    )  # fmt: skip
    return ca


def _sign(root: Path, name: str, ca: CertKey, extensions: str) -> CertKey:
    signed = CertKey(root / f"{name}.pem", root / f"{name}.key")
    csr, ext = root / f"{name}.csr", root / f"{name}.ext"
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={name}", "-keyout", signed.key, "-out", csr,
    )  # fmt: skip
    ext.write_text(f"basicConstraints=CA:FALSE\n{extensions}\n")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-days", "1", "-extfile", ext, "-out", signed.cert,
    )  # fmt: skip
    return signed


def make_test_pki(root: Path) -> Pki:
    """Writes the certificates and keys of a ``Pki`` (PEM) into ``root``."""
    ca = _make_ca(root, "ca")
    other_ca = _make_ca(root, "other-ca")
    client_extensions = "extendedKeyUsage=clientAuth"
    return Pki(
        ca=ca.cert,
        server=_sign(
            root,
            "server",
            ca,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        client=_sign(root, "client", ca, client_extensions),
        other_ca=other_ca.cert,
        other_client=_sign(root, "other-client", other_ca, client_extensions),
    )


# ---------------------------------------------------------------------------------------------
# Prometheus metrics (``--metrics-bind``)
# ---------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_key(name: str, **labels: str) -> str:
    """A sample's key in ``parse_metrics``' result: ``name{a="1",b="2"}``, labels sorted."""
    if not labels:
        return name
    inner = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
    return f"{name}{{{inner}}}"


def parse_metrics(text: str) -> dict[str, float]:
    """The samples of a Prometheus text page (format 0.0.4), keyed by ``metric_key``.

    Raises ValueError on a line that is neither a comment nor a sample, or on a sample whose
    metric family has no ``# HELP`` and ``# TYPE`` line before it.
    """
    samples: dict[str, float] = {}
    described: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                described.setdefault(parts[2], set()).add(parts[1])
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a Prometheus sample: {line!r}")
        name, labels, value = match.groups()
        # A histogram's samples are its family's name plus _bucket, _sum or _count.
        family = name if name in described else name.rsplit("_", 1)[0]
        if described.get(family) != {"HELP", "TYPE"}:
            raise ValueError(f"no HELP and TYPE before {line!r}")
        pairs = dict(_LABEL.findall(labels or ""))
        samples[metric_key(name, **pairs)] = float(value)
    return samples


def scrape_metrics(address: str, path: str = "/metrics", timeout: float = 10.0) -> dict[str, float]:
    """GET ``http://address/path`` and parse it with ``parse_metrics``."""
    with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as response:
        return parse_metrics(response.read().decode())


# ---------------------------------------------------------------------------------------------
# Independent oracles
# ---------------------------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
# What the README's "trimmed" removes: ASCII whitespace (Rust's `trim_ascii`; no vertical tab).
ASCII_WHITESPACE = " \t\n\f\r"


@dataclass(frozen=True)
class FastaRecord:
    id: str
    description: str | None
    sequence: str

    def row(self) -> dict[str, Any]:
        """The record as a result row: {"id", "description", "sequence"}."""
        return {"id": self.id, "description": self.description, "sequence": self.sequence}


def split_header(header: str) -> tuple[str, str | None]:
    """The README's header rule, for a header without its '>'.

    ``id`` is the text up to the first space or tab; ``description`` is the rest, trimmed of
    ASCII whitespace, and None when nothing is left.
    """
    end = next((i for i, char in enumerate(header) if char in " \t"), len(header))
    description = header[end:].strip(ASCII_WHITESPACE)
    return header[:end], description or None


def parse_fasta(text: str) -> list[FastaRecord]:
    """FASTA text in its plainest reading, for valid input.

    Lines end at LF, with one CR before it dropped (CRLF); a line starting with '>' is a header
    (a name must follow the '>' directly, as flightbear requires); empty lines are skipped; every
    other line is sequence, appended as it is.
    """
    records: list[FastaRecord] = []
    header: str | None = None
    lines: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith(">"):
            if line[1:2] in ("", " ", "\t"):
                raise ValueError(f"line {number}: header line has no name")
            if header is not None:
                records.append(FastaRecord(*split_header(header), "".join(lines)))
            header, lines = line[1:], []
        elif not line:
            continue
        elif header is None:
            raise ValueError(f"line {number}: sequence before the first header")
        else:
            lines.append(line)
    if header is not None:
        records.append(FastaRecord(*split_header(header), "".join(lines)))
    return records


def read_fasta(path: Path) -> list[FastaRecord]:
    """The records of a FASTA file; gzip (every member, so BGZF too) is recognised by magic."""
    data = Path(path).read_bytes()
    if data[:2] == GZIP_MAGIC:
        data = gzip.decompress(data)  # all members, like zcat
    return parse_fasta(data.decode("utf-8"))


def read_delimited(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """The rows of a CSV/TSV file with a header line, by Python's csv module."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


# ---------------------------------------------------------------------------------------------
# Generated data (seeded: the same rng gives the same files)
# ---------------------------------------------------------------------------------------------

WORDS = ["alpha", "beta", "gamma", "kinase", "putative", "chromosome", "plasmid", "X", "17", "a,b"]
SPECIES = ["E. coli", "S. aureus", "H. sapiens, cell line", 'B. "subtilis"']
_BASES = bytes(b"ACGT"[i % 4] for i in range(256))


def random_bases(rng: random.Random, length: int, alphabet: str = "ACGT") -> str:
    if alphabet == "ACGT":
        return rng.randbytes(length).translate(_BASES).decode("ascii")
    return "".join(rng.choices(alphabet, k=length))


def make_records(
    rng: random.Random, prefix: str, count: int, max_len: int, empty_every: int = 0
) -> list[FastaRecord]:
    """Records ``<prefix>000000``...: 70% described, every 11th IUPAC/lower case."""
    records = []
    for i in range(count):
        described = rng.random() < 0.7
        description = (
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) if described else None
        )
        if empty_every and i % empty_every == 0:
            sequence = ""
        elif i % 11 == 0:
            sequence = random_bases(rng, rng.randint(1, max_len), "acgtnRYKMSWN")
        else:
            sequence = random_bases(rng, rng.randint(1, max_len))
        records.append(FastaRecord(f"{prefix}{i:06d}", description, sequence))
    return records


def fasta_text(
    records: Sequence[FastaRecord],
    rng: random.Random,
    newline: str = "\n",
    blank_lines: bool = False,
) -> str:
    """FASTA text of ``records`` with varied line widths; ``read_fasta`` gives them back."""
    out: list[str] = []
    for record in records:
        header = record.id if record.description is None else f"{record.id} {record.description}"
        # Some headers get a tab or extra spaces between id and description, or trailing blanks.
        if record.description is not None and rng.random() < 0.1:
            header = f"{record.id}\t  {record.description}  "
        out.append(f">{header}{newline}")
        width = rng.choice([50, 60, 61, 70, 80])
        for start in range(0, len(record.sequence), width):
            out.append(record.sequence[start : start + width] + newline)
        if blank_lines and rng.random() < 0.2:
            out.append(newline)
    return "".join(out)


def write_samples_csv(path: Path, rng: random.Random, count: int) -> None:
    """A sample sheet: sample_id, species (quoted commas and quotes), read_count, score."""
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sample_id", "species", "read_count", "score"])
        for i in range(count):
            writer.writerow(
                [f"S{i:04d}", rng.choice(SPECIES), rng.randint(0, 10**9), f"{rng.random():.6f}"]
            )
