//! FASTA and FASTQ as DataFusion file formats: `id`, `description`, `sequence` (and FASTQ's
//! `quality`) columns, read in parallel byte ranges.
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
//! - A header needs a name right after the `>` (or FASTQ's `@`): a bare `>` or `> text` is an
//!   error naming the line, not a record with an empty `id`.
//! - Sequence lines may hold any printable, non-space ASCII byte (0x21..=0x7E); anything
//!   else (spaces, control bytes, non-ASCII) is an error naming the file and line.

mod bgzf;
mod error;
mod file_format;
pub mod index;
mod indexed;
mod input;
mod options;
mod reader;
pub mod region;
mod sequence_length;
mod source;

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::compression::strip_compression_suffixes;
use crate::config::TableFormat;

pub use error::{FastaError, FastaErrorLocation, FastaProblem};
pub use file_format::{FastaFormat, FastaFormatFactory};
pub use options::{DEFAULT_BATCH_BYTES, DEFAULT_BATCH_ROWS, FastaOptions, MAX_BATCH_BYTES};
pub use reader::OutOfMemory;
pub use source::{FastaOpener, FastaSource};

/// File name extensions (without the dot) that mark a FASTA file, before any compression suffix.
pub const FASTA_EXTENSIONS: &[&str] = &["fa", "fasta", "fna", "faa", "ffn", "frn", "fas"];

/// File name extensions (without the dot) that mark a FASTQ file, before any compression suffix.
pub const FASTQ_EXTENSIONS: &[&str] = &["fq", "fastq"];

/// Which of the two sequence formats a table, scan or reader handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SequenceFormat {
    /// `>` headers followed by sequence lines of any width.
    #[default]
    Fasta,
    /// Four-line records: `@` header, sequence, `+` line, quality.
    Fastq,
}

impl From<SequenceFormat> for TableFormat {
    fn from(format: SequenceFormat) -> Self {
        match format {
            SequenceFormat::Fasta => TableFormat::Fasta,
            SequenceFormat::Fastq => TableFormat::Fastq,
        }
    }
}

impl SequenceFormat {
    /// The sequence format of a table format (`None` for CSV and TSV).
    pub fn of_table(format: TableFormat) -> Option<Self> {
        match format {
            TableFormat::Fasta => Some(Self::Fasta),
            TableFormat::Fastq => Some(Self::Fastq),
            TableFormat::Csv | TableFormat::Tsv => None,
        }
    }

    /// The upper-case name used in messages (`FASTA`, `FASTQ`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Fasta => "FASTA",
            Self::Fastq => "FASTQ",
        }
    }

    /// The lower-case name DataFusion knows the format by (`STORED AS FASTQ`).
    pub fn ext(self) -> &'static str {
        match self {
            Self::Fasta => "fasta",
            Self::Fastq => "fastq",
        }
    }

    /// The fixed schema of a table of this format.
    pub fn schema(self) -> SchemaRef {
        match self {
            Self::Fasta => fasta_schema(),
            Self::Fastq => fastq_schema(),
        }
    }

    /// File name extensions of this format (without the dot).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Fasta => FASTA_EXTENSIONS,
            Self::Fastq => FASTQ_EXTENSIONS,
        }
    }

    /// True when the file name in `path` is `<stem>.<extension of this format>`, optionally
    /// followed by compression suffixes (`x.fa`, `x.fastq.gz`); case-insensitive.
    pub fn matches_path(self, path: &str) -> bool {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        strip_compression_suffixes(name)
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| {
                !stem.is_empty()
                    && self
                        .extensions()
                        .iter()
                        .any(|e| ext.eq_ignore_ascii_case(e))
            })
    }
}

impl std::fmt::Display for SequenceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Name of the column holding the header text up to the first whitespace.
pub const ID_COLUMN: &str = "id";
/// Name of the column holding the rest of the header (NULL when there is none).
pub const DESCRIPTION_COLUMN: &str = "description";
/// Name of the column holding the sequence with line breaks removed.
pub const SEQUENCE_COLUMN: &str = "sequence";
/// Name of the FASTQ column holding the quality line, one character per base.
pub const QUALITY_COLUMN: &str = "quality";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(ID_COLUMN, DataType::Utf8, false),
        Field::new(DESCRIPTION_COLUMN, DataType::Utf8, true),
        Field::new(SEQUENCE_COLUMN, DataType::Utf8, false),
    ]))
});

static FASTQ_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(ID_COLUMN, DataType::Utf8, false),
        Field::new(DESCRIPTION_COLUMN, DataType::Utf8, true),
        Field::new(SEQUENCE_COLUMN, DataType::Utf8, false),
        Field::new(QUALITY_COLUMN, DataType::Utf8, false),
    ]))
});

/// The fixed schema of every FASTQ table: FASTA's columns and `quality` Utf8 NOT NULL.
pub fn fastq_schema() -> SchemaRef {
    Arc::clone(&FASTQ_SCHEMA)
}

/// The fixed schema of every FASTA table: `id` Utf8 NOT NULL, `description` Utf8, `sequence` Utf8 NOT NULL.
pub fn fasta_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// True when the file name in `path` is `<stem>.<FASTA extension>`, optionally followed by
/// compression suffixes (`x.fa`, `x.fasta.gz`, `x.fna.bgz`); case-insensitive. The one rule for
/// telling FASTA files by name: directory listings use it too.
pub fn is_fasta_path(path: &str) -> bool {
    SequenceFormat::Fasta.matches_path(path)
}

/// True when the file name in `path` is `<stem>.fq` or `<stem>.fastq`, optionally compressed.
pub fn is_fastq_path(path: &str) -> bool {
    SequenceFormat::Fastq.matches_path(path)
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
        for yes in ["a.fq", "b.FASTQ.gz", "c.fq.bgz"] {
            assert!(is_fastq_path(yes) && !is_fasta_path(yes), "{yes}");
        }
        assert!(!is_fastq_path("fq.gz") && !is_fastq_path("a.fa"));
    }
}
