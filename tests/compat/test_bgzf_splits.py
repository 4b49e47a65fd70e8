"""BGZF files split between partitions, attacked: a crafted file never yields a record it does
not hold.

A range of a BGZF file finds its first block by looking for block headers, which a block's
compressed bytes can also hold. ``bgzf_forge`` plants two fake blocks inside a real one, so
that a range starting between them would read a record that gzip, htslib and a one-partition
scan do not see. The oracle is Python's gzip module with Biopython's parser.
"""

from __future__ import annotations

import gzip
import io
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from bgzf_forge import forged_bgzf
from Bio.SeqIO.FastaIO import SimpleFastaParser

from flightbear_testing import server_binary
from server_probes import grpc_status, run_sql

INJECTED = "INJECTED_RECORD"


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    data, _ = forged_bgzf()
    path = tmp_path_factory.mktemp("forged") / "forged.fa.gz"
    path.write_bytes(data)
    text = gzip.decompress(data).decode()
    records = [(title.split()[0], seq) for title, seq in SimpleFastaParser(io.StringIO(text))]
    assert records and all(name != INJECTED for name, _ in records)
    return path, records


def scan(server: Any) -> list[tuple[str, str]]:
    client = flight.FlightClient(server.uri)
    try:
        table = run_sql(client, "SELECT id, sequence FROM t")
    finally:
        client.close()
    return list(zip(table.column("id").to_pylist(), table.column("sequence").to_pylist()))


@pytest.mark.parametrize("partitions", [1, 2, 3, 4])
def test_a_fake_block_never_yields_a_record(
    launch: Any, forged: tuple[Path, list[tuple[str, str]]], partitions: int
) -> None:
    """Every partition count gives the oracle's records, or refuses the file as ambiguous
    (INVALID_ARGUMENT saying what to do); never the injected record."""
    path, expected = forged
    server = launch(
        "--fasta", f"t={path}", "--target-partitions", str(partitions),
        "--memory-limit", "256MiB", tables=False,
    )  # fmt: skip
    try:
        got = scan(server)
    except pa.ArrowException as error:
        status = grpc_status(error)
        assert partitions > 1, status
        assert status.code == "INVALID_ARGUMENT", status
        assert "cannot be told apart" in status.message and ".gzi" in status.message, status
    else:
        assert all(name != INJECTED for name, _ in got)
        assert sorted(got) == sorted(expected)


def test_with_a_gzi_the_split_file_is_read_exactly(
    launch: Any, forged: tuple[Path, list[tuple[str, str]]], tmp_path: Path
) -> None:
    """What the error advises works: with the .gzi that `flightbear index` writes, a
    two-partition scan of the same file gives the oracle's records."""
    source, expected = forged
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    subprocess.run([str(server_binary()), "index", str(path)], check=True, timeout=120)
    assert Path(f"{path}.gzi").exists()
    server = launch("--fasta", f"t={path}", "--target-partitions", "2", tables=False)
    assert sorted(scan(server)) == sorted(expected)
