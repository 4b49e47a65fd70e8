//! Server wiring: session + tables + Flight service + grpc.health.v1 on a TCP listener, with graceful shutdown.
//!
//! | module | what it is |
//! |---|---|
//! | [`auth_layer`] | the authentication gate in front of the Flight service |
//! | [`connections`] | the connection cap, TCP keepalive, closing silent connections |
//! | [`metrics_endpoint`] | `/metrics` over HTTP on its own listener |
//! | [`tls`] | TLS and mutual TLS on the Flight listener |

pub mod auth_layer;
pub mod connections;
pub mod metrics_endpoint;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, TokenKey, Users, UsersError};
use crate::catalog::{self, CatalogError};
use crate::config::{Config, TableFormat, TableSpec};
use crate::metrics::{Metrics, RpcMetricsLayer};
use crate::service::FlightbearService;
use auth_layer::{AuthLayer, Gate};
use connections::{ConnectionLimits, OpenConnections};
use metrics_endpoint::Scrape;

/// Longest wait for the answer to an HTTP/2 keepalive ping (tonic's default).
const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A table could not be registered.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The users file could not be used.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The sample data could not be written.
    #[error("cannot write the sample data to {path}: {source}")]
    Sample {
        /// Where it was written.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The query runtime or its resources (memory pool, spill directory) could not be set up.
    #[error("cannot set up query execution: {0}")]
    Execution(String),
    /// The server task died.
    #[error("server task failed: {0}")]
    Crashed(String),
    /// The TLS certificate, key or client CA cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The gRPC server failed.
    #[error("gRPC server error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A server running in the background (used by `serve` and by tests).
pub struct RunningServer {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The address `/metrics` is served on, if it is.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics_task: Option<JoinHandle<()>>,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(task) = self.metrics_task.take() {
            task.abort();
        }
    }
}

impl RunningServer {
    /// Asks the server to stop accepting requests and waits for open requests to finish.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        let stopped = (&mut self.task).await;
        if let Some(task) = self.metrics_task.take() {
            task.abort();
        }
        match stopped {
            Ok(result) => result.map_err(ServerError::from),
            // The server task only ends by returning; a join error means it panicked.
            Err(e) => Err(ServerError::Crashed(e.to_string())),
        }
    }

    /// A future that resolves when `signal` fires and then asks the server to stop.
    pub fn stop_on(&mut self, signal: impl Future<Output = ()> + Send + 'static) {
        if let Some(tx) = self.shutdown.take() {
            tokio::spawn(async move {
                signal.await;
                let _ = tx.send(());
            });
        }
    }
}

/// The tables served when none is configured: small FASTA and CSV files shipped with flightbear.
fn sample_tables() -> Result<Vec<TableSpec>, ServerError> {
    const FILES: &[(&str, &str, &[u8], TableFormat)] = &[
        (
            "sequences",
            "sequences.fa",
            include_bytes!("../sample/sequences.fa"),
            TableFormat::Fasta,
        ),
        (
            "samples",
            "samples.csv",
            include_bytes!("../sample/samples.csv"),
            TableFormat::Csv,
        ),
    ];
    let dir = std::env::temp_dir().join(format!("flightbear-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| ServerError::Sample {
        path: dir.clone(),
        source,
    })?;
    let mut tables = Vec::new();
    for (name, file, bytes, format) in FILES {
        let path = dir.join(file);
        std::fs::write(&path, bytes).map_err(|source| ServerError::Sample {
            path: path.clone(),
            source,
        })?;
        tables.push(TableSpec {
            name: name.to_string(),
            path: path.display().to_string(),
            format: Some(*format),
        });
    }
    Ok(tables)
}

/// The authentication gate the configuration asks for (`None`: no users file, no gate).
fn gate(config: &Config) -> Result<Option<Gate>, ServerError> {
    let Some(path) = &config.users else {
        if config.token_secret.is_some() {
            tracing::warn!("a token secret is set but no users file: authentication is off");
        }
        return Ok(None);
    };
    let users = Users::load(path)?;
    let key = match &config.token_secret {
        Some(secret) => TokenKey::new(secret.0.as_bytes()),
        None => {
            tracing::warn!(
                "no token secret configured (--token-secret): tokens are signed with a random \
                 key, so they do not survive a restart and other replicas refuse them"
            );
            TokenKey::random()
        }
    };
    tracing::info!(users = %path.display(), "authentication on: every Flight call needs a password or a token");
    let ttl = Duration::from_secs(config.token_ttl);
    Ok(Some(Gate::new(Authenticator::new(users, key, ttl))))
}

/// Binds `addr`.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Builds the catalog, binds the address and starts serving in the background.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    // A bad users file stops the start before anything is served.
    let gate = gate(&config)?;
    let ctx = catalog::session_context(&config)
        .map_err(|e| ServerError::Execution(e.strip_backtrace()))?;
    let tables = if config.tables.is_empty() && config.sample_data {
        tracing::info!("no table configured: serving the sample tables 'sequences' and 'samples'");
        sample_tables()?
    } else {
        config.tables.clone()
    };
    catalog::register_tables(&ctx, &config, &tables).await?;
    let limits = ConnectionLimits::from_config(&config);
    let tls = tls::server_tls_config(&config, limits.handshake_timeout)?;

    let (listener, addr) = bind(config.bind).await?;
    let metrics_listener = match config.metrics_bind {
        Some(metrics_bind) => Some(bind(metrics_bind).await?),
        None => None,
    };

    let metrics = Arc::new(Metrics::new());
    let runtime = ctx.runtime_env();
    let service = FlightbearService::new(ctx, &config)
        .map_err(|e| ServerError::Execution(e.to_string()))?
        .with_metrics(Arc::clone(&metrics));
    let queries = Arc::clone(service.running_queries());
    let service = tower_layer::Layer::layer(&AuthLayer::new(gate), service.into_server());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<arrow_flight::flight_service_server::FlightServiceServer<FlightbearService>>(
        )
        .await;
    // An empty service name asks about the server as a whole.
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let open = Arc::new(OpenConnections::new(limits.max_connections));
    let incoming = connections::incoming(listener, limits, Arc::clone(&open), Arc::clone(&metrics));
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let metrics_task = metrics_listener.map(|(listener, metrics_addr)| {
        tracing::info!(%metrics_addr, "serving Prometheus metrics at /metrics");
        let scrape = Scrape {
            metrics: Arc::clone(&metrics),
            queries,
            runtime,
            connections: open,
        };
        tokio::spawn(metrics_endpoint::serve(listener, Arc::new(scrape)))
    });

    let (tx, rx) = oneshot::channel::<()>();
    let keepalive = limits.keepalive_interval;
    let mut builder = tonic::transport::Server::builder();
    let encrypted = tls.is_some();
    if let Some(tls) = tls {
        // The handshake runs on connections `incoming` admitted, so they count against the cap.
        builder = builder.tls_config(tls)?;
    }
    let task = tokio::spawn(async move {
        let result = builder
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(keepalive.map(|interval| interval.min(MAX_KEEPALIVE_TIMEOUT)))
            .layer(RpcMetricsLayer::new(metrics))
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.await;
                tracing::info!("shutting down: finishing open requests");
                health_reporter
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            })
            .await;
        tracing::info!("server stopped");
        result
    });
    tracing::info!(%addr, tls = encrypted, "flightbear listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown: Some(tx),
        task,
        metrics_task,
    })
}
