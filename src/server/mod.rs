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
    /// The tables served from files at start (the sample tables when none was configured).
    pub tables: Vec<TableSpec>,
    /// True when clients must speak TLS.
    pub tls: bool,
    /// True when clients must log in.
    pub authentication: bool,
    /// The address `/metrics` is served on, if it is.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics_task: Option<JoinHandle<()>>,
    /// The directory the sample tables were written to; removed when the server is dropped.
    _sample_dir: Option<SampleDir>,
}

/// A directory of this process's own, removed (with what it holds) when dropped.
#[derive(Debug)]
struct SampleDir(PathBuf);

impl SampleDir {
    /// A new, empty directory under the system's temporary directory.
    fn create() -> Result<Self, ServerError> {
        static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("flightbear-sample-{}-{start}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        // A directory left by an earlier process with the same id is stale: start afresh.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::Sample {
            path: dir.clone(),
            source,
        })?;
        Ok(Self(dir))
    }
}

impl Drop for SampleDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), "cannot remove the sample data: {e}");
        }
    }
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

    /// What a person starting the server wants to see: the tables served (name, format, path),
    /// the address, and connect lines ready to paste for ADBC, pyarrow.flight, flightbear's
    /// Python client and `flightbear query`.
    pub fn banner(&self) -> String {
        use std::fmt::Write;
        let host = connect_host(self.addr);
        let port = self.addr.port();
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        let uri = format!("{scheme}://{host}:{port}");
        let mut text = String::new();
        let tables = self.tables.len();
        let plural = if tables == 1 { "" } else { "s" };
        let _ = writeln!(
            text,
            "flightbear {} listening on {} ({tables} table{plural})",
            env!("CARGO_PKG_VERSION"),
            self.addr
        );
        let width = self.tables.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for table in &self.tables {
            let format = table
                .format
                .or_else(|| crate::catalog::location::format_of(std::path::Path::new(&table.path)))
                .map_or("by extension", |f| f.name());
            let name = table.name.to_ascii_lowercase();
            let _ = writeln!(text, "  {name:<width$}  {format:<5}  {}", table.path);
        }
        let (adbc_args, flight_login, client_args, query_args) = if self.authentication {
            (
                ", db_kwargs={\"username\": USER, \"password\": PASSWORD}",
                "; client.authenticate_basic_token(USER, PASSWORD)",
                ", username=USER, password=PASSWORD",
                " --user USER",
            )
        } else {
            ("", "", "", "")
        };
        let example = self.tables.first().map_or("SELECT 1".to_string(), |t| {
            format!("SELECT * FROM {} LIMIT 5", t.name.to_ascii_lowercase())
        });
        let addr_arg = if self.tls {
            format!("https://{host}:{port}")
        } else {
            format!("{host}:{port}")
        };
        let _ = writeln!(text, "connect:");
        let _ = writeln!(
            text,
            "  ADBC            adbc_driver_flightsql.dbapi.connect(\"{uri}\"{adbc_args})"
        );
        let _ = writeln!(
            text,
            "  pyarrow.flight  client = pyarrow.flight.connect(\"{uri}\"){flight_login}"
        );
        let _ = writeln!(
            text,
            "  flightbear      flightbear.connect(\"{uri}\"{client_args})"
        );
        let _ = write!(
            text,
            "  command line    flightbear query --addr {addr_arg}{query_args} \"{example}\""
        );
        text
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

/// The host a client on this machine connects to: a wildcard address through loopback, IPv6
/// in brackets.
fn connect_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

/// The tables served when none is configured: small FASTA and CSV files shipped with flightbear,
/// written to a directory that lives as long as the server.
fn sample_tables() -> Result<(Vec<TableSpec>, SampleDir), ServerError> {
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
    let dir = SampleDir::create()?;
    let mut tables = Vec::new();
    for (name, file, bytes, format) in FILES {
        let path = dir.0.join(file);
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
    Ok((tables, dir))
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
    let (tables, sample_dir) = if config.tables.is_empty() && config.sample_data {
        tracing::info!("no table configured: serving the sample tables 'sequences' and 'samples'");
        let (tables, dir) = sample_tables()?;
        (tables, Some(dir))
    } else {
        (config.tables.clone(), None)
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
        tables,
        tls: encrypted,
        authentication: config.users.is_some(),
        metrics_addr,
        shutdown: Some(tx),
        task,
        metrics_task,
        _sample_dir: sample_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_reach_wildcard_addresses_through_loopback() {
        let host = |addr: &str| connect_host(addr.parse().unwrap());
        assert_eq!(host("0.0.0.0:1"), "127.0.0.1");
        assert_eq!(host("[::]:1"), "[::1]");
        assert_eq!(host("10.1.2.3:1"), "10.1.2.3");
        assert_eq!(host("[fe80::1]:1"), "[fe80::1]");
    }
}
