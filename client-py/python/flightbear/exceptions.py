"""Exceptions raised by flightbear.

Every error is a :class:`flightbear.Error`; each class also derives from the builtin exception
users would catch for that situation, so ``except ConnectionError`` or ``except ValueError``
works too. ``grpc_code`` holds the server's gRPC status name (e.g. ``"INVALID_ARGUMENT"``) when
the error came from a gRPC call, else ``None``.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConnectionClosedError",
    "Error",
    "FlightConnectionError",
    "FlightTimeoutError",
    "InternalError",
    "InvalidQueryError",
    "NotFoundError",
    "NotSupportedError",
    "QueryCancelledError",
    "ResourceExhaustedError",
]


class Error(Exception):
    """Base class of every flightbear error."""

    grpc_code: str | None = None


class FlightConnectionError(Error, ConnectionError):
    """The server cannot be reached (gRPC UNAVAILABLE)."""


class AuthenticationError(Error, PermissionError):
    """Credentials are missing, wrong or not allowed (UNAUTHENTICATED, PERMISSION_DENIED)."""


class InvalidQueryError(Error, ValueError):
    """The server rejected the request: bad SQL, unknown table or column (INVALID_ARGUMENT, ...)."""


class NotFoundError(Error, LookupError):
    """Something named in the request does not exist (NOT_FOUND)."""


class FlightTimeoutError(Error, TimeoutError):
    """The server did not answer in time (DEADLINE_EXCEEDED)."""


class QueryCancelledError(Error):
    """The call was cancelled (CANCELLED)."""


class ResourceExhaustedError(Error, RuntimeError):
    """The server ran out of a resource such as memory (RESOURCE_EXHAUSTED)."""


class NotSupportedError(Error, NotImplementedError):
    """The server does not support the request (UNIMPLEMENTED)."""


class InternalError(Error, RuntimeError):
    """The server failed, or sent something this client cannot read (INTERNAL, UNKNOWN, ...)."""


class ConnectionClosedError(Error, RuntimeError):
    """The connection was used after ``close()``."""
