//! DoPut request bodies that end with an error, not quietly, when the client resets the call.
//!
//! A client that gives up a call (Ctrl-C, a dropped future, a timeout) resets its HTTP/2
//! stream with CANCEL. hyper and tonic end a request stream quietly on such a reset (hyper
//! ends the body, or reports a CANCELLED error that tonic's decoder takes for the end), so to
//! the handler a cancelled upload looks like a complete one: a bulk ingest would store the
//! part that arrived. This body turns the reset into an ABORTED error, and also asks, when the
//! data ends, whether the client really ended it (END_STREAM).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::{Code, Status};

/// The path of the DoPut method, whose bodies are wrapped.
pub const DO_PUT_PATH: &str = "/arrow.flight.protocol.FlightService/DoPut";

fn cancelled() -> Status {
    Status::aborted("the client cancelled the call before it sent all its data")
}

/// A request body whose end without END_STREAM is an error; see the module documentation.
pub struct ResetIsError {
    inner: Body,
}

impl ResetIsError {
    /// Wraps a request body.
    pub fn wrap(inner: Body) -> Body {
        Body::new(Self { inner })
    }
}

impl http_body::Body for ResetIsError {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let inner = Pin::new(&mut self.inner);
        Poll::Ready(match ready!(inner.poll_frame(cx)) {
            // The reset itself (hyper reports it as a CANCELLED error, which tonic then
            // takes for the end of the stream), or the data ending without END_STREAM.
            Some(Err(status)) if status.code() == Code::Cancelled => Some(Err(cancelled())),
            None if !self.inner.is_end_stream() => Some(Err(cancelled())),
            other => other,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
