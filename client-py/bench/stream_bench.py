"""Client streaming benchmark: flightbear's Python client vs adbc-driver-flightsql.

Generates a FASTA file of short reads (3 million by default), serves it with the release
flightbear binary on a free loopback port, and has each client stream the same query from that
server, batch by batch, counting rows. Every run is a fresh subprocess, so its peak RSS is its own.

    python client-py/bench/stream_bench.py [--rows 3000000] [--runs 3] [--query SQL]

Prints rows/s, MB/s (Arrow bytes received) and peak RSS per client; the best run of each counts.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "bench-data"
# Shared test support (flightbear_testing.py): finds the server binary and runs it.
SUPPORT = REPO / "tests" / "support"


def write_reads(path: Path, rows: int) -> None:
    """Short-read FASTA: ids, a description on most records, 100-150 bp sequences."""
    rng = random.Random(42)
    pool = ["".join(rng.choice("ACGT") for _ in range(200)) for _ in range(512)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        chunk = []
        for i in range(rows):
            seq = pool[i % 512][: 100 + i % 51]
            if i % 5:
                chunk.append(f">read{i:09d} lane={i % 8} sample=S{i % 97}\n{seq}\n")
            else:
                chunk.append(f">read{i:09d}\n{seq}\n")
            if len(chunk) == 100_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    tmp.rename(path)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- one measured run, in its own process ----------------------------------------------------


def worker(client: str, uri: str, query: str) -> None:
    import pyarrow  # noqa: F401  (both clients need it; load it before the baseline)

    if client == "flightbear":
        import flightbear

        conn = flightbear.connect(uri)
        baseline = peak_rss_mib()
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        reader = conn.sql(query).to_arrow_record_batch_reader()
    elif client == "adbc":
        import adbc_driver_flightsql.dbapi as adbc

        conn = adbc.connect(uri, autocommit=True)
        cursor = conn.cursor()
        baseline = peak_rss_mib()
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        cursor.execute(query)
        reader = cursor.fetch_record_batch()
    else:
        raise SystemExit(f"unknown client {client}")
    rows = 0
    nbytes = 0
    batches = 0
    for batch in reader:
        rows += batch.num_rows
        nbytes += batch.nbytes
        batches += 1
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    if client == "adbc":
        cursor.close()
    conn.close()
    print(
        json.dumps(
            {
                "client": client,
                "rows": rows,
                "batches": batches,
                "bytes": nbytes,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "baseline_rss_mib": baseline,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def measure(client: str, uri: str, query: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", client, uri, query],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"{client} run failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    # Imported here, not at module level: a measured worker loads its own client and no more.
    sys.path.insert(0, str(SUPPORT))
    from flightbear_testing import Server, ServerError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--query", default="SELECT id, description, sequence FROM reads")
    args = parser.parse_args()

    args.data_dir.mkdir(parents=True, exist_ok=True)
    fasta = args.data_dir / f"reads_{args.rows}.fa"
    if not fasta.exists():
        print(f"generating {fasta} ...", flush=True)
        write_reads(fasta, args.rows)
    try:
        server = Server(["--fasta", f"reads={fasta}"], args.data_dir / "server.log")
    except ServerError as error:
        raise SystemExit(str(error)) from None
    with server:
        uri = server.uri
        print(f"server: {' '.join(server.command)} (log: {server.log_path})")
        print(f"query:  {args.query}")
        print(f"file:   {fasta} ({fasta.stat().st_size / 2**20:.0f} MiB)\n", flush=True)
        measure("flightbear", uri, args.query)  # warm the page cache and the server
        results: dict[str, list[dict]] = {"flightbear": [], "adbc": []}
        for _ in range(args.runs):
            for client in results:
                results[client].append(measure(client, uri, args.query))

    header = (
        f"{'client':<16}{'rows':>11}{'batches':>9}{'best s':>8}{'median s':>10}"
        f"{'rows/s':>13}{'MB/s':>7}{'client CPU s':>14}{'peak RSS':>11}{'RSS - base':>12}"
    )
    print(header)
    print("-" * len(header))
    for client, runs in results.items():
        best = min(runs, key=lambda r: r["seconds"])
        median = statistics.median(r["seconds"] for r in runs)
        peak = max(r["peak_rss_mib"] for r in runs)
        growth = max(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in runs)
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        name = "adbc-flightsql" if client == "adbc" else client
        print(
            f"{name:<16}{best['rows']:>11,}{best['batches']:>9}{best['seconds']:>8.3f}"
            f"{median:>10.3f}{best['rows'] / best['seconds']:>13,.0f}"
            f"{best['bytes'] / best['seconds'] / 1e6:>7.0f}{cpu:>14.3f}"
            f"{peak:>7.0f} MiB{growth:>8.0f} MiB"
        )
    fb = min(r["seconds"] for r in results["flightbear"])
    adbc = min(r["seconds"] for r in results["adbc"])
    fb_rss = max(r["peak_rss_mib"] for r in results["flightbear"])
    adbc_rss = max(r["peak_rss_mib"] for r in results["adbc"])
    fb_cpu = statistics.median(r["cpu_seconds"] for r in results["flightbear"])
    adbc_cpu = statistics.median(r["cpu_seconds"] for r in results["adbc"])
    print(
        f"\nflightbear vs ADBC: {adbc / fb:.2f}x the throughput (best run), "
        f"{fb_cpu / adbc_cpu:.2f}x the client CPU, {fb_rss / adbc_rss:.2f}x the peak RSS"
    )
    print("(client CPU: user+system seconds of the client process while streaming)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
    else:
        main()
