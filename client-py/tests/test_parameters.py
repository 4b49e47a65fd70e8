"""Typed parameters: Python values keep their types on the way to the server, and LIMIT ? works."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pytest
from flightbear_testing import read_fasta

import flightbear

UTC = datetime.timezone.utc
CET = datetime.timezone(datetime.timedelta(hours=1))


def one(conn: flightbear.Connection, sql: str, parameters: list) -> tuple[pa.Field, object]:
    table = conn.sql(sql, parameters).to_arrow_table()
    assert table.num_rows == 1
    return table.schema.field(0), table.column(0)[0].as_py()


@pytest.mark.parametrize(
    ("value", "arrow_type"),
    [
        (1, pa.int64()),
        (-(2**63), pa.int64()),
        (2.5, pa.float64()),
        (True, pa.bool_()),
        ("chr1", pa.string()),
        (b"\x00AC\xff", pa.binary()),
        (decimal.Decimal("123.45"), pa.decimal128(5, 2)),
        (datetime.date(2024, 2, 29), pa.date32()),
        (datetime.datetime(2024, 2, 29, 13, 5, 7, 123456), pa.timestamp("us")),
    ],
    ids=["int", "int-min", "float", "bool", "str", "bytes", "decimal", "date", "datetime"],
)
def test_a_value_comes_back_with_its_own_type(conn, value, arrow_type):
    field, got = one(conn, "SELECT ? AS v", [value])
    assert field.type == arrow_type
    assert got == value
    assert type(got) is type(value)


def test_tz_aware_datetime_keeps_its_instant_and_zone(conn):
    value = datetime.datetime(2024, 2, 29, 13, 5, 7, 123456, tzinfo=CET)
    field, got = one(conn, "SELECT ? AS v", [value])
    assert field.type.unit == "us"
    assert field.type.tz is not None
    assert got == value
    assert got.astimezone(UTC) == datetime.datetime(2024, 2, 29, 12, 5, 7, 123456, tzinfo=UTC)


def test_none_is_a_null(conn):
    field, got = one(conn, "SELECT ? AS v", [None])
    assert got is None
    assert field.type == pa.null()


def test_typed_values_combine_in_sql(conn):
    table = conn.sql(
        "SELECT ? + 1 AS i, ? * 2 AS f, ? AND true AS b, ? + INTERVAL '1 day' AS d",
        [41, 1.25, True, datetime.date(2024, 2, 28)],
    ).to_arrow_table()
    assert table.to_pylist() == [{"i": 42, "f": 2.5, "b": True, "d": datetime.date(2024, 2, 29)}]


def test_int_parameter_compares_with_integer_column(conn, data_files):
    records = read_fasta(data_files.fasta)
    got = conn.sql("SELECT count(*) AS n FROM reads WHERE length(sequence) < ?", [300])
    expected = sum(1 for r in records if len(r.sequence) < 300)
    assert got.to_arrow_table().to_pylist() == [{"n": expected}]


@pytest.mark.parametrize("limit", [0, 1, 7])
def test_limit_parameter(conn, data_files, limit):
    ids = sorted(r.id for r in read_fasta(data_files.fasta))
    table = conn.sql("SELECT id FROM reads ORDER BY id LIMIT ?", [limit]).to_arrow_table()
    assert table.column("id").to_pylist() == ids[:limit]


def test_limit_and_offset_parameters(conn, data_files):
    ids = sorted(r.id for r in read_fasta(data_files.fasta))
    table = conn.sql("SELECT id FROM reads ORDER BY id LIMIT ? OFFSET ?", [3, 5]).to_arrow_table()
    assert table.column("id").to_pylist() == ids[5:8]


def test_wrong_number_of_values_is_a_value_error(conn):
    with pytest.raises(Exception, match=r"2 parameter\(s\) but 1 value") as info:
        conn.sql("SELECT ? AS a, ? AS b", [1])
    assert not isinstance(info.value, TypeError)
