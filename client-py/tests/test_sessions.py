"""Session options and SET through flightbear's own client: they hold for this connection only."""

from __future__ import annotations

import pytest

import flightbear
from flightbear import exceptions

TIME_ZONE = "datafusion.execution.time_zone"
PARSE_DECIMAL = "datafusion.sql_parser.parse_float_as_decimal"


def literal_type(conn: flightbear.Connection) -> str:
    return str(conn.sql("SELECT 1.5 AS x").to_arrow_table().schema.field("x").type)


def test_set_holds_for_this_connection_only(server) -> None:
    with (
        flightbear.connect(server.uri, timeout=30) as mine,
        flightbear.connect(server.uri, timeout=30) as other,
    ):
        assert literal_type(mine) == "double"
        mine.execute(f"SET {PARSE_DECIMAL} = true")
        assert literal_type(mine).startswith("decimal128")
        assert literal_type(other) == "double"
        assert mine.session_options()[PARSE_DECIMAL] == "true"
        assert PARSE_DECIMAL not in other.session_options()
        mine.execute(f"RESET {PARSE_DECIMAL}")
        assert literal_type(mine) == "double"


def test_session_options_set_get_and_refuse(server) -> None:
    with flightbear.connect(server.uri, timeout=30) as conn:
        options = conn.session_options()
        assert (options["catalog"], options["schema"]) == ("flightbear", "public")
        conn.set_session_options({TIME_ZONE: "+05:30", "schema": "public"})
        assert conn.session_options()[TIME_ZONE] == "+05:30"
        offset = conn.sql("SELECT arrow_typeof(now()) AS t").to_arrow_table().column("t")[0]
        assert "+05:30" in offset.as_py()
        with pytest.raises(
            exceptions.InvalidQueryError, match=r"datafusion.runtime.memory_limit \(INVALID_NAME\)"
        ):
            conn.set_session_options({"datafusion.runtime.memory_limit": "1T"})
        with pytest.raises(exceptions.InvalidQueryError, match=r"schema \(INVALID_VALUE\)"):
            conn.set_session_options({"schema": "no_such_schema"})
        with pytest.raises(TypeError, match="must be str"):
            conn.set_session_options({TIME_ZONE: object()})
        # The refused options changed nothing.
        assert conn.session_options()["schema"] == "public"
