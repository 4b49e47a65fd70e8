"""Load benchmark (issue 8): many clients with known answers while one heavy query runs.

    python tests/bench/load_bench.py [--clients 32] [--duration 30] [--heavy | --no-heavy]

Generates seeded data in a temporary directory (a FASTA of reads, a sample sheet, a CSV that
maps reads to samples, and a CSV of numbers for the heavy query), starts the release flightbear
binary on a free loopback port, and runs at once:

- ``--clients`` threads, each with its own pyarrow.flight client, sending back to back a mix
  of queries whose answers this script knows from its own oracle (plain Python over the files
  it wrote): a count, a point lookup, a join of the FASTA against a CSV, an aggregate over a
  CSV, and SELECT 1;
- one heavy query, a cross join of 120,000 x 120,000 numbers (its answer is known too),
  started before the clients and started again whenever it finishes, until the end;
- a prober running the binary's ``flightbear healthcheck`` twice a second.

Prints clients, queries, QPS, latency percentiles (all and per kind), wrong answers, errors by
gRPC code, heavy-query runs, health-check latency while the heavy query runs, and the server's
peak resident memory and CPU. Exits 1 on any wrong answer, a failed health check, or a server
that died.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from flightbear_testing import (
    SPECIES,
    Server,
    fasta_text,
    make_records,
    read_delimited,
    read_fasta,
    server_binary,
    write_samples_csv,
)
from server_probes import (
    MIB,
    cpu_seconds,
    grpc_status,
    healthcheck,
    peak_rss_bytes,
    read_stream,
    reset_peak_rss,
    run_sql,
)

Rows = list[tuple[Any, ...]]
SAMPLES = 2_000
MAX_READ_LENGTH = 1_500
HEAVY_SUM = 1_000  # the heavy query counts pairs of numbers that add up to this
HEALTH_EVERY = 0.5  # seconds between health checks
MISSING_ID = "rd_no_such_read"

# ------------------------------------------------------------------------------------------------
# Data and its oracle
# ------------------------------------------------------------------------------------------------


@dataclass
class Oracle:
    """What every query must answer, computed from the files by plain Python."""

    lengths: list[int]  # sorted
    reads: dict[str, tuple[str | None, int]]  # id → (description, length)
    sample_ids: list[str]
    by_sample: dict[str, tuple[int, int]]  # sample → (reads, bases)
    by_species: dict[str, tuple[int, int]]  # species → (samples, read_count sum)
    heavy_pairs: int


def write_data(root: Path, seed: int, reads: int, heavy_rows: int) -> tuple[list[str], Oracle]:
    """Writes the tables; returns the server's --table flags and the oracle."""
    rng = random.Random(seed)
    fasta = root / "reads.fa"
    fasta.write_text(fasta_text(make_records(rng, "rd", reads, MAX_READ_LENGTH), rng))
    samples = root / "samples.csv"
    write_samples_csv(samples, rng, SAMPLES)
    links = root / "read_samples.csv"
    records = read_fasta(fasta)
    # Samples S0000..S1949 have reads; the last 50 have none (their join is empty).
    with open(links, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["read_id", "sample_id"])
        for record in records:
            if rng.random() < 0.9:  # some reads belong to no sample
                writer.writerow([record.id, f"S{rng.randrange(SAMPLES - 50):04d}"])
    pool = root / "pool.csv"
    numbers = [rng.randint(0, 2 * HEAVY_SUM) for _ in range(heavy_rows)]
    pool.write_text("k\n" + "".join(f"{n}\n" for n in numbers))

    length_of = {r.id: len(r.sequence) for r in records}
    by_sample: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for link in read_delimited(links):
        counts = by_sample[link["sample_id"]]
        counts[0] += 1
        counts[1] += length_of[link["read_id"]]
    by_species: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample in read_delimited(samples):
        totals = by_species[sample["species"]]
        totals[0] += 1
        totals[1] += int(sample["read_count"])
    tally = Counter(numbers)
    oracle = Oracle(
        lengths=sorted(length_of.values()),
        reads={r.id: (r.description, len(r.sequence)) for r in records},
        sample_ids=[f"S{i:04d}" for i in range(SAMPLES)],
        by_sample={k: (v[0], v[1]) for k, v in by_sample.items()},
        by_species={k: (v[0], v[1]) for k, v in by_species.items()},
        heavy_pairs=sum(tally[n] * tally[HEAVY_SUM - n] for n in tally),
    )
    tables = {"reads": fasta, "samples": samples, "read_samples": links, "pool": pool}
    flags = [arg for name, path in tables.items() for arg in ("--table", f"{name}={path}")]
    return flags, oracle


# ------------------------------------------------------------------------------------------------
# The query mix: each builds a query and its expected rows
# ------------------------------------------------------------------------------------------------


def count_query(rng: random.Random, oracle: Oracle) -> tuple[str, Rows]:
    k = rng.randint(0, MAX_READ_LENGTH + 100)
    expected = len(oracle.lengths) - bisect.bisect_left(oracle.lengths, k)
    return f"SELECT count(*) AS n FROM reads WHERE length(sequence) >= {k}", [(expected,)]


def lookup_query(rng: random.Random, oracle: Oracle) -> tuple[str, Rows]:
    read_id = MISSING_ID if rng.random() < 0.1 else rng.choice(list(oracle.reads))
    sql = f"SELECT id, description, length(sequence) AS len FROM reads WHERE id = '{read_id}'"
    if read_id not in oracle.reads:
        return sql, []
    description, length = oracle.reads[read_id]
    return sql, [(read_id, description, length)]


def join_query(rng: random.Random, oracle: Oracle) -> tuple[str, Rows]:
    sample = rng.choice(oracle.sample_ids)
    reads, bases = oracle.by_sample.get(sample, (0, None))
    sql = (
        "SELECT count(*) AS n, sum(length(r.sequence)) AS bases FROM reads r "
        f"JOIN read_samples s ON r.id = s.read_id WHERE s.sample_id = '{sample}'"
    )
    return sql, [(reads, bases)]


def species_query(rng: random.Random, oracle: Oracle) -> tuple[str, Rows]:
    species = rng.choice(SPECIES)
    literal = species.replace("'", "''")
    samples, total = oracle.by_species.get(species, (0, None))
    sql = f"SELECT count(*) AS n, sum(read_count) AS total FROM samples WHERE species = '{literal}'"
    return sql, [(samples, total)]


def select_one(rng: random.Random, oracle: Oracle) -> tuple[str, Rows]:
    return "SELECT 1 AS one", [(1,)]


QUERIES: dict[str, Callable[[random.Random, Oracle], tuple[str, Rows]]] = {
    "count": count_query,
    "lookup": lookup_query,
    "join csv": join_query,
    "csv agg": species_query,
    "select 1": select_one,
}


def heavy_query(oracle: Oracle) -> tuple[str, Rows]:
    sql = f"SELECT count(*) AS n FROM pool a CROSS JOIN pool b WHERE a.k + b.k = {HEAVY_SUM}"
    return sql, [(oracle.heavy_pairs,)]


def rows_of(table: pa.Table) -> Rows:
    return list(zip(*(column.to_pylist() for column in table.columns)))


# ------------------------------------------------------------------------------------------------
# The load
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One health check: whether the heavy query was running, its verdict and latency."""

    during_heavy: bool
    ok: bool
    seconds: float


@dataclass
class ServerFacts:
    binary: Path
    flags: str
    idle_health: list[Probe]
    peak_rss: int
    cores: float
    client_cores: float
    alive: bool


@dataclass
class Tally:
    """Everything the threads record; list.append is atomic, so no lock is needed."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    wrong: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    heavy_runs: list[float] = field(default_factory=list)
    heavy_running: bool = False
    health: list[Probe] = field(default_factory=list)

    def error(self, kind: str, error: BaseException) -> None:
        try:
            code = grpc_status(error).code
        except ValueError:
            code = type(error).__name__
        self.errors[code] += 1
        self.error_examples.setdefault(code, f"{kind}: {str(error)[:300]}")


def client_loop(uri: str, seed: int, stop_at: float, oracle: Oracle, tally: Tally) -> None:
    rng = random.Random(seed)
    client = flight.FlightClient(uri)
    try:
        while time.monotonic() < stop_at:
            kind = rng.choice(list(QUERIES))
            sql, expected = QUERIES[kind](rng, oracle)
            started = time.perf_counter()
            try:
                rows = rows_of(run_sql(client, sql))
            except (pa.ArrowException, OSError) as error:
                tally.error(kind, error)
                continue
            tally.latencies[kind].append(time.perf_counter() - started)
            if rows != expected:
                tally.wrong.append(f"{kind}: {sql!r} answered {rows!r:.200}, not {expected!r}")
    finally:
        client.close()


class HeavyLoop:
    """Runs the heavy query again and again until stopped; checks every answer."""

    def __init__(self, uri: str, oracle: Oracle, tally: Tally) -> None:
        self.sql, self.expected = heavy_query(oracle)
        self.tally = tally
        self.client = flight.FlightClient(uri)
        self.reader: flight.FlightStreamReader | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                info = self.client.get_flight_info(
                    flight.FlightDescriptor.for_command(self.sql.encode())
                )
                self.reader = self.client.do_get(info.endpoints[0].ticket)
                self.tally.heavy_running = True
                rows = rows_of(read_stream(self.reader))
            except (pa.ArrowException, OSError) as error:
                if not self.stopping.is_set():
                    self.tally.error("heavy", error)
                continue
            finally:
                self.tally.heavy_running = False
            self.tally.heavy_runs.append(time.perf_counter() - started)
            if rows != self.expected:
                self.tally.wrong.append(f"heavy: answered {rows!r}, not {self.expected!r}")

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.tally.heavy_running and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        if self.reader is not None:
            self.reader.cancel()
        self.thread.join(30)
        self.client.close()


def health_loop(binary: Path, port: int, stop: threading.Event, tally: Tally) -> None:
    while not stop.is_set():
        tally.health.append(probe(binary, port, tally.heavy_running))
        stop.wait(HEALTH_EVERY)


def probe(binary: Path, port: int, during_heavy: bool) -> Probe:
    answer = healthcheck(binary, port, wait=10)
    return Probe(during_heavy, answer.ok and answer.output == "SERVING", answer.seconds)


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_row(label: str, seconds: list[float]) -> str:
    if not seconds:
        return f"    {label:<14}{0:>9,}"
    ms = [s * 1000 for s in seconds]
    marks = "".join(f"{percentile(ms, p):9.1f}" for p in (50, 90, 99))
    return f"    {label:<14}{len(ms):>9,}{marks}{max(ms):9.1f}"


def health_row(label: str, probes: list[Probe]) -> str:
    ms = [probe.seconds * 1000 for probe in probes]
    failed = sum(not probe.ok for probe in probes)
    return f"    {label:<14}{len(ms):>9,}{percentile(ms, 50):9.1f}{max(ms):9.1f}   {failed} failed"


def report(args: argparse.Namespace, tally: Tally, server: ServerFacts) -> list[str]:
    every = [v for values in tally.latencies.values() for v in values]
    errors = ", ".join(f"{code} {n}" for code, n in tally.errors.most_common()) or "none"
    lines = [
        "flightbear load benchmark",
        f"  server          {server.binary} {server.flags}",
        f"  load            {args.clients} pyarrow.flight clients for {args.duration:g} s, "
        f"heavy query {'on' if args.heavy else 'off'}",
        f"  queries         {len(every):,} answered, {len(every) / args.duration:.1f} QPS",
        f"  wrong answers   {len(tally.wrong)}",
        *(f"    {wrong}" for wrong in tally.wrong[:10]),
        f"  errors          {errors}",
        *(f"    e.g. {example}" for example in tally.error_examples.values()),
        "  latency (ms)      answers      p50      p90      p99      max",
        latency_row("all", every),
        *(latency_row(kind, tally.latencies[kind]) for kind in QUERIES),
    ]
    if args.heavy:
        runs = tally.heavy_runs
        took = f", {sum(runs) / len(runs):.1f} s each" if runs else ""
        lines.append(f"  heavy query     {len(runs)} runs finished{took}, cancelled at the end")
    lines.append("  health (ms)        probes      p50      max")
    lines.append(health_row("idle", server.idle_health))
    groups = {
        "heavy running": [p for p in tally.health if p.during_heavy],
        "load only": [p for p in tally.health if not p.during_heavy],
    }
    lines += [health_row(label, probes) for label, probes in groups.items() if probes]
    lines.append(
        f"  server          peak RSS {server.peak_rss / MIB:.0f} MiB, "
        f"CPU {server.cores:.2f} cores on average, {'alive' if server.alive else 'DIED'}"
    )
    lines.append(f"  this script     CPU {server.client_cores:.2f} cores on average (same machine)")
    return lines


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="client threads (default 32)")
    parser.add_argument("--duration", type=float, default=30, help="seconds of load (default 30)")
    parser.add_argument(
        "--heavy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the heavy query during the load (default: yes)",
    )
    parser.add_argument("--seed", type=int, default=2024, help="data and query seed")
    parser.add_argument("--reads", type=int, default=20_000, help="records in the FASTA")
    parser.add_argument(
        "--heavy-rows", type=int, default=120_000, help="rows of each side of the cross join"
    )
    parser.add_argument("--memory-limit", default="1GiB", help="the server's --memory-limit")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="another flag for the server (repeat)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    binary = server_binary()
    with tempfile.TemporaryDirectory(prefix="flightbear-load-") as tmp:
        root = Path(tmp)
        tables, oracle = write_data(root, args.seed, args.reads, args.heavy_rows)
        flags = ["--memory-limit", args.memory_limit, *args.server_arg]
        tally = Tally()
        with Server([*tables, *flags], root / "server.log") as server:
            pid = server.process.pid
            idle_health = [probe(binary, server.port, False) for _ in range(5)]
            reset_peak_rss(pid)
            cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
            own_before = cpu_seconds(os.getpid())

            heavy = HeavyLoop(server.uri, oracle, tally) if args.heavy else None
            if heavy:
                heavy.start()
            stop_health = threading.Event()
            prober = threading.Thread(
                target=health_loop, args=(binary, server.port, stop_health, tally), daemon=True
            )
            prober.start()
            stop_at = time.monotonic() + args.duration
            clients = [
                threading.Thread(
                    target=client_loop,
                    args=(server.uri, args.seed * 1000 + n, stop_at, oracle, tally),
                    daemon=True,
                )
                for n in range(args.clients)
            ]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(args.duration + 120)
            if heavy:
                heavy.stop()
            stop_health.set()
            prober.join(30)

            alive = server.alive()
            elapsed = time.monotonic() - wall_before
            facts = ServerFacts(
                binary=binary,
                flags=" ".join(flags),
                idle_health=idle_health,
                peak_rss=peak_rss_bytes(pid) if alive else 0,
                cores=(cpu_seconds(pid) - cpu_before) / elapsed if alive else 0.0,
                client_cores=(cpu_seconds(os.getpid()) - own_before) / elapsed,
                alive=alive,
            )
            lines = report(args, tally, facts)
            if not alive:
                lines.append(server.log())
    print("\n".join(lines))
    health_failed = any(not p.ok for p in [*facts.idle_health, *tally.health])
    return 1 if tally.wrong or health_failed or not facts.alive else 0


if __name__ == "__main__":
    sys.exit(main())
