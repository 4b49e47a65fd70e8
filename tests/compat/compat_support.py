"""Support for the compatibility suite: oracles, generated data, the real server.

The helpers generate FASTA / CSV / TSV files with a seeded RNG, start the server binary on a free
loopback port and hand the tests the URI together with an *independent* expectation of every
table: a tiny FASTA reader written here and Python's csv module. Nothing here shares code with the
server.

The binary is found through ``FLIGHTBEAR_BIN``, else ``$CARGO_TARGET_DIR/release/flightbear``,
else ``<repo>/target/release/flightbear`` (build it with ``cargo build --release``).
"""

from __future__ import annotations

import csv
import gzip
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------
# Independent oracles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastaRecord:
    id: str
    description: str | None
    sequence: str

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "description": self.description, "sequence": self.sequence}


def read_fasta(path: Path) -> list[FastaRecord]:
    """The obvious FASTA reader: '>' starts a header, other non-blank lines are joined.

    Gzip files (including several concatenated members) are read through ``gzip.open``.
    """
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    records: list[FastaRecord] = []
    header: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if header is None:
            return
        parts = header.split(None, 1)
        name = parts[0] if parts else ""
        description = parts[1].strip() if len(parts) > 1 else ""
        records.append(FastaRecord(name, description or None, "".join(lines)))

    with opener(path, "rt", encoding="ascii", newline="") as handle:
        for raw in handle:
            line = raw.rstrip("\r\n")
            if line.startswith(">"):
                flush()
                header, lines = line[1:], []
            elif line.strip():
                lines.append(line.strip())
    flush()
    return records


def read_delimited(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


FASTA_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("description", pa.string(), nullable=True),
        pa.field("sequence", pa.string(), nullable=False),
    ]
)


def rows_by(table: pa.Table, key: str = "id") -> list[dict[str, Any]]:
    """Rows of an Arrow table as dicts, sorted by ``key`` (result order is not guaranteed)."""
    return sorted(table.to_pylist(), key=lambda row: row[key])


def gc_count(sequence: str) -> int:
    return sum(1 for base in sequence.upper() if base in "GC")


# ---------------------------------------------------------------------------------------------
# Generated data (seeded: every run sees the same files)
# ---------------------------------------------------------------------------------------------

WORDS = ["alpha", "beta", "gamma", "kinase", "putative", "chromosome", "plasmid", "X", "17", "a,b"]
_BASES = bytes(b"ACGT"[i % 4] for i in range(256))


def random_bases(rng: random.Random, length: int, alphabet: str = "ACGT") -> str:
    if alphabet == "ACGT":
        return rng.randbytes(length).translate(_BASES).decode("ascii")
    return "".join(rng.choices(alphabet, k=length))


def fasta_text(
    records: Sequence[FastaRecord],
    rng: random.Random,
    newline: str = "\n",
    blank_lines: bool = False,
) -> str:
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


def make_records(
    rng: random.Random, prefix: str, count: int, max_len: int, empty_every: int = 0
) -> list[FastaRecord]:
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


@dataclass
class Dataset:
    """The generated files and, for every served table, what the server must answer."""

    root: Path
    fasta: dict[str, list[FastaRecord]] = field(default_factory=dict)
    delimited: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    @property
    def table_names(self) -> set[str]:
        return set(self.fasta) | set(self.delimited)


def build_dataset(root: Path) -> Dataset:
    rng = random.Random(20240607)
    data = Dataset(root)

    # reads: LF, multi-line, IUPAC/lower case, no-description headers, empty sequences.
    reads = root / "reads.fa"
    reads.write_text(fasta_text(make_records(rng, "read", 3000, 700, empty_every=97), rng))

    # crlf: CRLF line ends and blank lines between records.
    crlf = root / "crlf.fasta"
    crlf.write_bytes(
        fasta_text(make_records(rng, "crlf", 400, 300, empty_every=13), rng, "\r\n", True).encode()
    )

    # packed: two gzip members concatenated (`cat a.gz b.gz`).
    packed = root / "packed.fa.gz"
    part1 = fasta_text(make_records(rng, "gzA", 600, 400), rng)
    part2 = fasta_text(make_records(rng, "gzB", 600, 400, empty_every=50), rng)
    packed.write_bytes(gzip.compress(part1.encode()) + gzip.compress(part2.encode()))

    # shards: a directory of FASTA files (one of them gzipped) read as one table.
    shards = root / "shards"
    shards.mkdir()
    for n in range(3):
        text = fasta_text(make_records(rng, f"sh{n}_", 150, 500), rng)
        if n == 2:
            (shards / f"part{n}.fna.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (shards / f"part{n}.fna").write_text(text)

    # big_record: one record far above gRPC's customary 4 MiB message size, plus small ones.
    big = root / "big_record.fa"
    big_records = [FastaRecord("chrBig", "one large record", random_bases(rng, 5_000_000))]
    big_records += make_records(rng, "small", 5, 100)
    big.write_text(fasta_text(big_records, rng))

    # Files above DataFusion's 10 MiB repartitioning threshold are scanned as several byte
    # ranges (the shared server runs with --target-partitions 4). "tiled" has records of one
    # fixed length, 40000 of them, so every range boundary falls exactly on a '>'; "ranged"
    # has records of random lengths, so boundaries fall anywhere in headers and sequences.
    tiled = root / "tiled.fa"
    with open(tiled, "w", newline="") as out:
        for i in range(40_000):
            bases = random_bases(rng, 280)
            lines = "\n".join(bases[start : start + 70] for start in range(0, 280, 70))
            out.write(f">tile{i:06d} fixed width\n{lines}\n")
    ranged = root / "ranged.fa"
    ranged.write_text(fasta_text(make_records(rng, "rng", 24_000, 1000, empty_every=501), rng))

    # MixedCase table name, forced FASTA format on a file with a non-FASTA extension.
    odd = root / "proteins.txt"
    odd.write_text(
        fasta_text(
            [
                FastaRecord(
                    f"P{i:05d}", f"protein {i}", random_bases(rng, 40, "ACDEFGHIKLMNPQRSTVWY")
                )
                for i in range(30)
            ],
            rng,
        )
    )

    # samples.csv: quoted fields with commas, integers, floats.
    samples = root / "samples.csv"
    species = ["E. coli", "S. aureus", "H. sapiens, cell line", 'B. "subtilis"']
    with open(samples, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sample_id", "species", "read_count", "score"])
        for i in range(300):
            writer.writerow(
                [f"S{i:04d}", rng.choice(species), rng.randint(0, 10**9), f"{rng.random():.6f}"]
            )

    # The same sample sheet, gzipped (.csv.gz is decompressed on the fly).
    samples_gz = root / "samples_gz.csv.gz"
    samples_gz.write_bytes(gzip.compress(samples.read_bytes()))

    # runs.tsv: joins to samples.
    runs = root / "runs.tsv"
    with open(runs, "w", newline="") as out:
        writer = csv.writer(out, delimiter="\t")
        writer.writerow(["run_id", "sample_id", "bases"])
        for i in range(1000):
            writer.writerow([f"R{i:05d}", f"S{rng.randrange(300):04d}", rng.randint(1, 10**6)])

    data.files = {
        "reads": reads,
        "crlf": crlf,
        "packed": packed,
        "shards": shards,
        "big_record": big,
        "proteins": odd,
        "tiled": tiled,
        "ranged": ranged,
        "samples": samples,
        "samples_gz": samples_gz,
        "runs": runs,
    }
    data.fasta = {
        "reads": read_fasta(reads),
        "crlf": read_fasta(crlf),
        "packed": read_fasta(packed),
        "shards": [r for p in sorted(shards.iterdir()) for r in read_fasta(p)],
        "big_record": read_fasta(big),
        "mixedcase": read_fasta(odd),
        "tiled": read_fasta(tiled),
        "ranged": read_fasta(ranged),
    }
    data.delimited = {
        "samples": read_delimited(samples),
        "samples_gz": read_delimited(samples),
        "runs": read_delimited(runs, "\t"),
    }
    data.args = [
        "--table", f"reads={reads}",
        "--table", f"crlf={crlf}",
        "--table", f"packed={packed}",
        "--table", f"shards={shards}",
        "--table", f"big_record={big}",
        "--fasta", f"MixedCase={odd}",
        "--table", f"tiled={tiled}",
        "--table", f"ranged={ranged}",
        "--table", f"samples={samples}",
        "--table", f"samples_gz={samples_gz}",
        "--table", f"runs={runs}",
    ]  # fmt: skip
    return data


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


class Server:
    """One flightbear process on a free loopback port; its log goes to a file."""

    def __init__(self, args: Sequence[str], log_path: Path, rust_log: str = "warn") -> None:
        self.args = list(args)
        self.log_path = log_path
        for _attempt in range(3):  # another process may grab the port between probe and bind
            self.port = free_port()
            self.uri = f"grpc://127.0.0.1:{self.port}"
            self._log = open(log_path, "wb")
            command = [
                str(server_binary()),
                "serve",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--no-sample-data",
                *self.args,
            ]
            env = {**os.environ, "RUST_LOG": rust_log}
            env = {k: v for k, v in env.items() if not k.startswith("FLIGHTBEAR_")}
            self.process = subprocess.Popen(
                command, stdout=self._log, stderr=subprocess.STDOUT, env=env
            )
            if self._wait_until_serving():
                return
            self._log.close()
        pytest.fail(f"flightbear did not start:\n{self.log()}")

    def _wait_until_serving(self, limit: float = 60.0) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "in use" in self.log().lower():
                    return False
                pytest.fail(f"flightbear exited early ({self.process.returncode}):\n{self.log()}")
            try:
                client = flight.FlightClient(self.uri)
                try:
                    list(client.list_flights())
                finally:
                    client.close()
                return True
            except flight.FlightError:
                time.sleep(0.05)
        self.kill()
        pytest.fail(f"flightbear did not start within {limit} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-8000:]

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
        if self.process.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self._log.closed:
            self._log.close()
