//! Turns a table location (a file, a directory or a glob) into the list of files it names.

use std::path::{Path, PathBuf};

use crate::compression::{Compression, strip_compression_suffixes};
use crate::config::TableFormat;
use crate::fasta;

/// Why a location could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The path does not exist.
    #[error("'{0}' does not exist")]
    Missing(String),
    /// A directory or glob that names no file of the wanted format.
    #[error("'{location}' contains no {format} files (looked for {extensions})")]
    NoFiles {
        /// The location as given.
        location: String,
        /// The format looked for.
        format: &'static str,
        /// The extensions looked for.
        extensions: String,
    },
    /// A glob that matches nothing.
    #[error("glob '{0}' matches no files")]
    GlobMatchesNothing(String),
    /// A malformed glob.
    #[error("invalid glob '{pattern}': {message}")]
    BadGlob {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// The format could not be guessed.
    #[error(
        "cannot tell the format of '{0}' from its name; use --fasta NAME=PATH or --csv NAME=PATH, or set format in the configuration"
    )]
    UnknownFormat(String),
    /// A directory or glob naming more files than one table may have.
    #[error("'{0}' names more than {max} files", max = MAX_FILES)]
    TooManyFiles(String),
    /// Files of one CSV table must share one compression.
    #[error("'{0}' mixes compressed and uncompressed files; give them as separate tables")]
    MixedCompression(String),
    /// A remote location that is not a usable URL.
    #[error("'{location}': {message}")]
    BadUrl {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        message: String,
    },
    /// A remote store refused or failed a request.
    #[error("'{location}': {source}")]
    Remote {
        /// The location as given.
        location: String,
        /// The store's error.
        source: Box<object_store::Error>,
    },
    /// A file system error while listing.
    #[error("cannot read '{path}': {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The files a location names, already checked to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedLocation {
    /// Absolute file paths, sorted.
    pub files: Vec<PathBuf>,
    /// True when the location was a single explicitly named file.
    pub explicit_file: bool,
}

/// Guesses a file's format from its extension, looking through compression suffixes
/// (`.fa.gz` → FASTA, `.tsv` → TSV); FASTA names follow [`fasta::is_fasta_path`].
pub fn format_of(path: &Path) -> Option<TableFormat> {
    let name = path.file_name()?.to_string_lossy();
    if fasta::is_fasta_path(&name) {
        return Some(TableFormat::Fasta);
    }
    if fasta::is_fastq_path(&name) {
        return Some(TableFormat::Fastq);
    }
    let (_, ext) = strip_compression_suffixes(&name).rsplit_once('.')?;
    match ext.to_ascii_lowercase().as_str() {
        "csv" => Some(TableFormat::Csv),
        "tsv" | "tab" => Some(TableFormat::Tsv),
        _ => None,
    }
}

/// True when a location is a glob pattern.
pub fn has_glob_chars(location: &str) -> bool {
    location.contains(['*', '?', '['])
}

/// Lists the files of a location. With `format` unknown, it is guessed from the files' names.
pub fn resolve(
    location: &str,
    format: Option<TableFormat>,
) -> Result<(ResolvedLocation, TableFormat), LocationError> {
    let path = Path::new(location);
    if !has_glob_chars(location) || path.exists() {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LocationError::Missing(location.to_string()),
            _ => LocationError::Io {
                path: location.to_string(),
                source: e,
            },
        })?;
        if !meta.is_dir() {
            // An explicitly named file is served whatever its name says.
            let format = format
                .or_else(|| format_of(path))
                .ok_or_else(|| LocationError::UnknownFormat(location.to_string()))?;
            let file = absolute(path, location)?;
            return Ok((
                ResolvedLocation {
                    files: vec![file],
                    explicit_file: true,
                },
                format,
            ));
        }
        let mut files = Vec::new();
        walk(path, &mut files, &mut Default::default())?;
        return select(location, files, format);
    }
    let paths = glob::glob(location).map_err(|e| LocationError::BadGlob {
        pattern: location.to_string(),
        message: e.msg.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in paths {
        if files.len() >= MAX_FILES {
            return Err(LocationError::TooManyFiles(location.to_string()));
        }
        let entry = entry.map_err(|e| LocationError::Io {
            path: e.path().display().to_string(),
            source: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?;
        if entry.is_file() {
            files.push(entry);
        }
    }
    if files.is_empty() {
        return Err(LocationError::GlobMatchesNothing(location.to_string()));
    }
    // Every file a glob names was asked for by name pattern: keep them all.
    let (files, format) = select_listed(location, files, format, true)?;
    Ok((
        ResolvedLocation {
            files,
            explicit_file: false,
        },
        format,
    ))
}

/// Lists the files of a location of a format flightbear does not know by name (Parquet, JSON,
/// …): a file is itself, a glob its matching files, a directory its files ending in `extension`.
pub fn files_ending_in(location: &str, extension: &str) -> Result<Vec<PathBuf>, LocationError> {
    let path = Path::new(location);
    if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files, &mut Default::default())?;
        let extension = extension.to_ascii_lowercase();
        files.retain(|f| {
            f.to_string_lossy()
                .to_ascii_lowercase()
                .ends_with(&extension)
        });
        if files.is_empty() {
            return Err(LocationError::NoFiles {
                location: location.to_string(),
                format: "matching",
                extensions: extension,
            });
        }
        return Ok(files);
    }
    // Any format will do for listing a file or a glob: every file they name is kept.
    resolve(location, Some(TableFormat::Csv)).map(|(resolved, _)| resolved.files)
}

/// Chooses among listed files (absolute paths; for remote stores, `/` and the key) as for a
/// local directory, or as for a glob when `from_glob` (every file kept); returns them sorted.
pub fn select_listed(
    location: &str,
    files: Vec<PathBuf>,
    format: Option<TableFormat>,
    from_glob: bool,
) -> Result<(Vec<PathBuf>, TableFormat), LocationError> {
    let (resolved, format) = if from_glob {
        let format = match format {
            Some(f) => f,
            None => files
                .iter()
                .find_map(|f| format_of(f))
                .ok_or_else(|| LocationError::UnknownFormat(location.to_string()))?,
        };
        finish(location, &files, format)?
    } else {
        select(location, files, format)?
    };
    Ok((resolved.files, format))
}

/// Keeps the files of a directory that have the format's extensions.
fn select(
    location: &str,
    files: Vec<PathBuf>,
    format: Option<TableFormat>,
) -> Result<(ResolvedLocation, TableFormat), LocationError> {
    let format = match format {
        Some(f) => f,
        None => {
            let formats: Vec<_> = files.iter().filter_map(|f| format_of(f)).collect();
            match formats.first() {
                // A directory holding both FASTA and CSV files is ambiguous.
                Some(first) if formats.iter().all(|f| f == first) => *first,
                _ => return Err(LocationError::UnknownFormat(location.to_string())),
            }
        }
    };
    let wanted: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| format_of(f) == Some(format))
        .collect();
    if wanted.is_empty() {
        return Err(LocationError::NoFiles {
            location: location.to_string(),
            format: format.name(),
            extensions: extensions_of(format),
        });
    }
    finish(location, &wanted, format)
}

/// The files a directory or glob names, made absolute, sorted and checked for mixed compression.
fn finish(
    location: &str,
    files: &[PathBuf],
    format: TableFormat,
) -> Result<(ResolvedLocation, TableFormat), LocationError> {
    let mut files = files
        .iter()
        .map(|f| absolute(f, location))
        .collect::<Result<Vec<_>, _>>()?;
    files.sort();
    files.dedup();
    if !matches!(format, TableFormat::Fasta | TableFormat::Fastq) {
        let first = Compression::of_path(&files[0]);
        if files.iter().any(|f| Compression::of_path(f) != first) {
            return Err(LocationError::MixedCompression(location.to_string()));
        }
    }
    Ok((
        ResolvedLocation {
            files,
            explicit_file: false,
        },
        format,
    ))
}

fn extensions_of(format: TableFormat) -> String {
    let exts: Vec<String> = match format {
        TableFormat::Fasta => fasta::FASTA_EXTENSIONS
            .iter()
            .map(|e| format!(".{e}"))
            .collect(),
        TableFormat::Fastq => fasta::FASTQ_EXTENSIONS
            .iter()
            .map(|e| format!(".{e}"))
            .collect(),
        TableFormat::Csv => vec![".csv".into()],
        TableFormat::Tsv => vec![".tsv".into(), ".tab".into()],
    };
    format!("{}, optionally compressed", exts.join(" "))
}

/// Most files a directory or glob may name: a bound on the work and memory of one listing.
pub const MAX_FILES: usize = 100_000;

/// Lists regular files under `dir`, recursively, skipping hidden entries; a directory reached
/// twice (a symbolic link cycle) is listed once.
fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut std::collections::HashSet<PathBuf>,
) -> Result<(), LocationError> {
    let io_err = |e: std::io::Error| LocationError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    if !visited.insert(dir.canonicalize().map_err(io_err)?) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        if out.len() >= MAX_FILES {
            return Err(LocationError::TooManyFiles(dir.display().to_string()));
        }
        let entry = entry.map_err(io_err)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(io_err)?;
        if meta.is_dir() {
            walk(&path, out, visited)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn absolute(path: &Path, location: &str) -> Result<PathBuf, LocationError> {
    std::path::absolute(path).map_err(|e| LocationError::Io {
        path: location.to_string(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_guessed_through_compression_suffixes() {
        assert_eq!(
            format_of(Path::new("GRCh38.FA.gz")),
            Some(TableFormat::Fasta)
        );
        assert_eq!(
            format_of(Path::new("reads.fasta.bgz")),
            Some(TableFormat::Fasta)
        );
        assert_eq!(format_of(Path::new("s.csv.gz")), Some(TableFormat::Csv));
        assert_eq!(format_of(Path::new("s.tsv")), Some(TableFormat::Tsv));
        assert_eq!(format_of(Path::new("notes.txt")), None);
    }

    #[test]
    fn explicit_file_is_kept_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sequences.txt");
        std::fs::write(&file, ">a\nACGT\n").unwrap();
        let (resolved, format) = resolve(file.to_str().unwrap(), Some(TableFormat::Fasta)).unwrap();
        assert_eq!(format, TableFormat::Fasta);
        assert!(resolved.explicit_file);
        assert_eq!(resolved.files.len(), 1);
    }

    #[test]
    fn directory_keeps_only_files_of_the_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.fa"), ">a\nA\n").unwrap();
        std::fs::write(dir.path().join("b.fasta.gz"), b"").unwrap();
        std::fs::write(dir.path().join("README.md"), "hi").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.fna"), ">c\nC\n").unwrap();
        let (resolved, format) = resolve(dir.path().to_str().unwrap(), None).unwrap();
        assert_eq!(format, TableFormat::Fasta);
        let names: Vec<_> = resolved
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.fa", "b.fasta.gz", "c.fna"]);
    }

    #[test]
    fn a_symlink_cycle_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.fa"), ">a\nA\n").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let (resolved, _) = resolve(dir.path().to_str().unwrap(), None).unwrap();
        assert_eq!(resolved.files.len(), 1);
    }

    #[test]
    fn missing_path_and_empty_glob_are_named() {
        let err = resolve("/no/such/file.fa", None).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.fa"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let pattern = format!("{}/*.fa", dir.path().display());
        let err = resolve(&pattern, None).unwrap_err();
        assert!(err.to_string().contains("matches no files"), "{err}");
    }
}
