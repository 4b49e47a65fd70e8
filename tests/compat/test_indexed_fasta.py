"""Indexed FASTA (issue 11): `flightbear index` and the `fasta_region` table function.

The oracle is samtools itself (htslib, through pysam): ``pysam.faidx`` indexes a copy of each
file, ``pysam.FastaFile`` reads regions through the index flightbear wrote and gives the bases
``fasta_region`` must return.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pysam
import pytest
from Bio.SeqIO.FastaIO import SimpleFastaParser

from flightbear_testing import Server, random_bases, server_binary
from server_probes import grpc_status, run_sql


def index(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(server_binary()), "index", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def samtools_fai(path: Path, scratch: Path) -> str:
    """The .fai samtools writes for a copy of ``path``."""
    copy = scratch / f"samtools-{path.name}"
    shutil.copyfile(path, copy)
    pysam.faidx(str(copy))
    return (scratch / f"{copy.name}.fai").read_text()


def genome(rng: random.Random, newline: str = "\n") -> tuple[str, dict[str, str]]:
    """FASTA text with fixed-width records of many sizes, an empty record and a repeated name."""
    records: dict[str, str] = {}
    parts = []
    for n in range(40):
        name = f"chr{n}"
        sequence = random_bases(rng, rng.choice([1, 59, 60, 61, 1000, 25_000]), "ACGTNacgt")
        width = rng.choice([50, 60, 80])
        lines = [sequence[i : i + width] for i in range(0, len(sequence), width)]
        parts.append(f">{name} description {n}{newline}" + "".join(x + newline for x in lines))
        records[name] = sequence
        if n == 7:
            parts.append(f">empty{newline}")
        if n == 9:
            parts.append(f">chr3 again{newline}ACGT{newline}{newline}")
    return "".join(parts), records


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_plain_fai_is_byte_for_byte_samtools(tmp_path: Path, newline: str) -> None:
    text, _ = genome(random.Random(5), newline)
    path = tmp_path / "genome.fa"
    path.write_bytes(text.encode())
    done = index(path)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "(40 records)" in done.stdout
    assert "1 records without bases" in done.stderr and "'chr3'" in done.stderr
    assert (tmp_path / "genome.fa.fai").read_text() == samtools_fai(path, tmp_path)


def test_bgzf_index_serves_samtools_region_reads(tmp_path: Path) -> None:
    text, records = genome(random.Random(6))
    plain = tmp_path / "plain.fa"
    plain.write_text(text)
    path = tmp_path / "genome.fa.gz"
    pysam.tabix_compress(str(plain), str(path))
    done = index(path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "genome.fa.gz.gzi").exists()
    assert (tmp_path / "genome.fa.gz.fai").read_text() == samtools_fai(plain, tmp_path)
    rng = random.Random(7)
    with pysam.FastaFile(str(path)) as fasta:  # reads flightbear's .fai and .gzi
        for name, sequence in records.items():
            start = rng.randrange(len(sequence))
            end = rng.randrange(start, len(sequence)) + 1
            assert fasta.fetch(name, start, end) == sequence[start:end], name
            assert fasta.fetch(name) == sequence


def test_unindexable_files_fail_with_a_reason(tmp_path: Path) -> None:
    gz = tmp_path / "plain.fa.gz"
    gz.write_bytes(gzip.compress(b">a\nACGT\n"))
    ragged = tmp_path / "ragged.fa"
    ragged.write_text(">a\nACG\nACGT\nA\n")
    good = tmp_path / "good.fa"
    good.write_text(">a\nACGT\n")
    done = index(gz, ragged, tmp_path / "missing.fa", good)
    assert done.returncode == 1
    assert "plain gzip" in done.stderr and "bgzip" in done.stderr
    assert "ragged.fa: line 3" in done.stderr
    assert "missing.fa" in done.stderr
    # The good file is indexed anyway; the others leave nothing behind.
    assert (tmp_path / "good.fa.fai").read_text() == "a\t4\t3\t4\t5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["plain.fa.gz", "ragged.fa", "good.fa", "good.fa.fai"]
    )


@pytest.mark.parametrize("text", ["", ">a\n", ">a\n\n>b\n"], ids=["empty", "header", "headers"])
def test_files_without_bases_are_not_indexed_as_samtools_does_not(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "nothing.fa"
    path.write_text(text)
    # Oracle: samtools (through pysam) refuses these files and writes no index.
    with pytest.raises(pysam.SamtoolsError):
        samtools_fai(path, tmp_path)
    done = index(path)
    assert done.returncode == 1, done.stdout
    assert "nothing.fa: no record with bases, nothing to index" in done.stderr
    assert not (tmp_path / "nothing.fa.fai").exists()


def test_bytes_a_scan_refuses_are_no_bases_for_the_index_or_fasta_region(
    launch: Any, tmp_path: Path
) -> None:
    """samtools indexes a space or a control byte in a sequence line as a base; a scan refuses
    the file. `flightbear index` refuses it naming the line, and fasta_region, reading through
    samtools' index, refuses the region holding it rather than returning it as bases."""
    for name, text in {"space": b">a\nAC GT\nACGT\n", "nul": b">a\nACGTA\nAC\0GT\n"}.items():
        path = tmp_path / f"{name}.fa"
        path.write_bytes(text)
        done = index(path)
        assert done.returncode == 1, done
        assert f"{name}.fa: line" in done.stderr and "no base" in done.stderr, done.stderr
        assert not Path(f"{path}.fai").exists()
        pysam.faidx(str(path))  # samtools' own index, counting the byte as a base
    server = launch(
        "--table", f"space={tmp_path / 'space.fa'}", "--table", f"nul={tmp_path / 'nul.fa'}",
        tables=False,
    )  # fmt: skip
    for table, byte in (("space", "0x20"), ("nul", "0x00")):
        with pytest.raises(pa.ArrowException) as raised:
            regions(server.uri, f"SELECT * FROM fasta_region('{table}', 'a')")
        status = grpc_status(raised.value)
        assert status.code == "INVALID_ARGUMENT", status
        assert byte in status.message or "does not describe" in status.message, status
        with pytest.raises(pa.ArrowException) as raised:
            regions(server.uri, f'SELECT id, 1 AS start, 2 AS "end", sequence FROM {table}')
        assert grpc_status(raised.value).code == "INVALID_ARGUMENT"


# ---------------------------------------------------------------------------------------------
# fasta_region: regions read through the index, checked against samtools' reads of them
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def indexed(launch: Any, tmp_path: Path) -> tuple[Server, dict[str, str], Path]:
    """A server with the same genome plain and BGZF (both indexed), and one unindexed copy."""
    text, records = genome(random.Random(8))
    plain = tmp_path / "genome.fa"
    plain.write_text(text)
    bgzf = tmp_path / "genome.fa.gz"
    pysam.tabix_compress(str(plain), str(bgzf))
    assert index(plain, bgzf).returncode == 0
    bare = tmp_path / "bare.fa"
    bare.write_text(text)
    samples = tmp_path / "samples.csv"
    samples.write_text("a,b\n1,2\n")
    server = launch(
        "--table", f"genome={plain}", "--table", f"bgenome={bgzf}",
        "--table", f"bare={bare}", "--table", f"samples={samples}",
        "--memory-limit", "64MiB", tables=False,
    )  # fmt: skip
    return server, records, plain


def regions(uri: str, sql: str) -> list[tuple[str, int, int, str]]:
    client = flight.FlightClient(uri)
    try:
        table = run_sql(client, sql)
    finally:
        client.close()
    assert table.schema.names == ["id", "start", "end", "sequence"]
    return list(zip(*(column.to_pylist() for column in table.columns)))


@pytest.mark.parametrize("table", ["genome", "bgenome"])
def test_regions_match_samtools(indexed: Any, table: str) -> None:
    server, records, plain = indexed
    rng = random.Random(9)
    # (region as asked, name, 1-based start, inclusive end), coordinates worked out here.
    asked: list[tuple[str, str, int, int]] = []
    for name, sequence in records.items():
        n = len(sequence)
        start = rng.randint(1, n)
        end = rng.randint(start, n)
        asked += [
            (f"{name}:{start:,}-{end:,}", name, start, end),
            (f"{name}:{n}-{n}", name, n, n),
            (f"{name}:1-1", name, 1, 1),
            (f"{name}:{start}", name, start, n),
        ]
    asked.append(("chr5", "chr5", 1, len(records["chr5"])))
    literals = ", ".join(f"'{region}'" for region, *_ in asked)
    answer = regions(server.uri, f"SELECT * FROM fasta_region('{table}', {literals})")
    assert [row[:3] for row in answer] == [tuple(wanted[1:]) for wanted in asked]
    with pysam.FastaFile(str(plain)) as samtools:
        for (region, name, start, end), row in zip(asked, answer):
            assert row[3] == samtools.fetch(name, start - 1, end), region
            assert row[3] == records[name][start - 1 : end]


def test_regions_through_adbc_and_in_joins(indexed: Any) -> None:
    server, records, _ = indexed
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT r.id, length(r.sequence), gc_content(r.sequence) = gc_content(g.sequence) "
            "FROM fasta_region('genome', 'chr4') r JOIN genome g ON g.id = r.id"
        )
        assert cur.fetchall() == [("chr4", len(records["chr4"]), True)]


@pytest.mark.parametrize(
    ("call", "named"),
    [
        ("fasta_region('genome', 'chrZ:1-5')", "no sequence 'chrZ'"),
        ("fasta_region('genome', 'chr1:0-5')", "outside chr1"),
        ("fasta_region('genome', 'chr1:1-999999999')", "outside chr1"),
        ("fasta_region('genome', 'chr1:9-3')", "outside chr1"),
        ("fasta_region('bare', 'chr1')", "has no index"),
        ("fasta_region('samples', 'chr1')", "is not a FASTA"),
        ("fasta_region('nope', 'chr1')", "not found"),
        ("fasta_region('genome')", "at least one region"),
    ],
)
def test_bad_regions_are_invalid_argument(indexed: Any, call: str, named: str) -> None:
    server, _, _ = indexed
    with pytest.raises(pa.ArrowException) as raised:
        regions(server.uri, f"SELECT * FROM {call}")
    status = grpc_status(raised.value)
    assert status.code == "INVALID_ARGUMENT", status
    assert named in status.message
    assert regions(server.uri, "SELECT * FROM fasta_region('genome', 'chr0:1-1')")[0][3]


def test_an_index_linked_from_elsewhere_is_refused(launch: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (data / "g.fa").write_text(">a\nACGT\n")
    (elsewhere / "g.fa.fai").write_text("a\t4\t3\t4\t5\n")
    (data / "g.fa.fai").symlink_to(elsewhere / "g.fa.fai")
    server = launch("--table", f"g={data / 'g.fa'}", tables=False)
    with pytest.raises(pa.ArrowException) as raised:
        regions(server.uri, "SELECT * FROM fasta_region('g', 'a')")
    status = grpc_status(raised.value)
    assert status.code == "INVALID_ARGUMENT" and "directory of" in status.message


# ---------------------------------------------------------------------------------------------
# Index lookups: WHERE id = / IN and COUNT(*) read through the .fai, checked against Biopython
# ---------------------------------------------------------------------------------------------


def biopython_rows(path: Path) -> list[tuple[str, str | None, str]]:
    """(id, description, sequence) of every record, as Biopython parses the file."""
    rows = []
    with open(path) as handle:
        for title, sequence in SimpleFastaParser(handle):
            name, _, rest = title.partition(" ")
            rows.append((name, rest.strip() or None, sequence))
    return rows


def bytes_read(server: Server) -> int:
    """Bytes the server process has read from files so far (``rchar`` of /proc/PID/io)."""
    for line in Path(f"/proc/{server.process.pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")


@pytest.fixture
def lookups(launch: Any, tmp_path: Path) -> tuple[Server, Path, Path]:
    """A 24 MB genome, plain and BGZF, indexed by samtools; a copy whose index leaves records
    out (one without bases, a repeated name); and the same genome without an index."""
    rng = random.Random(12)
    parts = []
    for n in range(12):
        sequence = random_bases(rng, rng.choice([1, 61, 2_000_000]))
        width = rng.choice([60, 70])
        lines = "".join(sequence[i : i + width] + "\n" for i in range(0, len(sequence), width))
        parts.append(f">chr{n} assembled {n}\n{lines}")
    plain = tmp_path / "big.fa"
    plain.write_text("".join(parts))
    bgzf = tmp_path / "big.fa.gz"
    pysam.tabix_compress(str(plain), str(bgzf))
    bare = tmp_path / "bare.fa"
    shutil.copyfile(plain, bare)
    partial = tmp_path / "partial.fa"
    partial.write_text(genome(random.Random(8))[0])
    for path in (plain, bgzf, partial):
        pysam.faidx(str(path))
    server = launch(
        "--table", f"big={plain}", "--table", f"bbig={bgzf}", "--table", f"bare={bare}",
        "--table", f"partial={partial}", "--memory-limit", "64MiB", tables=False,
    )  # fmt: skip
    return server, plain, partial


def adbc_rows(server: Server, sql: str) -> list[tuple[Any, ...]]:
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return sorted(cur.fetchall())


@pytest.mark.parametrize("table", ["big", "bbig", "bare"])
def test_lookups_by_id_match_biopython_and_read_only_those_records(
    lookups: Any, table: str
) -> None:
    server, plain, _ = lookups
    expected = biopython_rows(plain)
    names = [row[0] for row in expected]
    rng = random.Random(13)
    # Warm up: the first query of a table checks its index against the file once.
    adbc_rows(server, f"SELECT id FROM {table} WHERE id = 'chr0'")
    for wanted in (["chr3"], [names[-1], names[0], "absent"], rng.sample(names, 4)):
        literals = ", ".join(f"'{name}'" for name in wanted)
        before = bytes_read(server)
        sql = f"SELECT id, description, sequence FROM {table} WHERE id IN ({literals})"
        rows = adbc_rows(server, sql)
        read = bytes_read(server) - before
        assert rows == sorted(row for row in expected if row[0] in wanted)
        needed = sum(len(row[2]) * 1.02 for row in rows)
        if table == "bare":
            assert read >= plain.stat().st_size  # no index: the whole file is read
        else:
            assert read <= needed + (4 << 20), (wanted, read, needed)
    before = bytes_read(server)
    assert adbc_rows(server, f"SELECT COUNT(*) FROM {table}") == [(len(expected),)]
    lengths = adbc_rows(server, f"SELECT id, description, length(sequence) FROM {table}")
    assert lengths == sorted((name, description, len(seq)) for name, description, seq in expected)
    if table != "bare":
        assert bytes_read(server) - before < (1 << 20)


def test_indexes_leaving_records_out_are_not_used(lookups: Any) -> None:
    server, _, partial = lookups
    expected = biopython_rows(partial)
    assert adbc_rows(server, "SELECT COUNT(*) FROM partial") == [(len(expected),)]
    for wanted in (["empty"], ["chr3"], ["chr3", "empty", "chr39"]):
        literals = ", ".join(f"'{name}'" for name in wanted)
        sql = f"SELECT id, description, sequence FROM partial WHERE id IN ({literals})"
        rows = adbc_rows(server, sql)
        assert rows == sorted(row for row in expected if row[0] in wanted), wanted
    assert len(adbc_rows(server, "SELECT * FROM partial WHERE id = 'chr3'")) == 2
    lengths = adbc_rows(server, "SELECT id, length(sequence) FROM partial")
    assert lengths == sorted((name, len(sequence)) for name, _, sequence in expected)


def test_an_index_made_while_the_server_runs_is_used(launch: Any, tmp_path: Path) -> None:
    rng = random.Random(14)
    records = [(f"r{n}", random_bases(rng, 1_000_000)) for n in range(4)]
    path = tmp_path / "late.fa"
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))
    server = launch("--data-root", str(tmp_path), tables=False)
    with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE EXTERNAL TABLE late STORED AS FASTA LOCATION '{path}'")
        cur.execute("SELECT COUNT(*) FROM late")
        assert cur.fetchall() == [(4,)]
        assert index(path).returncode == 0
        before = bytes_read(server)
        cur.execute("SELECT COUNT(*) FROM late")
        assert cur.fetchall() == [(4,)]
        cur.execute("SELECT id, length(sequence) FROM late")
        assert sorted(cur.fetchall()) == [(name, 1_000_000) for name, _ in records]
        assert bytes_read(server) - before < (1 << 20)
        cur.execute("SELECT id, length(sequence) FROM late WHERE id IN ('r1', 'r3')")
        assert sorted(cur.fetchall()) == [("r1", 1_000_000), ("r3", 1_000_000)]
        # A lookup reads the records it names (a filter keeps the sequence in the scan).
        assert bytes_read(server) - before < (3 << 20)


# ---------------------------------------------------------------------------------------------
# Indexes that do not describe their file: scans answer as without them, fasta_region refuses
# ---------------------------------------------------------------------------------------------

HOSTILE_TEXT = ">a first\nACGTACGTAC\nGTACG\n>b\nTTTTCCCCAA\nGG\n>c\nAC\n"


def hostile_indexes() -> dict[str, tuple[str, str]]:
    """Name: (.fai text, what fasta_region's refusal says) for HOSTILE_TEXT."""
    a, b, c = "a\t15\t9\t10\t11", "b\t12\t35\t10\t11", "c\t2\t53\t2\t3"
    return {
        # Built for another file: offsets land in the middle of lines.
        "foreign": (f"a\t15\t3\t10\t11\n{b}\n{c}\n", "does not describe"),
        # Lines of 9 bases + CRLF cover the same bytes as 10 bases + LF: line ends differ.
        "layout": (f"a\t15\t9\t9\t11\n{b}\n{c}\n", "does not describe"),
        # Width below the bases of a line.
        "narrow": (f"a\t15\t9\t10\t9\n{b}\n{c}\n", "does not describe"),
        # An absurd width.
        "huge": (f"a\t15\t9\t10\t{2**63 - 1}\n{b}\n{c}\n", "does not describe"),
        # Not an index at all.
        "garbage": ("not an index\n", "does not describe"),
        # An index file over the limit.
        "big": (f"{a}\n{b}\n{c}\n" + "#" * (17 << 20), "larger than"),
    }


def test_indexes_that_do_not_describe_the_file_are_not_used(launch: Any, tmp_path: Path) -> None:
    records = {"a": "ACGTACGTACGTACG", "b": "TTTTCCCCAAGG", "c": "AC"}
    cases = hostile_indexes()
    args = []
    for name, (fai, _) in cases.items():
        path = tmp_path / f"{name}.fa"
        path.write_text(HOSTILE_TEXT)
        Path(f"{path}.fai").write_text(fai)
        args += ["--table", f"{name}={path}"]
    server = launch(*args, "--memory-limit", "64MiB", tables=False)
    client = flight.FlightClient(server.uri)
    try:
        for name, (_, refusal) in cases.items():
            lengths = run_sql(client, f"SELECT id, length(sequence) AS n FROM {name} ORDER BY id")
            assert lengths.to_pylist() == [{"id": k, "n": len(v)} for k, v in records.items()]
            count = run_sql(client, f"SELECT COUNT(*) AS n FROM {name}").to_pylist()
            assert count == [{"n": 3}], name
            row = run_sql(client, f"SELECT sequence FROM {name} WHERE id = 'b'").to_pylist()
            assert row == [{"sequence": records["b"]}], name
            with pytest.raises(pa.ArrowException) as raised:
                regions(server.uri, f"SELECT * FROM fasta_region('{name}', 'b:1-5')")
            status = grpc_status(raised.value)
            assert status.code == "INVALID_ARGUMENT", (name, status)
            assert refusal in status.message, (name, status.message)
    finally:
        client.close()


def test_fasta_region_refuses_an_index_older_than_its_file(launch: Any, tmp_path: Path) -> None:
    path = tmp_path / "g.fa"
    path.write_text(">a\nACGTACGTAC\n>b\nGGGGCCCCAA\n")
    assert index(path).returncode == 0
    before = Path(f"{path}.fai").stat().st_mtime
    path.write_text(">a\nACGTACGTACGG\n>b\nTTTTCCCCAA\n")
    os.utime(path, (before + 5, before + 5))
    server = launch("--table", f"g={path}", tables=False)
    with pytest.raises(pa.ArrowException) as raised:
        regions(server.uri, "SELECT * FROM fasta_region('g', 'b')")
    status = grpc_status(raised.value)
    assert status.code == "INVALID_ARGUMENT" and "older than" in status.message, status
    client = flight.FlightClient(server.uri)
    try:
        row = run_sql(client, "SELECT sequence FROM g WHERE id = 'b'").to_pylist()
    finally:
        client.close()
    assert row == [{"sequence": "TTTTCCCCAA"}]


def test_a_name_indexed_twice_is_its_first_record_as_in_samtools(
    launch: Any, tmp_path: Path
) -> None:
    path = tmp_path / "dup.fa"
    first, second = "ACGT" * 25, "TTGCA" * 10
    path.write_text(f">a\n{first}\n>a\n{second}\n>b\nGGCC\n")
    Path(f"{path}.fai").write_text("a\t100\t3\t100\t101\na\t50\t107\t50\t51\nb\t4\t161\t4\t5\n")
    server = launch("--table", f"dup={path}", tables=False)
    samtools = pysam.FastaFile(str(path))
    try:
        answer = regions(server.uri, "SELECT * FROM fasta_region('dup', 'a', 'a:91-100', 'b')")
        assert answer == [
            ("a", 1, 100, samtools.fetch("a")),
            ("a", 91, 100, samtools.fetch("a", 90, 100)),
            ("b", 1, 4, samtools.fetch("b")),
        ]
    finally:
        samtools.close()
    assert answer[0][3] == first


def test_bad_block_indexes_fall_back_to_scans(launch: Any, tmp_path: Path) -> None:
    """BGZF with a correct .fai and a .gzi that is empty, truncated, shifted or another file's:
    lookups, lengths and counts give Biopython's answers."""
    rng = random.Random(21)
    parts = []
    for n in range(40):
        sequence = random_bases(rng, rng.choice([61, 30_000]))
        lines = "".join(sequence[i : i + 60] + "\n" for i in range(0, len(sequence), 60))
        parts.append(f">c{n}\n{lines}")
    plain = tmp_path / "plain.fa"
    plain.write_text("".join(parts))
    good = tmp_path / "good.fa.gz"
    pysam.tabix_compress(str(plain), str(good))
    assert index(good).returncode == 0
    gzi = Path(f"{good}.gzi").read_bytes()
    count = int.from_bytes(gzi[:8], "little")
    entries = [
        (int.from_bytes(gzi[8 + 16 * i : 16 + 16 * i], "little"),
         int.from_bytes(gzi[16 + 16 * i : 24 + 16 * i], "little"))
        for i in range(count)
    ]  # fmt: skip
    assert count > 4

    def encode(pairs: list[tuple[int, int]]) -> bytes:
        out = len(pairs).to_bytes(8, "little")
        for compressed, uncompressed in pairs:
            out += compressed.to_bytes(8, "little") + uncompressed.to_bytes(8, "little")
        return out

    variants = {
        "empty": b"",
        "truncated": gzi[: len(gzi) // 2],
        "shifted": encode([(c, u + 700) for c, u in entries]),
        "reversed": encode(entries[::-1]),
        "absurd": encode([(c, u * 1000) for c, u in entries]),
        "other": encode([(c + 5000, u) for c, u in entries]),
    }
    args = []
    for name, data in variants.items():
        path = tmp_path / f"{name}.fa.gz"
        shutil.copyfile(good, path)
        shutil.copyfile(f"{good}.fai", f"{path}.fai")
        Path(f"{path}.gzi").write_bytes(data)
        args += ["--table", f"{name}={path}"]
    server = launch(*args, "--memory-limit", "64MiB", tables=False)
    expected = {name: sequence for name, _, sequence in biopython_rows(plain)}
    client = flight.FlightClient(server.uri)
    try:
        for name in variants:
            for wanted in ("c0", "c17", "c39"):
                columns = "id, length(sequence) AS n, sequence"
                sql = f"SELECT {columns} FROM {name} WHERE id = '{wanted}'"
                rows = run_sql(client, sql).to_pylist()
                assert rows == [
                    {"id": wanted, "n": len(expected[wanted]), "sequence": expected[wanted]}
                ], (name, wanted)
            count = run_sql(client, f"SELECT COUNT(*) AS n FROM {name}").to_pylist()
            assert count == [{"n": len(expected)}], name
    finally:
        client.close()
