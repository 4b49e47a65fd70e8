//! Reports request messages tonic refused (undecodable, or over the size limit) as INVALID_ARGUMENT.
//!
//! tonic decodes the request message of a unary or server-streaming call (GetFlightInfo,
//! DoGet, DoAction, …) before our handler runs, and answers a message that does not decode
//! with INTERNAL and one over the size limit with OUT_OF_RANGE. Both are the client's fault,
//! so this wrapper rewrites exactly those answers, in words that name the limit. Streaming
//! requests (DoPut, Handshake) surface the same errors inside the handler, where
//! [`super::ServiceError`] maps them.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::error::{PROST_DECODE_PREFIX, TOO_LARGE_PREFIX};
use crate::bytesize::ByteSize;

/// Wraps a gRPC service; see the module documentation.
#[derive(Debug, Clone)]
pub struct DecodeErrorsAsInvalidArgument<S> {
    inner: S,
    max_request_bytes: usize,
}

impl<S> DecodeErrorsAsInvalidArgument<S> {
    /// Wraps `inner`, whose request messages may be at most `max_request_bytes` long.
    pub fn new(inner: S, max_request_bytes: usize) -> Self {
        Self {
            inner,
            max_request_bytes,
        }
    }
}

/// The INVALID_ARGUMENT answer for a request tonic refused, if it refused it for the client's fault.
fn client_fault(status: &Status, max_request_bytes: usize) -> Option<Status> {
    let message = status.message();
    if status.code() == Code::Internal && message.starts_with(PROST_DECODE_PREFIX) {
        return Some(Status::invalid_argument(format!(
            "invalid request message: {message}"
        )));
    }
    if status.code() == Code::OutOfRange && message.starts_with(TOO_LARGE_PREFIX) {
        return Some(Status::invalid_argument(format!(
            "the request message is larger than this server accepts ({}; SQL text may be at \
             most --max-sql-bytes): {message}",
            ByteSize(max_request_bytes as u64)
        )));
    }
    None
}

impl<S: NamedService> NamedService for DecodeErrorsAsInvalidArgument<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for DecodeErrorsAsInvalidArgument<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // (A second fix-up of what tonic hands over: a DoPut the client cancelled must not
        // look complete.)
        let request = if request.uri().path() == super::reset_body::DO_PUT_PATH {
            request.map(super::reset_body::ResetIsError::wrap)
        } else {
            request
        };
        let answer = self.inner.call(request);
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            let response = answer.await?;
            // tonic keeps the Status of an error answer in the response extensions.
            let rewritten = response
                .extensions()
                .get::<Status>()
                .and_then(|status| client_fault(status, max_request_bytes));
            Ok(match rewritten {
                Some(status) => status.into_http(),
                None => response,
            })
        })
    }
}
