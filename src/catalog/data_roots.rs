//! Data roots: the directories whose files clients may register as tables at run time.
//!
//! A location a client names (`CREATE EXTERNAL TABLE … LOCATION '…'`) is checked twice:
//! lexically before the file system is touched (so errors never reveal what exists outside
//! the roots), and again file by file after symlinks are resolved (so a link inside a root
//! cannot point outside it). Relative locations are taken relative to the roots, in order.
//! With no root configured, clients cannot register files at all. Tables the operator
//! configures at start (`--table`, TOML) need no root.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use super::location::has_glob_chars;

/// Why a client may not register a location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// No data root is configured: clients may not register files.
    #[error(
        "this server does not let clients register files: no data root is configured (--data-root)"
    )]
    NoRoots,
    /// The location is not inside any data root (after resolving `..`, symlinks and globs).
    #[error(
        "'{0}' is not inside a data root: clients may register only files under the server's \
         data roots (--data-root), after resolving '..', symbolic links and globs"
    )]
    Outside(String),
    /// A location with a URL scheme other than `file://`.
    #[error("'{0}': only local files under a data root can be registered")]
    NotLocal(String),
}

/// The configured data roots, canonical.
#[derive(Debug, Clone, Default)]
pub struct DataRoots {
    /// Each root as configured (made absolute, `..` resolved) and canonical (symlinks resolved).
    roots: Vec<(PathBuf, PathBuf)>,
}

impl DataRoots {
    /// The roots at `paths`; each must be an existing directory.
    pub fn new(paths: &[PathBuf]) -> Result<Self, String> {
        let mut roots = Vec::new();
        for path in paths {
            let canonical = path
                .canonicalize()
                .map_err(|e| format!("data root '{}' cannot be used: {e}", path.display()))?;
            if !canonical.is_dir() {
                return Err(format!("data root '{}' is not a directory", path.display()));
            }
            let absolute = std::path::absolute(path)
                .map(|p| normalize(&p))
                .unwrap_or_else(|_| canonical.clone());
            roots.push((absolute, canonical));
        }
        Ok(Self { roots })
    }

    /// True when no root is configured.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The canonical roots.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|(_, canonical)| canonical.as_path())
    }

    /// The local path a client's location stands for, checked lexically against the roots
    /// without touching the file system outside them: `file://` stripped, relative paths
    /// taken from the first root under which they exist, `..` resolved.
    pub fn locate(&self, location: &str) -> Result<String, RootError> {
        if self.roots.is_empty() {
            return Err(RootError::NoRoots);
        }
        let path = match location.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("file") => {
                if !rest.starts_with('/') {
                    // file://host/… names another machine.
                    return Err(RootError::NotLocal(location.to_string()));
                }
                rest.to_string()
            }
            Some(_) => return Err(RootError::NotLocal(location.to_string())),
            None => location.to_string(),
        };
        let outside = || RootError::Outside(location.to_string());
        if has_glob_chars(&path)
            && Path::new(&path)
                .components()
                .any(|c| c == Component::ParentDir)
        {
            // `..` after a wildcard cannot be resolved lexically.
            return Err(outside());
        }
        let candidates: Vec<PathBuf> = if Path::new(&path).is_absolute() {
            vec![normalize(Path::new(&path))]
        } else {
            self.roots
                .iter()
                .map(|(_, canonical)| normalize(&canonical.join(&path)))
                .collect()
        };
        let inside: Vec<&PathBuf> = candidates
            .iter()
            .filter(|candidate| self.contains_lexically(candidate))
            .collect();
        let chosen = inside
            .iter()
            .find(|candidate| has_glob_chars(&candidate.to_string_lossy()) || candidate.exists())
            .or(inside.first())
            .ok_or_else(outside)?;
        Ok(chosen.to_string_lossy().into_owned())
    }

    /// Checks that every file, symlinks resolved, is inside a root; returns them canonical.
    pub fn check_files(
        &self,
        location: &str,
        files: &[PathBuf],
    ) -> Result<Vec<PathBuf>, RootError> {
        let mut canonical = Vec::with_capacity(files.len());
        let mut seen = HashSet::new();
        for file in files {
            let resolved = file
                .canonicalize()
                .map_err(|_| RootError::Outside(location.to_string()))?;
            if !self.paths().any(|root| resolved.starts_with(root)) {
                return Err(RootError::Outside(location.to_string()));
            }
            if seen.insert(resolved.clone()) {
                canonical.push(resolved);
            }
        }
        Ok(canonical)
    }

    fn contains_lexically(&self, path: &Path) -> bool {
        self.roots
            .iter()
            .any(|(absolute, canonical)| path.starts_with(absolute) || path.starts_with(canonical))
    }
}

/// `path` with `.` and `..` resolved lexically (`..` at the root stays at the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> (tempfile::TempDir, DataRoots) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/a.fa"), ">a\nACGT\n").unwrap();
        std::fs::write(dir.path().join("secret.csv"), "x\n1\n").unwrap();
        let roots = DataRoots::new(&[dir.path().join("data")]).unwrap();
        (dir, roots)
    }

    #[test]
    fn no_root_means_no_files() {
        let roots = DataRoots::default();
        assert_eq!(roots.locate("/tmp/a.fa"), Err(RootError::NoRoots));
    }

    #[test]
    fn locations_inside_a_root_are_accepted_in_every_spelling() {
        let (dir, roots) = roots();
        let data = dir.path().join("data").canonicalize().unwrap();
        let file = data.join("a.fa").to_string_lossy().into_owned();
        assert_eq!(roots.locate(&file).unwrap(), file);
        assert_eq!(roots.locate(&format!("file://{file}")).unwrap(), file);
        assert_eq!(roots.locate("a.fa").unwrap(), file);
        assert_eq!(roots.locate("./sub/../a.fa").unwrap(), file);
        let glob = format!("{}/*.fa", data.display());
        assert_eq!(roots.locate(&glob).unwrap(), glob);
    }

    #[test]
    fn locations_outside_every_root_are_refused_before_looking() {
        let (dir, roots) = roots();
        let data = dir.path().join("data");
        for location in [
            "/etc/passwd".to_string(),
            "/etc/*.conf".to_string(),
            "../secret.csv".to_string(),
            format!("{}/../secret.csv", data.display()),
            format!("file://{}/../secret.csv", data.display()),
            format!("{}/*/../../secret.csv", data.display()),
            "/".to_string(),
        ] {
            assert_eq!(
                roots.locate(&location),
                Err(RootError::Outside(location.clone())),
                "{location}"
            );
        }
        for location in [
            "s3://bucket/a.fa",
            "http://example.com/a.fa",
            "file://host/a.fa",
        ] {
            assert!(matches!(
                roots.locate(location),
                Err(RootError::NotLocal(_))
            ));
        }
    }

    #[test]
    fn a_symlink_inside_a_root_to_a_file_outside_is_refused() {
        let (dir, roots) = roots();
        let link = dir.path().join("data/link.csv");
        std::os::unix::fs::symlink(dir.path().join("secret.csv"), &link).unwrap();
        let location = link.to_string_lossy().into_owned();
        assert_eq!(roots.locate(&location).unwrap(), location);
        assert_eq!(
            roots.check_files(&location, &[link]),
            Err(RootError::Outside(location.clone()))
        );
        let inside = dir.path().join("data/a.fa");
        assert_eq!(
            roots
                .check_files("a.fa", std::slice::from_ref(&inside))
                .unwrap(),
            [inside.canonicalize().unwrap()]
        );
    }

    #[test]
    fn a_root_must_be_an_existing_directory() {
        let (dir, _) = roots();
        assert!(DataRoots::new(&[dir.path().join("missing")]).is_err());
        assert!(DataRoots::new(&[dir.path().join("secret.csv")]).is_err());
    }
}
