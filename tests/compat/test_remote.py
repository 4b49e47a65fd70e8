"""Remote tables (issue 11): ``s3://`` and ``http(s)://`` locations, read through object_store.

An S3-compatible server (moto's, on loopback) and a small HTTP file server that answers range
requests (as nginx, S3 websites and most file hosts do) stand in for remote storage. Answers
are checked against Biopython and Python's csv module reading the same bytes. Client tables
are confined to URL data roots: what lies outside (other prefixes, ``..`` in any spelling,
other hosts, redirects) is refused.
"""

from __future__ import annotations

import csv
import gzip
import http.server
import io
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import boto3
import pyarrow as pa
import pyarrow.flight as flight
import pysam
import pytest
from Bio.SeqIO.FastaIO import SimpleFastaParser
from Bio.SeqIO.QualityIO import FastqGeneralIterator
from moto.server import ThreadedMotoServer

from flightbear_testing import (
    ServerError,
    fasta_text,
    free_port,
    make_records,
    random_bases,
    split_header,
)
from server_probes import GrpcStatus, grpc_status, rss_bytes, run_sql

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


def fasta_rows(text: str) -> list[tuple[str, str | None, str]]:
    """Biopython's records, titles split into id and description as flightbear splits them."""
    return [(*split_header(title), seq) for title, seq in SimpleFastaParser(io.StringIO(text))]


def fastq_rows(text: str) -> list[tuple[str, str]]:
    return [(title.split()[0], seq) for title, seq, _ in FastqGeneralIterator(io.StringIO(text))]


def adbc_rows(uri: str, sql: str) -> list[tuple[Any, ...]]:
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(row) for row in cur.fetchall()]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range requests (``Range: bytes=a-b`` / ``a-``), a redirect,
    and a record of the requests made."""

    requests: ClassVar[list[tuple[str, str, str | None]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, self.headers.get("Range")))
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self.requests.append(("HEAD", self.path, None))
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if self.path.endswith("/moved.fa"):
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # Under /refuse/CODE/, index files (.fai, .gzi) are answered with that HTTP status:
        # a store that fails, forbids or lost them while the data file reads fine.
        served = self.path
        if served.startswith("/refuse/"):
            _, _, code, served = served.split("/", 3)
            served = "/" + served
            if served.endswith((".fai", ".gzi")):
                self.send_error(int(code))
                return
        # Under /grown/, HEAD reports 1000 bytes more than GET serves: a file that shrank
        # between the listing of a scan and its reading.
        grown = served.startswith("/grown/") and not body
        path = Path(self.translate_path(served.removeprefix("/grown")))
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size + (1000 if grown else 0)
        start, end = 0, size
        wanted = self.headers.get("Range") if body else None
        if wanted:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last) + 1, size) if last else size
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        if not body:
            return
        try:
            with path.open("rb") as source:
                source.seek(start)
                left = end - start
                while left > 0:
                    chunk = source.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The remote files' bytes and what the oracles read from them."""
    rng = random.Random(2026)
    genome = fasta_text(make_records(rng, "chr", 300, max_len=20000), rng)
    more = fasta_text(make_records(rng, "b", 40, max_len=500), rng)
    # Records of up to 300 kbp, for index reads that fetch a small part of the file.
    big_genome = fasta_text(make_records(rng, "contig", 60, max_len=300_000), rng)
    reads_text = "".join(
        f"@r{n} lane:{n % 4}\n{s}\n+\n{'I' * len(s)}\n"
        for n, s in ((n, random_bases(rng, rng.randrange(0, 200))) for n in range(500))
    )
    raw = reads_text.encode()
    cut = len(raw) // 2 + 3
    reads = gzip.compress(raw[:cut]) + gzip.compress(raw[cut:])  # two gzip members
    samples = io.StringIO()
    writer = csv.writer(samples)
    writer.writerow(["sample", "site", "reads"])
    for n in range(300):
        site = rng.choice(["Oslo", "Lyon, FR", 'the "lab"'])
        writer.writerow([f"s{n}", site, rng.randrange(1000)])
    root = tmp_path_factory.mktemp("remote")
    return {
        "root": root,
        "genome": genome,
        "more": more,
        "big_genome": big_genome,
        "reads_text": reads_text,
        "reads": reads,
        "samples": samples.getvalue(),
    }


@pytest.fixture(scope="module")
def s3(files: dict[str, Any]) -> Iterator[str]:
    """A moto S3 server with bucket ``lab``; yields its endpoint."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket="lab")
    objects = {
        "data/genome.fa": files["genome"].encode(),
        "data/more/b.fa": files["more"].encode(),
        "data/more/notes.txt": b"not a table",
        "data/reads.fq.gz": files["reads"],
        "data/samples.csv": files["samples"].encode(),
        "data/with space.fa": b">x one\nACGT\n",
        "data-secret/samples.csv": b"secret\n1\n",
        "secret/samples.csv": b"secret\n2\n",
    }
    for key, body in objects.items():
        client.put_object(Bucket="lab", Key=key, Body=body)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def web(files: dict[str, Any], s3: str) -> Iterator[tuple[str, type[RangeHandler]]]:
    """An HTTP file server with range requests over ``root``; yields its base URL."""
    root: Path = files["root"]
    (root / "pub").mkdir()
    (root / "pub/genome.fa").write_text(files["genome"])
    (root / "private").mkdir()
    (root / "private/samples.csv").write_text("secret\n3\n")

    class Handler(RangeHandler):
        requests: ClassVar[list[tuple[str, str, str | None]]] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.redirect_to = f"http://127.0.0.1:{server.server_address[1]}/private/samples.csv"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Handler
    server.shutdown()
    server.server_close()


def s3_config(tmp_path: Path, endpoint: str) -> Path:
    config = tmp_path / "flightbear.toml"
    config.write_text(
        "[s3]\n"
        f'endpoint = "{endpoint}"\n'
        'region = "us-east-1"\n'
        "allow_http = true\n"
        f'access_key_id = "{CREDENTIALS["AWS_ACCESS_KEY_ID"]}"\n'
        f'secret_access_key = "{CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}"\n'
    )
    return config


def test_s3_and_http_tables_match_the_oracles(
    launch: Any, tmp_path: Path, files: dict[str, Any], s3: str, web: tuple[str, Any]
) -> None:
    base, handler = web
    server = launch(
        "--config", str(s3_config(tmp_path, s3)),
        "--table", "genome=s3://lab/data/genome.fa",
        "--table", "more=s3://lab/data/more/",
        "--table", "reads=s3://lab/data/reads.fq.gz",
        "--table", "samples=s3://lab/data/samples.csv",
        "--table", "spaced=s3://lab/data/with%20space.fa",
        "--table", f"web={base}/pub/genome.fa",
        "--target-partitions", "4", "--memory-limit", "64MiB", tables=False,
    )  # fmt: skip
    genome = fasta_rows(files["genome"])
    for table in ("genome", "web"):
        got = adbc_rows(server.uri, f"SELECT id, description, sequence FROM {table} ORDER BY id")
        assert got == sorted(genome), table
    assert adbc_rows(server.uri, "SELECT id, description, sequence FROM more ORDER BY id") == (
        sorted(fasta_rows(files["more"]))
    )
    got = adbc_rows(server.uri, "SELECT id, sequence FROM reads ORDER BY id")
    assert got == sorted(fastq_rows(files["reads_text"]))
    assert len(got) == 500, "both gzip members are read"
    expected = list(csv.DictReader(io.StringIO(files["samples"])))
    got = adbc_rows(server.uri, "SELECT sample, site, reads FROM samples ORDER BY sample")
    assert got == sorted((r["sample"], r["site"], int(r["reads"])) for r in expected)
    assert adbc_rows(server.uri, "SELECT id, description FROM spaced") == [("x", "one")]
    # The plain remote file is split into byte ranges: later ranges are range requests.
    ranges = [r for method, path, r in handler.requests if path == "/pub/genome.fa" and r]
    assert ranges, handler.requests


def test_missing_objects_and_unreachable_stores_are_clear_errors(
    launch: Any, tmp_path: Path, s3: str
) -> None:
    config = s3_config(tmp_path, s3)
    with pytest.raises(ServerError, match=r"none\.fa"):
        launch("--config", str(config), "--table", "t=s3://lab/data/none.fa", tables=False)
    server = launch("--config", str(config), "--data-root", "s3://lab/data", tables=False)
    status = grpc_status_of(
        server.uri, "CREATE EXTERNAL TABLE m STORED AS FASTA LOCATION 's3://lab/data/none.fa'"
    )
    assert status.code == "NOT_FOUND", status
    closed = f"http://127.0.0.1:{free_port()}/x/a.fa"
    server = launch("--data-root", closed.rsplit("/", 1)[0], tables=False)
    status = grpc_status_of(
        server.uri, f"CREATE EXTERNAL TABLE u STORED AS FASTA LOCATION '{closed}'"
    )
    assert status.code == "UNAVAILABLE", status
    assert "127.0.0.1" in status.message, status


def test_a_file_that_changes_while_read_is_an_error_not_fewer_rows(
    launch: Any, web: tuple[str, type[RangeHandler]]
) -> None:
    base, _ = web
    server = launch("--table", f"g={base}/grown/pub/genome.fa", tables=False)
    client = flight.FlightClient(server.uri)
    try:
        for sql in ("SELECT COUNT(*) FROM g", "SELECT id, sequence FROM g"):
            with pytest.raises(pa.ArrowException) as raised:
                run_sql(client, sql)
            status = grpc_status(raised.value)
            assert status.code == "UNAVAILABLE", (sql, status)
            assert "changed while being read" in status.message, status
        assert run_sql(client, "SELECT 1 AS one").to_pylist() == [{"one": 1}]
    finally:
        client.close()


def test_an_index_the_store_refuses_keeps_the_stores_code(
    launch: Any, files: dict[str, Any], web: tuple[str, type[RangeHandler]]
) -> None:
    """fasta_region() names why the store did not give the index (PERMISSION_DENIED for 403,
    UNAVAILABLE for a failing store) rather than blaming the query; without the index, scans
    read the whole file and answer as Biopython does."""
    base, _ = web
    local = files["root"] / "pub" / "refused.fa"
    local.write_text(files["more"])
    pysam.faidx(str(local))
    records = fasta_rows(files["more"])
    tables = [f"t{code}={base}/refuse/{code}/pub/refused.fa" for code in (403, 404, 500)]
    arguments = [argument for table in tables for argument in ("--table", table)]
    server = launch(*arguments, tables=False)
    expected = {403: "PERMISSION_DENIED", 404: "INVALID_ARGUMENT", 500: "UNAVAILABLE"}
    first = records[0][0]
    for code, grpc_code in expected.items():
        status = grpc_status_of(server.uri, f"SELECT * FROM fasta_region('t{code}', '{first}')")
        assert status.code == grpc_code, (code, status)
        if code == 404:  # no index: the client's query cannot be answered
            assert "no index" in status.message, status
        else:
            assert "refused.fa.fai" in status.message, status
        lengths = adbc_rows(server.uri, f"SELECT id, length(sequence) FROM t{code}")
        assert sorted(lengths) == sorted((i, len(s)) for i, _, s in records), code
    assert adbc_rows(server.uri, "SELECT 1") == [(1,)]


def test_client_tables_stay_under_url_data_roots(
    launch: Any, monkeypatch: pytest.MonkeyPatch, files: dict[str, Any], s3: str,
    web: tuple[str, Any],
) -> None:  # fmt: skip
    base, handler = web
    # Credentials and endpoint from the standard AWS variables this time.
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT": s3, "AWS_ALLOW_HTTP": "true",
                       "AWS_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    server = launch("--data-root", "s3://lab/data", "--data-root", f"{base}/pub", tables=False)
    ok = [
        ("g", "FASTA", "s3://lab/data/genome.fa"),
        ("d", "FASTA", "s3://lab/data/more/"),
        ("c", "CSV", "s3://lab/data/samples.csv"),
        ("w", "FASTA", f"{base}/pub/genome.fa"),
        ("q", "FASTQ", "s3://lab/data/*.fq.gz"),
    ]
    for name, stored, location in ok:
        sql = f"CREATE EXTERNAL TABLE {name} STORED AS {stored} LOCATION '{location}'"
        execute(server.uri, sql)
    assert adbc_rows(server.uri, "SELECT count(*) FROM g") == [(300,)]
    assert adbc_rows(server.uri, "SELECT count(*) FROM d") == [(40,)]
    assert adbc_rows(server.uri, "SELECT count(*) FROM c") == [(300,)]
    assert adbc_rows(server.uri, "SELECT count(*) FROM q") == [(500,)]
    got = adbc_rows(server.uri, "SELECT id, sequence FROM w ORDER BY id")
    assert got == sorted((i, s) for i, _, s in fasta_rows(files["genome"]))
    before = len(handler.requests)
    refused = [
        "s3://lab/secret/samples.csv",
        "s3://lab/data-secret/samples.csv",
        "s3://lab/data/../secret/samples.csv",
        "s3://lab/data/%2e%2e/secret/samples.csv",
        "s3://lab/data/x%2F..%2F..%2Fsecret/samples.csv",
        "s3://lab/*/samples.csv",
        "s3://other/data/samples.csv",
        f"{base}/private/samples.csv",
        f"{base}/pub/../private/samples.csv",
        f"{base}/pub%2F..%2Fprivate/samples.csv",
        "http://169.254.169.254/latest/meta-data/",
        "s3://user:pw@lab/data/samples.csv",
        "gs://lab/data/samples.csv",
    ]
    for n, location in enumerate(refused):
        status = grpc_status_of(
            server.uri, f"CREATE EXTERNAL TABLE x{n} STORED AS CSV LOCATION '{location}'"
        )
        assert status.code in ("PERMISSION_DENIED", "INVALID_ARGUMENT"), (location, status)
        assert "secret" not in status.message or location in status.message, status
    private = [r for r in handler.requests[before:] if "private" in r[1]]
    assert private == [], "refused before any request"
    # A server inside the root that redirects elsewhere is not followed.
    status = grpc_status_of(
        server.uri, f"CREATE EXTERNAL TABLE r STORED AS CSV LOCATION '{base}/pub/moved.fa'"
    )
    assert status.code != "OK", status
    assert not any("private" in r[1] for r in handler.requests[before:])


def test_a_large_remote_file_streams_in_bounded_memory(
    launch: Any, tmp_path: Path, web: tuple[str, Any], files: dict[str, Any]
) -> None:
    """A client that stops reading stops the download: the server does not buffer the file."""
    base, _ = web
    size = 192 << 20
    big = files["root"] / "pub/big.fa"
    line = b"ACGT" * 25 + b"\n"
    with big.open("wb") as out:
        for n in range(size // (len(line) * 1000)):
            out.write(f">r{n}\n".encode() + line * 1000)
    server = launch(
        "--table", f"big={base}/pub/big.fa", "--memory-limit", "64MiB",
        "--target-partitions", "1", "--batch-rows", "64", tables=False,
    )  # fmt: skip
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        baseline = rss_bytes(server.process.pid)
        cur.execute("SELECT id, sequence FROM big")
        reader = cur.fetch_record_batch()
        first = reader.read_next_batch()
        assert first.num_rows > 0
        time.sleep(2)
        grown = rss_bytes(server.process.pid) - baseline
        assert grown < 96 << 20, f"RSS grew by {grown >> 20} MiB while the client paused"
        rows = first.num_rows + sum(batch.num_rows for batch in reader)
    assert rows == size // (len(line) * 1000)


def execute(uri: str, sql: str) -> None:
    """Runs ``sql`` and reads its rows (errors of a running query come with them)."""
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        if cur.description:
            cur.fetchall()


def fetched(requests: list[tuple[str, str, str | None]], path: str, size: int) -> int:
    """Bytes the server asked for of ``path``: ranges as requested, whole GETs as the file."""
    total = 0
    for method, requested, wanted in requests:
        if method != "GET" or requested != path:
            continue
        if wanted is None:
            total += size
            continue
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        total += (min(int(last), size - 1) if last else size - 1) - int(first) + 1
    return total


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "bgzf"])
def test_remote_indexes_serve_regions_and_lookups_with_range_reads(
    launch: Any, tmp_path: Path, files: dict[str, Any], s3: str, web: tuple[str, Any],
    compressed: bool,
) -> None:  # fmt: skip
    """The .fai (and .gzi) beside a remote file: fasta_region, WHERE id and COUNT(*) fetch
    only what they need; the oracle is samtools (pysam) reading the same file locally."""
    base, handler = web
    name = "indexed.fa.gz" if compressed else "indexed.fa"
    local = files["root"] / "pub" / name
    genome = files["big_genome"]
    if not local.exists():
        plain = tmp_path / "indexed.fa"
        plain.write_text(genome)
        if compressed:
            pysam.tabix_compress(str(plain), str(local))
        else:
            local.write_text(genome)
        pysam.faidx(str(local))
    size = local.stat().st_size
    records = fasta_rows(genome)
    by_id = {record_id: sequence for record_id, _, sequence in records}
    client = boto3.client(
        "s3", endpoint_url=s3, region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    suffixes = ["", ".fai", ".gzi"] if compressed else ["", ".fai"]
    for suffix in suffixes:  # the file first: an index older than its file is not used
        client.put_object(Bucket="lab", Key=f"idx/{name}{suffix}", Body=(
            Path(f"{local}{suffix}").read_bytes()))  # fmt: skip
    server = launch(
        "--config", str(s3_config(tmp_path, s3)),
        "--table", f"s3genome=s3://lab/idx/{name}",
        "--table", f"webgenome={base}/pub/{name}",
        "--target-partitions", "2", "--memory-limit", "64MiB", tables=False,
    )  # fmt: skip
    wanted = [records[7][0], records[31][0], records[-1][0]]
    last = records[-1]
    with pysam.FastaFile(str(local)) as samtools:
        for table in ("s3genome", "webgenome"):
            regions = [f"{wanted[0]}:1-50", f"{wanted[1]}:3-3", f"{last[0]}:{len(last[2])}"]
            got = adbc_rows(
                server.uri,
                f"SELECT id, start, \"end\", sequence FROM fasta_region('{table}', "
                + ", ".join(f"'{r}'" for r in regions) + ")",
            )
            expected = []
            for region in regions:
                contig, _, span = region.partition(":")
                first, _, end = span.partition("-")
                end = end or str(samtools.get_reference_length(contig))
                expected.append((contig, int(first), int(end),
                                 samtools.fetch(contig, int(first) - 1, int(end))))  # fmt: skip
            assert got == expected, table
        assert expected[0][3] == by_id[wanted[0]][:50], "samtools and Biopython agree"
    before = len(handler.requests)
    for table in ("s3genome", "webgenome"):
        listed = ", ".join(f"'{w}'" for w in wanted)
        got = adbc_rows(server.uri, f"SELECT id, sequence FROM {table} WHERE id IN ({listed})")
        assert sorted(got) == sorted((w, by_id[w]) for w in wanted), table
        assert adbc_rows(server.uri, f"SELECT count(*) FROM {table}") == [(len(records),)]
        lengths = adbc_rows(server.uri, f"SELECT id, length(sequence) FROM {table}")
        assert sorted(lengths) == sorted((i, len(s)) for i, _, s in records)
    # Once the index is checked (once per version), a lookup fetches little of the file.
    before = len(handler.requests)
    got = adbc_rows(server.uri, f"SELECT id FROM webgenome WHERE id = '{wanted[1]}'")
    assert got == [(wanted[1],)]
    bytes_read = fetched(handler.requests[before:], f"/pub/{name}", size)
    assert 0 < bytes_read < size // 4, (bytes_read, size, handler.requests[before:])
    if compressed:
        return
    # The longest record, looked up and read as a region: fetches stop at its end (a request
    # is at least 64 KiB), however far ahead a long sequential read would fetch.
    longest = max(records, key=lambda record: len(record[2]))[0]
    header_start, bases_end = record_bytes(Path(f"{local}.fai"), longest)
    slack = 64 << 10
    for sql in (
        f"SELECT id, sequence FROM webgenome WHERE id = '{longest}'",
        f"SELECT sequence FROM fasta_region('webgenome', '{longest}')",
    ):
        before = len(handler.requests)
        got = adbc_rows(server.uri, sql)
        assert got[0][-1] == by_id[longest], sql
        bytes_read = fetched(handler.requests[before:], f"/pub/{name}", size)
        requests = handler.requests[before:]
        assert bytes_read <= bases_end - header_start + slack, (sql, bytes_read, requests)


def record_bytes(fai: Path, name: str) -> tuple[int, int]:
    """Where the record ``name`` starts (its header: the end of the record before) and where
    its bases end, from a samtools .fai."""
    start = 0
    for line in fai.read_text().splitlines():
        record, *numbers = line.split("\t")[:5]
        length, offset, line_bases, line_width = map(int, numbers)
        full, rest = divmod(length, line_bases)
        end = offset + full * line_width + (rest + line_width - line_bases if rest else 0)
        if record == name:
            return start, end
        start = end
    raise KeyError(name)


def test_remote_bgzf_is_split_by_block_and_read_by_ranges(
    launch: Any, tmp_path: Path, web: tuple[str, Any], files: dict[str, Any]
) -> None:
    """A remote BGZF FASTQ larger than DataFusion's 10 MiB split size is scanned by several
    partitions, each fetching its blocks by range requests; answers match Biopython."""
    base, handler = web
    rng = random.Random(7)
    text = "".join(
        f"@b{n} x\n{random_bases(rng, 150)}\n+\n"
        + "".join(chr(rng.randrange(33, 75)) for _ in range(150)) + "\n"
        for n in range(90_000)
    )  # fmt: skip
    plain = tmp_path / "big.fq"
    plain.write_text(text)
    bgzf = files["root"] / "pub" / "big.fq.gz"
    pysam.tabix_compress(str(plain), str(bgzf), force=True)
    size = bgzf.stat().st_size
    assert size > 11 << 20, "over DataFusion's repartition_file_min_size (10 MiB)"
    reads = list(FastqGeneralIterator(io.StringIO(text)))
    server = launch(
        "--table", f"big={base}/pub/big.fq.gz", "--target-partitions", "4",
        "--memory-limit", "128MiB", tables=False,
    )  # fmt: skip
    before = len(handler.requests)
    got = adbc_rows(
        server.uri,
        "SELECT count(*), count(DISTINCT id), sum(length(sequence)), sum(length(quality)), "
        "min(id), max(id) FROM big",
    )
    ids = sorted(title.split()[0] for title, _, _ in reads)
    total = sum(len(seq) for _, seq, _ in reads)
    assert got == [(len(reads), len(reads), total, total, ids[0], ids[-1])]
    # No range reads the whole file (4 partitions would fetch 4 sizes).
    assert fetched(handler.requests[before:], "/pub/big.fq.gz", size) < 1.5 * size
    picked = [reads[0], reads[44_444], reads[-1]]
    listed = ", ".join(f"'{title.split()[0]}'" for title, _, _ in picked)
    got = adbc_rows(server.uri, f"SELECT id, sequence, quality FROM big WHERE id IN ({listed})")
    assert sorted(got) == sorted((t.split()[0], s, q) for t, s, q in picked)
    plan = " ".join(str(row) for row in adbc_rows(server.uri, "EXPLAIN SELECT count(*) FROM big"))
    assert plan.count("big.fq.gz:") >= 2, f"split into byte ranges: {plan}"


def grpc_status_of(uri: str, sql: str) -> GrpcStatus:
    """The status ``sql`` fails with through ADBC (``OK`` when it succeeds)."""
    try:
        execute(uri, sql)
    except adbc_driver_manager.Error as error:
        return grpc_status(error)
    return GrpcStatus("OK", "")
