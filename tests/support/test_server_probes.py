"""The probes themselves: gRPC statuses from real client messages, CPU and memory from /proc."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from server_probes import (
    IDLE_CORES,
    MIB,
    GrpcStatus,
    MemoryWatch,
    cores_used,
    cpu_seconds,
    grpc_status,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    wait_until_idle,
)

# Messages as pyarrow 26 and the ADBC Flight SQL driver 1.13 print them.
CLIENT_MESSAGES = {
    "Flight returned invalid argument error, with message: query too complex: x": GrpcStatus(
        "INVALID_ARGUMENT", "query too complex: x"
    ),
    "gRPC returned resource exhausted error, with message: limit\nof 1MiB. gRPC client debug "
    "context: RESOURCE_EXHAUSTED:limit\nof 1MiB. Client context: OK": GrpcStatus(
        "RESOURCE_EXHAUSTED", "limit\nof 1MiB"
    ),
    "Flight returned timeout error, with message: Deadline Exceeded": GrpcStatus(
        "DEADLINE_EXCEEDED", "Deadline Exceeded"
    ),
    "Flight returned unauthorized error, with message: no": GrpcStatus("PERMISSION_DENIED", "no"),
    "Flight returned unauthenticated error, with message: who": GrpcStatus(
        "UNAUTHENTICATED", "who"
    ),
    "Flight cancelled call, with message: Timeout expired": GrpcStatus(
        "CANCELLED", "Timeout expired"
    ),
    "Flight returned not found error, with message: table 'x' not found": GrpcStatus(
        "NOT_FOUND", "table 'x' not found"
    ),
    "CANCELLED: [FlightSQL] context canceled (Canceled; DoGet: endpoint 0: [])": GrpcStatus(
        "CANCELLED", "context canceled"
    ),
    "INVALID_ARGUMENT: [FlightSQL] the SQL text is 9 bytes (too long) (InvalidArgument; Prepare)": (
        GrpcStatus("INVALID_ARGUMENT", "the SQL text is 9 bytes (too long)")
    ),
    "IO: [FlightSQL] busy (ResourceExhausted; ExecuteQuery)": GrpcStatus(
        "RESOURCE_EXHAUSTED", "busy"
    ),
}


@pytest.mark.parametrize("message", CLIENT_MESSAGES)
def test_grpc_status_reads_pyarrow_and_adbc_messages(message: str) -> None:
    assert grpc_status(RuntimeError(message)) == CLIENT_MESSAGES[message]


def test_an_error_without_grpc_status_is_not_guessed() -> None:
    with pytest.raises(ValueError, match="not a gRPC error"):
        grpc_status(OSError("connection refused"))


def test_cpu_of_a_busy_and_an_idle_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        # Well above IDLE_CORES even when other work shares the machine's cores (a busy loop
        # gets about half a core of two while a build runs on both).
        assert cores_used(child.pid, 0.5) > 3 * IDLE_CORES
        assert cpu_seconds(child.pid) > 0.2
    finally:
        child.kill()
        child.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert wait_until_idle(sleeper.pid, within=5) < 5
    finally:
        sleeper.kill()
        sleeper.wait()


GROW = """
import sys, time
held = []
for _ in range(int(sys.argv[1])):
    held.append(bytearray(8 << 20))  # 8 MiB, touched: zero-filled pages are written
    time.sleep(0.01)
print("done", flush=True)
time.sleep(30)
"""


def test_memory_watch_kills_a_process_that_grows_past_the_bound() -> None:
    child = subprocess.Popen([sys.executable, "-c", GROW, "64"], stdout=subprocess.PIPE)
    try:
        with MemoryWatch(child.pid, kill_above=200 * MIB) as watch:
            child.wait(timeout=30)
        assert watch.killed
        assert 200 * MIB < watch.peak < 300 * MIB
        with pytest.raises(AssertionError, match="killed to protect the machine"):
            watch.assert_peak_below(10**12)
    finally:
        child.kill()
        child.wait()


def test_memory_watch_reports_the_peak_since_it_started() -> None:
    child = subprocess.Popen([sys.executable, "-c", GROW, "8"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"done\n"
        high = peak_rss_bytes(child.pid)
        assert high > 64 * MIB
        with MemoryWatch(child.pid, kill_above=10**12) as watch:
            time.sleep(0.05)
        assert not watch.killed
        assert watch.peak >= rss_bytes(child.pid)
        watch.assert_peak_below(high + 16 * MIB)
        with pytest.raises(AssertionError, match="peak resident memory"):
            watch.assert_peak_below(MIB)
    finally:
        child.kill()
        child.wait()


def test_reset_peak_rss_forgets_an_earlier_peak() -> None:
    free_later = "held = bytearray(128 << 20); del held; print('done', flush=True); input()"
    child = subprocess.Popen(
        [sys.executable, "-c", free_later], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"done\n"
        assert peak_rss_bytes(child.pid) > 128 * MIB
        reset_peak_rss(child.pid)
        assert peak_rss_bytes(child.pid) < 64 * MIB
    finally:
        child.kill()
        child.wait()
