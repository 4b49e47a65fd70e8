//! When a query must stop: the server's query timeout or the client's gRPC deadline, whichever comes first.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use super::error::ServiceError;

/// A point in time a query must finish by, and whose rule set it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    source: DeadlineSource,
}

#[derive(Debug, Clone, Copy)]
enum DeadlineSource {
    /// `--query-timeout`.
    Server(Duration),
    /// The client's `grpc-timeout`.
    Client(Duration),
}

impl Deadline {
    /// The earlier of the server's timeout (if any) and the deadline the client sent (if any).
    pub fn for_request(server_timeout: Option<Duration>, metadata: &MetadataMap) -> Option<Self> {
        let now = Instant::now();
        let server = server_timeout.map(|limit| Self {
            at: now + limit,
            source: DeadlineSource::Server(limit),
        });
        let client = metadata
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|limit| Self {
                at: now + limit,
                source: DeadlineSource::Client(limit),
            });
        match (server, client) {
            (Some(server), Some(client)) => Some(if client.at < server.at {
                client
            } else {
                server
            }),
            (server, client) => server.or(client),
        }
    }

    /// The instant the query must stop.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// True once the instant has come.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The DEADLINE_EXCEEDED error saying which limit was reached.
    pub fn exceeded(&self) -> ServiceError {
        ServiceError::DeadlineExceeded(match self.source {
            DeadlineSource::Server(limit) => format!(
                "the query ran longer than this server allows ({} s, --query-timeout) and was stopped",
                limit.as_secs_f64()
            ),
            DeadlineSource::Client(limit) => format!(
                "the query did not finish within the client's deadline ({} s) and was stopped",
                limit.as_secs_f64()
            ),
        })
    }
}

/// Parses a gRPC `grpc-timeout` header value: at most 8 digits and a unit
/// (`H`, `M`, `S`, `m` milliseconds, `u` microseconds, `n` nanoseconds).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_reject_garbage() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "123456789S", "5x", "-5S", "5 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_earlier_limit_wins_and_names_itself() {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "100m".parse().unwrap());
        let deadline = Deadline::for_request(Some(Duration::from_secs(60)), &metadata).unwrap();
        assert!(
            deadline
                .exceeded()
                .to_string()
                .contains("client's deadline")
        );
        let server_only = Deadline::for_request(Some(Duration::from_secs(1)), &MetadataMap::new());
        assert!(
            server_only
                .unwrap()
                .exceeded()
                .to_string()
                .contains("--query-timeout")
        );
        assert!(Deadline::for_request(None, &MetadataMap::new()).is_none());
    }
}
