//! Data roots: the directories whose files clients may register as tables at run time.
//!
//! A location a client names (`CREATE EXTERNAL TABLE … LOCATION '…'`) is checked twice:
//! lexically before the file system is touched (so errors never reveal what exists outside
//! the roots), and again file by file after symlinks are resolved (so a link inside a root
//! cannot point outside it). Relative locations are taken relative to the roots, in order.
//! With no root configured, clients cannot register files at all. Tables the operator
//! configures at start (`--table`, TOML) need no root.
//!
//! A root can also be a URL prefix (`s3://bucket/prefix`, `https://host/path`): a remote
//! location is inside it when it has the same scheme, bucket or host and port, and its path
//! (with `..` resolved, and `.`/`..` segments in any spelling refused) continues the root's
//! path at a `/`. Objects listed under such a location are checked again.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use url::Url;

use super::location::has_glob_chars;
use super::remote;

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
    /// A location with a URL scheme other than `file://`, `s3://`, `http(s)://`.
    #[error(
        "'{0}': only local files, s3:// and http(s):// locations under a data root can be \
         registered"
    )]
    NotLocal(String),
    /// A remote location that is not a plain URL.
    #[error("{0}")]
    BadUrl(String),
}

/// The configured data roots, canonical.
#[derive(Debug, Clone, Default)]
pub struct DataRoots {
    /// Each root as configured (made absolute, `..` resolved) and canonical (symlinks resolved).
    roots: Vec<(PathBuf, PathBuf)>,
    /// URL prefixes, each ending in `/`.
    remote: Vec<Url>,
}

impl DataRoots {
    /// The roots at `paths`; each must be an existing directory.
    pub fn new(paths: &[PathBuf]) -> Result<Self, String> {
        let mut roots = Vec::new();
        let mut remote = Vec::new();
        for path in paths {
            let text = path.to_string_lossy();
            if remote::is_remote(&text) {
                let (mut url, glob) = remote::parse(&text)
                    .map_err(|e| format!("data root '{text}' cannot be used: {e}"))?;
                if glob.is_some() {
                    return Err(format!("data root '{text}' cannot be a glob"));
                }
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                remote.push(url);
                continue;
            }
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
        Ok(Self { roots, remote })
    }

    /// True when no root is configured.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.remote.is_empty()
    }

    /// Checks that a remote location lies under a URL root.
    fn locate_remote(&self, location: &str) -> Result<String, RootError> {
        let (url, _) = remote::parse(location).map_err(|e| RootError::BadUrl(e.to_string()))?;
        if self.remote_root_of(url.as_str()).is_none() {
            return Err(RootError::Outside(location.to_string()));
        }
        Ok(location.to_string())
    }

    /// The URL root a (parsed, normalised) URL lies under.
    fn remote_root_of(&self, url: &str) -> Option<&Url> {
        self.remote.iter().find(|root| {
            let root = root.as_str();
            url.starts_with(root) || Some(url) == root.strip_suffix('/')
        })
    }

    /// Checks that every listed object URL lies under a URL root.
    pub fn check_urls(&self, location: &str, urls: &[String]) -> Result<(), RootError> {
        for url in urls {
            let parsed = Url::parse(url).map_err(|_| RootError::Outside(location.to_string()))?;
            if self.remote_root_of(parsed.as_str()).is_none() {
                return Err(RootError::Outside(location.to_string()));
            }
        }
        Ok(())
    }

    /// The canonical roots.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|(_, canonical)| canonical.as_path())
    }

    /// The local path a client's location stands for, checked lexically against the roots
    /// without touching the file system outside them: `file://` stripped, relative paths
    /// taken from the first root under which they exist, `..` resolved.
    pub fn locate(&self, location: &str) -> Result<String, RootError> {
        if self.is_empty() {
            return Err(RootError::NoRoots);
        }
        if remote::is_remote(location) {
            return self.locate_remote(location);
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
        // Remote locations need a URL root; other schemes are never accepted.
        for location in ["s3://bucket/a.fa", "http://example.com/a.fa"] {
            assert_eq!(
                roots.locate(location),
                Err(RootError::Outside(location.to_string()))
            );
        }
        for location in ["file://host/a.fa", "gs://bucket/a.fa"] {
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
    fn url_roots_admit_what_continues_their_path_and_nothing_else() {
        let roots = DataRoots::new(&[
            PathBuf::from("s3://lab/shared"),
            PathBuf::from("https://files.example.org/pub/"),
        ])
        .unwrap();
        for location in [
            "s3://lab/shared",
            "s3://lab/shared/",
            "s3://lab/shared/a.fa",
            "s3://lab/shared/runs/*.fq.gz",
            "https://files.example.org/pub/genome.fa",
            "HTTPS://FILES.example.org:443/pub/genome.fa",
        ] {
            assert!(roots.locate(location).is_ok(), "{location}");
        }
        for location in [
            "s3://lab/shared-secret/a.fa",
            "s3://lab/other/a.fa",
            "s3://lab/*/a.fa",
            "s3://other/shared/a.fa",
            "https://files.example.org/private/a.fa",
            "https://files.example.org:8443/pub/a.fa",
            "http://files.example.org/pub/a.fa",
            "https://evil.example.org/pub/a.fa",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert_eq!(
                roots.locate(location),
                Err(RootError::Outside(location.to_string())),
                "{location}"
            );
        }
        for location in [
            "s3://lab/shared/../other/a.fa",
            "s3://lab/shared/%2e%2e/other/a.fa",
            "s3://lab/shared/x%2F..%2F..%2Fother/a.fa",
            "https://user:pw@files.example.org/pub/a.fa",
            "https://files.example.org/pub/a.fa?x=../../private",
        ] {
            assert!(
                matches!(roots.locate(location), Err(RootError::BadUrl(_))),
                "{location}"
            );
        }
        assert!(matches!(
            roots.locate("gs://lab/shared/a.fa"),
            Err(RootError::NotLocal(_))
        ));
        let listed = ["s3://lab/shared/a.fa".to_string()];
        assert!(roots.check_urls("s3://lab/shared/", &listed).is_ok());
        let escaped = ["s3://lab/shared-x/a.fa".to_string()];
        assert!(roots.check_urls("s3://lab/shared", &escaped).is_err());
        // Local files still need a directory root.
        assert!(roots.locate("/etc/passwd").is_err());
    }

    #[test]
    fn a_root_must_be_an_existing_directory() {
        let (dir, _) = roots();
        assert!(DataRoots::new(&[dir.path().join("missing")]).is_err());
        assert!(DataRoots::new(&[dir.path().join("secret.csv")]).is_err());
    }
}
