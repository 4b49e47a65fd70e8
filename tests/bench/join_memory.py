"""Join memory benchmark (issue 11): peak memory and time of joins over long and short strings.

    python tests/bench/join_memory.py [--runs 3] [--binary PATH]

Writes the data of tests/compat/test_memory.py (three 30 Mbp records, 2,000 sites on them) and a
CSV of 20,000 short names in a temporary directory, then runs each query on a fresh server
(release binary, or --binary, e.g. an older build to compare) with a 128 MiB memory limit
(2 GiB for the short-string joins, which measure time) and one partition per scan. Prints, for
each query and run, the wall time of reading the whole result with pyarrow.flight, the rows
(or the error) and the server's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "tests" / "compat"))

import test_memory  # noqa: E402  (the data writers of the memory tests)

from flightbear_testing import Server  # noqa: E402

CHAINED = (
    "FROM sites a JOIN long l ON l.id = a.chrom JOIN sites b ON b.chrom = l.id AND b.pos = a.pos"
)
QUERIES = [
    (
        "sites x 30 Mbp records, substr",
        "128MiB",
        "SELECT c.chrom, c.pos, substr(l.sequence, c.pos, 21) AS kmer "
        "FROM sites c JOIN long l ON l.id = c.chrom",
    ),
    ("three-way join, substr", "128MiB", f"SELECT a.pos, substr(l.sequence, a.pos, 5) {CHAINED}"),
    (
        "hash join, 2 M rows of short names",
        "2GiB",
        "SELECT a.name, b.name AS n2 FROM short a JOIN short b ON a.k = b.k",
    ),
    (
        "nested loops, 4.5 M rows of short names",
        "2GiB",
        "SELECT a.name, b.name AS n2 FROM short a JOIN short b ON a.x < b.x AND b.x < 3000",
    ),
]


def write_short(path: Path) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["k", "x", "name"])
        for i in range(20_000):
            writer.writerow([i % 200, i, f"name-{i:06d}-{i % 7}"])


def peak_mib(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) >> 10
    return -1


def run(server: Server, sql: str) -> str:
    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(timeout=600)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        rows = sum(c.data.num_rows for c in client.do_get(info.endpoints[0].ticket, options))
        return f"{rows} rows"
    except pa.ArrowException as error:
        return f"error: {str(error).splitlines()[0][:120]}"
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--binary", type=Path, help="server binary (default: the release build)")
    args = parser.parse_args()
    if args.binary:
        os.environ["FLIGHTBEAR_BIN"] = str(args.binary.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        test_memory.write_long_records(data / "long.fa")
        test_memory.write_sites(data / "sites.csv")
        write_short(data / "short.csv")
        tables = [
            f"{name}={data / file}"
            for name, file in [("long", "long.fa"), ("sites", "sites.csv"), ("short", "short.csv")]
        ]
        for title, limit, sql in QUERIES:
            for index in range(args.runs):
                table_args = [arg for table in tables for arg in ("--table", table)]
                server = Server(
                    ["--memory-limit", limit, "--target-partitions", "1", *table_args],
                    data / "server.log",
                )
                try:
                    start = time.monotonic()
                    outcome = run(server, sql)
                    seconds = time.monotonic() - start
                    print(
                        f"{title} [{index + 1}]: {seconds:.2f} s, {outcome}, "
                        f"peak {peak_mib(server)} MiB (limit {limit})",
                        flush=True,
                    )
                finally:
                    server.stop()


if __name__ == "__main__":
    main()
