//! Client connections: a cap on how many are open, TCP keepalive, and closing connections that stay silent.
//!
//! Every accepted socket holds one file descriptor, so a client that opens sockets and says
//! nothing could otherwise lock everybody out. Here:
//! - at most `max_connections` are open; beyond that a new connection is closed at once (the
//!   client sees UNAVAILABLE) and a warning is logged at most every few seconds;
//! - a connection that moves no bytes either way for `idle_timeout` is closed. HTTP/2
//!   keepalive pings (sent by the gRPC server every `keepalive_interval`) and their answers
//!   count as traffic, so a healthy client waiting for a slow query is never cut;
//! - a new connection must send the 24-byte HTTP/2 preface within [`HANDSHAKE_TIMEOUT`] (or
//!   `idle_timeout`, if shorter), however slowly it trickles bytes in.
//!
//! There is no cap per client address: on the shared lab servers flightbear is made for,
//! every user usually connects from the same host (127.0.0.1, a Docker bridge or a proxy),
//! so such a cap would be the global one again, or would lock a whole lab out.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpIncoming};

use crate::config::Config;
use crate::metrics::Metrics;

/// Longest time a new connection may take to send the HTTP/2 preface. gRPC clients send it
/// as soon as TCP connects; a socket that has not after this long is not a gRPC client.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The HTTP/2 client preface (`PRI * HTTP/2.0…`) is this long.
const HTTP2_PREFACE_BYTES: usize = 24;
/// TCP keepalive probes unanswered before the kernel drops a connection.
const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// Pause after a failed accept (most often: out of file descriptors), so the accept loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// The same warning is logged at most this often.
const WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// The connection settings of a server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Time a new connection has to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Interval of HTTP/2 pings and TCP keepalive probes (`None`: off).
    pub keepalive_interval: Option<Duration>,
}

impl ConnectionLimits {
    /// The limits `config` asks for.
    pub fn from_config(config: &Config) -> Self {
        let idle_timeout = Duration::from_secs(config.idle_timeout);
        Self {
            max_connections: config.max_connections,
            idle_timeout,
            handshake_timeout: HANDSHAKE_TIMEOUT.min(idle_timeout),
            keepalive_interval: (config.keepalive_interval > 0)
                .then(|| Duration::from_secs(config.keepalive_interval)),
        }
    }
}

/// How many connections are open, and the cap.
#[derive(Debug)]
pub struct OpenConnections {
    open: AtomicUsize,
    max: usize,
}

impl OpenConnections {
    /// No connection open yet; at most `max` at once.
    pub fn new(max: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection, or `None` when `max` are open.
    fn try_open(self: &Arc<Self>) -> Option<OpenSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(OpenSlot(Arc::clone(self)))
    }
}

/// One open connection; dropping it frees its place.
struct OpenSlot(Arc<OpenConnections>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections accepted on `listener`, under `limits`: the stream to hand to tonic.
/// It never yields an error: failed accepts are logged and retried after a pause.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    open: Arc<OpenConnections>,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = io::Result<Connection<TcpStream>>> + Send + 'static {
    let keepalive = limits.keepalive_interval;
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(keepalive)
        .with_keepalive_interval(keepalive)
        .with_keepalive_retries(keepalive.map(|_| TCP_KEEPALIVE_RETRIES));
    let acceptor = Acceptor {
        incoming,
        limits,
        open,
        metrics,
        refused: Throttled::default(),
        failed: Throttled::default(),
    };
    futures::stream::unfold(acceptor, |mut acceptor| async move {
        let connection = acceptor.next().await?;
        Some((Ok(connection), acceptor))
    })
}

struct Acceptor {
    incoming: TcpIncoming,
    limits: ConnectionLimits,
    open: Arc<OpenConnections>,
    metrics: Arc<Metrics>,
    refused: Throttled,
    failed: Throttled,
}

impl Acceptor {
    /// The next connection to serve; `None` when the listener is closed.
    async fn next(&mut self) -> Option<Connection<TcpStream>> {
        loop {
            match self.incoming.next().await? {
                Ok(stream) => {
                    if let Some(connection) = self.admit(stream) {
                        return Some(connection);
                    }
                }
                Err(error) => {
                    if let Some(failed) = self.failed.due(Instant::now()) {
                        tracing::warn!(failed, "cannot accept connections: {error}");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// The connection to serve, or `None` when it was closed at once because the cap is reached.
    fn admit(&mut self, stream: TcpStream) -> Option<Connection<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let Some(slot) = self.open.try_open() else {
            self.metrics.connection_refused();
            tracing::debug!(?peer, "connection refused: too many open");
            if let Some(refused) = self.refused.due(Instant::now()) {
                tracing::warn!(
                    refused,
                    max_connections = self.open.max(),
                    "connection limit reached: new connections are closed until open ones close \
                     (--max-connections)"
                );
            }
            return None;
        };
        self.metrics.connection_accepted();
        Some(Connection {
            io: stream,
            silence: Silence::new(&self.limits, peer, Arc::clone(&self.metrics)),
            _slot: slot,
        })
    }
}

/// A warning that is logged at most every [`WARNING_INTERVAL`], with how often it happened.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    since_last: u64,
}

impl Throttled {
    /// Counts one occurrence at `now`; `Some(occurrences since the last warning)` when it is
    /// time to warn.
    fn due(&mut self, now: Instant) -> Option<u64> {
        self.since_last += 1;
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARNING_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since_last))
    }
}

/// An accepted connection: its IO fails with `TimedOut` once it has been silent too long,
/// which makes the server close it. Holds its place among the open connections.
pub struct Connection<IO> {
    io: IO,
    silence: Silence,
    _slot: OpenSlot,
}

/// When a connection last moved bytes, and the timer that closes it.
struct Silence {
    idle_timeout: Duration,
    /// Until the HTTP/2 preface is in: when the connection must have sent it.
    handshake_deadline: Option<Instant>,
    preface_left: usize,
    last_activity: Instant,
    /// Fires at or before the deadline; checked and re-armed lazily, so traffic costs no
    /// timer operations.
    timer: Pin<Box<Sleep>>,
    expired: bool,
    peer: Option<SocketAddr>,
    metrics: Arc<Metrics>,
}

impl Silence {
    fn new(limits: &ConnectionLimits, peer: Option<SocketAddr>, metrics: Arc<Metrics>) -> Self {
        let now = Instant::now();
        let handshake_deadline = now + limits.handshake_timeout;
        Self {
            idle_timeout: limits.idle_timeout,
            handshake_deadline: Some(handshake_deadline),
            preface_left: HTTP2_PREFACE_BYTES,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(
                handshake_deadline.min(now + limits.idle_timeout),
            )),
            expired: false,
            peer,
            metrics,
        }
    }

    fn deadline(&self) -> Instant {
        let idle = self.last_activity + self.idle_timeout;
        self.handshake_deadline
            .map_or(idle, |handshake| handshake.min(idle))
    }

    fn moved(&mut self, bytes: usize) {
        if bytes > 0 {
            self.last_activity = Instant::now();
        }
    }

    fn read(&mut self, bytes: usize) {
        self.moved(bytes);
        if self.handshake_deadline.is_some() {
            self.preface_left = self.preface_left.saturating_sub(bytes);
            if self.preface_left == 0 {
                self.handshake_deadline = None;
            }
        }
    }

    /// Called when the IO would block: `Ready(error)` once the connection has been silent
    /// too long, else `Pending` with the timer armed to wake the task.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        while !self.expired && self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.deadline();
            if Instant::now() < deadline {
                self.timer.as_mut().reset(deadline);
                continue;
            }
            self.expired = true;
            self.metrics.connection_timed_out();
            let why = if self.handshake_deadline.is_some() {
                "no HTTP/2 preface in time"
            } else {
                "idle timeout"
            };
            tracing::debug!(peer = ?self.peer, "closing a silent connection: {why}");
        }
        if self.expired {
            Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection closed: silent for too long",
            ))
        } else {
            Poll::Pending
        }
    }

    /// Passes a write's result through, noting the bytes written or checking for silence.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(written)) => {
                self.moved(written);
                Poll::Ready(Ok(written))
            }
            Poll::Pending => self.poll_expired(cx).map(Err),
            failed => failed,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Connection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.silence.read(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.silence.poll_expired(cx).map(Err),
            failed => failed,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Connection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.silence.after_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.silence.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.silence.poll_expired(cx).map(Err),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Connection<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Limits short enough for tests; the margins below are ten times the step sizes.
    fn limits(handshake_ms: u64, idle_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 2,
            idle_timeout: Duration::from_millis(idle_ms),
            handshake_timeout: Duration::from_millis(handshake_ms),
            keepalive_interval: None,
        }
    }

    /// A connection as the server sees it, and the client's end of it.
    fn connection(
        open: &Arc<OpenConnections>,
        limits: ConnectionLimits,
    ) -> (Connection<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let connection = Connection {
            io: server,
            silence: Silence::new(&limits, None, Arc::new(Metrics::new())),
            _slot: open.try_open().expect("a free slot"),
        };
        (connection, client)
    }

    /// Reads until the connection fails; returns the error and how many bytes came before.
    async fn read_until_closed(connection: &mut Connection<DuplexStream>) -> (io::Error, usize) {
        let mut buf = [0u8; 64];
        let mut received = 0;
        loop {
            match connection.read(&mut buf).await {
                Ok(0) => panic!("the client closed first"),
                Ok(n) => received += n,
                Err(error) => return (error, received),
            }
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_the_handshake_timeout_and_stays_closed() {
        let open = Arc::new(OpenConnections::new(2));
        let limits = limits(200, 10_000);
        let (mut connection, _client) = connection(&open, limits);
        let start = Instant::now();
        let (error, _) = read_until_closed(&mut connection).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= limits.handshake_timeout);
        let again = connection.write_all(b"late").await.err();
        assert!(again.is_none(), "writes that do not block still go through");
        assert_eq!(
            open.open(),
            1,
            "the slot is held until the connection is dropped"
        );
        drop(connection);
        assert_eq!(open.open(), 0);
    }

    #[tokio::test]
    async fn trickling_bytes_does_not_stretch_the_handshake() {
        let open = Arc::new(OpenConnections::new(2));
        let (mut connection, mut client) = connection(&open, limits(300, 10_000));
        let trickle = tokio::spawn(async move {
            for _ in 0..HTTP2_PREFACE_BYTES {
                if client.write_all(b"P").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client
        });
        let (error, received) = read_until_closed(&mut connection).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            received < HTTP2_PREFACE_BYTES,
            "closed only after {received} bytes"
        );
        drop(trickle.await);
    }

    #[tokio::test]
    async fn traffic_keeps_a_connection_open_and_silence_after_it_closes_it() {
        let open = Arc::new(OpenConnections::new(2));
        let (mut connection, mut client) = connection(&open, limits(1_000, 1_000));
        let talker = tokio::spawn(async move {
            client
                .write_all(&[b'P'; HTTP2_PREFACE_BYTES])
                .await
                .unwrap();
            // Something every 100 ms for 2.5 s: more than twice the idle timeout in all.
            for _ in 0..25 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                client.write_all(b"ping").await.unwrap();
            }
            (client, Instant::now())
        });
        // The server's own writes count as traffic too.
        connection.write_all(b"settings").await.unwrap();
        let (error, received) = read_until_closed(&mut connection).await;
        let closed = Instant::now();
        let (_client, last_ping) = talker.await.unwrap();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(received, HTTP2_PREFACE_BYTES + 25 * 4);
        assert!(closed >= last_ping + Duration::from_millis(1_000));
    }

    #[test]
    fn the_cap_refuses_connections_until_one_closes() {
        let open = Arc::new(OpenConnections::new(2));
        let first = open.try_open().unwrap();
        let _second = open.try_open().unwrap();
        assert!(open.try_open().is_none());
        assert_eq!(open.open(), 2);
        drop(first);
        assert!(open.try_open().is_some());
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_summarise() {
        let mut throttled = Throttled::default();
        let start = Instant::now();
        assert_eq!(throttled.due(start), Some(1));
        assert_eq!(throttled.due(start + Duration::from_secs(1)), None);
        assert_eq!(throttled.due(start + Duration::from_secs(2)), None);
        assert_eq!(throttled.due(start + WARNING_INTERVAL), Some(3));
    }
}
