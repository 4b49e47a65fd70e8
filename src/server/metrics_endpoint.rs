//! The `/metrics` endpoint: Prometheus text over plain HTTP/1.1 on its own listener (`--metrics-bind`).
//!
//! It runs on the gRPC runtime and is bounded like everything a stranger can reach: few
//! connections at once, one request per connection, small request heads, a time limit.
//! Gauges are read at each scrape (see [`Scrape`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::runtime_env::RuntimeEnv;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::connections::OpenConnections;
use crate::metrics::{self, Live, Metrics};
use crate::service::running::RunningQueries;

/// Scrape connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole connection (request and response) may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head read (hyper's minimum buffer).
const MAX_REQUEST_HEAD: usize = 8192;
/// Pause after a failed accept, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What a scrape reads: the counters, and the live state behind the gauges.
pub struct Scrape {
    /// The server's counters.
    pub metrics: Arc<Metrics>,
    /// Running and queued queries.
    pub queries: Arc<RunningQueries>,
    /// The memory pool.
    pub runtime: Arc<RuntimeEnv>,
    /// Open client connections.
    pub connections: Arc<OpenConnections>,
}

impl Scrape {
    fn live(&self) -> Live {
        let pool = &self.runtime.memory_pool;
        Live {
            running_queries: self.queries.running(),
            queued_queries: self.queries.queued(),
            memory_reserved: pool.reserved(),
            memory_limit: match pool.memory_limit() {
                MemoryLimit::Finite(limit) => limit,
                MemoryLimit::Infinite | MemoryLimit::Unknown => 0,
            },
            connections_open: self.connections.open(),
            connections_limit: self.connections.max(),
        }
    }

    /// The answer to one HTTP request.
    fn answer(&self, request: &Request<Incoming>) -> Response<String> {
        let mut response = Response::new(String::new());
        if request.uri().path() != "/metrics" {
            *response.status_mut() = StatusCode::NOT_FOUND;
            *response.body_mut() = "not found: metrics are at /metrics\n".into();
        } else if request.method() != Method::GET && request.method() != Method::HEAD {
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(ALLOW, "GET, HEAD".parse().expect("a valid header"));
        } else {
            response.headers_mut().insert(
                CONTENT_TYPE,
                metrics::CONTENT_TYPE.parse().expect("a valid header"),
            );
            *response.body_mut() = self.metrics.render(&self.live());
        }
        response
    }
}

/// Serves `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, scrape: Arc<Scrape>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::debug!("metrics endpoint cannot accept: {error}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Over the limit, the connection is dropped, that is closed.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let scrape = Arc::clone(&scrape);
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: Request<Incoming>| {
                let response = scrape.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(error)) = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                tracing::debug!("metrics request failed: {error}");
            }
        });
    }
}
