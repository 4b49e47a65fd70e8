"""Test support: independent oracles, generated data, and the real server as a subprocess.

The real server is found through ``FLIGHTBEAR_BIN``, else ``$CARGO_TARGET_DIR/release/flightbear``,
else ``<repo>/target/release/flightbear``; it is started on a free port and killed at the end.
"""

from __future__ import annotations

import csv
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import flightbear

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------
# Independent oracles: a tiny FASTA reader and the csv module, sharing no code with the server.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastaRecord:
    id: str
    description: str | None
    sequence: str


def read_fasta(path: Path) -> list[FastaRecord]:
    """Reads FASTA the obvious way: headers start with '>', sequence lines are concatenated."""
    records: list[FastaRecord] = []
    header: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if header is None:
            return
        name, _, description = header.strip().partition(" ")
        records.append(FastaRecord(name, description.strip() or None, "".join(lines)))

    with open(path, encoding="ascii", newline="") as handle:
        for raw in handle:
            line = raw.rstrip("\r\n")
            if line.startswith(">"):
                flush()
                header, lines = line[1:], []
            elif line.strip():
                lines.append(line.strip())
    flush()
    return records


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# Generated data
# ---------------------------------------------------------------------------------------------

WORDS = ["alpha", "beta", "gamma", "kinase", "putative", "chromosome", "plasmid", "X", "17"]


def write_fasta(path: Path, count: int, seed: int, max_len: int = 900) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="ascii", newline="") as out:
        for i in range(count):
            described = rng.random() < 0.7
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            out.write(f">seq{i:06d} {words}\n" if described else f">seq{i:06d}\n")
            alphabet = "ACGT" if i % 7 else "acgtnRYKM"
            sequence = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len)))
            width = rng.choice([60, 70, 80])
            for start in range(0, len(sequence), width):
                out.write(sequence[start : start + width] + "\n")


def write_csv(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sample_id", "species", "read_count", "score"])
        for i in range(count):
            species = rng.choice(["E. coli", "S. aureus", "H. sapiens, cell line"])
            writer.writerow([f"S{i:04d}", species, rng.randint(0, 10**9), f"{rng.random():.6f}"])


@dataclass(frozen=True)
class DataFiles:
    fasta: Path
    csv: Path
    big_record_fasta: Path


# ---------------------------------------------------------------------------------------------
# The real server
# ---------------------------------------------------------------------------------------------


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
    pytest.fail(
        "flightbear server binary not found (tried "
        + ", ".join(map(str, candidates))
        + "); run `cargo build --release` or set FLIGHTBEAR_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """A flightbear server process on a free loopback port."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.uri = f"grpc://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        command = [str(server_binary()), "serve", "--bind", f"127.0.0.1:{self.port}", *args]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self._wait_until_serving()

    def _wait_until_serving(self, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"flightbear server exited early:\n{self.log()}")
            try:
                with flightbear.connect(self.uri, timeout=2) as conn:
                    conn.tables()
                return
            except flightbear.Error:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"flightbear server did not start within {limit} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
