"""Bulk ingest: ADBC's ``adbc_ingest`` (Flight SQL CommandStatementIngest) in every mode, into
Parquet tables under ``--ingest-dir`` that join with the FASTA tables and survive a restart.

Every answer is checked against the data the test sent (pyarrow tables compared row by row) or
against the dataset's own FASTA oracle. Failure cases check both the gRPC error and that nothing
was left behind: no table in the catalog, no file in the ingest directory.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from compat_support import Dataset, length_delimited, varint

FASTA_TABLE = "reads"


def query(uri: str, sql: str) -> pa.Table:
    with adbc.connect(uri, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetch_arrow_table()


def ingest(uri: str, name: str, data: Any, mode: str) -> int:
    with adbc.connect(uri, autocommit=True) as connection, connection.cursor() as cursor:
        return int(cursor.adbc_ingest(name, data, mode=mode))


def sorted_rows(table: pa.Table, key: str = "k") -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda row: row[key])


def sample(first: int, count: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "k": pa.array(range(first, first + count), pa.int64()),
            "label": pa.array([rng.choice(["a", "b", None, "ccc"]) for _ in range(count)]),
            "score": pa.array([rng.random() for _ in range(count)], pa.float64()),
        }
    )


def ingest_files(root: Path) -> list[str]:
    """Every file and directory under the ingest directory, relative (what a failure may leave).
    A directory the server removes while it is being listed is left out (os.walk skips what it
    cannot scan; Path.rglob raised FileNotFoundError for it)."""
    return sorted(
        str((Path(directory) / name).relative_to(root))
        for directory, dirs, files in os.walk(root)
        for name in dirs + files
    )


@pytest.fixture
def ingest_server(launch: Any, tmp_path: Path) -> Any:
    root = tmp_path / "ingested"
    server = launch("--ingest-dir", str(root))
    server.ingest_root = root
    return server


def test_every_mode_gives_the_rows_it_promises(ingest_server: Any) -> None:
    uri = ingest_server.uri
    first, second, third = sample(0, 1000, 1), sample(1000, 500, 2), sample(5000, 70, 3)

    assert ingest(uri, "scores", first, "create") == 1000
    assert sorted_rows(query(uri, "SELECT * FROM scores")) == sorted_rows(first)

    with pytest.raises(adbc_driver_manager.Error, match="already exists"):
        ingest(uri, "scores", second, "create")

    assert ingest(uri, "scores", second, "append") == 500
    both = pa.concat_tables([first, second])
    assert sorted_rows(query(uri, "SELECT * FROM scores")) == sorted_rows(both)

    assert ingest(uri, "scores", third, "replace") == 70
    assert sorted_rows(query(uri, "SELECT * FROM scores")) == sorted_rows(third)

    assert ingest(uri, "fresh", first, "create_append") == 1000
    assert ingest(uri, "fresh", second, "create_append") == 500
    total = query(uri, "SELECT count(*) AS n, sum(k) AS s FROM fresh").to_pylist()[0]
    assert total == {"n": 1500, "s": sum(both.column("k").to_pylist())}

    with pytest.raises(adbc_driver_manager.Error, match="does not exist"):
        ingest(uri, "never_created", first, "append")
    with pytest.raises(adbc_driver_manager.Error, match="does not match the schema"):
        ingest(uri, "scores", pa.table({"k": ["not", "ints"]}), "append")
    assert query(uri, "SELECT count(*) AS n FROM scores").column("n").to_pylist() == [70]


def test_ingested_tables_join_fasta_tables_and_survive_a_restart(
    launch: Any, dataset: Dataset, tmp_path: Path
) -> None:
    root = tmp_path / "kept"
    records = dataset.fasta[FASTA_TABLE]
    chosen = records[::3]
    labels = pa.table(
        {
            "read_id": [record.id for record in chosen],
            "weight": pa.array(range(len(chosen)), pa.int32()),
        }
    )
    expected = sorted(
        (record.id, weight, len(record.sequence)) for weight, record in enumerate(chosen)
    )
    sql = (
        f"SELECT r.id, l.weight, length(r.sequence) AS len FROM {FASTA_TABLE} r "
        "JOIN labels l ON r.id = l.read_id"
    )

    server = launch("--ingest-dir", str(root))
    assert ingest(server.uri, "labels", labels, "create") == len(chosen)
    rows = query(server.uri, sql).to_pylist()
    assert sorted((row["id"], row["weight"], row["len"]) for row in rows) == expected
    server.stop()

    again = launch("--ingest-dir", str(root))
    rows = query(again.uri, sql).to_pylist()
    assert sorted((row["id"], row["weight"], row["len"]) for row in rows) == expected
    schema = query(again.uri, "SELECT * FROM labels LIMIT 0").schema
    assert schema.field("weight").type == pa.int32()

    # DROP TABLE removes its files: the table does not come back after a restart.
    with adbc.connect(again.uri, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE labels")
    again.stop()
    assert ingest_files(root) == []
    third = launch("--ingest-dir", str(root))
    with pytest.raises(adbc_driver_manager.Error, match="labels"):
        query(third.uri, "SELECT * FROM labels")


def test_ingest_is_refused_without_an_ingest_dir(uri: str) -> None:
    with pytest.raises(adbc_driver_manager.Error, match="--ingest-dir"):
        ingest(uri, "anything", sample(0, 3, 4), "create")


def test_configured_tables_are_never_replaced(ingest_server: Any, dataset: Dataset) -> None:
    for mode in ["replace", "create_append", "create"]:
        with pytest.raises(adbc_driver_manager.Error, match="configured by the server's operator"):
            ingest(ingest_server.uri, FASTA_TABLE, sample(0, 3, 5), mode)
    count = query(ingest_server.uri, f"SELECT count(*) AS n FROM {FASTA_TABLE}")
    assert count.column("n").to_pylist() == [len(dataset.fasta[FASTA_TABLE])]
    assert ingest_files(ingest_server.ingest_root) == []


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "1abc", "x" * 200])
def test_table_names_cannot_leave_the_ingest_dir(ingest_server: Any, name: str) -> None:
    with pytest.raises(adbc_driver_manager.Error, match="table names for ingest"):
        ingest(ingest_server.uri, name, sample(0, 3, 6), "create")
    assert ingest_files(ingest_server.ingest_root) == []


# --- pyarrow.flight: the raw command, for failures ADBC cannot produce -----------------------


def ingest_command(table: str, if_not_exist: int = 1, if_exists: int = 1) -> bytes:
    """CommandStatementIngest packed in Any (FlightSql.proto); modes default to ``create``."""
    options = varint(1 << 3) + varint(if_not_exist) + varint(2 << 3) + varint(if_exists)
    command = length_delimited(1, options) + length_delimited(2, table.encode())
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementIngest"
    return length_delimited(1, type_url) + length_delimited(2, command)


def put_batches(uri: str, table: str, batches: list[pa.RecordBatch]) -> None:
    client = flight.FlightClient(uri)
    try:
        descriptor = flight.FlightDescriptor.for_command(ingest_command(table))
        writer, reader = client.do_put(descriptor, batches[0].schema)
        for batch in batches:
            writer.write_batch(batch)
        writer.done_writing()
        reader.read()
        writer.close()
    finally:
        client.close()


def test_an_ingest_over_its_byte_limit_leaves_nothing(launch: Any, tmp_path: Path) -> None:
    root = tmp_path / "small"
    server = launch("--ingest-dir", str(root), "--max-ingest-bytes", "1MiB")
    rng = random.Random(7)
    batches = [
        pa.record_batch({"s": ["".join(rng.choices("ACGT", k=1000)) for _ in range(100)]})
        for _ in range(30)
    ]
    with pytest.raises(pa.ArrowException, match="max-ingest-bytes"):
        put_batches(server.uri, "too_big", batches)
    with pytest.raises(adbc_driver_manager.Error, match="too_big"):
        query(server.uri, "SELECT * FROM too_big")
    assert ingest_files(root) == []
    # The server goes on serving, and the same data within the limit is taken.
    put_batches(server.uri, "fits", batches[:5])
    assert query(server.uri, "SELECT count(*) AS n FROM fits").column("n").to_pylist() == [500]


def test_unspecified_modes_are_refused(ingest_server: Any) -> None:
    batch = pa.record_batch({"k": [1, 2]})
    client = flight.FlightClient(ingest_server.uri)
    try:
        command = ingest_command("t", if_not_exist=0, if_exists=0)
        # The server refuses the command as soon as it reads it: the refusal reaches the client
        # at whichever call comes next (the write, the end of writing, the read or the close).
        with pytest.raises(pa.ArrowInvalid, match="if_not_exist"):
            descriptor = flight.FlightDescriptor.for_command(command)
            writer, reader = client.do_put(descriptor, batch.schema)
            writer.write_batch(batch)
            writer.done_writing()
            reader.read()
            writer.close()
    finally:
        client.close()
    assert ingest_files(ingest_server.ingest_root) == []


COOKIES = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}


def test_temporary_tables_live_in_their_session(uri: str, dataset: Dataset) -> None:
    """The shared server has no --ingest-dir: temporary tables need none."""
    records = dataset.fasta[FASTA_TABLE][:40]
    marks = pa.table({"read_id": [r.id for r in records], "mark": list(range(len(records)))})
    join = (
        f"SELECT count(*) AS n, sum(length(r.sequence)) AS bases FROM {FASTA_TABLE} r "
        "JOIN scratch s ON r.id = s.read_id"
    )
    with (
        adbc.connect(uri, db_kwargs=COOKIES, autocommit=True) as mine,
        adbc.connect(uri, db_kwargs=COOKIES, autocommit=True) as other,
    ):
        with mine.cursor() as cursor:
            assert cursor.adbc_ingest("scratch", marks, mode="create", temporary=True) == 40
            cursor.execute(join)
            assert cursor.fetchall() == [(40, sum(len(r.sequence) for r in records))]
            more = pa.table({"read_id": ["nothing"], "mark": [99]})
            assert cursor.adbc_ingest("scratch", more, mode="append", temporary=True) == 1
            cursor.execute("SELECT count(*) FROM scratch")
            assert cursor.fetchall() == [(41,)]
            with pytest.raises(adbc_driver_manager.Error, match="cannot read temporary table"):
                cursor.execute("CREATE VIEW leak AS SELECT * FROM scratch")
        # Another session does not see it.
        with other.cursor() as cursor, pytest.raises(adbc_driver_manager.Error, match="scratch"):
            cursor.execute("SELECT * FROM scratch")
        with mine.cursor() as cursor:
            cursor.execute("DROP TABLE scratch")
            with pytest.raises(adbc_driver_manager.Error, match="scratch"):
                cursor.execute("SELECT * FROM scratch")


def test_temporary_tables_count_against_the_memory_limit(launch: Any) -> None:
    server = launch("--memory-limit", "64MiB")
    rng = random.Random(9)
    chunk = "".join(rng.choices("ACGT", k=100_000))
    schema = pa.schema([("sequence", pa.string())])

    def batches() -> Any:
        for _ in range(20):  # 200 MB in all, far beyond the limit
            yield pa.record_batch({"sequence": [chunk] * 100}, schema=schema)

    with adbc.connect(server.uri, db_kwargs=COOKIES, autocommit=True) as connection:
        with connection.cursor() as cursor:
            # The session (and its cookie) starts with a temporary table that fits. (When the
            # first call of a session is the one that fails, the client kept no cookie in 1 of
            # 3 CI runs and the next table landed in another session: see the issue notes.)
            small = pa.table({"sequence": [chunk] * 10})
            assert cursor.adbc_ingest("small", small, mode="create", temporary=True) == 10
            reader = pa.RecordBatchReader.from_batches(schema, batches())
            with pytest.raises(adbc_driver_manager.Error, match="memory limit"):
                cursor.adbc_ingest("huge", reader, mode="create", temporary=True)
            # Nothing was kept, and the server goes on serving the session.
            with pytest.raises(adbc_driver_manager.Error, match="huge"):
                cursor.execute("SELECT * FROM huge")
            cursor.execute("SELECT sum(length(sequence)) FROM small")
            assert cursor.fetchall() == [(10 * len(chunk),)]


def test_an_ingest_within_a_small_memory_limit_streams_to_disk(launch: Any, tmp_path: Path) -> None:
    """About 100 MB of sequences through a 64 MiB memory limit: row groups are written early."""
    root = tmp_path / "bounded"
    server = launch("--ingest-dir", str(root), "--memory-limit", "64MiB")
    rng = random.Random(8)
    chunk = "".join(rng.choices("ACGT", k=10_000))
    count = 10_000

    def batches() -> Any:
        for start in range(0, count, 500):
            yield pa.record_batch(
                {
                    "n": pa.array(range(start, start + 500), pa.int64()),
                    "sequence": [chunk[i % 97 :] + chunk[: i % 97] for i in range(500)],
                }
            )

    schema = pa.schema([("n", pa.int64()), ("sequence", pa.string())])
    reader = pa.RecordBatchReader.from_batches(schema, batches())
    assert ingest(server.uri, "big", reader, "create") == count
    answer = query(server.uri, "SELECT count(*) AS n, sum(length(sequence)) AS bases FROM big")
    assert answer.to_pylist() == [{"n": count, "bases": count * len(chunk)}]


UPLOAD_THEN_DIE = """
import os
import pyarrow as pa
import pyarrow.flight as flight
client = flight.FlightClient({uri!r})
batch = pa.record_batch({{"k": pa.array(range(1000), pa.int64())}})
writer, _ = client.do_put(flight.FlightDescriptor.for_command({command!r}), batch.schema)
for _ in range(20):
    writer.write_batch(batch)
print("sent", flush=True)
os._exit(0)  # gone mid-upload, without ending the stream
"""


def test_a_client_that_dies_mid_upload_leaves_nothing(ingest_server: Any) -> None:
    import subprocess
    import sys

    script = UPLOAD_THEN_DIE.format(uri=ingest_server.uri, command=ingest_command("half"))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert "sent" in done.stdout, done.stderr
    deadline = 50
    while deadline and ingest_files(ingest_server.ingest_root):
        deadline -= 1
        __import__("time").sleep(0.1)
    assert ingest_files(ingest_server.ingest_root) == []
    with pytest.raises(adbc_driver_manager.Error, match="half"):
        query(ingest_server.uri, "SELECT * FROM half")
