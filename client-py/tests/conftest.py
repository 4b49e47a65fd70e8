"""Fixtures: generated FASTA/CSV files and the real flightbear server on a free port."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

import flightbear
from support import DataFiles, RunningServer, write_csv, write_fasta


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> DataFiles:
    root = tmp_path_factory.mktemp("data")
    files = DataFiles(root / "reads.fa", root / "samples.csv", root / "big_record.fa")
    write_fasta(files.fasta, 3000, seed=7)
    write_csv(files.csv, 500, seed=11)
    rng = random.Random(3)
    # One 6 Mbase record: its batch is far above gRPC's usual 4 MiB message limit.
    big = "".join(rng.choice("ACGT") for _ in range(6_000_000))
    with open(files.big_record_fasta, "w") as out:
        out.write(">chrBig a single large record\n")
        for start in range(0, len(big), 80):
            out.write(big[start : start + 80] + "\n")
    return files


@pytest.fixture(scope="session")
def server(
    data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = RunningServer(
        [
            "--fasta",
            f"reads={data_files.fasta}",
            "--csv",
            f"samples={data_files.csv}",
            "--fasta",
            f"big_record={data_files.big_record_fasta}",
            "--batch-rows",
            "1000",
        ],
        log,
    )
    yield running
    running.stop()


@pytest.fixture
def conn(server: RunningServer) -> Iterator[flightbear.Connection]:
    with flightbear.connect(server.uri, timeout=30) as connection:
        yield connection
