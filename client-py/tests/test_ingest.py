"""conn.ingest: Arrow data uploaded as a server table (Flight SQL bulk ingest), in every mode."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest

import flightbear
from flightbear import exceptions


def fresh_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def sample(first: int, count: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "k": pa.array(range(first, first + count), pa.int64()),
            "tag": pa.array([rng.choice(["x", "yy", None]) for _ in range(count)], pa.string()),
        }
    )


def rows(conn: flightbear.Connection, name: str) -> list[dict]:
    return sorted(
        conn.sql(f"SELECT * FROM {name}").to_arrow_table().to_pylist(), key=lambda r: r["k"]
    )


def test_modes_create_append_replace(conn: flightbear.Connection) -> None:
    name = fresh_name()
    first, second = sample(0, 300, 1), sample(300, 200, 2)
    assert conn.ingest(name, first) == 300
    assert rows(conn, name) == first.to_pylist()
    with pytest.raises(exceptions.InvalidQueryError, match="already exists"):
        conn.ingest(name, second)
    assert conn.ingest(name, second, mode="append") == 200
    assert rows(conn, name) == first.to_pylist() + second.to_pylist()
    assert conn.ingest(name, second, mode="replace") == 200
    assert rows(conn, name) == second.to_pylist()
    other = fresh_name()
    assert conn.ingest(other, first, mode="create_append") == 300
    assert conn.ingest(other, first, mode="create_append") == 300
    assert (
        conn.sql(f"SELECT count(*) AS n FROM {other}").to_arrow_table().column("n")[0].as_py()
        == 600
    )
    with pytest.raises(exceptions.NotFoundError, match="does not exist"):
        conn.ingest(fresh_name(), first, mode="append")


def test_a_reader_is_streamed_and_the_result_queries_like_any_table(
    conn: flightbear.Connection,
) -> None:
    name = fresh_name()
    schema = pa.schema([("k", pa.int64()), ("tag", pa.string())])

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, 5000, 250):
            yield pa.record_batch(sample(start, 250, start).to_batches()[0].columns, schema=schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    assert conn.ingest(name, reader) == 5000
    answer = conn.sql(f"SELECT count(*) AS n, sum(k) AS s FROM {name}").to_arrow_table().to_pylist()
    assert answer == [{"n": 5000, "s": sum(range(5000))}]
    assert name in conn.tables()


def test_a_failing_source_leaves_no_table(conn: flightbear.Connection) -> None:
    name = fresh_name()
    schema = pa.schema([("k", pa.int64()), ("tag", pa.string())])

    def batches() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch(sample(0, 10, 3).to_batches()[0].columns, schema=schema)
        raise RuntimeError("the source broke")

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    with pytest.raises(Exception, match="the source broke"):
        conn.ingest(name, reader)
    assert name not in conn.tables()
    # The connection goes on working.
    assert conn.ingest(name, sample(0, 5, 4)) == 5


def test_bad_arguments_are_python_errors(conn: flightbear.Connection) -> None:
    with pytest.raises(ValueError, match="mode must be"):
        conn.ingest(fresh_name(), sample(0, 1, 5), mode="upsert")
    with pytest.raises(TypeError, match="__arrow_c_stream__"):
        conn.ingest(fresh_name(), [1, 2, 3])
    with pytest.raises(exceptions.InvalidQueryError, match="table names for ingest"):
        conn.ingest("../../etc/passwd", sample(0, 1, 6))


def test_a_temporary_table_is_this_connections_only(server) -> None:
    name = fresh_name()
    with (
        flightbear.connect(server.uri, timeout=30) as mine,
        flightbear.connect(server.uri, timeout=30) as other,
    ):
        assert mine.ingest(name, sample(0, 10, 7), temporary=True) == 10
        assert len(rows(mine, name)) == 10
        with pytest.raises(exceptions.InvalidQueryError, match=name):
            other.sql(f"SELECT * FROM {name}").to_arrow_table()
