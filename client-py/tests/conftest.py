"""Fixtures: generated FASTA/CSV files and the real flightbear server on a free port."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The shared test support (tests/support/flightbear_testing.py) is a plain module on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))

from flightbear_testing import (
    FastaRecord,
    Server,
    fasta_text,
    make_records,
    random_bases,
    write_samples_csv,
)

import flightbear


@dataclass(frozen=True)
class DataFiles:
    fasta: Path
    csv: Path
    big_record_fasta: Path


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> DataFiles:
    root = tmp_path_factory.mktemp("data")
    files = DataFiles(root / "reads.fa", root / "samples.csv", root / "big_record.fa")
    rng = random.Random(7)
    files.fasta.write_text(fasta_text(make_records(rng, "seq", 3000, 900), rng))
    write_samples_csv(files.csv, rng, 500)
    # One 6 Mbase record: its batch is far above gRPC's usual 4 MiB message limit.
    big = FastaRecord("chrBig", "a single large record", random_bases(rng, 6_000_000))
    files.big_record_fasta.write_text(fasta_text([big], rng))
    return files


@pytest.fixture(scope="session")
def server(data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with Server(
        [
            "--fasta",
            f"reads={data_files.fasta}",
            "--csv",
            f"samples={data_files.csv}",
            "--fasta",
            f"big_record={data_files.big_record_fasta}",
            "--batch-rows",
            "1000",
            # Clients may register the files the tests make (read_fasta_file, read_csv_file).
            "--data-root",
            str(tmp_path_factory.getbasetemp()),
            # Where conn.ingest stores its tables.
            "--ingest-dir",
            str(tmp_path_factory.mktemp("ingested")),
        ],
        log,
    ) as running:
        yield running


@pytest.fixture
def conn(server: Server) -> Iterator[flightbear.Connection]:
    with flightbear.connect(server.uri, timeout=30) as connection:
        yield connection
