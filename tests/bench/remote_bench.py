"""Remote scan benchmark: one FASTA file scanned from disk and over HTTP (loopback), same run.

    python tests/bench/remote_bench.py [--mb 400] [--runs 3]

Writes ``bench-data/remote_bench.fa`` (records of 25 Mbp) once, serves its directory with the
range-capable HTTP file server of the compatibility tests, starts flightbear with the file as
``local`` and as ``web`` (``http://127.0.0.1:PORT/remote_bench.fa``), and reports the best
time of ``SELECT COUNT(*), SUM(length(sequence))`` on each, in MB/s of file bytes. The HTTP
server is Python's (one thread per connection): over loopback it, not flightbear, may be the
limit, so the figure is a floor for what a real object store or web server gives.
"""

from __future__ import annotations

import argparse
import http.server
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "tests" / "compat"))

from test_remote import RangeHandler  # noqa: E402

from flightbear_testing import Server  # noqa: E402
from server_probes import run_sql  # noqa: E402

RECORD = 25_000_000
WIDTH = 60


def write_genome(path: Path, megabytes: int) -> None:
    if path.exists() and path.stat().st_size >= megabytes * 1_000_000 * 0.95:
        return
    rng = random.Random(11)
    line = "".join(rng.choices("ACGT", k=WIDTH)) + "\n"
    lines = RECORD // WIDTH
    with path.open("w") as out:
        for n in range(max(1, megabytes * 1_000_000 // (RECORD + lines))):
            out.write(f">chr{n + 1} bench\n")
            out.write(line * lines)


def best(client: flight.FlightClient, sql: str, runs: int) -> tuple[float, Any]:
    times, answer = [], None
    for _ in range(runs):
        start = time.perf_counter()
        answer = run_sql(client, sql).to_pylist()
        times.append(time.perf_counter() - start)
    return min(times), answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="file size in MB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = ROOT / "bench-data"
    data.mkdir(exist_ok=True)
    genome = data / "remote_bench.fa"
    write_genome(genome, args.mb)

    class Handler(RangeHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(data), **k)

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{web.server_address[1]}/{genome.name}"
    log = data / "remote_bench.log"
    with Server(["--table", f"local={genome}", "--table", f"web={url}"], log) as server:
        client = flight.FlightClient(server.uri)
        size = genome.stat().st_size
        answers = {}
        for table in ("local", "web"):
            seconds, answers[table] = best(
                client, f"SELECT COUNT(*) AS n, SUM(length(sequence)) AS bases FROM {table}",
                args.runs,
            )  # fmt: skip
            rate = size / 1e6 / seconds
            print(f"{table:5}  {size / 1e6:7.0f} MB  {seconds:6.3f} s  {rate:7.0f} MB/s")
        assert answers["local"] == answers["web"], answers
    web.shutdown()


if __name__ == "__main__":
    main()
