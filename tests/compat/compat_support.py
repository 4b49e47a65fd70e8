"""The compatibility suite's data: generated files, each table's expectation, the server flags.

``build_dataset`` writes FASTA / CSV / TSV files with a seeded RNG and computes what every served
table must answer with the independent oracles of ``flightbear_testing`` (a plain-Python FASTA
reader, Python's csv module). Nothing here shares code with the server.
"""

from __future__ import annotations

import csv
import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from flightbear_testing import (
    FastaRecord,
    fasta_text,
    make_records,
    random_bases,
    read_delimited,
    read_fasta,
    write_samples_csv,
)

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
    write_samples_csv(samples, rng, 300)

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


# --- protobuf by hand, for messages the clients under test do not build -------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload
