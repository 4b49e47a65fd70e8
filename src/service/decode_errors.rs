//! Reports request messages tonic could not decode as INVALID_ARGUMENT instead of INTERNAL.
//!
//! tonic decodes the request message of a unary or server-streaming call (GetFlightInfo,
//! DoGet, DoAction, …) before our handler runs, and answers a message that does not decode
//! with INTERNAL. Bytes the client sent that are not a valid message are the client's fault,
//! so this wrapper rewrites exactly those answers. Streaming requests (DoPut, Handshake)
//! surface the same errors inside the handler, where [`super::ServiceError`] maps them.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::error::PROST_DECODE_PREFIX;

/// Wraps a gRPC service; see the module documentation.
#[derive(Debug, Clone)]
pub struct DecodeErrorsAsInvalidArgument<S> {
    inner: S,
}

impl<S> DecodeErrorsAsInvalidArgument<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
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
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // tonic keeps the Status of an error answer in the response extensions.
            let undecodable = response.extensions().get::<Status>().filter(|status| {
                status.code() == Code::Internal && status.message().starts_with(PROST_DECODE_PREFIX)
            });
            Ok(match undecodable {
                Some(status) => {
                    let message = format!("invalid request message: {}", status.message());
                    Status::invalid_argument(message).into_http()
                }
                None => response,
            })
        })
    }
}
