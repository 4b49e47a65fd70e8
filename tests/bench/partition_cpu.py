"""Wall time and server CPU time of one scan per partition count: how many cores a scan uses.

    python tests/bench/partition_cpu.py [FILE] [--partitions 1 2] [--runs 5] [--pin]

Starts flightbear once per partition count (``--target-partitions``) with FILE as table ``t``
(default ``bench-data/short_reads.fa.bgz``, written by ``make bench``), runs
``SELECT COUNT(*), SUM(length(sequence)) FROM t`` ``runs + 1`` times (the first warms the page
cache and is dropped) and prints the wall times and the server's CPU seconds (user + system,
from /proc/PID/stat) per scan. A scan that uses every core is CPU-bound: more partitions can
only help by using less CPU in all.

With ``--pin`` the server's threads are pinned to as many cores as it has partitions (the
first N cores, with ``sched_setaffinity`` on every thread once it listens; threads it starts
later inherit it): how a scan scales when each partition brings a core, as on a machine with
more cores than partitions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow.flight as flight

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from flightbear_testing import Server  # noqa: E402
from server_probes import run_sql  # noqa: E402

QUERY = "SELECT COUNT(*) AS n, SUM(length(sequence)) AS bases FROM t"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cores: set[int]) -> None:
    """Pins every thread of process ``pid`` to ``cores``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(ROOT / "bench-data/short_reads.fa.bgz"))
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pin", action="store_true", help="one core per partition")
    args = parser.parse_args()
    path = Path(args.file).resolve()
    if not path.exists():
        sys.exit(f"{path} does not exist: `make bench` writes the default file")
    print(f"{path.name} ({path.stat().st_size / 1e6:.1f} MB): {QUERY}")
    answers = set()
    for partitions in args.partitions:
        log = ROOT / "bench-data" / "partition_cpu.log"
        arguments = ["--table", f"t={path}", "--target-partitions", str(partitions)]
        with Server(arguments, log) as server:
            pinned = ""
            if args.pin:
                available = sorted(os.sched_getaffinity(0))
                if partitions > len(available):
                    sys.exit(f"--pin: {partitions} partitions but {len(available)} cores")
                pin(server.process.pid, set(available[:partitions]))
                pinned = f" on {partitions} core(s)"
            client = flight.FlightClient(server.uri)
            walls, cpus = [], []
            for run in range(args.runs + 1):
                before, start = cpu_seconds(server.process.pid), time.perf_counter()
                answers.add(str(run_sql(client, QUERY).to_pylist()))
                if run > 0:
                    walls.append(time.perf_counter() - start)
                    cpus.append(cpu_seconds(server.process.pid) - before)
            client.close()
        cores = sorted(c / w for c, w in zip(cpus, walls))[len(walls) // 2]
        print(
            f"{partitions} partition(s){pinned}: wall best {min(walls):.3f} s, "
            f"median {sorted(walls)[len(walls) // 2]:.3f} s; CPU median "
            f"{sorted(cpus)[len(cpus) // 2]:.2f} s; cores in use (median) {cores:.1f}"
        )
    assert len(answers) == 1, answers


if __name__ == "__main__":
    main()
