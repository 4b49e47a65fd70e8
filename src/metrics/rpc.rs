//! Counts every gRPC call by method and final status code: a tower layer around the server's routes.
//!
//! A call's code is where gRPC puts it: in the response headers of an error answered at once
//! (tonic's "trailers-only" responses), else in the trailers at the end of the response body.
//! So the body is wrapped, and the call is counted when the trailers go by. A call that ends
//! before that (the client reset the stream, or went away) is counted as CANCELLED, as the
//! client sees it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tower_layer::Layer;

use super::Metrics;

/// The methods counted by name; any other path is counted as `other`, so clients cannot
/// create labels.
const METHODS: &[&str] = &[
    // arrow.flight.protocol.FlightService
    "Handshake",
    "ListFlights",
    "GetFlightInfo",
    "PollFlightInfo",
    "GetSchema",
    "DoGet",
    "DoPut",
    "DoExchange",
    "DoAction",
    "ListActions",
    // grpc.health.v1.Health
    "Check",
    "Watch",
];

/// The method label of a request path such as `/arrow.flight.protocol.FlightService/DoGet`.
fn method_label(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other")
}

/// The code in a `grpc-status` header, if there is one.
fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// Wraps services in [`RpcMetrics`].
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RpcMetricsLayer {
    /// Counts calls in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// A gRPC service whose calls are counted; see the module documentation.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Created before the handler runs, so a call dropped while it waits is counted too.
        let mut call = CallRecord {
            metrics: Arc::clone(&self.metrics),
            method: method_label(request.uri().path()),
            counted: false,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(code) = grpc_status(response.headers()) {
                call.count(code);
            }
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// One call, counted once: with its code, or as CANCELLED if it is dropped uncounted.
struct CallRecord {
    metrics: Arc<Metrics>,
    method: &'static str,
    counted: bool,
}

impl CallRecord {
    fn count(&mut self, code: Code) {
        if !self.counted {
            self.counted = true;
            self.metrics.rpc_finished(self.method, code);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.count(Code::Cancelled);
    }
}

/// A response body that counts its call when the trailers go by.
pub struct MeteredBody<B> {
    inner: B,
    call: CallRecord,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    self.call.count(code);
                }
            }
            // A gRPC response always carries a status; one that ends without is broken.
            Poll::Ready(Some(Err(_)) | None) => self.call.count(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::convert::Infallible;

    use bytes::Bytes;

    use crate::metrics::Live;

    /// A body of the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// A service that answers every call alike: a `grpc-status` header or not, some data
    /// frames, then trailers with a `grpc-status` or not.
    #[derive(Clone, Copy)]
    struct Answer {
        header_status: Option<&'static str>,
        data_frames: usize,
        trailer_status: Option<&'static str>,
    }

    impl Service<Request<()>> for Answer {
        type Response = Response<Frames>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Frames>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: Request<()>) -> Self::Future {
            let mut frames: VecDeque<_> = (0..self.data_frames)
                .map(|_| Frame::data(Bytes::from_static(b"x")))
                .collect();
            if let Some(code) = self.trailer_status {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", code.parse().unwrap());
                frames.push_back(Frame::trailers(trailers));
            }
            let mut response = Response::new(Frames(frames));
            if let Some(code) = self.header_status {
                response
                    .headers_mut()
                    .insert("grpc-status", code.parse().unwrap());
            }
            std::future::ready(Ok(response))
        }
    }

    async fn next_frame<B: Body + Unpin>(body: &mut B) -> bool {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .is_some()
    }

    fn call(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    fn count(metrics: &Metrics, method: &str, code: &str) -> usize {
        let sample = format!(r#"flightbear_rpcs_total{{method="{method}",code="{code}"}} "#);
        let text = metrics.render(&Live::default());
        text.lines()
            .find_map(|line| line.strip_prefix(&sample))
            .map_or(0, |value| value.parse().unwrap())
    }

    #[tokio::test]
    async fn calls_are_counted_by_the_status_in_headers_or_trailers_or_as_cancelled() {
        let metrics = Arc::new(Metrics::new());
        let layer = RpcMetricsLayer::new(Arc::clone(&metrics));

        let streamed = Answer {
            header_status: None,
            data_frames: 2,
            trailer_status: Some("0"),
        };
        let mut body = layer
            .layer(streamed)
            .call(call("/s/DoGet"))
            .await
            .unwrap()
            .into_body();
        assert!(next_frame(&mut body).await);
        assert_eq!(
            count(&metrics, "DoGet", "OK"),
            0,
            "counted before the trailers"
        );
        while next_frame(&mut body).await {}
        assert_eq!(count(&metrics, "DoGet", "OK"), 1);

        let mut abandoned = layer
            .layer(streamed)
            .call(call("/s/DoGet"))
            .await
            .unwrap()
            .into_body();
        assert!(next_frame(&mut abandoned).await);
        drop(abandoned);
        assert_eq!(count(&metrics, "DoGet", "CANCELLED"), 1);

        let refused = Answer {
            header_status: Some("3"),
            data_frames: 0,
            trailer_status: None,
        };
        let response = layer
            .layer(refused)
            .call(call("/s/GetFlightInfo"))
            .await
            .unwrap();
        assert_eq!(count(&metrics, "GetFlightInfo", "INVALID_ARGUMENT"), 1);
        drop(response);
        let unimplemented = Answer {
            header_status: Some("12"),
            ..refused
        };
        drop(
            layer
                .layer(unimplemented)
                .call(call("/s/Garbage"))
                .await
                .unwrap(),
        );
        assert_eq!(count(&metrics, "other", "UNIMPLEMENTED"), 1);

        let broken = Answer {
            trailer_status: None,
            ..streamed
        };
        let mut body = layer
            .layer(broken)
            .call(call("/s/DoPut"))
            .await
            .unwrap()
            .into_body();
        while next_frame(&mut body).await {}
        assert_eq!(count(&metrics, "DoPut", "UNKNOWN"), 1);
        assert_eq!(
            count(&metrics, "GetFlightInfo", "INVALID_ARGUMENT"),
            1,
            "counted once"
        );
    }

    #[test]
    fn method_labels_are_known_names_only() {
        assert_eq!(
            method_label("/arrow.flight.protocol.FlightService/DoGet"),
            "DoGet"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_label("/x/DoGetEverything"), "other");
        assert_eq!(method_label(""), "other");
    }
}
