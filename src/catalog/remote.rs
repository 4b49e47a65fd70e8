//! Remote table locations: `s3://bucket/key` and `http(s)://host/path`, read through
//! object_store with range requests and streamed bodies.
//!
//! Stores are made on first use, one per bucket or origin, by [`RemoteStores`] (DataFusion's
//! object store registry for the session): S3 settings come from the standard `AWS_*`
//! environment variables with the `[s3]` section of the configuration on top. Every HTTP
//! request runs on one IO runtime of the process (query threads end with their query, and a
//! pooled connection must outlive them), its body handed to the query through a bounded
//! channel, so a slow consumer slows the download instead of buffering it. Redirects are not
//! followed: a server inside a data root could otherwise send the server elsewhere.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::StreamExt;
use http_body::{Body, Frame};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{
    ClientConfigKey, ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind,
    HttpRequest, HttpResponse, HttpResponseBody, HttpService,
};
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;
use url::Url;

use super::location::{self, LocationError, MAX_FILES};
use crate::config::TableFormat;

/// URL schemes a table location may have besides local paths.
pub const SCHEMES: [&str; 3] = ["s3", "http", "https"];

/// How long connecting to a remote store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a remote store may stay silent while a request or a body is read. A query whose
/// client stops reading longer than this loses its download (and fails).
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Retries of a failed request (connection refused, 5xx, throttling), within
/// [`RETRY_TIMEOUT`]: a store that is down fails a query in seconds, not minutes.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
        ..RetryConfig::default()
    }
}

/// Body chunks buffered between the network and the query reading them.
const BODY_CHUNKS: usize = 4;

/// The runtime every remote request runs on: two threads for the process, never shut down.
static IO: LazyLock<Option<Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flightbear-io")
        .enable_all()
        .build()
        .inspect_err(|error| tracing::error!("cannot start the remote IO threads: {error}"))
        .ok()
});

/// Runs `future` (object store calls) on the IO runtime and waits for it, from any thread:
/// a query's blocking reader, or planning.
pub fn block_on<T: Send + 'static>(
    future: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> object_store::Result<T> {
    let interrupted = || object_store::Error::Generic {
        store: "remote",
        source: Box::new(Interrupted),
    };
    let Some(runtime) = IO.as_ref() else {
        return Err(interrupted());
    };
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver.recv().map_err(|_| interrupted())?
}

/// Settings of `s3://` locations, on top of the standard AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The region (AWS_REGION).
    pub region: Option<String>,
    /// An S3-compatible endpoint (MinIO, Ceph, …), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<Secret>,
    /// A session token for temporary credentials.
    pub session_token: Option<Secret>,
    /// Allow `http://` endpoints (S3 itself is always HTTPS).
    pub allow_http: Option<bool>,
    /// Address buckets as `https://bucket.endpoint` instead of `https://endpoint/bucket`.
    pub virtual_hosted_style: Option<bool>,
    /// Send unsigned requests (public buckets, no credentials).
    pub skip_signature: Option<bool>,
}

/// A credential; never shown in logs or Debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// True when `location` is a URL of a remote store (`s3://`, `http://`, `https://`).
pub fn is_remote(location: &str) -> bool {
    scheme_of(location).is_some_and(|scheme| SCHEMES.contains(&scheme.as_str()))
}

/// The lower-case scheme of a location written as a URL (`None` for paths and `file://`).
pub fn scheme_of(location: &str) -> Option<String> {
    let (scheme, _) = location.split_once("://")?;
    let valid = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let scheme = scheme.to_ascii_lowercase();
    (valid && scheme != "file").then_some(scheme)
}

/// Parses a remote location: the URL without its glob part, and the glob (matched against
/// whole object keys) if it has one. Refuses what a store could read differently from how it
/// is written: credentials in the URL, queries, fragments, `.`/`..` segments, empty segments.
pub fn parse(location: &str) -> Result<(Url, Option<glob::Pattern>), LocationError> {
    let bad = |why: &str| LocationError::BadUrl {
        location: location.to_string(),
        message: why.to_string(),
    };
    let scheme = scheme_of(location).unwrap_or_default();
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(bad(
            "only s3://, http:// and https:// locations are supported",
        ));
    }
    let after_scheme = &location[scheme.len() + 3..];
    let raw_path = after_scheme
        .find('/')
        .map_or("", |slash| &after_scheme[slash..]);
    if raw_path.contains(['?', '#']) {
        return Err(bad(
            "queries and fragments are not allowed ('?' does not match a character in a remote \
             location; use '*' or '[…]')",
        ));
    }
    // Checked on the decoded path too: `%2F..%2F` is `/../` to many servers.
    let decoded = percent_decode(raw_path);
    for path in [raw_path, decoded.as_str()] {
        let trimmed = path.trim_end_matches('/');
        if trimmed
            .split(['/', '\\'])
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(bad("'.' and '..' segments are not allowed"));
        }
        if trimmed.len() > 1 && trimmed[1..].split(['/', '\\']).any(str::is_empty) {
            return Err(bad("empty path segments are not allowed"));
        }
    }
    let glob = location::has_glob_chars(raw_path);
    let url = Url::parse(location).map_err(|e| bad(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "credentials do not belong in the URL (use the AWS_* variables or [s3])",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("a bucket or host is missing"));
    }
    if !glob {
        return Ok((url, None));
    }
    // The literal directory before the first glob character is listed; the pattern is
    // matched against the keys found.
    let first_glob = raw_path.find(['*', '[']).unwrap_or(raw_path.len());
    let directory = &raw_path[..=raw_path[..first_glob].rfind('/').unwrap_or(0)];
    let pattern = percent_decode(raw_path.trim_start_matches('/'));
    let pattern = glob::Pattern::new(&pattern).map_err(|e| LocationError::BadGlob {
        pattern: location.to_string(),
        message: e.msg.to_string(),
    })?;
    let mut base = url.clone();
    base.set_path(directory);
    Ok((base, Some(pattern)))
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The key a URL names in its store (percent-decoding undone, no leading `/`).
pub fn key_of(url: &Url) -> Result<ObjectPath, LocationError> {
    ObjectPath::from_url_path(url.path()).map_err(|e| LocationError::BadUrl {
        location: url.to_string(),
        message: e.to_string(),
    })
}

/// The URL of `key` in the store of `base` (same scheme and authority).
pub fn url_of(base: &Url, key: &ObjectPath) -> String {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .clear()
            .extend(key.parts().map(|part| part.as_ref().to_string()));
    }
    url.to_string()
}

/// Lists the objects a remote location names, as URLs of single objects, and the format:
/// an object is itself; a location ending in `/` (or naming no object) lists every object
/// under it with the format's extensions; a glob keeps the objects whose keys match it.
pub async fn resolve(
    store: &dyn ObjectStore,
    location: &str,
    format: Option<TableFormat>,
) -> Result<(Vec<String>, TableFormat), LocationError> {
    match list(store, location).await? {
        Listed::Object(url, key) => {
            let format = format
                .or_else(|| location::format_of(std::path::Path::new(key.as_ref())))
                .ok_or_else(|| LocationError::UnknownFormat(location.to_string()))?;
            Ok((vec![url_of(&url, &key)], format))
        }
        Listed::Many { base, keys, glob } => {
            let (files, format) = location::select_listed(location, keys, format, glob)?;
            Ok((urls_of(&base, &files), format))
        }
    }
}

/// The objects a remote location names for a format flightbear does not know by name
/// (Parquet, JSON, …): an object is itself, a glob its matching objects, a prefix its
/// objects ending in `extension`.
pub async fn resolve_ending_in(
    store: &dyn ObjectStore,
    location: &str,
    extension: &str,
) -> Result<Vec<String>, LocationError> {
    match list(store, location).await? {
        Listed::Object(url, key) => Ok(vec![url_of(&url, &key)]),
        Listed::Many {
            base,
            mut keys,
            glob,
        } => {
            let extension = extension.to_ascii_lowercase();
            if !glob {
                keys.retain(|key| {
                    key.to_string_lossy()
                        .to_ascii_lowercase()
                        .ends_with(&extension)
                });
            }
            if keys.is_empty() {
                return Err(LocationError::NoFiles {
                    location: location.to_string(),
                    format: "matching",
                    extensions: extension,
                });
            }
            keys.sort();
            Ok(urls_of(&base, &keys))
        }
    }
}

fn urls_of(base: &Url, keys: &[std::path::PathBuf]) -> Vec<String> {
    keys.iter()
        .map(|file| {
            let key = ObjectPath::from(file.to_string_lossy().trim_start_matches('/'));
            url_of(base, &key)
        })
        .collect()
}

/// What a remote location names.
enum Listed {
    /// One object.
    Object(Url, ObjectPath),
    /// The objects under a prefix (or matching a glob), as `/` and their keys.
    Many {
        base: Url,
        keys: Vec<std::path::PathBuf>,
        glob: bool,
    },
}

async fn list(store: &dyn ObjectStore, location: &str) -> Result<Listed, LocationError> {
    let (url, glob) = parse(location)?;
    let key = key_of(&url)?;
    let remote_error = |source: object_store::Error| LocationError::Remote {
        location: location.to_string(),
        source: Box::new(source),
    };
    if glob.is_none() && !url.path().ends_with('/') {
        match store.head(&key).await {
            Ok(meta) => return Ok(Listed::Object(url, meta.location)),
            // An S3 key that is no object may be a prefix.
            Err(object_store::Error::NotFound { .. }) if url.scheme() == "s3" => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(LocationError::Missing(location.to_string()));
            }
            Err(error) => return Err(remote_error(error)),
        }
    }
    let prefix = (!key.as_ref().is_empty()).then_some(&key);
    let mut listing = store.list(prefix);
    let mut keys = Vec::new();
    let separators = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|error| match error {
            error if url.scheme() != "s3" => LocationError::BadUrl {
                location: location.to_string(),
                message: format!(
                    "cannot list it ({error}); HTTP servers list only through WebDAV: name \
                     the files"
                ),
            },
            error => remote_error(error),
        })?;
        if glob
            .as_ref()
            .is_some_and(|glob| !glob.matches_with(meta.location.as_ref(), separators))
        {
            continue;
        }
        if keys.len() >= MAX_FILES {
            return Err(LocationError::TooManyFiles(location.to_string()));
        }
        keys.push(std::path::PathBuf::from(format!("/{}", meta.location)));
    }
    if keys.is_empty() {
        return Err(match glob {
            Some(_) => LocationError::GlobMatchesNothing(location.to_string()),
            None => LocationError::Missing(location.to_string()),
        });
    }
    Ok(Listed::Many {
        base: url,
        keys,
        glob: glob.is_some(),
    })
}

/// The store serving `url` (made on first use by [`RemoteStores`]).
pub fn store_of(runtime: &RuntimeEnv, url: &Url) -> Result<Arc<dyn ObjectStore>> {
    runtime.object_store(ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?)
}

/// An object read as a file, by range requests: `Read` and `Seek` for readers that jump
/// (index lookups, regions). Blocking; each request runs on the IO runtime. Reads that follow
/// each other fetch more at a time (64 KiB doubling up to [`RangeReader::MAX_BUFFER`]); a
/// jump starts small again, so a short region costs one small request.
pub struct RangeReader {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    size: u64,
    position: u64,
    buffer: Bytes,
    buffer_start: u64,
    next_fetch: usize,
    /// Where the caller expects to stop: fetches do not grow past it.
    soft_end: SoftEnd,
}

/// Where the reader of a [`RangeReader`] expects to stop, movable while the reader sits inside
/// others (a buffer, a BGZF decoder): each record or region read moves it to its own end, so
/// fetches do not run past what is wanted.
#[derive(Debug, Clone)]
pub struct SoftEnd(Arc<std::sync::atomic::AtomicU64>);

impl SoftEnd {
    /// Expects reads to stop near `end` (byte offset of the object).
    pub fn set(&self, end: u64) {
        self.0.store(end, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl RangeReader {
    /// The most bytes one reader holds (reserve it in the memory pool).
    pub const MAX_BUFFER: usize = 8 << 20;
    const MIN_FETCH: usize = 64 << 10;

    /// A reader of the `size` bytes of `key`.
    pub fn new(store: Arc<dyn ObjectStore>, key: ObjectPath, size: u64) -> Self {
        Self {
            store,
            key,
            size,
            position: 0,
            buffer: Bytes::new(),
            buffer_start: 0,
            next_fetch: Self::MIN_FETCH,
            soft_end: SoftEnd(Arc::new(size.into())),
        }
    }

    /// Expects reads to end near `end`: fetches stop growing there (later reads still work,
    /// a small fetch at a time), so a scan of part of a file fetches little beyond it.
    pub fn with_soft_end(self, end: u64) -> Self {
        self.soft_end.set(end);
        self
    }

    /// The handle that moves this reader's soft end (see [`RangeReader::with_soft_end`]).
    pub fn soft_end(&self) -> SoftEnd {
        self.soft_end.clone()
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let sequential = self.position == self.buffer_start + self.buffer.len() as u64
            && !self.buffer.is_empty();
        self.next_fetch = if sequential {
            (self.next_fetch * 2).min(Self::MAX_BUFFER)
        } else {
            Self::MIN_FETCH
        };
        let wanted = match self
            .soft_end
            .get()
            .min(self.size)
            .checked_sub(self.position)
        {
            Some(left) if left > 0 => (self.next_fetch as u64).min(left),
            _ => Self::MIN_FETCH as u64,
        }
        .max(Self::MIN_FETCH as u64);
        let end = self.size.min(self.position + wanted);
        let (store, key, range) = (
            Arc::clone(&self.store),
            self.key.clone(),
            self.position..end,
        );
        self.buffer = Bytes::new();
        let asked = end - self.position;
        let bytes = block_on(async move { store.get_range(&key, range).await })
            .map_err(std::io::Error::other)?;
        if bytes.len() as u64 != asked {
            return Err(std::io::Error::other(object_store::Error::Generic {
                store: "remote",
                source: format!(
                    "{} gave {} bytes for a range of {asked}: it changed while being read, or \
                     its store sent a broken response",
                    self.key,
                    bytes.len()
                )
                .into(),
            }));
        }
        self.buffer = bytes;
        self.buffer_start = self.position;
        Ok(())
    }
}

impl std::io::Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.position >= self.size || out.is_empty() {
            return Ok(0);
        }
        let buffered = self.buffer_start..self.buffer_start + self.buffer.len() as u64;
        if !buffered.contains(&self.position) {
            self.fill()?;
        }
        let offset = (self.position - self.buffer_start) as usize;
        let available = &self.buffer[offset..];
        if available.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} ended early (it changed while being read?)", self.key),
            ));
        }
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for RangeReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(at) => Some(at),
            std::io::SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            std::io::SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.position)
    }
}

/// Reads a whole small object (an index), refusing one larger than `limit` bytes; `None` when
/// there is no such object.
pub fn read_small(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    limit: u64,
) -> object_store::Result<Option<(Bytes, object_store::ObjectMeta)>> {
    let (store, key) = (Arc::clone(store), key.clone());
    block_on(async move {
        let meta = match store.head(&key).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        if meta.size > limit {
            return Err(object_store::Error::Generic {
                store: "remote",
                source: format!(
                    "{key} is {} bytes, more than the {limit} allowed",
                    meta.size
                )
                .into(),
            });
        }
        if meta.size == 0 {
            return Ok(Some((Bytes::new(), meta)));
        }
        // A plain GET: some HTTP servers answer no range requests, and the whole object is
        // wanted anyway. Its body may not run past the limit whatever the store says.
        let mut body = store.get(&key).await?.into_stream();
        let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if (bytes.len() + chunk.len()) as u64 > limit.min(meta.size) {
                return Err(object_store::Error::Generic {
                    store: "remote",
                    source: format!("{key} sent more than the {} bytes it has", meta.size).into(),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((Bytes::from(bytes), meta)))
    })
}

/// The session's object store registry: local files as DataFusion has them, S3 buckets and
/// HTTP origins made on first use and kept.
#[derive(Debug)]
pub struct RemoteStores {
    local: DefaultObjectStoreRegistry,
    s3: S3Config,
    made: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl RemoteStores {
    /// Stores configured by `s3` (and the environment).
    pub fn new(s3: S3Config) -> Self {
        Self {
            local: DefaultObjectStoreRegistry::new(),
            s3,
            made: Mutex::default(),
        }
    }

    fn connector(&self) -> IoConnector {
        IoConnector {
            runtime: IO.as_ref().map(|runtime| runtime.handle().clone()),
        }
    }

    fn make(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let scheme = url.scheme();
        let host = url.host_str().unwrap_or_default();
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(host)
                    .with_retry(retry())
                    .with_http_connector(self.connector());
                let s3 = &self.s3;
                let settings = [
                    (AmazonS3ConfigKey::Region, s3.region.clone()),
                    (AmazonS3ConfigKey::Endpoint, s3.endpoint.clone()),
                    (AmazonS3ConfigKey::AccessKeyId, s3.access_key_id.clone()),
                    (
                        AmazonS3ConfigKey::SecretAccessKey,
                        s3.secret_access_key.as_ref().map(|s| s.0.clone()),
                    ),
                    (
                        AmazonS3ConfigKey::Token,
                        s3.session_token.as_ref().map(|s| s.0.clone()),
                    ),
                    (
                        AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
                        s3.allow_http.map(|b| b.to_string()),
                    ),
                    (
                        AmazonS3ConfigKey::VirtualHostedStyleRequest,
                        s3.virtual_hosted_style.map(|b| b.to_string()),
                    ),
                    (
                        AmazonS3ConfigKey::SkipSignature,
                        s3.skip_signature.map(|b| b.to_string()),
                    ),
                ];
                for (key, value) in settings {
                    if let Some(value) = value {
                        builder = builder.with_config(key, value);
                    }
                }
                Arc::new(builder.build()?)
            }
            "http" | "https" => {
                let origin = &url[..url::Position::BeforePath];
                let options = ClientOptions::new().with_allow_http(scheme == "http");
                Arc::new(
                    HttpBuilder::new()
                        .with_url(origin)
                        .with_client_options(options)
                        .with_retry(retry())
                        .with_http_connector(self.connector())
                        .build()?,
                )
            }
            other => {
                return Err(DataFusionError::Plan(format!(
                    "no object store for '{other}://' locations (s3://, http:// and https:// \
                     are supported)"
                )));
            }
        };
        Ok(store)
    }
}

/// The key of the store serving `url`: its scheme and authority.
fn store_key(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl ObjectStoreRegistry for RemoteStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        if url.scheme() == "file" {
            return self.local.register_store(url, store);
        }
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        made.insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if url.scheme() == "file" {
            return self.local.deregister_store(url);
        }
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        made.remove(&store_key(url)).ok_or_else(|| {
            DataFusionError::Internal(format!("no object store for {}", store_key(url)))
        })
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if url.scheme() == "file" {
            return self.local.get_store(url);
        }
        let key = store_key(url);
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = made.get(&key) {
            return Ok(Arc::clone(store));
        }
        let store = self.make(url)?;
        made.insert(key, Arc::clone(&store));
        Ok(store)
    }
}

/// Makes the HTTP clients of the stores: reqwest without redirects, run on the IO runtime.
#[derive(Debug, Clone)]
struct IoConnector {
    runtime: Option<Handle>,
}

impl HttpConnector for IoConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let allow_http = options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .is_some_and(|value| value == "true");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // Compression would change the sizes and ranges object_store relies on.
            .no_gzip()
            .https_only(!allow_http)
            .build()
            .map_err(|source| object_store::Error::Generic {
                store: "HTTP",
                source: Box::new(source),
            })?;
        Ok(HttpClient::new(IoService {
            client,
            runtime: self.runtime.clone(),
        }))
    }
}

/// An HTTP client whose requests and bodies are driven on the IO runtime.
#[derive(Debug, Clone)]
struct IoService {
    client: reqwest::Client,
    runtime: Option<Handle>,
}

#[async_trait]
impl HttpService for IoService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let Some(runtime) = &self.runtime else {
            return self.client.call(request).await;
        };
        let client = self.client.clone();
        let (head_sender, head) = tokio::sync::oneshot::channel();
        let (chunks, receiver) = mpsc::channel(BODY_CHUNKS);
        let task = runtime.spawn(async move {
            let (parts, mut body) = match client.call(request).await {
                Ok(response) => response.into_parts(),
                Err(error) => {
                    let _ = head_sender.send(Err(error));
                    return;
                }
            };
            if head_sender.send(Ok(parts)).is_err() {
                return;
            }
            while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                if chunks.send(frame).await.is_err() {
                    return;
                }
            }
        });
        let worker = AbortOnDrop(task);
        let parts = head
            .await
            .map_err(|_| HttpError::new(HttpErrorKind::Interrupted, Interrupted))??;
        Ok(HttpResponse::from_parts(
            parts,
            HttpResponseBody::new(ChannelBody {
                receiver,
                _worker: worker,
            }),
        ))
    }
}

/// The IO task ended before answering.
#[derive(Debug, thiserror::Error)]
#[error("the request was interrupted")]
struct Interrupted;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ChannelBody {
    receiver: mpsc::Receiver<Result<Frame<Bytes>, HttpError>>,
    _worker: AbortOnDrop,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        self.receiver.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_locations_are_told_from_paths() {
        assert!(is_remote("s3://bucket/a.fa"));
        assert!(is_remote("HTTPS://example.org/a.fa"));
        assert!(!is_remote("/data/a.fa"));
        assert!(!is_remote("file:///data/a.fa"));
        assert!(!is_remote("gs://bucket/a.fa"));
        assert_eq!(scheme_of("gs://bucket/a.fa").as_deref(), Some("gs"));
    }

    #[test]
    fn urls_that_could_be_read_another_way_are_refused() {
        for location in [
            "s3://bucket/lab/../secret.fa",
            "s3://bucket/lab/%2e%2E/secret.fa",
            "s3://bucket/lab/./a.fa",
            "s3://bucket/lab//a.fa",
            "s3://bucket/lab/x%2F..%2F..%2Fsecret.fa",
            "http://host/lab/..%5Csecret.fa",
            "http://user:pw@host/a.fa",
            "http://host/a.fa?x=1",
            "http://host/a.fa#x",
            "s3:///a.fa",
            "gs://bucket/a.fa",
        ] {
            assert!(
                matches!(parse(location), Err(LocationError::BadUrl { .. })),
                "{location}: {:?}",
                parse(location)
            );
        }
    }

    #[test]
    fn a_range_reader_reads_and_seeks_like_a_file() {
        use std::io::{Read, Seek, SeekFrom};
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let key = ObjectPath::from("dir/file.bin");
        {
            let (store, key, data) = (Arc::clone(&store), key.clone(), data.clone());
            block_on(async move { store.put(&key, data.into()).await.map(|_| ()) }).unwrap();
        }
        let mut reader = RangeReader::new(Arc::clone(&store), key.clone(), data.len() as u64);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        for at in [0u64, 1, 65_535, 65_536, 200_000, 299_999] {
            reader.seek(SeekFrom::Start(at)).unwrap();
            let mut byte = [0u8; 3];
            let n = reader.read(&mut byte).unwrap();
            assert!(n >= 1);
            assert_eq!(&byte[..n], &data[at as usize..at as usize + n]);
        }
        assert_eq!(reader.seek(SeekFrom::End(-2)).unwrap(), 299_998);
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, &data[299_998..]);
        assert!(reader.seek(SeekFrom::Current(-400_000)).is_err());
        let small = read_small(&store, &key, 1000).unwrap_err();
        assert!(small.to_string().contains("more than the 1000"), "{small}");
        assert!(
            read_small(&store, &ObjectPath::from("none"), 10)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn globs_list_their_literal_directory() {
        let (url, glob) = parse("s3://bucket/runs/2024*/reads_[12].fq.gz").unwrap();
        assert_eq!(url.as_str(), "s3://bucket/runs/");
        let glob = glob.unwrap();
        assert!(glob.matches("runs/2024-05/reads_1.fq.gz"));
        assert!(!glob.matches("runs/2023/reads_1.fq.gz"));
        let (url, glob) = parse("s3://bucket/a%20b.fa").unwrap();
        assert!(glob.is_none());
        assert_eq!(key_of(&url).unwrap().as_ref(), "a b.fa");
        assert_eq!(url_of(&url, &key_of(&url).unwrap()), "s3://bucket/a%20b.fa");
    }
}
