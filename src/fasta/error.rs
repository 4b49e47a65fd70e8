//! Errors of the FASTA reader: malformed input, I/O failures and bad table options.

use std::fmt;

use datafusion::error::DataFusionError;

/// Where in a file a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastaErrorLocation {
    /// 1-based line number in the (decompressed) text.
    Line(u64),
    /// Byte offset of the offending line, used when a scan started mid-file and
    /// the line number is unknown.
    Byte(u64),
}

impl fmt::Display for FastaErrorLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(line) => write!(f, "line {line}"),
            Self::Byte(offset) => write!(f, "byte offset {offset}"),
        }
    }
}

/// What is wrong with a piece of FASTA text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FastaProblem {
    /// Sequence data appeared before any `>` header line.
    #[error("expected a header line starting with '>' before any sequence data")]
    MissingHeader,
    /// A sequence line holds a byte outside printable, non-space ASCII.
    #[error("sequence line contains byte 0x{0:02x}")]
    InvalidSequenceByte(u8),
    /// A header line holds a control byte (anything below 0x20 except tab, or 0x7f).
    #[error("header line contains control byte 0x{0:02x}")]
    HeaderControlByte(u8),
    /// A header line is not valid UTF-8.
    #[error("header line is not valid UTF-8")]
    HeaderNotUtf8,
    /// A header line is longer than the reader accepts.
    #[error("header line is longer than {0} bytes")]
    HeaderTooLong(usize),
    /// One record's sequence does not fit one Arrow Utf8 value.
    #[error(
        "record sequence is longer than {} bytes, the limit of one Arrow Utf8 value",
        i32::MAX
    )]
    SequenceTooLong,
}

/// An error reading a FASTA file or configuring a FASTA table.
#[derive(Debug, thiserror::Error)]
pub enum FastaError {
    /// The file is not valid FASTA.
    #[error("invalid FASTA in {path} at {location}: {problem}")]
    Invalid {
        /// The file as the object store names it.
        path: String,
        /// Where the problem is.
        location: FastaErrorLocation,
        /// What the problem is.
        problem: FastaProblem,
    },
    /// Reading or decompressing the file failed.
    #[error("cannot read FASTA file {path}: {source}")]
    Io {
        /// The file as the object store names it.
        path: String,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A table option key is not known.
    #[error("unknown FASTA option '{key}' (known options: batch_rows, batch_bytes, compression)")]
    UnknownOption {
        /// The key as given.
        key: String,
    },
    /// A table option value cannot be used.
    #[error("invalid value '{value}' for FASTA option '{key}': {reason}")]
    InvalidOption {
        /// The key as given.
        key: String,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl From<FastaError> for DataFusionError {
    fn from(error: FastaError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

impl FastaError {
    /// True when the file or the table options are at fault (the client's or the file's
    /// author's mistake); false for failures of the server itself. A compressed stream that
    /// is corrupt or cut short is malformed input, not a server fault.
    pub fn is_client_fault(&self) -> bool {
        match self {
            Self::Invalid { .. } | Self::UnknownOption { .. } | Self::InvalidOption { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
        }
    }
}
