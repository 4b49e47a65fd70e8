"""Watching a running flightbear from outside, as an operator would.

- ``grpc_status``: the gRPC code and server message behind a pyarrow.flight or ADBC error.
- ``read_stream`` / ``run_sql``: answers read chunk by chunk. pyarrow's ``read_all`` turns a
  CANCELLED stream into a simulated Ctrl-C (KeyboardInterrupt in the main thread, whichever
  thread was reading), so streams that may be cancelled must not be read with it.
- CPU of the server process (``cpu_seconds``, ``cores_used``, ``wait_until_idle``), from /proc.
- Memory of the server process: resident and peak (``rss_bytes``, ``peak_rss_bytes``,
  ``reset_peak_rss``) and ``MemoryWatch``, which kills a server that grows past a bound so a
  regression cannot take a shared machine down.
- ``healthcheck``: the binary's own ``flightbear healthcheck`` subcommand, timed.

Linux only (/proc). Used by tests/compat/test_limits.py and tests/bench/load_bench.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

MIB = 1 << 20

# ---------------------------------------------------------------------------------------------
# gRPC status of a client error
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcStatus:
    """A gRPC code (``"RESOURCE_EXHAUSTED"``) and the message the server sent with it."""

    code: str
    message: str


# Arrow C++ words some codes its own way: "Flight returned timeout error", "Flight cancelled call",
# and reports PERMISSION_DENIED as "unauthorized" (UNAUTHENTICATED is "unauthenticated").
_PYARROW_NAMES = {
    "timeout": "DEADLINE_EXCEEDED",
    "cancelled": "CANCELLED",
    "unauthorized": "PERMISSION_DENIED",
}
_PYARROW = re.compile(
    r"^(?:Flight|gRPC) (?:returned (?P<name>[a-z ]+?) error|(?P<cancelled>cancelled) call), "
    r"with message: (?P<message>.*?)(?:\. gRPC client debug context: .*)?$",
    re.DOTALL,
)
# The Go Flight SQL driver behind ADBC: "CANCELLED: [FlightSQL] <message> (Canceled; DoGet: ...)".
_ADBC = re.compile(
    r"^[A-Z_]+: \[FlightSQL\] (?P<message>.*) \((?P<name>[A-Za-z]+); [^()]*\)", re.DOTALL
)
_GO_NAMES = {"Canceled": "CANCELLED"}


def grpc_status(error: BaseException) -> GrpcStatus:
    """The gRPC status a pyarrow.flight or ADBC (Flight SQL driver) error reports.

    Raises ValueError for an error that carries no gRPC status (a bug in the test, or a
    client-side failure), so a wrong guess can never pass for the expected code.
    """
    text = str(error)
    match = _PYARROW.match(text)
    if match:
        name = match["cancelled"] or match["name"]
        code = _PYARROW_NAMES.get(name, name.upper().replace(" ", "_"))
        return GrpcStatus(code, match["message"])
    match = _ADBC.match(text)
    if match:
        name = match["name"]
        code = _GO_NAMES.get(name, re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper())
        return GrpcStatus(code, match["message"])
    raise ValueError(f"not a gRPC error: {type(error).__name__}: {text[:500]}")


# ---------------------------------------------------------------------------------------------
# Reading answers
# ---------------------------------------------------------------------------------------------


def read_stream(reader: flight.FlightStreamReader) -> pa.Table:
    """Every batch of a DoGet stream, read chunk by chunk (never `read_all`: see above)."""
    batches = []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        if chunk.data is not None:
            batches.append(chunk.data)
    return pa.Table.from_batches(batches, schema=reader.schema)


def run_sql(
    client: flight.FlightClient, sql: str, options: flight.FlightCallOptions | None = None
) -> pa.Table:
    """The answer to ``sql``: GetFlightInfo, then DoGet of its one endpoint."""
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    if not info.endpoints:  # DDL runs at GetFlightInfo and has nothing to stream
        return info.schema.empty_table()
    return read_stream(client.do_get(info.endpoints[0].ticket, options))


# ---------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses; the fields after the last ')' do not.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cores_used(pid: int, seconds: float) -> float:
    """How many cores the process kept busy, on average, over the next ``seconds``."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


# A server with nothing to do uses next to no CPU; a running query uses a whole core.
IDLE_CORES = 0.1


def wait_until_idle(pid: int, within: float, window: float = 0.5) -> float:
    """Seconds until the process used less than ``IDLE_CORES`` over one ``window``.

    Raises AssertionError when it is still busy after ``within`` seconds.
    """
    started = time.monotonic()
    used = float("nan")
    while time.monotonic() - started < within:
        used = cores_used(pid, window)
        if used < IDLE_CORES:
            return time.monotonic() - started
    raise AssertionError(
        f"the server still used {used:.2f} cores {within} s later (idle is < {IDLE_CORES})"
    )


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def _status_field(pid: int, name: str) -> int:
    """A ``kB`` field of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/{pid}/status has no {name}")


def rss_bytes(pid: int) -> int:
    """Resident memory now (VmRSS)."""
    return _status_field(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """Highest resident memory since start or since ``reset_peak_rss`` (VmHWM)."""
    return _status_field(pid, "VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Starts VmHWM afresh at the current resident memory (Linux clear_refs, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class MemoryWatch:
    """Watches a process's resident memory while a block runs.

    On entry the peak (VmHWM) is reset; a thread samples VmRSS every ``interval`` seconds and
    SIGKILLs the process once it exceeds ``kill_above`` bytes. ``peak`` is the highest
    resident memory seen, ``killed`` says whether the watch had to kill it.
    """

    def __init__(self, pid: int, kill_above: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.kill_above = kill_above
        self.interval = interval
        self.peak = 0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> int | None:
        try:
            return rss_bytes(self.pid)
        except (OSError, ValueError):  # the process is gone (or a zombie without memory)
            return None

    def _watch(self) -> None:
        while not self._stop.is_set():
            rss = self._sample()
            if rss is None:
                return
            self.peak = max(self.peak, rss)
            if rss > self.kill_above:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryWatch:
        reset_peak_rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        if not self.killed:
            try:
                self.peak = max(self.peak, peak_rss_bytes(self.pid))
            except (OSError, ValueError):
                pass

    def assert_peak_below(self, bound: int) -> None:
        assert not self.killed, (
            f"the server's resident memory passed {self.kill_above // MIB} MiB; "
            "it was killed to protect the machine"
        )
        assert self.peak < bound, (
            f"the server's peak resident memory was {self.peak / MIB:.0f} MiB, "
            f"more than {bound / MIB:.0f} MiB"
        )


# ---------------------------------------------------------------------------------------------
# The healthcheck subcommand
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthAnswer:
    ok: bool
    seconds: float
    output: str


def healthcheck(binary: Path, port: int, wait: int = 30) -> HealthAnswer:
    """Runs ``flightbear healthcheck --addr http://127.0.0.1:PORT --timeout WAIT``, timed."""
    command = [str(binary), "healthcheck", "--addr", f"http://127.0.0.1:{port}"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--timeout", str(wait)], capture_output=True, text=True, timeout=wait + 30
    )
    seconds = time.monotonic() - started
    return HealthAnswer(done.returncode == 0, seconds, (done.stdout + done.stderr).strip())
