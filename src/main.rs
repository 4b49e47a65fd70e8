//! The `flightbear` command: `serve` runs the Flight SQL server, `healthcheck` asks a running one how it is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flightbear::config::{
    ByteSize, Config, LogFormat, Overrides, TableFormat, TableSpec, TokenSecret, parse_bool,
    resolve_socket_addr,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "flightbear",
    version,
    about = "Serve FASTA and CSV files as SQL tables over Arrow Flight SQL",
    after_help = "Examples:\n  flightbear serve\n  flightbear serve --table genome=GRCh38.fa.gz --table samples=samples.csv\n  flightbear serve --config flightbear.toml\n  flightbear healthcheck --addr http://127.0.0.1:50051\n  echo 's3cret' | flightbear hash-password"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (with no table given, it serves small sample tables).
    Serve(Box<ServeArgs>),
    /// Exit 0 if a server answers grpc.health.v1 with SERVING, 1 otherwise.
    Healthcheck(HealthArgs),
    /// Read a password from stdin (one line) and print its argon2 hash for the users file.
    HashPassword,
    /// Write a samtools-compatible FASTA index (FILE.fai; FILE.gzi too for BGZF files).
    Index(IndexArgs),
    /// Run SQL on a Flight SQL server (flightbear or any other) and print the result.
    Query(QueryArgs),
    /// List the tables of a Flight SQL server with their columns.
    Tables(ConnectArgs),
}

/// How `query` and `tables` reach a server.
#[derive(Args)]
struct ConnectArgs {
    /// Server address: HOST:PORT or http://HOST:PORT; https://HOST:PORT speaks TLS.
    #[arg(long, env = "FLIGHTBEAR_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// User name (HTTP Basic credentials; the password comes from --password or
    /// FLIGHTBEAR_PASSWORD).
    #[arg(long, env = "FLIGHTBEAR_USER", value_name = "NAME")]
    user: Option<String>,
    /// Password of --user.
    #[arg(
        long,
        env = "FLIGHTBEAR_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// A bearer token instead of --user/--password.
    #[arg(
        long,
        env = "FLIGHTBEAR_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// PEM CA certificate(s) to verify an https:// server with [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires mutual TLS (with --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Seconds to wait for the connection.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The SQL statement.
    sql: String,
    /// A value for the next `?` or `$n` placeholder (repeat for each, in order).
    #[arg(long = "param", value_name = "VALUE")]
    params: Vec<String>,
    /// table (aligned, the default), csv, jsonl or arrow (IPC stream, for pyarrow.ipc).
    #[arg(long, default_value = "table", value_parser = parse_format)]
    format: flightbear::client::OutputFormat,
}

fn parse_format(text: &str) -> Result<flightbear::client::OutputFormat, String> {
    text.parse()
}

impl ConnectArgs {
    fn options(&self) -> flightbear::client::ClientOptions {
        flightbear::client::ClientOptions {
            addr: self.addr.clone(),
            username: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            connect_timeout: Duration::from_secs(self.connect_timeout),
        }
    }
}

#[derive(Args)]
struct IndexArgs {
    /// FASTA files, plain or BGZF-compressed.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "FLIGHTBEAR_BIND", value_name = "ADDR", value_parser = resolve_socket_addr)]
    bind: Option<SocketAddr>,
    /// A table as NAME=PATH; PATH is a file, a directory or a glob; format from the extension.
    /// Adds to the tables of FLIGHTBEAR_TABLES (NAME=PATH,NAME=PATH,…) and of the TOML file.
    #[arg(long = "table", value_name = "NAME=PATH", value_delimiter = ',')]
    tables: Vec<String>,
    /// A FASTA table as NAME=PATH, whatever the file names say.
    #[arg(long = "fasta", value_name = "NAME=PATH")]
    fasta: Vec<String>,
    /// A FASTQ table as NAME=PATH, whatever the file names say.
    #[arg(long = "fastq", value_name = "NAME=PATH")]
    fastq: Vec<String>,
    /// A CSV table as NAME=PATH, whatever the file names say.
    #[arg(long = "csv", value_name = "NAME=PATH")]
    csv: Vec<String>,
    /// A TSV table as NAME=PATH, whatever the file names say.
    #[arg(long = "tsv", value_name = "NAME=PATH")]
    tsv: Vec<String>,
    /// TOML configuration file (flags and FLIGHTBEAR_* variables override it).
    #[arg(long, env = "FLIGHTBEAR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Maximum rows per record batch [default: 8192].
    #[arg(long, env = "FLIGHTBEAR_BATCH_ROWS", value_name = "N")]
    batch_rows: Option<usize>,
    /// Byte budget per FASTA record batch, e.g. 4MiB [default: 32MiB].
    #[arg(long, env = "FLIGHTBEAR_BATCH_BYTES", value_name = "SIZE")]
    batch_bytes: Option<ByteSize>,
    /// Partitions to scan and execute in parallel [default: number of cores].
    #[arg(long, env = "FLIGHTBEAR_TARGET_PARTITIONS", value_name = "N")]
    target_partitions: Option<usize>,
    /// Send Utf8View columns as they are (by default they are sent as plain Utf8);
    /// `--string-view false` turns off what the TOML file turned on.
    #[arg(
        long,
        env = "FLIGHTBEAR_STRING_VIEW",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    string_view: Option<bool>,
    /// Do not serve the sample tables when no table is configured.
    #[arg(
        long,
        env = "FLIGHTBEAR_NO_SAMPLE_DATA",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    no_sample_data: Option<bool>,
    /// Log format [default: text]. Log levels come from RUST_LOG (default: info).
    #[arg(long, env = "FLIGHTBEAR_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Memory all queries together may use, e.g. 512MiB or 4GiB [default: half of the
    /// machine's or container's memory]. Sorts, aggregations and joins spill to disk beyond it;
    /// what cannot fit fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FLIGHTBEAR_MEMORY_LIMIT", value_name = "SIZE")]
    memory_limit: Option<ByteSize>,
    /// Directory for spill files [default: a temporary directory].
    #[arg(long, env = "FLIGHTBEAR_SPILL_DIR", value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// Directory where bulk-ingested tables (ADBC `adbc_ingest`, Flight SQL
    /// CommandStatementIngest) are kept as Parquet and served again after a restart
    /// [default: none; bulk ingest is refused].
    #[arg(long, env = "FLIGHTBEAR_INGEST_DIR", value_name = "DIR")]
    ingest_dir: Option<PathBuf>,
    /// Most bytes of Arrow data one bulk ingest may send [default: 10GiB].
    #[arg(long, env = "FLIGHTBEAR_MAX_INGEST_BYTES", value_name = "SIZE")]
    max_ingest_bytes: Option<ByteSize>,
    /// Longest SQL text accepted [default: 1MiB].
    #[arg(long, env = "FLIGHTBEAR_MAX_SQL_BYTES", value_name = "SIZE")]
    max_sql_bytes: Option<ByteSize>,
    /// Seconds a query may run before it is stopped with DEADLINE_EXCEEDED; 0 for no limit
    /// [default: 3600]. A shorter gRPC deadline from the client wins.
    #[arg(long, env = "FLIGHTBEAR_QUERY_TIMEOUT", value_name = "SECONDS")]
    query_timeout: Option<u64>,
    /// Queries that may run at once [default: 4 per core].
    #[arg(long, env = "FLIGHTBEAR_MAX_CONCURRENT_QUERIES", value_name = "N")]
    max_concurrent_queries: Option<usize>,
    /// Seconds a query waits for a free slot before RESOURCE_EXHAUSTED [default: 30].
    #[arg(long, env = "FLIGHTBEAR_QUEUE_TIMEOUT", value_name = "SECONDS")]
    queue_timeout: Option<u64>,
    /// Threads each running query gets (its own, apart from those serving gRPC), and
    /// threads that plan [default: cores].
    #[arg(long, env = "FLIGHTBEAR_QUERY_THREADS", value_name = "N")]
    query_threads: Option<usize>,
    /// Client connections open at once; more are refused [default: 1024].
    #[arg(long, env = "FLIGHTBEAR_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds a connection may stay silent before it is closed [default: 120].
    #[arg(long, env = "FLIGHTBEAR_IDLE_TIMEOUT", value_name = "SECONDS")]
    idle_timeout: Option<u64>,
    /// Seconds between HTTP/2 and TCP keepalive probes [default: 30].
    #[arg(long, env = "FLIGHTBEAR_KEEPALIVE_INTERVAL", value_name = "SECONDS")]
    keepalive_interval: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    #[arg(
        long,
        env = "FLIGHTBEAR_METRICS_BIND",
        value_name = "ADDR",
        value_parser = resolve_socket_addr
    )]
    metrics_bind: Option<SocketAddr>,
    /// A directory whose files clients may register as tables (CREATE EXTERNAL TABLE), or
    /// an s3:// or http(s):// URL prefix whose objects they may; repeat for several. Without
    /// one, clients cannot register files [default: none].
    #[arg(
        long = "data-root",
        env = "FLIGHTBEAR_DATA_ROOTS",
        value_name = "DIR|URL",
        value_delimiter = ','
    )]
    data_roots: Vec<PathBuf>,
    /// Tables and views clients may create, all clients together [default: 100].
    #[arg(long, env = "FLIGHTBEAR_MAX_CLIENT_TABLES", value_name = "N")]
    max_client_tables: Option<usize>,
    /// Prepared statements whose bound parameters are kept for clients that reuse the
    /// original handle; beyond it the least recently used are dropped [default: 10000].
    #[arg(long, env = "FLIGHTBEAR_MAX_PREPARED_STATEMENTS", value_name = "N")]
    max_prepared_statements: Option<usize>,
    /// Bytes of such kept parameters, all statements together [default: 64MiB].
    #[arg(long, env = "FLIGHTBEAR_MAX_PREPARED_BYTES", value_name = "SIZE")]
    max_prepared_bytes: Option<ByteSize>,
    /// Seconds kept parameters of an unused prepared statement survive [default: 600].
    #[arg(long, env = "FLIGHTBEAR_PREPARED_TTL", value_name = "SECONDS")]
    prepared_ttl: Option<u64>,
    /// Client sessions (SET statements, session options such as the current catalog) kept
    /// at once; beyond it the least recently used are dropped [default: 1000].
    #[arg(long, env = "FLIGHTBEAR_MAX_SESSIONS", value_name = "N")]
    max_sessions: Option<usize>,
    /// Seconds an unused session survives [default: 3600].
    #[arg(long, env = "FLIGHTBEAR_SESSION_IDLE_TIMEOUT", value_name = "SECONDS")]
    session_idle_timeout: Option<u64>,
    /// Users file (TOML `[[users]]` with name, password_hash, role): with it, every Flight
    /// call needs a password or a bearer token [default: no authentication].
    #[arg(long, env = "FLIGHTBEAR_USERS", value_name = "FILE")]
    users: Option<PathBuf>,
    /// Secret that signs bearer tokens; replicas with the same secret accept each other's
    /// tokens [default: random per process].
    #[arg(
        long,
        env = "FLIGHTBEAR_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    token_secret: Option<String>,
    /// Seconds a bearer token stays valid [default: 3600].
    #[arg(long, env = "FLIGHTBEAR_TOKEN_TTL", value_name = "SECONDS")]
    token_ttl: Option<u64>,
    /// PEM certificate (chain) of the server; with --tls-key, clients must connect with TLS
    /// (grpc+tls://).
    #[arg(long, env = "FLIGHTBEAR_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLIGHTBEAR_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "FLIGHTBEAR_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Seconds to let open requests finish after SIGINT/SIGTERM before exiting.
    #[arg(
        long,
        env = "FLIGHTBEAR_SHUTDOWN_GRACE",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    shutdown_grace: u64,
}

#[derive(Args)]
struct HealthArgs {
    /// Server address: HOST:PORT or http://HOST:PORT; https://HOST:PORT speaks TLS.
    #[arg(
        long,
        env = "FLIGHTBEAR_HEALTHCHECK_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// PEM CA certificate(s) to verify an https:// server with [default: the system's roots].
    #[arg(long, env = "FLIGHTBEAR_HEALTHCHECK_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires mutual TLS (with --tls-key).
    #[arg(long, env = "FLIGHTBEAR_HEALTHCHECK_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLIGHTBEAR_HEALTHCHECK_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

impl ServeArgs {
    fn overrides(&self) -> Result<Overrides, flightbear::config::ConfigError> {
        let mut tables = Vec::new();
        // FLIGHTBEAR_TABLES and --table add up. An empty FLIGHTBEAR_TABLES (as Compose passes
        // when it is unset) means "no tables".
        let from_environment = std::env::var(TABLES_VARIABLE).unwrap_or_default();
        let specs = from_environment.split(',').map(str::to_string);
        for spec in specs
            .chain(self.tables.iter().cloned())
            .filter(|s| !s.trim().is_empty())
        {
            tables.push(TableSpec::parse(&spec, None)?);
        }
        for (specs, format) in [
            (&self.fasta, TableFormat::Fasta),
            (&self.fastq, TableFormat::Fastq),
            (&self.csv, TableFormat::Csv),
            (&self.tsv, TableFormat::Tsv),
        ] {
            for spec in specs {
                tables.push(TableSpec::parse(spec, Some(format))?);
            }
        }
        Ok(Overrides {
            bind: self.bind,
            batch_rows: self.batch_rows,
            batch_bytes: self.batch_bytes,
            string_view: self.string_view,
            target_partitions: self.target_partitions,
            log_format: self.log_format,
            sample_data: self.no_sample_data.map(|no| !no),
            memory_limit: self.memory_limit,
            spill_dir: self.spill_dir.clone(),
            ingest_dir: self.ingest_dir.clone(),
            max_ingest_bytes: self.max_ingest_bytes,
            max_sql_bytes: self.max_sql_bytes,
            query_timeout: self.query_timeout,
            max_concurrent_queries: self.max_concurrent_queries,
            queue_timeout: self.queue_timeout,
            query_threads: self.query_threads,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            keepalive_interval: self.keepalive_interval,
            metrics_bind: self.metrics_bind,
            // An empty FLIGHTBEAR_DATA_ROOTS means "none given here".
            data_roots: Some(self.data_roots.clone())
                .filter(|roots| roots.iter().any(|root| !root.as_os_str().is_empty()))
                .map(|roots| {
                    roots
                        .into_iter()
                        .filter(|r| !r.as_os_str().is_empty())
                        .collect()
                }),
            max_client_tables: self.max_client_tables,
            max_prepared_statements: self.max_prepared_statements,
            max_prepared_bytes: self.max_prepared_bytes,
            prepared_ttl: self.prepared_ttl,
            max_sessions: self.max_sessions,
            session_idle_timeout: self.session_idle_timeout,
            users: self.users.clone(),
            token_secret: self.token_secret.clone().map(TokenSecret),
            token_ttl: self.token_ttl,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            tables,
        })
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for people watching a terminal, never in files or journals.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = terminate => tracing::info!("received SIGTERM"),
    }
}

/// The variable of tables added to those of `--table`.
const TABLES_VARIABLE: &str = "FLIGHTBEAR_TABLES";

/// `FLIGHTBEAR_*` variables set in the environment that flightbear does not read (typos), or
/// `None`. `FLIGHTBEAR_BIN` is the test tools' path to the binary.
fn unknown_variables() -> Option<String> {
    use clap::CommandFactory;
    let mut known: std::collections::BTreeSet<String> =
        [TABLES_VARIABLE, "FLIGHTBEAR_BIN"].map(String::from).into();
    for command in Cli::command().get_subcommands() {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env() {
                known.insert(name.to_string_lossy().into_owned());
            }
        }
    }
    let unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("FLIGHTBEAR_") && !known.contains(name))
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "unknown environment variable(s) {}; flightbear reads {}",
            unknown.join(", "),
            known.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// `flightbear query`: the result on stdout, an error (with its gRPC code) on stderr and exit 1.
async fn query(args: QueryArgs) -> ExitCode {
    let stdout = std::io::stdout().lock();
    let mut out =
        flightbear::client::ResultWriter::new(args.format, std::io::BufWriter::new(stdout));
    let outcome = async {
        let mut client = flightbear::client::Client::connect(args.connect.options()).await?;
        client.query(&args.sql, &args.params, &mut out).await
    };
    match outcome.await {
        Ok(_) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) is not an error.
        Err(flightbear::client::ClientError::Output(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            drop(out);
            eprintln!("flightbear query: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `flightbear tables`: each table with its type and columns.
async fn tables(args: ConnectArgs) -> ExitCode {
    let listed = async {
        let mut client = flightbear::client::Client::connect(args.options()).await?;
        client.tables().await
    };
    match listed.await {
        Ok(tables) => {
            for table in tables {
                println!("{} ({})", table.name, table.kind.to_ascii_lowercase());
                for field in table.schema.iter().flat_map(|s| s.fields().iter()) {
                    let null = if field.is_nullable() { "" } else { " NOT NULL" };
                    println!("    {} {}{null}", field.name(), field.data_type());
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flightbear tables: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    if let Some(problem) = unknown_variables() {
        eprintln!("flightbear: {problem}");
        return ExitCode::from(2);
    }
    let config = match args
        .overrides()
        .and_then(|o| Config::load(args.config.as_deref(), o))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("flightbear: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let log_format = config.log_format;
    let mut server = match flightbear::server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            // Once: as a JSON log line for log collectors, as a plain line otherwise.
            if log_format == LogFormat::Json {
                tracing::error!("{e}");
            } else {
                eprintln!("flightbear: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // For people: what is served and how to connect. Log collectors get the log lines only.
    if log_format == LogFormat::Text {
        eprintln!("{}", server.banner());
    }
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    server.stop_on(async move {
        shutdown_signal().await;
        let _ = signalled_tx.send(());
    });
    let grace = Duration::from_secs(args.shutdown_grace);
    let deadline = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server.wait() => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        _ = deadline => {
            tracing::warn!("open requests did not finish within {}s; exiting", grace.as_secs());
            ExitCode::SUCCESS
        }
    }
}

async fn healthcheck(args: HealthArgs) -> ExitCode {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let timeout = Duration::from_secs(args.timeout);
    // HOST:PORT without a scheme is plaintext gRPC.
    let addr = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let check = async {
        let mut endpoint = tonic::transport::Endpoint::from_shared(addr.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout);
        if let Some(tls) = args.client_tls_config()? {
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| flightbear::server::tls::error_chain(&e))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| status.message().to_string())?;
        Ok::<_, String>(response.into_inner().status())
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            println!("{}", status.as_str_name());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            // Connected, but the answer was not HTTP/2: typically a TLS server.
            let hint = if addr.starts_with("http://") && !e.contains("connect") {
                " (the server does not speak plaintext HTTP/2: if it uses TLS, use https://)"
            } else {
                ""
            };
            eprintln!("flightbear healthcheck: {addr}: {e}{hint}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "flightbear healthcheck: {}: no answer within {}s",
                addr, args.timeout
            );
            ExitCode::FAILURE
        }
    }
}

/// `flightbear index`: one `.fai` (and `.gzi`) per file; exits 1 if any file failed.
fn index_files(args: IndexArgs) -> ExitCode {
    let mut failed = false;
    for path in &args.files {
        match flightbear::fasta::index::index_file(path) {
            Ok(indexed) => {
                println!(
                    "wrote {} ({} records)",
                    indexed.fai.display(),
                    indexed.records
                );
                if let Some(gzi) = &indexed.gzi {
                    println!("wrote {}", gzi.display());
                }
                if indexed.skipped.empty > 0 {
                    eprintln!(
                        "flightbear index: {}: {} records without bases left out (as samtools does)",
                        path.display(),
                        indexed.skipped.empty
                    );
                }
                if let Some(first) = indexed.skipped.duplicates.first() {
                    eprintln!(
                        "flightbear index: {}: {} repeated names (first: '{first}') left out; the first record of each name is indexed",
                        path.display(),
                        indexed.skipped.duplicates.len()
                    );
                }
            }
            Err(error) => {
                eprintln!("flightbear index: {error}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads one line from stdin and prints its argon2 PHC hash.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("flightbear hash-password: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("flightbear hash-password: the password is empty; type it on stdin");
        return ExitCode::from(2);
    }
    match flightbear::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flightbear hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}

impl HealthArgs {
    /// The TLS settings for the check: `None` for an `http://` address.
    fn client_tls_config(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
        if !self.addr.starts_with("https://") {
            if self.tls_ca.is_some() || self.tls_cert.is_some() {
                return Err("--tls-ca and --tls-cert need an https:// address".into());
            }
            return Ok(None);
        }
        flightbear::server::tls::client_config(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )
        .map(Some)
    }
}

fn main() -> ExitCode {
    flightbear::allocator::limit_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flightbear: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Healthcheck(args) => healthcheck(args).await,
            Command::HashPassword => hash_password(),
            Command::Index(args) => index_files(args),
            Command::Query(args) => query(args).await,
            Command::Tables(args) => tables(args).await,
        }
    })
}
