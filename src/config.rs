//! Server configuration: one `Config` assembled from defaults, a TOML file, `FLIGHTBEAR_*` variables and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::bytesize::ByteSize;

/// Default address the server listens on.
pub const DEFAULT_BIND: &str = "127.0.0.1:50051";

/// Everything `flightbear serve` needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Socket address to listen on (`HOST:PORT`; a host name is resolved at start-up).
    #[serde(deserialize_with = "deserialize_socket_addr")]
    pub bind: SocketAddr,
    /// Tables registered at start-up.
    pub tables: Vec<TableSpec>,
    /// Maximum rows per record batch (DataFusion's `batch_size`).
    pub batch_rows: usize,
    /// Byte budget per FASTA record batch; a batch closes when it holds this many bytes.
    pub batch_bytes: ByteSize,
    /// Send Utf8View/BinaryView columns as they are instead of converting them to Utf8/Binary.
    pub string_view: bool,
    /// Number of partitions DataFusion scans and executes in parallel (0 = number of cores).
    pub target_partitions: usize,
    /// Log output format.
    pub log_format: LogFormat,
    /// Serve the sample tables shipped with flightbear when no table is configured.
    pub sample_data: bool,
    /// Memory all queries together may reserve; `None`: half of the machine's (or the
    /// container's cgroup) memory. See [`Config::memory_limit`].
    pub memory_limit: Option<ByteSize>,
    /// Where sorts, aggregations and joins spill when memory runs short (`None`: a temp dir).
    pub spill_dir: Option<PathBuf>,
    /// Where bulk-ingested tables are kept as Parquet (`None`: bulk ingest is refused).
    pub ingest_dir: Option<PathBuf>,
    /// Most bytes of Arrow data one bulk ingest may send.
    pub max_ingest_bytes: ByteSize,
    /// Longest SQL text accepted.
    pub max_sql_bytes: ByteSize,
    /// Seconds a query may run (0: no limit).
    pub query_timeout: u64,
    /// Queries that may run at once (0: four per core).
    pub max_concurrent_queries: usize,
    /// Seconds a query waits for a free slot before RESOURCE_EXHAUSTED.
    pub queue_timeout: u64,
    /// Threads each running query gets, and threads that plan (0: one per core).
    pub query_threads: usize,
    /// Open client connections accepted at once; more are refused until some close.
    pub max_connections: usize,
    /// Seconds a connection may stay silent (no bytes either way, keepalive pings included)
    /// before it is closed. A new connection has this long, but at most 10 s, to start
    /// speaking HTTP/2 (see `server::connections`).
    pub idle_timeout: u64,
    /// Seconds between HTTP/2 keepalive pings (and TCP keepalive probes).
    pub keepalive_interval: u64,
    /// Where Prometheus metrics are served at `/metrics` (`None`: not served).
    #[serde(deserialize_with = "deserialize_optional_socket_addr")]
    pub metrics_bind: Option<SocketAddr>,
    /// Directories whose files clients may register as tables (none: clients cannot).
    pub data_roots: Vec<PathBuf>,
    /// Tables and views clients may create, all clients together.
    pub max_client_tables: usize,
    /// Prepared statements whose bound parameters this replica keeps at once.
    pub max_prepared_statements: usize,
    /// Bytes of bound parameters kept at once (also reserved in the memory pool).
    pub max_prepared_bytes: ByteSize,
    /// Seconds kept parameters of an unused prepared statement survive.
    pub prepared_ttl: u64,
    /// Client sessions (SET, session options) this replica keeps at once.
    pub max_sessions: usize,
    /// Seconds an unused session survives.
    pub session_idle_timeout: u64,
    /// The users file (`None`: no authentication, every caller is anonymous).
    pub users: Option<PathBuf>,
    /// The secret that signs bearer tokens (`None`: a random one per process).
    pub token_secret: Option<TokenSecret>,
    /// Seconds a bearer token stays valid.
    pub token_ttl: u64,
    /// PEM certificate chain the server presents; with `tls_key`, the listener speaks TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates; when set, clients must present one
    /// (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Settings of `s3://` locations (on top of the `AWS_*` environment variables).
    pub s3: crate::catalog::remote::S3Config,
}

/// Default number of client-created tables and views.
pub const DEFAULT_MAX_CLIENT_TABLES: usize = 100;

/// The token-signing secret; never shown in logs or Debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenSecret(pub String);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// The shortest token secret accepted: shorter ones can be guessed offline from any token.
pub const MIN_TOKEN_SECRET_BYTES: usize = 16;

/// Default longest SQL text.
pub const DEFAULT_MAX_SQL_BYTES: ByteSize = ByteSize::mib(1);

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.parse().expect("valid default address"),
            tables: Vec::new(),
            batch_rows: crate::fasta::DEFAULT_BATCH_ROWS,
            batch_bytes: ByteSize(crate::fasta::DEFAULT_BATCH_BYTES as u64),
            string_view: false,
            target_partitions: 0,
            log_format: LogFormat::Text,
            sample_data: true,
            memory_limit: None,
            spill_dir: None,
            ingest_dir: None,
            max_ingest_bytes: ByteSize::mib(10 * 1024),
            max_sql_bytes: DEFAULT_MAX_SQL_BYTES,
            query_timeout: 3600,
            max_concurrent_queries: 0,
            queue_timeout: 30,
            query_threads: 0,
            max_connections: 1024,
            idle_timeout: 120,
            keepalive_interval: 30,
            metrics_bind: None,
            data_roots: Vec::new(),
            max_client_tables: DEFAULT_MAX_CLIENT_TABLES,
            max_prepared_statements: 10_000,
            max_prepared_bytes: ByteSize::mib(64),
            prepared_ttl: 600,
            max_sessions: 1000,
            session_idle_timeout: 3600,
            users: None,
            token_secret: None,
            token_ttl: 3600,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            s3: Default::default(),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The file format of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// FASTA sequences (`id`, `description`, `sequence`).
    Fasta,
    /// FASTQ reads (`id`, `description`, `sequence`, `quality`).
    Fastq,
    /// Comma-separated values with a header line.
    Csv,
    /// Tab-separated values with a header line.
    Tsv,
}

impl TableFormat {
    /// The lower-case name used in flags, TOML and messages.
    pub fn name(self) -> &'static str {
        match self {
            TableFormat::Fasta => "fasta",
            TableFormat::Fastq => "fastq",
            TableFormat::Csv => "csv",
            TableFormat::Tsv => "tsv",
        }
    }
}

impl FromStr for TableFormat {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fasta" | "fa" => Ok(TableFormat::Fasta),
            "fastq" | "fq" => Ok(TableFormat::Fastq),
            "csv" => Ok(TableFormat::Csv),
            "tsv" => Ok(TableFormat::Tsv),
            other => Err(ConfigError::UnknownFormat(other.to_string())),
        }
    }
}

/// A table to register: its SQL name, where its data lives and (optionally) its format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// SQL table name.
    pub name: String,
    /// A file, a directory or a glob.
    pub path: String,
    /// Format; guessed from the file extension when absent.
    #[serde(default)]
    pub format: Option<TableFormat>,
}

impl TableSpec {
    /// Parses `NAME=PATH`, as given to `--table`, `--fasta`, `--fastq`, `--csv` and `--tsv`.
    pub fn parse(spec: &str, format: Option<TableFormat>) -> Result<Self, ConfigError> {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| ConfigError::BadTableSpec(spec.to_string()))?;
        let (name, path) = (name.trim(), path.trim());
        if path.is_empty() {
            return Err(ConfigError::BadTableSpec(spec.to_string()));
        }
        validate_table_name(name)?;
        Ok(Self {
            name: name.to_string(),
            path: path.to_string(),
            format,
        })
    }
}

/// Table names become unquoted SQL identifiers, so keep them to letters, digits and `_`.
pub fn validate_table_name(name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if valid_start && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(ConfigError::BadTableName(name.to_string()))
    }
}

/// A configuration problem, worded for the person who wrote the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--table` value without `=`.
    #[error("table must be given as NAME=PATH, got '{0}'")]
    BadTableSpec(String),
    /// Table name that is not a plain identifier.
    #[error(
        "table name '{0}' must start with a letter or '_' and contain only letters, digits and '_'"
    )]
    BadTableName(String),
    /// Unknown format name.
    #[error("unknown table format '{0}' (expected fasta, fastq, csv or tsv)")]
    UnknownFormat(String),
    /// Two tables with one name.
    #[error("table '{0}' is configured more than once")]
    DuplicateTable(String),
    /// Invalid numeric setting.
    #[error("{0}")]
    Invalid(String),
    /// The TOML file could not be read or has wrong keys.
    #[error("configuration file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What figment reported.
        source: Box<figment::Error>,
    },
}

/// Settings given on the command line or through `FLIGHTBEAR_*` variables; `None` means "not given".
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--bind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// `--batch-rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_rows: Option<usize>,
    /// `--batch-bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_bytes: Option<ByteSize>,
    /// `--string-view`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_view: Option<bool>,
    /// `--target-partitions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_partitions: Option<usize>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// `--no-sample-data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_data: Option<bool>,
    /// `--memory-limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// `--spill-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<PathBuf>,
    /// `--ingest-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_dir: Option<PathBuf>,
    /// `--max-ingest-bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ingest_bytes: Option<ByteSize>,
    /// `--max-sql-bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sql_bytes: Option<ByteSize>,
    /// `--query-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_timeout: Option<u64>,
    /// `--max-concurrent-queries`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<usize>,
    /// `--queue-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<u64>,
    /// `--query-threads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_threads: Option<usize>,
    /// `--max-connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// `--idle-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// `--keepalive-interval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_interval: Option<u64>,
    /// `--metrics-bind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bind: Option<SocketAddr>,
    /// `--data-root` (replaces the file's list when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_roots: Option<Vec<PathBuf>>,
    /// `--max-client-tables`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_client_tables: Option<usize>,
    /// `--max-prepared-statements`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prepared_statements: Option<usize>,
    /// `--max-prepared-bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prepared_bytes: Option<ByteSize>,
    /// `--prepared-ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_ttl: Option<u64>,
    /// `--max-sessions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// `--session-idle-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_idle_timeout: Option<u64>,
    /// `--users`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<PathBuf>,
    /// `--token-secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<TokenSecret>,
    /// `--token-ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<u64>,
    /// `--tls-cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Tables from `--table`, `--fasta`, `--csv`; added to those of the file.
    #[serde(skip)]
    pub tables: Vec<TableSpec>,
}

impl Config {
    /// Builds the configuration: defaults, then the TOML file (if any), then flags and variables.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let extra_tables = overrides.tables.clone();
        figment = figment.merge(Serialized::defaults(overrides));
        let mut config: Config = figment.extract().map_err(|e| ConfigError::File {
            path: file.map(Path::to_path_buf).unwrap_or_default(),
            source: Box::new(e),
        })?;
        config.tables.extend(extra_tables);
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for table in &self.tables {
            validate_table_name(&table.name)?;
            if !seen.insert(table.name.to_ascii_lowercase()) {
                return Err(ConfigError::DuplicateTable(table.name.clone()));
            }
        }
        if self.batch_rows == 0 {
            return Err(ConfigError::Invalid("batch_rows must be at least 1".into()));
        }
        if self.batch_bytes.0 < 1024 {
            return Err(ConfigError::Invalid(
                "batch_bytes must be at least 1024".into(),
            ));
        }
        if let Some(limit) = self.memory_limit
            && limit < MIN_MEMORY_LIMIT
        {
            return Err(ConfigError::Invalid(format!(
                "memory_limit must be at least {MIN_MEMORY_LIMIT} (got {limit})"
            )));
        }
        if self.max_sql_bytes.0 < 1024 {
            return Err(ConfigError::Invalid(
                "max_sql_bytes must be at least 1KiB".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections must be at least 1".into(),
            ));
        }
        if self.token_ttl == 0 {
            return Err(ConfigError::Invalid(
                "token_ttl must be at least 1 second".into(),
            ));
        }
        if let Some(secret) = &self.token_secret
            && secret.0.len() < MIN_TOKEN_SECRET_BYTES
        {
            return Err(ConfigError::Invalid(format!(
                "token_secret must be at least {MIN_TOKEN_SECRET_BYTES} bytes (got {}); \
                 a short secret can be guessed from any token",
                secret.0.len()
            )));
        }
        if self.idle_timeout <= self.keepalive_interval * 2 {
            return Err(ConfigError::Invalid(format!(
                "idle_timeout ({} s) must be more than twice keepalive_interval ({} s), or \
                 healthy idle connections would be closed between keepalive pings",
                self.idle_timeout, self.keepalive_interval
            )));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "tls_cert is set but tls_key is not: TLS needs both the certificate and its \
                     private key"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "tls_key is set but tls_cert is not: TLS needs both the certificate and its \
                     private key"
                        .into(),
                ));
            }
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(ConfigError::Invalid(
                    "tls_client_ca needs tls_cert and tls_key: mutual TLS runs over TLS".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The memory limit in force: the configured one, or half of the memory this process
    /// may use (the container's cgroup limit when there is one, else the machine's memory).
    pub fn memory_limit(&self) -> ByteSize {
        self.memory_limit.unwrap_or_else(|| {
            let available = available_memory().unwrap_or(ByteSize(4 << 30));
            ByteSize((available.0 / 2).max(MIN_MEMORY_LIMIT.0))
        })
    }

    /// Threads that run queries.
    pub fn query_threads(&self) -> usize {
        if self.query_threads > 0 {
            self.query_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Limits of the client sessions this replica keeps.
    pub fn session_limits(&self) -> crate::service::sessions::SessionLimits {
        crate::service::sessions::SessionLimits {
            max_sessions: self.max_sessions,
            idle_timeout: std::time::Duration::from_secs(self.session_idle_timeout),
        }
    }

    /// Limits of the bound parameters kept for prepared statements.
    pub fn prepared_limits(&self) -> crate::service::prepared_store::PreparedLimits {
        crate::service::prepared_store::PreparedLimits {
            max_statements: self.max_prepared_statements,
            max_bytes: self.max_prepared_bytes.as_usize(),
            ttl: std::time::Duration::from_secs(self.prepared_ttl),
        }
    }

    /// Queries that may run at once.
    pub fn max_concurrent_queries(&self) -> usize {
        if self.max_concurrent_queries > 0 {
            self.max_concurrent_queries
        } else {
            4 * std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The smallest memory limit accepted: below it even small scans cannot run.
pub const MIN_MEMORY_LIMIT: ByteSize = ByteSize::mib(16);

/// The memory this process may use: the cgroup (v2, then v1) limit when one is set, else the
/// machine's total memory (`/proc/meminfo`). `None` where neither can be read.
pub fn available_memory() -> Option<ByteSize> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        // "max" (v2) or a huge number (v1) mean "no limit".
        text.trim().parse::<u64>().ok()
    })
    .filter(|&limit| machine.is_none_or(|machine| limit < machine));
    cgroup.or(machine).map(ByteSize)
}

/// A boolean as people write it in flags and environment variables: `true/false`, `1/0`,
/// `yes/no`, `on/off`, in any case.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "'{text}' is not a boolean: use true/false, 1/0, yes/no or on/off"
        )),
    }
}

/// A listening address from `HOST:PORT`: an IP address as is, a host name resolved (its first
/// IPv4 address, else its first address), so `localhost:50051` works.
pub fn resolve_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    use std::net::ToSocketAddrs;
    let addresses: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| {
            format!("'{text}' is not an address such as 127.0.0.1:50051 or localhost:50051 ({e})")
        })?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("'{text}' resolves to no address"))
}

fn deserialize_socket_addr<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    resolve_socket_addr(&text).map_err(serde::de::Error::custom)
}

fn deserialize_optional_socket_addr<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        Some(text) => resolve_socket_addr(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_read_as_people_write_them() {
        for yes in ["true", "TRUE", "1", "yes", "Yes", "on", " On "] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["false", "False", "0", "no", "NO", "off"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        let error = parse_bool("maybe").unwrap_err();
        assert!(
            error.contains("'maybe'") && error.contains("yes/no"),
            "{error}"
        );
    }

    #[test]
    fn host_names_are_accepted_where_addresses_are() {
        assert_eq!(
            resolve_socket_addr("127.0.0.1:6000").unwrap(),
            "127.0.0.1:6000".parse::<SocketAddr>().unwrap()
        );
        let local = resolve_socket_addr("localhost:6001").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 6001, "{local}");
        let error = resolve_socket_addr("localhost").unwrap_err();
        assert!(error.contains("localhost:50051"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flightbear.toml");
        std::fs::write(
            &file,
            "bind = \"localhost:6002\"\nmetrics_bind = \"localhost:6003\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), Overrides::default()).unwrap();
        assert!(config.bind.ip().is_loopback() && config.bind.port() == 6002);
        assert_eq!(config.metrics_bind.map(|a| a.port()), Some(6003));
    }

    #[test]
    fn table_spec_parses_name_and_path() {
        let spec = TableSpec::parse("genome=/data/GRCh38.fa.gz", None).unwrap();
        assert_eq!(spec.name, "genome");
        assert_eq!(spec.path, "/data/GRCh38.fa.gz");
    }

    #[test]
    fn table_spec_rejects_missing_equals_and_bad_names() {
        assert!(TableSpec::parse("genome", None).is_err());
        assert!(TableSpec::parse("1abc=x.fa", None).is_err());
        assert!(TableSpec::parse("a-b=x.fa", None).is_err());
        assert!(TableSpec::parse("ok=", None).is_err());
    }

    #[test]
    fn toml_file_is_overridden_by_flags_and_tables_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flightbear.toml");
        std::fs::write(
            &file,
            "bind = \"0.0.0.0:6000\"\nbatch_rows = 100\n[[tables]]\nname = \"a\"\npath = \"a.fa\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            batch_rows: Some(7),
            tables: vec![TableSpec::parse("b=b.csv", None).unwrap()],
            ..Overrides::default()
        };
        let config = Config::load(Some(&file), overrides).unwrap();
        assert_eq!(config.bind.port(), 6000);
        assert_eq!(config.batch_rows, 7);
        let names: Vec<_> = config.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn batch_bytes_and_data_roots_read_from_toml_with_units() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flightbear.toml");
        std::fs::write(
            &file,
            "batch_bytes = \"4MiB\"\ndata_roots = [\"/data\", \"/srv\"]\nmax_client_tables = 3\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), Overrides::default()).unwrap();
        assert_eq!(config.batch_bytes, ByteSize::mib(4));
        assert_eq!(
            config.data_roots,
            [PathBuf::from("/data"), PathBuf::from("/srv")]
        );
        assert_eq!(config.max_client_tables, 3);
        let overrides = Overrides {
            batch_bytes: Some(ByteSize(65536)),
            data_roots: Some(vec![PathBuf::from("/other")]),
            ..Overrides::default()
        };
        let config = Config::load(Some(&file), overrides).unwrap();
        assert_eq!(config.batch_bytes, ByteSize(65536));
        assert_eq!(config.data_roots, [PathBuf::from("/other")]);
    }

    #[test]
    fn unknown_toml_key_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "bnd = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("bnd"), "{err}");
    }

    #[test]
    fn tls_needs_both_certificate_and_key() {
        let only_cert = Overrides {
            tls_cert: Some("server.pem".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, only_cert).unwrap_err().to_string();
        assert!(err.contains("tls_key is not"), "{err}");
        let only_key = Overrides {
            tls_key: Some("server.key".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, only_key).unwrap_err().to_string();
        assert!(err.contains("tls_cert is not"), "{err}");
        let only_client_ca = Overrides {
            tls_client_ca: Some("ca.pem".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, only_client_ca).unwrap_err().to_string();
        assert!(err.contains("mutual TLS"), "{err}");
    }

    #[test]
    fn duplicate_table_names_are_rejected() {
        let overrides = Overrides {
            tables: vec![
                TableSpec::parse("a=x.fa", None).unwrap(),
                TableSpec::parse("A=y.fa", None).unwrap(),
            ],
            ..Overrides::default()
        };
        assert!(matches!(
            Config::load(None, overrides),
            Err(ConfigError::DuplicateTable(_))
        ));
    }

    #[test]
    fn authentication_settings_come_from_the_file_and_short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flightbear.toml");
        std::fs::write(
            &file,
            "users = \"/etc/flightbear/users.toml\"\ntoken_secret = \"0123456789abcdef\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            token_ttl: Some(60),
            ..Overrides::default()
        };
        let config = Config::load(Some(&file), overrides).unwrap();
        assert_eq!(
            config.users,
            Some(PathBuf::from("/etc/flightbear/users.toml"))
        );
        assert_eq!(config.token_ttl, 60);
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        let overrides = Overrides {
            token_secret: Some(TokenSecret("short".into())),
            ..Overrides::default()
        };
        let error = Config::load(Some(&file), overrides)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("token_secret must be at least 16 bytes"),
            "{error}"
        );
        let overrides = Overrides {
            token_ttl: Some(0),
            ..Overrides::default()
        };
        assert!(Config::load(None, overrides).is_err());
    }
}
