//! Client errors and their one mapping onto the `flightbear.exceptions` classes.

use std::error::Error as _;

use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use tonic::Code;

/// Everything that can go wrong between this client and a Flight SQL server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server (or the transport underneath) answered a call with a gRPC error status.
    #[error("{message}")]
    Status { code: Code, message: String },
    /// No connection could be made.
    #[error("cannot connect to {uri}: {reason}")]
    Connect { uri: String, reason: String },
    /// The server sent something this client cannot decode.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// An Arrow error on data the server sent.
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    /// The connection was closed by the user.
    #[error("the connection is closed")]
    Closed,
    /// A Python signal handler raised while waiting (usually Ctrl-C); kept to re-raise it.
    #[error("interrupted")]
    Interrupted(PyErr),
    /// The process-wide async runtime could not start or cannot be used in this process.
    #[error("{0}")]
    Runtime(String),
}

impl ClientError {
    /// Error for a status from tonic, keeping the server's message.
    pub fn status(status: &tonic::Status) -> Self {
        let mut message = status.message().to_string();
        if message.is_empty() {
            message = status.code().description().to_string();
        }
        // Transport failures carry their cause in the source chain, not in the message.
        let mut source = status.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        Self::Status {
            code: status.code(),
            message,
        }
    }

    /// This error, for a call over a plaintext connection that failed before the server
    /// answered: a TLS server answers a plaintext client with a TLS alert (which reads as a
    /// broken HTTP/2 frame) or hangs up, while the client may still be writing. Each is a
    /// connection error that hints at TLS.
    pub fn before_plaintext_answer(self) -> Self {
        match self {
            // Transport failures come as INTERNAL, UNKNOWN or CANCELLED, depending on which
            // side noticed first; the server never sends these texts.
            Self::Status { code, message }
                if matches!(code, Code::Internal | Code::Unknown | Code::Cancelled)
                    && (message.starts_with("h2 protocol error")
                        || message.contains("transport error")) =>
            {
                Self::Status {
                    code: Code::Unavailable,
                    message: format!(
                        "{message} (the server does not speak plaintext gRPC: if it uses TLS, \
                         connect with grpc+tls://)"
                    ),
                }
            }
            other => other,
        }
    }

    /// Error for a transport failure while connecting.
    pub fn connect(uri: &str, error: &dyn std::error::Error) -> Self {
        Self::Connect {
            uri: uri.to_string(),
            reason: chain(error),
        }
    }

    /// The gRPC code this error stands for (UNAVAILABLE for a failed connect).
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Connect { .. } => Some(Code::Unavailable),
            _ => None,
        }
    }

    /// Converts this error to the matching Python exception.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        if let Self::Interrupted(err) = self {
            return err;
        }
        let class = match &self {
            Self::Closed => "ConnectionClosedError",
            Self::Protocol(_) | Self::Arrow(_) | Self::Runtime(_) | Self::Interrupted(_) => {
                "InternalError"
            }
            Self::Status { code, .. } => class_for(*code),
            Self::Connect { .. } => class_for(Code::Unavailable),
        };
        let code = self.code().map(code_name);
        raise(py, class, &self.to_string(), code)
    }
}

impl From<FlightError> for ClientError {
    fn from(error: FlightError) -> Self {
        match error {
            FlightError::Tonic(status) => Self::status(&status),
            FlightError::Arrow(e) => Self::Arrow(e),
            FlightError::ExternalError(e) => match e.downcast::<ClientError>() {
                Ok(client) => *client,
                Err(other) => Self::Protocol(other.to_string()),
            },
            other => Self::Protocol(other.to_string()),
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::status(&status)
    }
}

impl From<ClientError> for ArrowError {
    /// Errors crossing the Arrow C stream interface become text (and an errno); pyarrow raises
    /// them as its own exceptions, so the text names the gRPC code and keeps the server's words.
    fn from(error: ClientError) -> Self {
        let text = match error.code() {
            Some(code) => format!("flightbear [{}]: {error}", code_name(code)),
            None => format!("flightbear: {error}"),
        };
        match error {
            ClientError::Arrow(e) => e,
            ClientError::Connect { .. }
            | ClientError::Status {
                code: Code::Unavailable,
                ..
            } => ArrowError::IoError(text.clone(), std::io::Error::other(text)),
            _ => ArrowError::ExternalError(Box::new(StreamFailure(text))),
        }
    }
}

/// A stream error as plain text, so the message pyarrow shows is the server's.
#[derive(Debug)]
struct StreamFailure(String);

impl std::fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamFailure {}

/// The `flightbear.exceptions` class for a gRPC status code: the one place codes are mapped.
fn class_for(code: Code) -> &'static str {
    match code {
        Code::Unavailable => "FlightConnectionError",
        Code::Unauthenticated | Code::PermissionDenied => "AuthenticationError",
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists => "InvalidQueryError",
        Code::NotFound => "NotFoundError",
        Code::DeadlineExceeded => "FlightTimeoutError",
        Code::Cancelled => "QueryCancelledError",
        Code::ResourceExhausted => "ResourceExhaustedError",
        Code::Unimplemented => "NotSupportedError",
        Code::Ok | Code::Unknown | Code::Aborted | Code::Internal | Code::DataLoss => {
            "InternalError"
        }
    }
}

/// The canonical upper-case gRPC name of a code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Builds an instance of `flightbear.exceptions.<class>` with `grpc_code` set.
pub fn raise(py: Python<'_>, class: &str, message: &str, code: Option<&str>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = exceptions_module(py)?;
        let exc = module.getattr(class)?.call1((message,))?;
        exc.setattr("grpc_code", code)?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| {
        if e.is_instance_of::<PyKeyboardInterrupt>(py) {
            e
        } else {
            PyRuntimeError::new_err(format!("{message} (and flightbear.exceptions failed: {e})"))
        }
    })
}

fn exceptions_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || Ok(py.import("flightbear.exceptions")?.unbind()))
        .map(|m| m.bind(py))
}

/// An error and its sources as one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
