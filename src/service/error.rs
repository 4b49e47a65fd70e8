//! The service's one error type, and its single conversion to a gRPC status at the edge.
//!
//! The rule: what the client controls (SQL, descriptors, tickets, parameters, the files it
//! names) is the client's fault (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED); a broken
//! invariant or a failed I/O call of ours is the server's fault (INTERNAL). A server bug
//! must never look like the client's mistake, nor the other way round.

use arrow_flight::error::FlightError;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tonic::{Code, Status};

use super::handle::HandleError;
use super::placeholders::PlaceholderError;
use super::settings::SettingError;
use crate::catalog::client_tables::ConfineError;
use crate::catalog::location::LocationError;
use crate::fasta::FastaError;

/// Everything that can go wrong while the service answers a request.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed, or asks for something that is not valid where it was sent.
    #[error("{0}")]
    InvalidRequest(String),
    /// A protobuf message in the request does not decode.
    #[error("{what} is not a valid protobuf message: {source}")]
    Undecodable {
        /// Which message.
        what: &'static str,
        /// prost's description of the problem.
        source: prost::DecodeError,
    },
    /// A path descriptor names a table that does not exist.
    #[error("table '{0}' not found")]
    TableNotFound(String),
    /// A feature of the protocol flightbear does not offer.
    #[error("{0}")]
    Unsupported(String),
    /// A statement handle or its parameters could not be read or written.
    #[error(transparent)]
    Handle(#[from] HandleError),
    /// `?` placeholders could not be numbered.
    #[error(transparent)]
    Placeholder(#[from] PlaceholderError),
    /// Planning or running a query failed.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// Building or converting Arrow data failed.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// Encoding or decoding a Flight stream failed.
    #[error(transparent)]
    Flight(#[from] FlightError),
    /// The client's request stream failed (a transport error or a message tonic could not decode).
    #[error("{}", .0.message())]
    Transport(Box<Status>),
    /// The query was cancelled (CancelFlightInfo) or its client went away.
    #[error("{0}")]
    Cancelled(String),
    /// The query ran past the server's time limit or the client's deadline.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// No query slot freed up in time, or a server-wide count (client tables) is at its limit.
    #[error("{0}")]
    Busy(String),
    /// The caller may not do this: a file outside the data roots, a protected table, DDL by a
    /// reader or from a DoGet ticket.
    #[error("{0}")]
    PermissionDenied(String),
    /// A session setting the client may not change, or a value it does not take.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// A bulk ingest refused or failed.
    #[error(transparent)]
    Ingest(#[from] super::ingest::IngestError),
    /// The session a request's cookie names is not on this replica (expired, closed, evicted).
    #[error("{0}")]
    SessionNotFound(String),
    /// An invariant of ours does not hold: a server bug, never the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// An [`InvalidRequest`](Self::InvalidRequest) with the given message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidRequest(_) | Self::Undecodable { .. } => Code::InvalidArgument,
            Self::TableNotFound(_) | Self::SessionNotFound(_) => Code::NotFound,
            Self::Setting(error) => error.code(),
            Self::Ingest(error) => error.code(),
            Self::Unsupported(_) => Code::Unimplemented,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Handle(error) => error.code(),
            Self::Placeholder(error) => {
                if error.is_client_fault() {
                    Code::InvalidArgument
                } else {
                    Code::Internal
                }
            }
            Self::DataFusion(error) => datafusion_code(error),
            Self::Arrow(error) => arrow_code(error),
            Self::Flight(error) => flight_code(error),
            Self::Transport(status) => transport_code(status),
            Self::Cancelled(_) => Code::Cancelled,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Busy(_) => Code::ResourceExhausted,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The text the client sees: a sentence, never a Debug dump.
    fn message(&self) -> String {
        match self {
            Self::DataFusion(error) => datafusion_message(error),
            Self::Flight(FlightError::ExternalError(inner)) => {
                match inner.downcast_ref::<DataFusionError>() {
                    Some(error) => datafusion_message(error),
                    None => inner.to_string(),
                }
            }
            Self::Flight(FlightError::Tonic(status)) => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        let code = error.code();
        let message = error.message();
        let message = shortened(&message);
        if code == Code::Internal {
            tracing::error!(%message, "internal error answering a request");
        }
        Status::new(code, message)
    }
}

/// The most bytes an error message may take in its gRPC header. Messages travel
/// percent-encoded (three bytes for each byte outside printable ASCII), and clients refuse
/// header blocks over 8 KiB (gRPC C++: a soft limit of 8 KiB, a hard one of 16 KiB): an error
/// echoing a long identifier or string of the SQL would otherwise reach the client as
/// RESOURCE_EXHAUSTED "metadata size exceeds … limit", its code and text lost.
pub(crate) const MAX_MESSAGE_BYTES: usize = 6000;

/// The bytes `byte` takes percent-encoded in a gRPC message header.
fn encoded_len(byte: u8) -> usize {
    match byte {
        b'%' => 3,
        b' '..=b'~' => 1,
        _ => 3,
    }
}

/// `text` cut (on a character boundary, saying so) so that its percent-encoded form takes at
/// most [`MAX_MESSAGE_BYTES`] bytes.
pub(crate) fn shortened(text: &str) -> std::borrow::Cow<'_, str> {
    if text.bytes().map(encoded_len).sum::<usize>() <= MAX_MESSAGE_BYTES {
        return text.into();
    }
    // Room for the note at the end.
    let budget = MAX_MESSAGE_BYTES - 64;
    let (mut cut, mut used) = (0, 0);
    for (at, character) in text.char_indices() {
        let mut bytes = [0; 4];
        let cost: usize = character
            .encode_utf8(&mut bytes)
            .bytes()
            .map(encoded_len)
            .sum();
        if used + cost > budget {
            break;
        }
        used += cost;
        cut = at + character.len_utf8();
    }
    format!(
        "{}… (message cut: {} bytes in all)",
        &text[..cut],
        text.len()
    )
    .into()
}

impl From<ConfineError> for ServiceError {
    fn from(error: ConfineError) -> Self {
        match error {
            ConfineError::Root(error) => Self::PermissionDenied(error.to_string()),
            // Mapped like the same error from a table factory (NOT_FOUND, INVALID_ARGUMENT…).
            ConfineError::Location(error) => {
                Self::DataFusion(DataFusionError::External(Box::new(error)))
            }
        }
    }
}

impl From<Status> for ServiceError {
    fn from(status: Status) -> Self {
        Self::Transport(Box::new(status))
    }
}

/// prost's decode errors print with this prefix; tonic reports them as INTERNAL.
pub(crate) const PROST_DECODE_PREFIX: &str = "failed to decode Protobuf message";
/// tonic's OUT_OF_RANGE answer to a request message over the size limit starts so.
pub(crate) const TOO_LARGE_PREFIX: &str = "Error, decoded message length too large";

/// A status from the client's request stream: tonic calls an undecodable message INTERNAL
/// and one over the size limit OUT_OF_RANGE, but both are the client's fault.
fn transport_code(status: &Status) -> Code {
    let message = status.message();
    match status.code() {
        Code::Internal if message.starts_with(PROST_DECODE_PREFIX) => Code::InvalidArgument,
        Code::OutOfRange if message.starts_with(TOO_LARGE_PREFIX) => Code::InvalidArgument,
        code => code,
    }
}

fn datafusion_code(error: &DataFusionError) -> Code {
    match error.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(..)
        | DataFusionError::Configuration(..)
        | DataFusionError::Execution(..) => Code::InvalidArgument,
        DataFusionError::ResourcesExhausted(..) => Code::ResourceExhausted,
        DataFusionError::ArrowError(arrow, _) => arrow_code(arrow),
        DataFusionError::IoError(io) => io_code(io),
        DataFusionError::ObjectStore(store) => object_store_code(store),
        DataFusionError::External(inner) => external_code(inner.as_ref()),
        DataFusionError::ParquetError(parquet) => parquet_code(parquet),
        _ => Code::Internal,
    }
}

/// Parquet's errors are about the file read (not Parquet, corrupt, truncated: the client's
/// table is wrong) unless reading or writing it failed underneath.
fn parquet_code(error: &datafusion::parquet::errors::ParquetError) -> Code {
    use datafusion::parquet::errors::ParquetError;
    match error {
        ParquetError::External(inner) => {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                io_code(io)
            } else if let Some(store) = inner.downcast_ref::<object_store::Error>() {
                object_store_code(store)
            } else {
                external_code(inner.as_ref())
            }
        }
        _ => Code::InvalidArgument,
    }
}

/// A remote store's error: what is missing is NOT_FOUND, what the server's credentials may
/// not read PERMISSION_DENIED, a store that cannot be reached UNAVAILABLE.
fn object_store_code(error: &object_store::Error) -> Code {
    match error {
        object_store::Error::NotFound { .. } => Code::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Code::PermissionDenied,
        object_store::Error::InvalidPath { .. } => Code::InvalidArgument,
        // A store that cannot do what reading needs (an HTTP server ignoring ranges).
        object_store::Error::NotSupported { .. } => Code::Unavailable,
        object_store::Error::Generic { store, .. } if *store != "LocalFileSystem" => {
            Code::Unavailable
        }
        _ => Code::Internal,
    }
}

/// Errors our own components hand to DataFusion as `External`.
fn external_code(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> Code {
    if let Some(location) = inner.downcast_ref::<LocationError>() {
        match location {
            LocationError::Missing(_) => Code::NotFound,
            LocationError::Io { .. } => Code::Internal,
            LocationError::Remote { source, .. } => object_store_code(source),
            _ => Code::InvalidArgument,
        }
    } else if let Some(fasta) = inner.downcast_ref::<FastaError>() {
        if let Some(store) = fasta.store_error() {
            object_store_code(store)
        } else if fasta.is_missing() {
            Code::NotFound
        } else if fasta.is_client_fault() {
            Code::InvalidArgument
        } else {
            Code::Internal
        }
    } else if let Some(arrow) = inner.downcast_ref::<ArrowError>() {
        arrow_code(arrow)
    } else if let Some(status) = inner.downcast_ref::<Status>() {
        status.code()
    } else {
        Code::Internal
    }
}

fn datafusion_message(error: &DataFusionError) -> String {
    // sqlparser's errors print as Debug (`ParserError("...")`); show the sentence itself.
    if let DataFusionError::SQL(parser_error, _) = error.find_root() {
        use datafusion::sql::sqlparser::parser::ParserError;
        let text = match parser_error.as_ref() {
            ParserError::ParserError(text) | ParserError::TokenizerError(text) => text.clone(),
            other => other.to_string(),
        };
        return format!("SQL error: {text}");
    }
    error.strip_backtrace()
}

fn arrow_code(error: &ArrowError) -> Code {
    match error {
        ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::CsvError(_)
        | ArrowError::JsonError(_)
        | ArrowError::InvalidArgumentError(_)
        | ArrowError::DivideByZero
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::ComputeError(_)
        | ArrowError::SchemaError(_) => Code::InvalidArgument,
        ArrowError::MemoryError(_) => Code::ResourceExhausted,
        ArrowError::IoError(_, io) => io_code(io),
        ArrowError::ExternalError(inner) => external_code(inner.as_ref()),
        _ => Code::Internal,
    }
}

fn io_code(error: &std::io::Error) -> Code {
    match error.kind() {
        std::io::ErrorKind::NotFound => Code::NotFound,
        _ => Code::Internal,
    }
}

fn flight_code(error: &FlightError) -> Code {
    match error {
        FlightError::Tonic(status) => transport_code(status),
        FlightError::Arrow(arrow) => arrow_code(arrow),
        FlightError::ExternalError(inner) => match inner.downcast_ref::<DataFusionError>() {
            Some(error) => datafusion_code(error),
            None => external_code(inner.as_ref()),
        },
        FlightError::DecodeError(_) | FlightError::ProtocolError(_) => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(error: impl Into<ServiceError>) -> Status {
        error.into().into()
    }

    #[test]
    fn long_messages_are_cut_to_fit_a_grpc_header() {
        let name = "é".repeat(50_000);
        let status = status(DataFusionError::Plan(format!("column '{name}' not found")));
        assert_eq!(status.code(), Code::InvalidArgument);
        let encoded: usize = status.message().bytes().map(encoded_len).sum();
        assert!(encoded <= MAX_MESSAGE_BYTES, "{encoded}");
        assert!(
            status
                .message()
                .starts_with("Error during planning: column 'é")
        );
        assert!(
            status
                .message()
                .ends_with("(message cut: 100042 bytes in all)")
        );
        assert_eq!(shortened("short"), "short");
    }

    #[test]
    fn plan_errors_are_invalid_argument_and_keep_the_text() {
        let status = status(DataFusionError::Plan("table 'nope' not found".to_string()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("nope"));
    }

    #[test]
    fn parser_errors_read_as_sentences_not_debug_dumps() {
        use datafusion::sql::sqlparser::parser::ParserError;
        let error = DataFusionError::SQL(
            Box::new(ParserError::ParserError(
                "Expected: an SQL statement".into(),
            )),
            None,
        );
        let status = status(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "SQL error: Expected: an SQL statement");
    }

    #[test]
    fn resource_exhaustion_maps_to_resource_exhausted() {
        let status = status(DataFusionError::ResourcesExhausted("memory".into()));
        assert_eq!(status.code(), Code::ResourceExhausted);
    }

    #[test]
    fn remote_reads_that_fail_keep_the_stores_code() {
        let read = |store: object_store::Error| {
            let fasta = crate::fasta::FastaError::Io {
                format: crate::fasta::SequenceFormat::Fasta,
                path: "s3://lab/g.fa".into(),
                source: std::io::Error::other(store),
            };
            status(DataFusionError::External(Box::new(fasta))).code()
        };
        let generic = |store: &'static str| object_store::Error::Generic {
            store,
            source: "the response ended early".into(),
        };
        assert_eq!(read(generic("remote")), Code::Unavailable);
        assert_eq!(
            read(object_store::Error::NotFound {
                path: "g.fa".into(),
                source: "gone".into()
            }),
            Code::NotFound
        );
        assert_eq!(
            read(object_store::Error::NotSupported {
                source: "Range request not supported".into()
            }),
            Code::Unavailable
        );
        // A local file's read error stays the server's.
        assert_eq!(read(generic("LocalFileSystem")), Code::Internal);
    }

    #[test]
    fn a_file_that_is_not_parquet_is_the_clients_and_a_failed_read_is_not() {
        use datafusion::parquet::errors::ParquetError;
        let code = |error: ParquetError| status(DataFusionError::from(error)).code();
        assert_eq!(
            code(ParquetError::General(
                "Invalid Parquet file. Corrupt footer".into()
            )),
            Code::InvalidArgument
        );
        assert_eq!(
            code(ParquetError::EOF("file too short".into())),
            Code::InvalidArgument
        );
        let io = |kind| ParquetError::External(Box::new(std::io::Error::from(kind)));
        assert_eq!(
            code(io(std::io::ErrorKind::PermissionDenied)),
            Code::Internal
        );
        assert_eq!(code(io(std::io::ErrorKind::NotFound)), Code::NotFound);
        let gone = object_store::Error::NotFound {
            path: "t/part-0.parquet".into(),
            source: "gone".into(),
        };
        assert_eq!(code(ParquetError::External(Box::new(gone))), Code::NotFound);
    }

    #[test]
    fn a_missing_sequence_file_is_not_found() {
        let fasta = crate::fasta::FastaError::Io {
            format: crate::fasta::SequenceFormat::Fasta,
            path: "/data/g.fa".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            status(DataFusionError::External(Box::new(fasta))).code(),
            Code::NotFound
        );
    }

    #[test]
    fn wrapped_errors_are_classified_by_their_root() {
        let inner = DataFusionError::Plan("bad".into());
        let wrapped = DataFusionError::Context("while planning".into(), Box::new(inner));
        assert_eq!(status(wrapped).code(), Code::InvalidArgument);
    }

    #[test]
    fn undecodable_requests_are_the_clients_fault() {
        use prost::Message;
        let decode = prost_types::Any::decode(&[0x0a, 0xff][..]).unwrap_err();
        let undecodable = ServiceError::Undecodable {
            what: "CancelFlightInfo request",
            source: decode.clone(),
        };
        assert_eq!(status(undecodable).code(), Code::InvalidArgument);
        // tonic reports a request message it could not decode as INTERNAL.
        let from_tonic = Status::internal(decode.to_string());
        assert_eq!(status(from_tonic).code(), Code::InvalidArgument);
        // Other transport statuses keep their code.
        assert_eq!(status(Status::cancelled("gone")).code(), Code::Cancelled);
    }

    #[test]
    fn broken_invariants_and_our_io_failures_are_internal() {
        assert_eq!(
            status(ServiceError::Internal("offsets".into())).code(),
            Code::Internal
        );
        let io = DataFusionError::IoError(std::io::Error::other("disk on fire"));
        assert_eq!(status(io).code(), Code::Internal);
        let fasta = FastaError::Io {
            format: crate::fasta::SequenceFormat::Fasta,
            path: "x.fa".into(),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(status(DataFusionError::from(fasta)).code(), Code::Internal);
    }

    #[test]
    fn malformed_files_are_invalid_argument() {
        let fasta = FastaError::Invalid {
            format: crate::fasta::SequenceFormat::Fasta,
            path: "x.fa".into(),
            location: crate::fasta::FastaErrorLocation::Line(3),
            problem: crate::fasta::FastaProblem::MissingHeader,
        };
        let status = status(DataFusionError::from(fasta));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("x.fa at line 3"), "{status}");
    }
}
