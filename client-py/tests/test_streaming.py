"""Results stream batch by batch: large results, huge messages, cancellation and Ctrl-C."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from flightbear_testing import read_fasta

import flightbear

HERE = Path(__file__).resolve().parent


def test_large_result_arrives_in_many_batches(conn):
    n = 2_000_000
    reader = conn.sql(f"SELECT value FROM generate_series(1, {n})").to_arrow_record_batch_reader()
    assert isinstance(reader, pa.RecordBatchReader)
    batches = 0
    rows = 0
    total = 0
    for batch in reader:
        batches += 1
        rows += batch.num_rows
        total += pa.compute.sum(batch.column(0)).as_py()
    assert rows == n
    assert total == n * (n + 1) // 2
    assert batches > 10


def test_fasta_table_streams_in_many_batches_and_matches_the_reference(conn, data_files):
    records = read_fasta(data_files.fasta)
    reader = conn.sql("SELECT id, sequence FROM reads").to_arrow_record_batch_reader()
    seen: dict[str, str] = {}
    batches = 0
    for batch in reader:
        batches += 1
        seen.update(zip(batch.column("id").to_pylist(), batch.column("sequence").to_pylist()))
    assert batches > 1  # the server runs with --batch-rows 1000 and holds 3000 records
    assert seen == {r.id: r.sequence for r in records}


def test_reader_does_not_collect_the_result_up_front(conn):
    # Far too many rows to ever collect: the first batches must still come at once.
    started = time.monotonic()
    reader = conn.sql(
        "SELECT value FROM generate_series(1, 1000000000000)"
    ).to_arrow_record_batch_reader()
    first = reader.read_next_batch()
    for _ in range(3):
        reader.read_next_batch()
    assert first.column(0)[0].as_py() == 1
    assert time.monotonic() - started < 10
    reader.close()
    # The connection still works after abandoning a stream.
    assert conn.sql("SELECT 1 AS one").to_arrow_table().num_rows == 1


def test_abandoned_capsule_stream_is_released(conn):
    for _ in range(20):
        capsule = conn.sql("SELECT value FROM generate_series(1, 1000000000)").__arrow_c_stream__()
        del capsule
    assert conn.sql("SELECT 2 AS two").to_arrow_table().column("two")[0].as_py() == 2


def test_messages_larger_than_4_mib_are_received(conn, data_files):
    (record,) = read_fasta(data_files.big_record_fasta)
    table = conn.sql("SELECT id, sequence FROM big_record").to_arrow_table()
    assert table.column("id").to_pylist() == [record.id]
    assert table.column("sequence")[0].as_py() == record.sequence
    big = conn.sql("SELECT repeat('A', 20000000) AS s").to_arrow_table()
    assert len(big.column("s")[0].as_py()) == 20_000_000


def test_concurrent_readers_on_one_connection(conn):
    results: list[int] = []
    errors: list[BaseException] = []

    def read(n: int) -> None:
        try:
            table = conn.sql(f"SELECT value FROM generate_series(1, {n})").to_arrow_table()
            results.append(table.num_rows)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(100_000 * (i + 1),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(results) == [100_000, 200_000, 300_000, 400_000]


def test_gil_is_released_while_waiting_for_the_network(conn):
    # A Python thread keeps counting while the main thread fetches a result.
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        conn.sql("SELECT sum(value) FROM generate_series(1, 30000000)").to_arrow_table()
    finally:
        stop.set()
        counter.join()
    assert ticks > 5


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    sys.path.insert(0, {here!r})
    import flightbear
    from fake_flight import ScriptedServer, stalls_after_first_batch

    server = ScriptedServer(batches=stalls_after_first_batch(30))
    conn = flightbear.connect(server.uri)
    result = conn.sql("stalls")
    how = sys.argv[1]
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        try:
            if how == "table":
                result.to_arrow_table()
            elif how == "pandas":
                result.to_pandas()
            elif how == "iterate":
                for batch in result:
                    pass
            elif how == "reader":
                result.to_arrow_record_batch_reader().read_all()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            # pyarrow turns the stream error into its own exception first; the interrupt is
            # pending and must surface at the next Python instruction.
            print("pyarrow:", type(exc).__name__, exc)
            time.sleep(5)
        print("NOT INTERRUPTED")
    except KeyboardInterrupt:
        print(f"interrupted after {{time.monotonic() - started:.2f}} s")
    server.shutdown()
    """
)


@pytest.mark.parametrize("how", ["table", "pandas", "iterate", "reader"])
def test_ctrl_c_interrupts_a_blocked_fetch_within_a_second(how, tmp_path: Path):
    if how == "pandas":
        pytest.importorskip("pandas")
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT.format(here=str(HERE)))
    done = subprocess.run(
        [sys.executable, str(script), how], capture_output=True, text=True, timeout=60
    )
    out = done.stdout
    assert "interrupted after" in out, out + done.stderr
    seconds = float(out.split("interrupted after")[1].split()[0])
    # The signal arrives 0.5 s in; the fetch must stop within a second of it.
    assert seconds < 1.5, out


def test_results_can_be_read_from_another_thread(conn, data_files):
    reader = conn.sql("SELECT id FROM reads").to_arrow_record_batch_reader()
    rows: list[int] = []
    thread = threading.Thread(target=lambda: rows.append(reader.read_all().num_rows))
    thread.start()
    thread.join(60)
    assert rows == [len(read_fasta(data_files.fasta))]


def io_threads() -> int:
    """Native threads of the flightbear runtime in this process (Linux only)."""
    names = [p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")]
    return sum(name == "flightbear-io" for name in names)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_one_runtime_serves_many_connections(server):
    with flightbear.connect(server.uri) as first:
        first.tables()
        before = io_threads()
        assert before >= 1
        connections = [flightbear.connect(server.uri) for _ in range(10)]
        for conn in connections:
            assert conn.sql("SELECT 1 AS one").to_arrow_table().num_rows == 1
        assert io_threads() == before
        for conn in connections:
            conn.close()
