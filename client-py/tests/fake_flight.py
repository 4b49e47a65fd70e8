"""Scriptable Flight servers built on pyarrow.flight, for behaviour the real server cannot show
on demand: each gRPC error code, basic-auth handshakes, slow answers, streams that stall."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight

SCHEMA = pa.schema([("x", pa.int64())])

USER, PASSWORD, TOKEN = "alice", "s3cret:with colon", "token-123"


class NoHandshakeProtocol(flight.ServerAuthHandler):
    """Accepts every handshake; the middleware below checks the HTTP authorization headers."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""


class BasicToBearer(flight.ServerMiddlewareFactory):
    """Basic credentials on Handshake earn a bearer token; every other call needs the token."""

    def __init__(self) -> None:
        self.seen_headers: list[dict] = []

    def start_call(self, info, headers):
        self.seen_headers.append(headers)
        auth = headers.get("authorization", [None])[0]
        if info.method == flight.FlightMethod.HANDSHAKE:
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if auth != expected:
                raise flight.FlightUnauthenticatedError(f"wrong password for user {USER}")
            return IssueToken()
        if auth != f"Bearer {TOKEN}":
            raise flight.FlightUnauthenticatedError("this call needs a bearer token")
        return None


class IssueToken(flight.ServerMiddleware):
    def sending_headers(self):
        return {"authorization": f"Bearer {TOKEN}"}


class HeaderRecorder(flight.ServerMiddlewareFactory):
    def __init__(self) -> None:
        self.seen_headers: list[dict] = []

    def start_call(self, info, headers):
        self.seen_headers.append(headers)
        return None


class ScriptedServer(flight.FlightServerBase):
    """GetFlightInfo and DoGet run the given callables; by default one batch [1, 2, 3]."""

    def __init__(
        self,
        on_info: Callable[[flight.FlightDescriptor], None] | None = None,
        batches: Callable[[flight.ServerCallContext], Iterator[pa.RecordBatch]] | None = None,
        tls: bool = False,
        **kwargs,
    ) -> None:
        scheme = "grpc+tls" if tls else "grpc"
        super().__init__(f"{scheme}://127.0.0.1:0", **kwargs)
        self.on_info = on_info
        self.batches = batches
        self.uri = f"{scheme}://127.0.0.1:{self.port}"

    def get_flight_info(self, context, descriptor):
        if self.on_info is not None:
            self.on_info(descriptor)
        return flight.FlightInfo(SCHEMA, descriptor, [flight.FlightEndpoint(b"ticket", [])], -1, -1)

    def do_get(self, context, ticket):
        if self.batches is None:
            return flight.RecordBatchStream(pa.table({"x": pa.array([1, 2, 3], type=pa.int64())}))
        return flight.GeneratorStream(SCHEMA, self.batches(context))


def stalls_after_first_batch(seconds: float = 30.0):
    """A DoGet body that sends one batch then goes quiet (until cancelled)."""

    def batches(context) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array([1], type=pa.int64())], schema=SCHEMA)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not context.is_cancelled():
            time.sleep(0.02)

    return batches


def fails_after_first_batch(error: Exception):
    def batches(context) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array([1], type=pa.int64())], schema=SCHEMA)
        raise error

    return batches
