//! Errors of the FASTA and FASTQ readers: malformed input, I/O failures, bad table options and
//! reader bugs.

use std::fmt;
use std::io::ErrorKind;

use datafusion::error::DataFusionError;

use super::SequenceFormat;
use super::reader::OutOfMemory;

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

/// What is wrong with a piece of FASTA or FASTQ text.
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
    /// A FASTQ record does not start with an `@` header line.
    #[error("expected a header line starting with '@'")]
    MissingFastqHeader,
    /// A header has no name: nothing, or a space, right after the `>` or `@`.
    #[error("header line has no name (the name must follow the '>' or '@' directly)")]
    EmptyName,
    /// A FASTQ sequence line starts with `@`, which would make the record start ambiguous.
    #[error("sequence line starts with '@' (a header where the sequence should be?)")]
    SequenceStartsWithAt,
    /// The third line of a FASTQ record does not start with `+`.
    #[error("expected the '+' line of the record")]
    MissingPlusLine,
    /// The `+` line repeats a name other than the header's.
    #[error("the '+' line does not repeat the record's header")]
    PlusLineMismatch,
    /// A quality line holds a byte outside printable, non-space ASCII.
    #[error("quality line contains byte 0x{0:02x}")]
    InvalidQualityByte(u8),
    /// A FASTQ record's quality line is not as long as its sequence line.
    #[error("quality line has {quality} characters but the sequence has {sequence}")]
    QualityLengthMismatch {
        /// Bases in the sequence line.
        sequence: usize,
        /// Characters in the quality line.
        quality: usize,
    },
    /// The input ends inside a FASTQ record.
    #[error("the file ends inside a record (a FASTQ record has four lines)")]
    TruncatedRecord,
    /// A blank line between FASTQ records (blank lines are accepted only at the end).
    #[error("blank line between records")]
    BlankLine,
    /// One FASTQ record does not fit the reader's buffer.
    #[error("record is longer than {0} bytes")]
    RecordTooLong(usize),
}

/// An error reading a FASTA or FASTQ file or configuring such a table.
///
/// [`FastaError::is_client_fault`] tells the client's mistakes (a malformed file, a bad option)
/// from the server's failures (I/O, reader bugs).
#[derive(Debug, thiserror::Error)]
pub enum FastaError {
    /// The file is not valid FASTA (or FASTQ).
    #[error("invalid {format} in {path} at {location}: {problem}")]
    Invalid {
        /// The format the file was read as.
        format: SequenceFormat,
        /// The file as the object store names it.
        path: String,
        /// Where the problem is.
        location: FastaErrorLocation,
        /// What the problem is.
        problem: FastaProblem,
    },
    /// Reading or decompressing the file failed.
    #[error("cannot read {format} file {path}: {source}")]
    Io {
        /// The format the file was read as.
        format: SequenceFormat,
        /// The file as the object store names it.
        path: String,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A table option key is not known.
    #[error(
        "unknown {format} option '{key}' (known options: batch_rows, batch_bytes, compression)"
    )]
    UnknownOption {
        /// The format of the table.
        format: SequenceFormat,
        /// The key as given.
        key: String,
    },
    /// A table option value cannot be used.
    #[error("invalid value '{value}' for {format} option '{key}': {reason}")]
    InvalidOption {
        /// The format of the table.
        format: SequenceFormat,
        /// The key as given.
        key: String,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The reader's buffers do not fit in the server's memory limit.
    #[error("{}", .0.0.strip_backtrace())]
    OutOfMemory(OutOfMemory),
    /// The reader broke one of its own invariants: a bug in flightbear, not a problem of the file.
    #[error("internal error reading {format} file {path}: {message}")]
    Internal {
        /// The format the file was read as.
        format: SequenceFormat,
        /// The file as the object store names it.
        path: String,
        /// Which invariant broke.
        message: String,
    },
}

impl FastaError {
    /// The remote store's error behind a failed read, if that is what failed.
    pub fn store_error(&self) -> Option<&object_store::Error> {
        match self {
            Self::Io { source, .. } => store_error_of(source),
            _ => None,
        }
    }

    /// True when the file (or an index file) is not there.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == ErrorKind::NotFound)
    }

    /// True when the error is the client's to fix (INVALID_ARGUMENT at the gRPC edge), false
    /// when it is the server's (INTERNAL).
    ///
    /// The rule: malformed FASTA ([`Invalid`](Self::Invalid)) and bad table options
    /// ([`UnknownOption`](Self::UnknownOption), [`InvalidOption`](Self::InvalidOption)) are
    /// the client's. So is an [`Io`](Self::Io) error of kind `InvalidData`, `InvalidInput` or
    /// `UnexpectedEof`: decompressors report a corrupt or truncated stream that way (flate2
    /// and bzip2 say `InvalidInput` for a corrupt stream, xz says `InvalidData`), and a corrupt
    /// `.gz` file is a malformed file, not a server fault. Every other I/O error (the file
    /// cannot be read, the store fails) and [`Internal`](Self::Internal) are the server's.
    pub fn is_client_fault(&self) -> bool {
        match self {
            Self::Invalid { .. } | Self::UnknownOption { .. } | Self::InvalidOption { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                ErrorKind::InvalidData | ErrorKind::InvalidInput | ErrorKind::UnexpectedEof
            ),
            Self::OutOfMemory(_) | Self::Internal { .. } => false,
        }
    }
}

/// The remote store's error an I/O error wraps, if it wraps one (readers of remote files
/// hand the store's errors on as `io::Error::other`).
pub(crate) fn store_error_of(error: &std::io::Error) -> Option<&object_store::Error> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<object_store::Error>())
}

impl From<OutOfMemory> for FastaError {
    fn from(error: OutOfMemory) -> Self {
        Self::OutOfMemory(error)
    }
}

impl From<FastaError> for DataFusionError {
    /// The pool's own error for [`FastaError::OutOfMemory`] (so it stays `ResourcesExhausted`),
    /// `External` for the rest.
    fn from(error: FastaError) -> Self {
        match error {
            FastaError::OutOfMemory(OutOfMemory(error)) => *error,
            error => DataFusionError::External(Box::new(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: ErrorKind) -> FastaError {
        FastaError::Io {
            format: SequenceFormat::Fasta,
            path: "x.fa.gz".into(),
            source: std::io::Error::new(kind, "test"),
        }
    }

    #[test]
    fn malformed_files_and_bad_options_are_the_clients_fault() {
        let invalid = FastaError::Invalid {
            format: SequenceFormat::Fasta,
            path: "x.fa".into(),
            location: FastaErrorLocation::Line(3),
            problem: FastaProblem::MissingHeader,
        };
        assert!(invalid.is_client_fault());
        let unknown = FastaError::UnknownOption {
            format: SequenceFormat::Fastq,
            key: "k".into(),
        };
        assert!(unknown.is_client_fault());
        let option = FastaError::InvalidOption {
            format: SequenceFormat::Fasta,
            key: "batch_rows".into(),
            value: "0".into(),
            reason: "expected a positive integer".into(),
        };
        assert!(option.is_client_fault());
        assert!(io(ErrorKind::InvalidData).is_client_fault());
        assert!(io(ErrorKind::InvalidInput).is_client_fault());
        assert!(io(ErrorKind::UnexpectedEof).is_client_fault());
    }

    #[test]
    fn failing_io_and_reader_bugs_are_the_servers_fault() {
        assert!(!io(ErrorKind::PermissionDenied).is_client_fault());
        assert!(!io(ErrorKind::Other).is_client_fault());
        let internal = FastaError::Internal {
            format: SequenceFormat::Fasta,
            path: "x.fa".into(),
            message: "the FASTA parser made no progress".into(),
        };
        assert!(!internal.is_client_fault());
        assert_eq!(
            internal.to_string(),
            "internal error reading FASTA file x.fa: the FASTA parser made no progress"
        );
    }
}
