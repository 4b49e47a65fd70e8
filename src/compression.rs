//! File compression: the name suffixes that announce it, the magic bytes that reveal it, and DataFusion's name for it.
//!
//! Every table format uses this one module, so a suffix or a signature added here is known
//! to directory listings, CSV tables and the FASTA reader alike.

use std::path::Path;

use datafusion::datasource::file_format::file_compression_type::FileCompressionType;

/// How many leading bytes [`Compression::sniff`] needs to decide.
pub const MAGIC_LEN: usize = 6;

/// A compression a file can be stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip, including BGZF and concatenated members.
    Gzip,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// Zstandard.
    Zstd,
}

/// File name suffixes (lower case, without the dot) and the compression each one names.
const SUFFIXES: &[(&str, Compression)] = &[
    ("gz", Compression::Gzip),
    ("bgz", Compression::Gzip),
    ("bgzf", Compression::Gzip),
    ("bz2", Compression::Bzip2),
    ("xz", Compression::Xz),
    ("zst", Compression::Zstd),
    ("zstd", Compression::Zstd),
];

impl Compression {
    /// Detects the compression from a file's first bytes (at least [`MAGIC_LEN`] of them
    /// when the file has that many). FASTA and CSV text cannot start with any of these
    /// signatures, so plain text is never mistaken for a compressed file.
    pub fn sniff(head: &[u8]) -> Self {
        match head {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            [b'B', b'Z', b'h', ..] => Self::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Self::Xz,
            _ => Self::None,
        }
    }

    /// The compression the last suffix of a path's file name names (`x.fa.gz` → gzip),
    /// [`Compression::None`] when it names none; case-insensitive.
    pub fn of_path(path: impl AsRef<Path>) -> Self {
        let Some(name) = path.as_ref().file_name() else {
            return Self::None;
        };
        split_compression_suffix(&name.to_string_lossy())
            .map_or(Self::None, |(_, compression)| compression)
    }

    /// True for every compressed variant.
    pub fn is_compressed(self) -> bool {
        self != Self::None
    }

    /// The same compression as DataFusion names it (for CSV tables and its decoders).
    pub fn file_compression_type(self) -> FileCompressionType {
        match self {
            Self::None => FileCompressionType::UNCOMPRESSED,
            Self::Gzip => FileCompressionType::GZIP,
            Self::Bzip2 => FileCompressionType::BZIP2,
            Self::Xz => FileCompressionType::XZ,
            Self::Zstd => FileCompressionType::ZSTD,
        }
    }
}

/// `name` without its trailing compression suffixes (`GRCh38.fa.gz` → `GRCh38.fa`), unchanged
/// when it has none; case-insensitive.
pub fn strip_compression_suffixes(mut name: &str) -> &str {
    while let Some((stem, _)) = split_compression_suffix(name) {
        name = stem;
    }
    name
}

/// Splits `name` into the part before a compression suffix and the compression it names.
fn split_compression_suffix(name: &str) -> Option<(&str, Compression)> {
    let (stem, suffix) = name.rsplit_once('.')?;
    SUFFIXES
        .iter()
        .find(|(known, _)| suffix.eq_ignore_ascii_case(known))
        .map(|&(_, compression)| (stem, compression))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 4]), Compression::Gzip);
        assert_eq!(Compression::sniff(b">chr1\n"), Compression::None);
        assert_eq!(Compression::sniff(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(
            Compression::sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]),
            Compression::Xz
        );
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn compressed_suffixes_are_recognised() {
        let has_compressed_suffix = |path: &str| Compression::of_path(path).is_compressed();
        assert!(has_compressed_suffix("/x/y.fa.gz"));
        assert!(has_compressed_suffix("y.BGZF"));
        assert!(!has_compressed_suffix("y.fa"));
        assert!(!has_compressed_suffix("gz"));
    }

    #[test]
    fn the_last_suffix_names_the_compression_whatever_its_case() {
        assert_eq!(Compression::of_path("/x/y.fa.gz"), Compression::Gzip);
        assert_eq!(Compression::of_path("y.BGZF"), Compression::Gzip);
        assert_eq!(Compression::of_path("s.csv.bz2"), Compression::Bzip2);
        assert_eq!(Compression::of_path("s.csv.xz"), Compression::Xz);
        assert_eq!(Compression::of_path("s.csv.zst"), Compression::Zstd);
        assert_eq!(Compression::of_path("s.csv.zstd"), Compression::Zstd);
        assert_eq!(Compression::of_path("y.fa"), Compression::None);
        assert_eq!(Compression::of_path("gz"), Compression::None);
        assert_eq!(Compression::of_path("dir.gz/readme"), Compression::None);
    }

    #[test]
    fn stripping_removes_every_trailing_compression_suffix() {
        assert_eq!(strip_compression_suffixes("GRCh38.FA.gz"), "GRCh38.FA");
        assert_eq!(strip_compression_suffixes("reads.fasta.bgz"), "reads.fasta");
        assert_eq!(strip_compression_suffixes("a.fa.gz.ZST"), "a.fa");
        assert_eq!(strip_compression_suffixes("notes.txt"), "notes.txt");
        assert_eq!(strip_compression_suffixes("gz"), "gz");
    }

    #[test]
    fn datafusion_names_the_same_compression() {
        assert_eq!(
            Compression::of_path("s.csv.bgz").file_compression_type(),
            FileCompressionType::GZIP
        );
        assert_eq!(
            Compression::None.file_compression_type(),
            FileCompressionType::UNCOMPRESSED
        );
    }
}
