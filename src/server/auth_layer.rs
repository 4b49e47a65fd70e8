//! The authentication gate in front of the Flight service: every call shows a bearer token or a password, the Handshake trades a password for a token.
//!
//! It wraps the Flight service only, so grpc.health.v1 stays open to load balancers. The
//! caller's [`Identity`] goes into the request's extensions and along with the work the call
//! spawns (see [`crate::auth::serve_as`]). Without a users file every caller is anonymous.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::header::AUTHORIZATION;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;

use crate::auth::{AuthError, Authenticator, Credentials, Identity, IssuedToken, serve_as};

/// Failed logins from one address within [`FAILURE_WINDOW`] before it is refused outright.
const MAX_FAILURES: u32 = 20;
/// How long failed logins are remembered.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Added to each failed answer per recent failure from the same address, up to [`MAX_DELAY`].
const DELAY_STEP: Duration = Duration::from_millis(100);
/// The longest delay of a failed answer.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Addresses remembered at most; beyond that the oldest entries are forgotten first.
const MAX_TRACKED_PEERS: usize = 10_000;

/// Recent failed logins from one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failed logins by peer address: slows down and then stops password guessing.
#[derive(Debug, Default)]
struct FailureLog {
    by_peer: Mutex<HashMap<Option<IpAddr>, Failures>>,
}

impl FailureLog {
    fn recent(&self, peer: Option<IpAddr>, now: Instant) -> u32 {
        let by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        by_peer
            .get(&peer)
            .filter(|f| now.duration_since(f.last) < FAILURE_WINDOW)
            .map_or(0, |f| f.count)
    }

    /// Records a failure and returns how many there were recently, this one included.
    fn record(&self, peer: Option<IpAddr>, now: Instant) -> u32 {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        if by_peer.len() >= MAX_TRACKED_PEERS {
            by_peer.retain(|_, f| now.duration_since(f.last) < FAILURE_WINDOW);
            if by_peer.len() >= MAX_TRACKED_PEERS {
                by_peer.clear();
            }
        }
        let entry = by_peer.entry(peer).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= FAILURE_WINDOW {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.count
    }

    fn forget(&self, peer: Option<IpAddr>) {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        by_peer.remove(&peer);
    }
}

/// How long the answer to the `failures`-th recent failure is held back.
fn failure_delay(failures: u32) -> Duration {
    DELAY_STEP.saturating_mul(failures).min(MAX_DELAY)
}

/// Why a call is refused: the message the client sees.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(
        "too many failed logins from this address; try again in {} s",
        FAILURE_WINDOW.as_secs()
    )]
    TooManyFailures,
    #[error("authorization header is not valid text")]
    NotText,
}

/// Checks credentials for the layer: users, tokens, the failure log and a cap on concurrent
/// password checks (argon2 takes ~20 MiB and tens of milliseconds each).
#[derive(Debug)]
pub struct Gate {
    authenticator: Authenticator,
    failures: FailureLog,
    password_checks: Semaphore,
}

impl Gate {
    /// A gate that lets in the users of `authenticator`.
    pub fn new(authenticator: Authenticator) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            authenticator,
            failures: FailureLog::default(),
            password_checks: Semaphore::new(cores),
        }
    }

    /// Who sends `header`, logging and slowing down failures from `peer`.
    async fn admit(
        &self,
        header: Option<&HeaderValue>,
        peer: Option<SocketAddr>,
    ) -> Result<Identity, Refusal> {
        let ip = peer.map(|p| p.ip());
        let now = Instant::now();
        if self.failures.recent(ip, now) >= MAX_FAILURES {
            return Err(Refusal::TooManyFailures);
        }
        let (user, outcome) = self.check(header).await;
        match outcome {
            Ok(identity) => {
                if user.is_some() {
                    self.failures.forget(ip);
                }
                Ok(identity)
            }
            // No credentials at all is a client that has not logged in, not a guess.
            Err(Refusal::Auth(AuthError::Missing)) => Err(Refusal::Auth(AuthError::Missing)),
            Err(refusal) => {
                let failures = self.failures.record(ip, now);
                let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
                tracing::warn!(
                    user = user.as_deref().unwrap_or("-"),
                    %peer,
                    failures,
                    reason = %refusal,
                    "authentication failed"
                );
                tokio::time::sleep(failure_delay(failures)).await;
                Err(refusal)
            }
        }
    }

    /// Checks the credentials; also returns the user name a password was given for.
    async fn check(
        &self,
        header: Option<&HeaderValue>,
    ) -> (Option<String>, Result<Identity, Refusal>) {
        let Some(header) = header else {
            return (None, Err(AuthError::Missing.into()));
        };
        let Ok(text) = header.to_str() else {
            return (None, Err(Refusal::NotText));
        };
        match Credentials::parse(text) {
            Err(e) => (None, Err(e.into())),
            Ok(Credentials::Bearer(token)) => (
                None,
                self.authenticator.check_token(&token).map_err(Into::into),
            ),
            Ok(Credentials::Basic { user, password }) => {
                let outcome = self.check_password(&user, password).await;
                (Some(user), outcome)
            }
        }
    }

    /// argon2 on the blocking pool, a few at a time, never on the async runtime.
    async fn check_password(&self, user: &str, password: String) -> Result<Identity, Refusal> {
        let _permit = self
            .password_checks
            .acquire()
            .await
            .map_err(|_| AuthError::BadPassword)?;
        let authenticator = self.authenticator.clone();
        let user = user.to_string();
        tokio::task::spawn_blocking(move || authenticator.check_password(&user, &password))
            .await
            .unwrap_or(Err(AuthError::BadPassword))
            .map_err(Into::into)
    }

    /// A token for a caller who just logged in.
    fn issue(&self, identity: &Identity) -> String {
        self.authenticator.issue(identity)
    }
}

/// Wraps the Flight service in the authentication gate (`None`: everyone is anonymous).
#[derive(Clone)]
pub struct AuthLayer {
    gate: Option<Arc<Gate>>,
}

impl AuthLayer {
    /// A layer that checks callers with `gate`, or lets everyone in anonymously.
    pub fn new(gate: Option<Gate>) -> Self {
        Self {
            gate: gate.map(Arc::new),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The Flight service behind the gate.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    gate: Option<Arc<Gate>>,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

/// The RPC that logs in.
const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

impl<S, B> Service<Request<B>> for Authenticated<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready: keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            let Some(gate) = gate else {
                let anonymous = Identity::anonymous();
                request.extensions_mut().insert(anonymous.clone());
                return serve_as(anonymous, inner.call(request)).await;
            };
            let extensions = request.extensions();
            // Plain TCP, or TCP under TLS (`--tls-cert`).
            let peer = extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .or_else(|| {
                    extensions
                        .get::<TlsConnectInfo<TcpConnectInfo>>()
                        .and_then(|info| info.get_ref().remote_addr())
                });
            let identity = match gate.admit(request.headers().get(AUTHORIZATION), peer).await {
                Ok(identity) => identity,
                Err(refusal) => return Ok(Status::unauthenticated(refusal.to_string()).into_http()),
            };
            let token = (request.uri().path() == HANDSHAKE_PATH).then(|| gate.issue(&identity));
            request.extensions_mut().insert(identity.clone());
            if let Some(token) = &token {
                request.extensions_mut().insert(IssuedToken(token.clone()));
            }
            let mut response = serve_as(identity, inner.call(request)).await?;
            if let Some(token) = token
                && let Ok(value) = HeaderValue::try_from(format!("Bearer {token}"))
            {
                response.headers_mut().insert(AUTHORIZATION, value);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tonic::Code;

    use crate::auth::{TokenKey, Users, hash_password};

    /// Answers OK with the caller it saw, in a header.
    #[derive(Clone)]
    struct Echo;

    impl Service<Request<()>> for Echo {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            let seen = request.extensions().get::<Identity>().cloned();
            Box::pin(async move {
                // The spawned-work view must agree with the extensions.
                assert_eq!(crate::auth::caller(), seen);
                let mut response = Response::new(Body::empty());
                if let Some(identity) = seen {
                    let value = format!("{}:{:?}", identity.user, identity.role);
                    response
                        .headers_mut()
                        .insert("x-caller", HeaderValue::try_from(value).unwrap());
                }
                Ok(response)
            })
        }
    }

    fn gate() -> (tempfile::TempDir, Gate) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            format!(
                "[[users]]\nname = \"ada\"\npassword_hash = \"{}\"\nrole = \"admin\"\n\n\
                 [[users]]\nname = \"rex\"\npassword_hash = \"{}\"\nrole = \"reader\"\n",
                hash_password("s3cret").unwrap(),
                hash_password("hunter2").unwrap()
            ),
        )
        .unwrap();
        let users = Users::load(&path).unwrap();
        let key = TokenKey::new(b"a secret shared by the replicas");
        (
            dir,
            Gate::new(Authenticator::new(users, key, Duration::from_secs(60))),
        )
    }

    fn basic(user: &str, password: &str) -> String {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    async fn call(
        layer: &AuthLayer,
        path: &str,
        authorization: Option<&str>,
        peer: &str,
    ) -> Response<Body> {
        let mut request = Request::builder().uri(path).body(()).unwrap();
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert(AUTHORIZATION, HeaderValue::try_from(value).unwrap());
        }
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse().unwrap()),
        });
        layer.layer(Echo).call(request).await.unwrap()
    }

    /// The gRPC status in a refusal's headers (code and decoded message).
    fn grpc_status(response: &Response<Body>) -> Option<(Code, String)> {
        Status::from_header_map(response.headers()).map(|s| (s.code(), s.message().to_string()))
    }

    fn caller(response: &Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("x-caller")
            .and_then(|v| v.to_str().ok())
    }

    const GET_FLIGHT_INFO: &str = "/arrow.flight.protocol.FlightService/GetFlightInfo";
    const PEER: &str = "127.0.0.1:4000";

    #[tokio::test]
    async fn without_users_everyone_is_anonymous() {
        let layer = AuthLayer::new(None);
        let response = call(&layer, GET_FLIGHT_INFO, None, PEER).await;
        assert_eq!(caller(&response), Some("anonymous:Admin"));
        assert_eq!(grpc_status(&response), None);
    }

    #[tokio::test]
    async fn calls_without_valid_credentials_are_unauthenticated() {
        let (_dir, gate) = gate();
        let layer = AuthLayer::new(Some(gate));
        for header in [
            None,
            Some("Bearer not.a.token"),
            Some("Digest abc"),
            Some(basic("ada", "wrong").as_str()),
            Some(basic("nobody", "s3cret").as_str()),
        ] {
            let response = call(&layer, GET_FLIGHT_INFO, header, PEER).await;
            assert_eq!(caller(&response), None, "{header:?}");
            assert_eq!(
                grpc_status(&response).map(|s| s.0),
                Some(Code::Unauthenticated),
                "{header:?}"
            );
        }
        // Wrong password and unknown user read the same.
        let wrong = call(&layer, GET_FLIGHT_INFO, Some(&basic("ada", "x")), PEER).await;
        let unknown = call(&layer, GET_FLIGHT_INFO, Some(&basic("zed", "x")), PEER).await;
        assert_eq!(grpc_status(&wrong), grpc_status(&unknown));
    }

    #[tokio::test]
    async fn handshake_trades_a_password_for_a_token_that_later_calls_use() {
        let (_dir, gate) = gate();
        let layer = AuthLayer::new(Some(gate));
        let response = call(&layer, HANDSHAKE_PATH, Some(&basic("rex", "hunter2")), PEER).await;
        assert_eq!(caller(&response), Some("rex:Reader"));
        let bearer = response
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .expect("a bearer token in the response header")
            .to_string();
        assert!(bearer.starts_with("Bearer "), "{bearer}");
        let response = call(&layer, GET_FLIGHT_INFO, Some(&bearer), PEER).await;
        assert_eq!(caller(&response), Some("rex:Reader"));
        // Only the Handshake hands out tokens; Basic on an ordinary call is checked too.
        let response = call(&layer, GET_FLIGHT_INFO, Some(&basic("ada", "s3cret")), PEER).await;
        assert_eq!(caller(&response), Some("ada:Admin"));
        assert!(response.headers().get(AUTHORIZATION).is_none());
    }

    #[tokio::test]
    async fn after_many_failures_an_address_is_refused_even_the_right_password() {
        let (_dir, gate) = gate();
        let guesser: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            gate.failures.record(Some(guesser), Instant::now());
        }
        let layer = AuthLayer::new(Some(gate));
        let right = basic("ada", "s3cret");
        let refused = call(&layer, GET_FLIGHT_INFO, Some(&right), "10.0.0.1:2").await;
        let (code, message) = grpc_status(&refused).unwrap();
        assert_eq!(code, Code::Unauthenticated);
        assert!(message.contains("too many failed logins"), "{message}");
        let other = call(&layer, GET_FLIGHT_INFO, Some(&right), "10.0.0.2:1").await;
        assert_eq!(caller(&other), Some("ada:Admin"));
    }

    #[test]
    fn failures_are_forgotten_after_the_window_and_delays_are_capped() {
        let log = FailureLog::default();
        let peer = Some("10.0.0.1".parse().unwrap());
        let start = Instant::now();
        assert_eq!(log.record(peer, start), 1);
        assert_eq!(log.record(peer, start), 2);
        assert_eq!(log.recent(peer, start), 2);
        assert_eq!(log.recent(peer, start + FAILURE_WINDOW), 0);
        assert_eq!(log.record(peer, start + FAILURE_WINDOW), 1);
        log.forget(peer);
        assert_eq!(log.recent(peer, start + FAILURE_WINDOW), 0);
        assert_eq!(failure_delay(1), DELAY_STEP);
        assert_eq!(failure_delay(1000), MAX_DELAY);
    }
}
