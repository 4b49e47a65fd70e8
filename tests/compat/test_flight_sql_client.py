"""arrow-rs's command-line Flight SQL client (`flight_sql_client`) against the real server.

The binary comes from the arrow-flight crate (features `cli`, `flight-sql`, `tls-ring`) at the
version in Cargo.lock; `make flight-sql-client` builds it once into a cache outside the clone
and `FLIGHT_SQL_CLIENT` names it. Each test runs it as a subprocess, parses the table it prints
and compares it with what the generated files say. When the binary could not be built, the
tests are skipped with the reason from the build log; a binary that exists but misbehaves fails.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
from pathlib import Path

import pytest

from compat_support import Dataset, gc_count
from flightbear_testing import REPO, Server

CLI_TIMEOUT = 120
BUILD_LOG_TAIL = 2000


def arrow_flight_version() -> str:
    lock = (REPO / "Cargo.lock").read_text()
    found = re.search(r'name = "arrow-flight"\nversion = "([^"]+)"', lock)
    assert found, "arrow-flight is not in Cargo.lock"
    return found.group(1)


def cli_binary() -> Path:
    """The built client, or a skip saying why there is none."""
    if os.environ.get("FLIGHT_SQL_CLIENT"):
        binary = Path(os.environ["FLIGHT_SQL_CLIENT"])
    else:
        cache = Path(os.environ.get("CLI_CACHE", Path.home() / ".cache" / "flightbear" / "cli"))
        binary = cache / f"arrow-flight-{arrow_flight_version()}" / "bin" / "flight_sql_client"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    log = binary.parent.parent / "build.log"
    if log.is_file():
        reason = f"flight_sql_client could not be built; {log} ends with:\n"
        pytest.skip(reason + log.read_text(errors="replace")[-BUILD_LOG_TAIL:])
    pytest.skip(f"flight_sql_client is not built at {binary}: run `make flight-sql-client`")


@pytest.fixture(scope="module")
def binary() -> Path:
    return cli_binary()


def run(binary: Path, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(binary), "--host", "127.0.0.1", "--port", str(server.port), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT)


def printed_table(output: str) -> list[dict[str, str]]:
    """The rows of the table arrow's pretty printer drew (NULL prints as an empty cell)."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    assert lines, f"no table in the output:\n{output}"
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[1:]
    return [dict(zip(header, row, strict=True)) for row in rows]


def query(binary: Path, server: Server, *args: str) -> list[dict[str, str]]:
    done = run(binary, server, *args)
    assert done.returncode == 0, done.stderr
    return printed_table(done.stdout)


def test_statement_query_returns_every_record(
    binary: Path, server: Server, dataset: Dataset
) -> None:
    sql = "SELECT id, description, length(sequence) AS len, sequence FROM crlf ORDER BY id"
    rows = query(binary, server, "statement-query", sql)
    expected = [
        {
            "id": r.id,
            "description": r.description or "",
            "len": str(len(r.sequence)),
            "sequence": r.sequence,
        }
        for r in sorted(dataset.fasta["crlf"], key=lambda r: r.id)
    ]
    assert rows == expected


def test_statement_query_aggregates_a_csv_table(
    binary: Path, server: Server, dataset: Dataset
) -> None:
    sql = (
        "SELECT species, count(*) AS n, sum(read_count) AS total "
        "FROM samples GROUP BY species ORDER BY species"
    )
    counts: collections.Counter[str] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter()
    for row in dataset.delimited["samples"]:
        counts[row["species"]] += 1
        totals[row["species"]] += int(row["read_count"])
    expected = [
        {"species": s, "n": str(counts[s]), "total": str(totals[s])} for s in sorted(counts)
    ]
    assert query(binary, server, "statement-query", sql) == expected


def test_empty_result_prints_the_columns(binary: Path, server: Server) -> None:
    done = run(binary, server, "statement-query", "SELECT id, sequence FROM reads WHERE false")
    assert done.returncode == 0, done.stderr
    assert "| id | sequence |" in done.stdout
    assert printed_table(done.stdout) == []


def test_prepared_statement_binds_typed_parameters(
    binary: Path, server: Server, dataset: Dataset
) -> None:
    # The client casts each -p text to the type the server reported for that parameter:
    # $1 compares with length() (an integer), $2 with an id (text).
    sql = (
        "SELECT id, length(sequence) AS len, "
        "length(sequence) - length(translate(upper(sequence), 'GC', '')) AS gc FROM reads "
        "WHERE length(sequence) > $1 AND id < $2 ORDER BY id"
    )
    rows = query(
        binary, server, "prepared-statement-query", sql, "-p", "$1=600", "-p", "$2=read001000"
    )
    expected = [
        {"id": r.id, "len": str(len(r.sequence)), "gc": str(gc_count(r.sequence))}
        for r in sorted(dataset.fasta["reads"], key=lambda r: r.id)
        if len(r.sequence) > 600 and r.id < "read001000"
    ]
    assert len(expected) > 10
    assert rows == expected


def test_prepared_statement_without_parameters(
    binary: Path, server: Server, dataset: Dataset
) -> None:
    sql = "SELECT count(*) AS n FROM packed WHERE sequence = ''"
    expected = sum(1 for r in dataset.fasta["packed"] if r.sequence == "")
    assert expected > 0
    assert query(binary, server, "prepared-statement-query", sql) == [{"n": str(expected)}]


def test_a_wrong_parameter_name_is_refused_by_the_client(binary: Path, server: Server) -> None:
    done = run(binary, server, "prepared-statement-query", "SELECT $1 + 1 AS x", "-p", "$9=1")
    assert done.returncode != 0
    assert "$9" in done.stderr


def test_a_bad_query_fails_with_the_servers_reason(binary: Path, server: Server) -> None:
    done = run(binary, server, "statement-query", "SELECT * FROM no_such_table")
    assert done.returncode != 0
    assert "no_such_table" in done.stderr
    # tonic prints the gRPC code as its description.
    assert "Client specified an invalid argument" in done.stderr, done.stderr


def test_catalogs(binary: Path, server: Server) -> None:
    assert query(binary, server, "catalogs") == [{"catalog_name": "flightbear"}]


def test_db_schemas(binary: Path, server: Server) -> None:
    rows = query(binary, server, "db-schemas", "flightbear")
    assert rows == [
        {"catalog_name": "flightbear", "db_schema_name": name}
        for name in ["information_schema", "public"]
    ]
    filtered = query(binary, server, "db-schemas", "flightbear", "--db-schema-filter", "pub%")
    assert [row["db_schema_name"] for row in filtered] == ["public"]


def test_tables_lists_every_configured_table(
    binary: Path, server: Server, dataset: Dataset
) -> None:
    rows = query(binary, server, "tables", "flightbear", "--db-schema-filter", "public")
    assert sorted(row["table_name"] for row in rows) == sorted(dataset.table_names)
    assert {row["table_type"] for row in rows} == {"TABLE"}
    assert {row["db_schema_name"] for row in rows} == {"public"}


def test_tables_filters(binary: Path, server: Server, dataset: Dataset) -> None:
    rows = query(binary, server, "tables", "flightbear", "--table-filter", "sam%")
    expected = sorted(name for name in dataset.table_names if name.startswith("sam"))
    assert sorted(row["table_name"] for row in rows) == expected
    views = query(binary, server, "tables", "flightbear", "--table-types", "VIEW")
    assert views, "information_schema's views are listed"
    assert {row["db_schema_name"] for row in views} == {"information_schema"}


def test_table_types(binary: Path, server: Server) -> None:
    rows = query(binary, server, "table-types")
    assert sorted(row["table_type"] for row in rows) == ["LOCAL TEMPORARY", "TABLE", "VIEW"]
