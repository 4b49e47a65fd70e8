//! FASTA as a DataFusion file format: `id`, `description` and `sequence` columns, read in parallel byte ranges.
//!
//! The module is a sibling of DataFusion's CSV format and is split the same way:
//! [`FastaFormat`] says what the format is (schema, extensions, how to plan a scan),
//! [`FastaSource`] holds how one scan is configured (projection, batch size),
//! and its opener reads one file (or one byte range of a file) on a blocking thread
//! with the `reader` module, the block reader that writes straight into Arrow buffers.
//!
//! Decisions worth knowing:
//! - The schema is fixed (see [`fasta_schema`]); there is no inference.
//! - Compression is detected from the first bytes of each file (gzip, BGZF, zstd, bzip2, xz),
//!   so file names never matter to the reader. Gzip is always read as multi-member.
//! - A header line that is just `>` yields a record whose `id` is the empty string.
//! - Sequence lines may hold any printable, non-space ASCII byte (0x21..=0x7E); anything
//!   else (spaces, control bytes, non-ASCII) is an error naming the file and line.

mod bgzf;
mod error;
mod file_format;
pub mod index;
mod input;
mod options;
mod reader;
pub mod region;
mod source;

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::compression::strip_compression_suffixes;

pub use error::{FastaError, FastaErrorLocation, FastaProblem};
pub use file_format::{FastaFormat, FastaFormatFactory};
pub use options::{DEFAULT_BATCH_BYTES, DEFAULT_BATCH_ROWS, FastaOptions, MAX_BATCH_BYTES};
pub use reader::OutOfMemory;
pub use source::{FastaOpener, FastaSource};

/// File name extensions (without the dot) that mark a FASTA file, before any compression suffix.
pub const FASTA_EXTENSIONS: &[&str] = &["fa", "fasta", "fna", "faa", "ffn", "frn", "fas"];

/// Name of the column holding the header text up to the first whitespace.
pub const ID_COLUMN: &str = "id";
/// Name of the column holding the rest of the header (NULL when there is none).
pub const DESCRIPTION_COLUMN: &str = "description";
/// Name of the column holding the sequence with line breaks removed.
pub const SEQUENCE_COLUMN: &str = "sequence";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(ID_COLUMN, DataType::Utf8, false),
        Field::new(DESCRIPTION_COLUMN, DataType::Utf8, true),
        Field::new(SEQUENCE_COLUMN, DataType::Utf8, false),
    ]))
});

/// The fixed schema of every FASTA table: `id` Utf8 NOT NULL, `description` Utf8, `sequence` Utf8 NOT NULL.
pub fn fasta_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// True when the file name in `path` is `<stem>.<FASTA extension>`, optionally followed by
/// compression suffixes (`x.fa`, `x.fasta.gz`, `x.fna.bgz`); case-insensitive. The one rule for
/// telling FASTA files by name: directory listings use it too.
pub fn is_fasta_path(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    strip_compression_suffixes(name)
        .rsplit_once('.')
        .is_some_and(|(stem, ext)| {
            !stem.is_empty() && FASTA_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fasta_paths_are_recognised_with_and_without_compression() {
        for yes in [
            "a.fa",
            "dir/b.FASTA",
            "c.fna.gz",
            "d.faa.bgz",
            "e.fas.bgzf",
            "x.y.ffn",
        ] {
            assert!(is_fasta_path(yes), "{yes}");
        }
        for no in [
            "fa",
            ".fa",
            "fa.gz",
            "a.gz",
            ".gz",
            "a.csv",
            "a.fa.zip",
            "dir.fa/readme",
            "a.fq",
        ] {
            assert!(!is_fasta_path(no), "{no}");
        }
    }
}
