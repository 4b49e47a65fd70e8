"""FASTQ tables (issue 11) through clients we did not write, checked against Biopython.

The oracle is Biopython's ``FastqGeneralIterator`` (title, sequence, quality), with the title
split at the first space or tab as flightbear splits FASTA headers. Files: plain, multi-member
gzip (members cut anywhere), BGZF written by htslib (``pysam.tabix_compress``), and
``CREATE EXTERNAL TABLE ... STORED AS FASTQ``.
"""

from __future__ import annotations

import gzip
import io
import random
import re
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pysam
import pytest
from Bio.SeqIO.QualityIO import FastqGeneralIterator

from flightbear_testing import random_bases
from server_probes import grpc_status, run_sql

Row = tuple[str, "str | None", str, str]


def fastq_text(rng: random.Random, count: int, newline: str = "\n") -> str:
    """Reads of many lengths (some empty); qualities often start with '@' or '+'."""
    parts = []
    for n in range(count):
        header = f"read{n}" + rng.choice(["", " 1:N:0:ACGT", "\tlen=3  x"])
        length = rng.choice([0, 1, 35, 150, 151, 2000])
        sequence = random_bases(rng, length, "ACGTN")
        quality = "".join(chr(rng.randrange(33, 127)) for _ in range(length))
        if length and rng.random() < 0.3:
            quality = rng.choice("@+") + quality[1:]
        plus = "+" + (header if rng.random() < 0.2 else "")
        parts.append(newline.join([f"@{header}", sequence, plus, quality]) + newline)
    return "".join(parts)


def biopython_rows(text: str) -> list[Row]:
    rows: list[Row] = []
    for title, sequence, quality in FastqGeneralIterator(io.StringIO(text)):
        parts = re.split(r"[ \t]", title, maxsplit=1)
        description = parts[1].strip() if len(parts) > 1 else ""
        rows.append((parts[0], description or None, sequence, quality))
    return rows


def adbc_rows(uri: str, sql: str) -> list[Row]:
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(row) for row in cur.fetchall()]  # type: ignore[misc]


@pytest.fixture
def reads(launch: Any, tmp_path: Path) -> tuple[Any, list[Row], Path]:
    text = fastq_text(random.Random(41), 600)
    plain = tmp_path / "reads.fq"
    plain.write_text(text)
    # Multi-member gzip, members cut at arbitrary bytes (inside lines and records).
    raw = text.encode()
    cuts = [0, 7, len(raw) // 3, len(raw) // 3 + 1, len(raw) - 5, len(raw)]
    members = tmp_path / "members.fastq.gz"
    members.write_bytes(b"".join(gzip.compress(raw[a:b]) for a, b in zip(cuts, cuts[1:])))
    bgzf = tmp_path / "reads.fq.bgz"
    pysam.tabix_compress(str(plain), str(bgzf))
    server = launch(
        "--table", f"plain={plain}", "--table", f"members={members}",
        "--fastq", f"bgzf={bgzf}", "--data-root", str(tmp_path),
        "--target-partitions", "4", "--memory-limit", "64MiB", tables=False,
    )  # fmt: skip
    return server, biopython_rows(text), tmp_path


@pytest.mark.parametrize("table", ["plain", "members", "bgzf"])
def test_every_compression_reads_what_biopython_reads(reads: Any, table: str) -> None:
    server, expected, _ = reads
    got = adbc_rows(server.uri, f"SELECT id, description, sequence, quality FROM {table}")
    assert len(got) == len(expected) == 600
    assert sorted(got) == sorted(expected)


def test_pyarrow_flight_gets_the_fastq_schema_and_aggregates(reads: Any) -> None:
    server, expected, _ = reads
    client = flight.FlightClient(server.uri)
    try:
        sql = (
            "SELECT count(*) AS n, sum(length(sequence)) AS bases, "
            "sum(CASE WHEN quality LIKE '@%' THEN 1 ELSE 0 END) AS at_quality FROM bgzf"
        )
        table = run_sql(client, sql)
    finally:
        client.close()
    row = table.to_pylist()[0]
    assert row["n"] == len(expected)
    assert row["bases"] == sum(len(r[2]) for r in expected)
    assert row["at_quality"] == sum(1 for r in expected if r[3].startswith("@"))


def test_create_external_table_stored_as_fastq(reads: Any) -> None:
    server, expected, tmp_path = reads
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE EXTERNAL TABLE ext STORED AS FASTQ LOCATION '{tmp_path / 'reads.fq'}' "
            "OPTIONS ('batch_rows' '7')"
        )
        cur.execute("SELECT id, quality FROM ext WHERE length(sequence) = 150 ORDER BY id")
        got = cur.fetchall()
    want = sorted((r[0], r[3]) for r in expected if len(r[2]) == 150)
    assert got == want


def test_zero_padding_after_gzip_members_is_ignored_and_other_tails_refused(
    reads: Any,
) -> None:
    """As ``gzip -d`` (and Python's gzip, the oracle here): zeros padding the end of a gzip
    file are not data; zeros followed by more bytes, or a tail that is no gzip member, are an
    error rather than a silent end."""
    server, _, tmp_path = reads
    members = (tmp_path / "members.fastq.gz").read_bytes()
    tails = {
        "padded": b"\0" * 70_000,
        "zeros_then_member": b"\0" * 16 + gzip.compress(b"@late\nA\n+\nI\n"),
        "garbage": b"not gzip",
    }
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        for name, tail in tails.items():
            path = tmp_path / f"{name}.fq.gz"
            path.write_bytes(members + tail)
            cur.execute(f"CREATE EXTERNAL TABLE {name} STORED AS FASTQ LOCATION '{path}'")
    padded = tmp_path / "padded.fq.gz"
    expected = biopython_rows(gzip.decompress(padded.read_bytes()).decode())
    got = adbc_rows(server.uri, "SELECT id, description, sequence, quality FROM padded")
    assert sorted(got) == sorted(expected) and len(got) == 600
    client = flight.FlightClient(server.uri)
    try:
        for name in ("zeros_then_member", "garbage"):
            with pytest.raises(pa.ArrowException) as info:
                run_sql(client, f"SELECT count(*) FROM {name}")
            status = grpc_status(info.value)
            assert status.code == "INVALID_ARGUMENT", (name, status)
            assert f"{name}.fq.gz" in status.message, status
    finally:
        client.close()


def test_malformed_fastq_is_invalid_argument_naming_file_and_line(
    launch: Any, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.fq"
    bad.write_text("@a\nACGT\n+\nIIII\n@b\nACGT\n+\nIII\n")
    server = launch("--table", f"bad={bad}", tables=False)
    client = flight.FlightClient(server.uri)
    try:
        with pytest.raises(pa.ArrowException) as info:
            run_sql(client, "SELECT * FROM bad")
    finally:
        client.close()
    status = grpc_status(info.value)
    assert status.code == "INVALID_ARGUMENT"
    assert f"invalid FASTQ in {bad} at line 8" in status.message
    assert "quality line has 3 characters but the sequence has 4" in status.message
    # The server goes on serving.
    assert adbc_rows(server.uri, "SELECT 1") == [(1,)]


def test_fastq_tables_refuse_a_column_list_and_fasta_region(reads: Any) -> None:
    server, _, tmp_path = reads
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="fixed schema"):
            cur.execute(
                f"CREATE EXTERNAL TABLE x (a INT) STORED AS FASTQ LOCATION '{tmp_path}/reads.fq'"
            )
        with pytest.raises(adbc_driver_manager.Error, match="not a FASTA table"):
            cur.execute("SELECT * FROM fasta_region('plain', 'read1')")
