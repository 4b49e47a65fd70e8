"""flightbear: query FASTA and CSV files served by a flightbear Arrow Flight SQL server.

>>> import flightbear
>>> with flightbear.connect("grpc://localhost:50051") as conn:  # doctest: +SKIP
...     table = conn.sql("SELECT id, length(sequence) AS n FROM sequences").to_arrow_table()

Results stream from the server as Arrow record batches; ``to_arrow_record_batch_reader()`` hands
them to pyarrow one at a time, and any library that reads the Arrow PyCapsule stream interface
(polars, duckdb, pyarrow) can consume a result directly.
"""

from __future__ import annotations

from ._flightbear import (
    BatchIterator,
    Connection,
    QueryResult,
    Summer,
    __version__,
    connect,
    double_array,
    sum_as_string,
    sum_as_string_with_times,
)
from .exceptions import (
    AuthenticationError,
    ConnectionClosedError,
    Error,
    FlightConnectionError,
    FlightTimeoutError,
    InternalError,
    InvalidQueryError,
    NotFoundError,
    NotSupportedError,
    QueryCancelledError,
    ResourceExhaustedError,
)

__all__ = [
    "AuthenticationError",
    "BatchIterator",
    "Connection",
    "ConnectionClosedError",
    "Error",
    "FlightConnectionError",
    "FlightTimeoutError",
    "InternalError",
    "InvalidQueryError",
    "NotFoundError",
    "NotSupportedError",
    "QueryCancelledError",
    "QueryResult",
    "ResourceExhaustedError",
    "Summer",
    "__version__",
    "connect",
    "double_array",
    "sum_as_string",
    "sum_as_string_with_times",
]
