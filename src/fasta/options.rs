//! Reader options of a FASTA table and their parsing from `CREATE EXTERNAL TABLE ... OPTIONS (...)`.

use std::collections::HashMap;

use super::SequenceFormat;
use super::error::FastaError;
use crate::bytesize::ByteSize;

/// Rows per batch when neither the table options nor the session's `batch_size` say otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// Default byte budget of one record batch: the sum of the id, description and sequence bytes it holds.
pub const DEFAULT_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Largest accepted byte budget; keeps every multi-record batch far below the 2 GiB limit of
/// 32-bit Arrow offsets even after the line that crosses the budget.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024 * 1024;

/// What a FASTA or FASTQ scan reads and how it cuts its output into record batches: a plain
/// value, so a scan can be sent to another process as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastaOptions {
    /// FASTA or FASTQ.
    pub format: SequenceFormat,
    /// Most rows per batch; `None` uses the session's `datafusion.execution.batch_size`.
    pub batch_rows: Option<usize>,
    /// A batch closes once it holds this many string bytes; a single larger record is a batch of its own.
    pub batch_bytes: usize,
}

impl Default for FastaOptions {
    fn default() -> Self {
        Self {
            format: SequenceFormat::Fasta,
            batch_rows: None,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

impl FastaOptions {
    /// Returns these options with the given table options applied.
    ///
    /// Keys may carry DataFusion's `format.` prefix (the SQL planner adds it to bare keys).
    /// `batch_rows` takes a positive integer; `batch_bytes` a positive integer with an
    /// optional binary suffix (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`). `compression` is
    /// accepted and ignored: compression is detected from each file's first bytes.
    pub fn with_table_options(
        mut self,
        table_options: &HashMap<String, String>,
    ) -> Result<Self, FastaError> {
        for (key, value) in table_options {
            let name = key.strip_prefix("format.").unwrap_or(key);
            match name.to_ascii_lowercase().as_str() {
                "batch_rows" => {
                    let rows = parse_count(value).ok_or_else(|| {
                        invalid(self.format, key, value, "expected a positive integer")
                    })?;
                    self.batch_rows = Some(rows);
                }
                "batch_bytes" => {
                    let bytes = parse_byte_size(value).ok_or_else(|| {
                        invalid(
                            self.format,
                            key,
                            value,
                            "expected a positive byte count such as 33554432 or 32MiB",
                        )
                    })?;
                    if bytes > MAX_BATCH_BYTES {
                        return Err(invalid(self.format, key, value, "must be at most 1GiB"));
                    }
                    self.batch_bytes = bytes;
                }
                "compression" => {
                    let known = ["", "uncompressed", "gzip", "bgzf", "bzip2", "xz", "zstd"];
                    if !known.contains(&value.to_ascii_lowercase().as_str()) {
                        return Err(invalid(
                            self.format,
                            key,
                            value,
                            "expected one of gzip, bgzf, bzip2, xz, zstd, uncompressed",
                        ));
                    }
                }
                _ => {
                    return Err(FastaError::UnknownOption {
                        format: self.format,
                        key: key.clone(),
                    });
                }
            }
        }
        Ok(self)
    }
}

fn invalid(format: SequenceFormat, key: &str, value: &str, reason: &str) -> FastaError {
    FastaError::InvalidOption {
        format,
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_count(value: &str) -> Option<usize> {
    value.trim().parse::<usize>().ok().filter(|&n| n > 0)
}

/// A positive byte size with an optional binary unit (see [`ByteSize`]).
fn parse_byte_size(value: &str) -> Option<usize> {
    value
        .parse::<ByteSize>()
        .ok()
        .map(ByteSize::as_usize)
        .filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Result<FastaOptions, FastaError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FastaOptions::default().with_table_options(&map)
    }

    #[test]
    fn batch_options_accept_prefixed_and_bare_keys() {
        let parsed = options(&[("format.batch_bytes", "8MiB"), ("batch_rows", "100")]).unwrap();
        assert_eq!(parsed.batch_bytes, 8 << 20);
        assert_eq!(parsed.batch_rows, Some(100));
        assert_eq!(
            options(&[("batch_bytes", "4096")]).unwrap().batch_bytes,
            4096
        );
    }

    #[test]
    fn bad_keys_and_values_are_rejected_with_their_names() {
        let unknown = options(&[("format.delimiter", ",")])
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("unknown FASTA option 'format.delimiter'"),
            "{unknown}"
        );
        for bad in ["0", "-1", "ten", "5 parsecs", "2GiB", ""] {
            let message = options(&[("batch_bytes", bad)]).unwrap_err().to_string();
            assert!(message.contains("batch_bytes"), "{message}");
        }
        assert!(options(&[("batch_rows", "0")]).is_err());
    }
}
