"""Authentication: with a users file every Flight call needs a password or a bearer token.

Real clients log in the way they do against other Flight SQL servers: pyarrow's
``authenticate_basic_token``, ADBC's ``username``/``password`` and the flightbear client.
Users are made in the test with ``flightbear hash-password``.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import flightbear
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from compat_support import Dataset
from flightbear_testing import Server, server_binary
from server_probes import healthcheck

SECRET = "a secret the replicas of these tests share"
ADMIN = ("ada", "correct horse battery")
READER = ("rex", "hunter2 but longer")
COUNT_READS = "SELECT count(*) AS n FROM reads"
UNAUTHENTICATED = "unauthenticated error, with message: authentication required"


def hash_password(password: str) -> str:
    done = subprocess.run(
        [str(server_binary()), "hash-password"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "users.toml"
    entries = [
        f'[[users]]\nname = "{name}"\n'
        f'password_hash = "{hash_password(password)}"\nrole = "{role}"\n'
        for (name, password), role in [(ADMIN, "admin"), (READER, "reader")]
    ]
    path.write_text("\n".join(entries))
    return path


@pytest.fixture(scope="module")
def start(
    dataset: Dataset, users_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """Starts servers with the users file and the dataset's tables; all stopped at the end."""
    started: list[Server] = []
    logs = tmp_path_factory.mktemp("auth-logs")

    def launch(*extra: str) -> Server:
        args = [*dataset.args, "--users", str(users_file), *extra]
        running = Server(args, logs / f"server{len(started)}.log")
        started.append(running)
        return running

    yield launch
    for running in started:
        running.stop()


@pytest.fixture(scope="module")
def auth_server(start: Callable[..., Server]) -> Server:
    return start("--token-secret", SECRET)


def login(uri: str, user: tuple[str, str]) -> tuple[bytes, bytes]:
    client = flight.FlightClient(uri)
    try:
        return client.authenticate_basic_token(user[0].encode(), user[1].encode())
    finally:
        client.close()


def call_options(header: tuple[bytes, bytes]) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[header], timeout=30)


def count_reads(uri: str, header: tuple[bytes, bytes]) -> int:
    client = flight.FlightClient(uri)
    try:
        options = call_options(header)
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(COUNT_READS.encode()), options
        )
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        return int(table.column("n")[0].as_py())
    finally:
        client.close()


def flight_sql_command(name: str) -> flight.FlightDescriptor:
    """A descriptor holding an empty Flight SQL command (a protobuf Any, encoded by hand)."""
    type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{name}".encode()
    return flight.FlightDescriptor.for_command(b"\x0a" + bytes([len(type_url)]) + type_url)


def basic(user: str, password: str) -> tuple[bytes, bytes]:
    encoded = base64.b64encode(f"{user}:{password}".encode())
    return (b"authorization", b"Basic " + encoded)


def test_every_flight_rpc_without_credentials_is_unauthenticated(auth_server: Server) -> None:
    client = flight.FlightClient(auth_server.uri)
    options = flight.FlightCallOptions(timeout=30)
    sql = flight.FlightDescriptor.for_command(COUNT_READS.encode())
    calls = {
        "ListFlights": lambda: list(client.list_flights(options=options)),
        "GetFlightInfo": lambda: client.get_flight_info(sql, options),
        "GetSchema": lambda: client.get_schema(sql, options),
        "DoGet": lambda: client.do_get(flight.Ticket(COUNT_READS.encode()), options).read_all(),
        "DoAction": lambda: list(client.do_action(flight.Action("CancelFlightInfo", b""), options)),
        "ListActions": lambda: client.list_actions(options),
        "GetCatalogs": lambda: client.get_flight_info(
            flight_sql_command("CommandGetCatalogs"), options
        ),
        "GetTables": lambda: client.get_flight_info(
            flight_sql_command("CommandGetTables"), options
        ),
        "GetSqlInfo": lambda: client.get_flight_info(
            flight_sql_command("CommandGetSqlInfo"), options
        ),
    }
    try:
        for name, call in calls.items():
            # pyarrow raises GetSchema's errors as plain OSError; the text names the code.
            with pytest.raises((flight.FlightError, OSError), match=UNAUTHENTICATED):
                call()
                pytest.fail(f"{name} answered without credentials")
        with pytest.raises(flight.FlightUnauthenticatedError, match="authentication required"):
            command = flight_sql_command("CommandStatementUpdate")
            writer, _ = client.do_put(command, pa.schema([]), options)
            writer.close()
    finally:
        client.close()
    # The health service stays open to load balancers.
    assert healthcheck(server_binary(), auth_server.port).ok


def test_pyarrow_logs_in_with_basic_credentials_and_queries_with_the_token(
    auth_server: Server, dataset: Dataset
) -> None:
    name, value = login(auth_server.uri, READER)
    assert name.lower() == b"authorization"
    assert value.startswith(b"Bearer ")
    assert count_reads(auth_server.uri, (name, value)) == len(dataset.fasta["reads"])
    # Basic credentials sent directly on a call are accepted too.
    assert count_reads(auth_server.uri, basic(*ADMIN)) == len(dataset.fasta["reads"])


def test_adbc_logs_in_with_username_and_password(auth_server: Server, dataset: Dataset) -> None:
    kwargs = {"username": READER[0], "password": READER[1]}
    with flightsql.connect(auth_server.uri, db_kwargs=kwargs, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(COUNT_READS)
            assert cur.fetchone() == (len(dataset.fasta["reads"]),)
            cur.execute("SELECT count(*) FROM information_schema.tables")
            assert cur.fetchone()[0] > 0


def test_flightbear_client_logs_in_with_username_and_password(
    auth_server: Server, dataset: Dataset
) -> None:
    with flightbear.connect(
        auth_server.uri, username=ADMIN[0], password=ADMIN[1], timeout=30
    ) as conn:
        table = conn.sql(COUNT_READS).to_arrow_table()
        assert table.column("n")[0].as_py() == len(dataset.fasta["reads"])
    with pytest.raises(flightbear.AuthenticationError):
        flightbear.connect(auth_server.uri, username=ADMIN[0], password="wrong", timeout=30)


def test_wrong_password_and_unknown_user_read_the_same(auth_server: Server) -> None:
    messages = []
    for user in [(ADMIN[0], "not the password"), ("nobody", ADMIN[1])]:
        with pytest.raises(flight.FlightUnauthenticatedError) as refused:
            login(auth_server.uri, user)
        messages.append(str(refused.value).split(". Detail")[0])
    assert messages[0] == messages[1]
    assert "invalid user name or password" in messages[0]
    kwargs = {"username": "nobody", "password": "x"}
    with pytest.raises(adbc_driver_manager.Error, match=r"(?i)unauthenticated|invalid user name"):
        with flightsql.connect(auth_server.uri, db_kwargs=kwargs, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")


def test_a_tampered_token_is_refused(auth_server: Server) -> None:
    name, value = login(auth_server.uri, READER)
    head, payload, signature = value.removeprefix(b"Bearer ").split(b".")
    claims = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
    forged = base64.urlsafe_b64encode(claims.replace(b'"rex"', b'"ada"')).rstrip(b"=")
    assert forged != payload
    with pytest.raises(flight.FlightUnauthenticatedError, match="signature is invalid"):
        count_reads(auth_server.uri, (name, b"Bearer " + b".".join([head, forged, signature])))


def test_an_expired_token_is_refused(start: Callable[..., Server], dataset: Dataset) -> None:
    short = start("--token-ttl", "2")
    header = login(short.uri, READER)
    assert count_reads(short.uri, header) == len(dataset.fasta["reads"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            count_reads(short.uri, header)
        except flight.FlightUnauthenticatedError as refused:
            assert "expired" in str(refused)
            return
        time.sleep(0.5)
    pytest.fail("a token with --token-ttl 2 was still accepted after 10 s")


def test_only_servers_with_the_same_secret_accept_a_token(
    auth_server: Server, start: Callable[..., Server], dataset: Dataset
) -> None:
    header = login(auth_server.uri, READER)
    replica = start("--token-secret", SECRET)
    assert count_reads(replica.uri, header) == len(dataset.fasta["reads"])
    stranger = start("--token-secret", "another secret entirely, 32 bytes")
    with pytest.raises(flight.FlightUnauthenticatedError, match="signature is invalid"):
        count_reads(stranger.uri, header)
    # Without a secret each process signs with its own random key.
    random_key = start()
    with pytest.raises(flight.FlightUnauthenticatedError, match="signature is invalid"):
        count_reads(random_key.uri, header)
    assert "tokens are signed with a random key" in random_key.log()


def test_a_reader_may_query_but_not_change_the_catalog(auth_server: Server) -> None:
    reader = {"username": READER[0], "password": READER[1]}
    with flightsql.connect(auth_server.uri, db_kwargs=reader, autocommit=True) as conn:
        with conn.cursor() as cur:
            for ddl in ["CREATE VIEW by_reader AS SELECT 1 AS x", "DROP TABLE reads"]:
                with pytest.raises(flightsql.ProgrammingError, match="may not change the catalog"):
                    cur.execute(ddl)
            # The update path (DoPut CommandStatementUpdate) and prepared statements too.
            statement = cur.adbc_statement
            statement.set_sql_query("DROP TABLE reads")
            with pytest.raises(flightsql.ProgrammingError, match="may not change the catalog"):
                statement.execute_update()
            with pytest.raises(flightsql.ProgrammingError, match="may not change the catalog"):
                statement.prepare()
            cur.execute(COUNT_READS)
            assert cur.fetchone()[0] > 0
    client = flight.FlightClient(auth_server.uri)
    try:
        options = call_options(login(auth_server.uri, READER))
        drop = flight.FlightDescriptor.for_command(b"DROP TABLE reads")
        with pytest.raises(flight.FlightUnauthorizedError, match="may not change the catalog"):
            client.get_flight_info(drop, options)
    finally:
        client.close()
    admin = {"username": ADMIN[0], "password": ADMIN[1]}
    with flightsql.connect(auth_server.uri, db_kwargs=admin, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE VIEW by_admin AS SELECT 1 AS x")
            cur.execute("SELECT x FROM by_admin")
            assert cur.fetchone() == (1,)
            cur.execute("DROP VIEW by_admin")


def test_a_bad_users_file_stops_the_start(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text('[[users]]\nname = "ada"\npassword_hash = "plain text"\nrole = "admin"\n')
    done = subprocess.run(
        [str(server_binary()), "serve", "--bind", "127.0.0.1:0", "--users", str(users)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "users file" in done.stderr and "not a PHC string" in done.stderr, done.stderr


def test_hash_password_refuses_an_empty_password() -> None:
    done = subprocess.run(
        [str(server_binary()), "hash-password"],
        input="\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "empty" in done.stderr
    assert hash_password("pw").startswith("$argon2id$")
