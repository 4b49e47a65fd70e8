"""Type stubs for the native module ``flightbear._flightbear``."""

import os
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal, final

import pandas
import pyarrow

__all__ = [
    "BatchIterator",
    "Connection",
    "QueryResult",
    "Summer",
    "__version__",
    "connect",
    "double_array",
    "sum_as_string",
    "sum_as_string_with_times",
]
__version__: str

def sum_as_string(a: int, b: int) -> str:
    """Returns the sum of two non-negative ints as a string."""

def sum_as_string_with_times(a: int, b: int, /, times: int = 1) -> str:
    """Returns ``(a + b) * times`` as a string; ``times`` must be at least 1."""

def double_array(array: Any) -> pyarrow.Int64Array:
    """Returns a new Int64 array with every value doubled and nulls kept."""

@final
class Summer:
    """A running total of non-negative ints."""

    def __new__(cls, start: int = 0) -> Summer: ...
    def add(self, value: int) -> int:
        """Adds ``value`` to the total and returns the new total."""

    @property
    def total(self) -> int:
        """The running total."""

def connect(
    uri: str = "grpc://localhost:50051",
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    tls_root_certs: str | bytes | os.PathLike[str] | None = None,
    tls_cert_chain: str | bytes | os.PathLike[str] | None = None,
    tls_private_key: str | bytes | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> Connection:
    """Opens a connection to a Flight SQL server.

    With a ``grpc+tls://`` URI: ``tls_root_certs`` are the CA certificates to trust instead of
    the system's; ``tls_cert_chain`` and ``tls_private_key`` are the client's certificate and
    key for a server that requires mutual TLS. Each is PEM (str or bytes) or a PEM file's path.
    """

@final
class Connection:
    """A connection to a Flight SQL server."""

    def sql(
        self,
        query: str,
        parameters: Sequence[Any] | pyarrow.RecordBatch | None = None,
    ) -> QueryResult:
        """Plans ``query`` on the server and returns its (not yet fetched) result.

        ``parameters`` fill the ``?`` (or ``$1``, ``$2``, ...) placeholders in order and keep
        their Python types: int → Int64, float → Float64, bool → Boolean, None → Null,
        str → Utf8, bytes → Binary, decimal.Decimal → Decimal128 (its precision and scale),
        datetime.date → Date32, naive datetime.datetime → Timestamp(us), tz-aware
        datetime.datetime → Timestamp(us, tz). A one-row ``pyarrow.RecordBatch`` is sent as is.
        """

    def execute(self, statement: str) -> int:
        """Runs a statement that returns no rows (DDL/DML); returns the affected-row count."""

    def read_fasta_file(self, path: str | os.PathLike[str]) -> QueryResult:
        """Registers a FASTA file on the server (its path there) and returns all its rows."""

    def read_csv_file(
        self,
        path: str | os.PathLike[str],
        *,
        has_header: bool = True,
        delimiter: str = ",",
    ) -> QueryResult:
        """Registers a CSV file on the server (its path there) and returns all its rows."""

    def ingest(
        self,
        name: str,
        data: Any,
        *,
        mode: Literal["create", "append", "replace", "create_append"] = "create",
        temporary: bool = False,
    ) -> int:
        """Uploads ``data`` (anything with ``__arrow_c_stream__``) as table ``name`` on the server
        (Flight SQL bulk ingest, streamed); returns the number of rows ingested."""
    def session_options(self) -> dict[str, str | bool | int | float | list[str]]:
        """The session's options: ``catalog``, ``schema`` and every setting changed here."""
    def set_session_options(
        self, options: Mapping[str, str | bool | int | float | Sequence[str]]
    ) -> None:
        """Sets session options for this connection's later statements only; raises
        ``InvalidQueryError`` naming the options the server refused."""
    def tables(self) -> list[str]:
        """The names of the server's tables."""

    def table_schema(self, name: str) -> pyarrow.Schema:
        """The Arrow schema of a table, by name (optionally qualified as ``schema.table``)."""

    def close(self) -> None:
        """Closes the connection (idempotent); tables registered by ``read_*_file`` are dropped."""

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""

    @property
    def uri(self) -> str:
        """The URI this connection was opened with."""

    def __enter__(self) -> Connection: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> bool: ...

@final
class QueryResult:
    """A query's result: its schema is known, its rows are fetched when asked for."""

    @property
    def schema(self) -> pyarrow.Schema:
        """The result's schema."""

    def to_arrow_record_batch_reader(self) -> pyarrow.RecordBatchReader:
        """A reader that fetches batches from the server as it is read."""

    def to_arrow_table(self) -> pyarrow.Table:
        """Fetches every row into a table."""

    def to_pandas(self, **kwargs: Any) -> pandas.DataFrame:
        """Fetches every row into a DataFrame (keyword arguments go to ``Table.to_pandas``)."""

    def __iter__(self) -> BatchIterator: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """Exports the rows as an Arrow C stream (the Arrow PyCapsule interface)."""

@final
class BatchIterator:
    """Iterator over a result's record batches, raising flightbear exceptions on failure."""

    def __iter__(self) -> BatchIterator: ...
    def __next__(self) -> pyarrow.RecordBatch: ...
