//! Tables clients register at run time (`CREATE EXTERNAL TABLE`): confined to the data roots.
//!
//! Every location is resolved, when the table is created, to the files it names (directories
//! listed, globs expanded, symbolic links followed); each file must lie inside a data root.
//! The table is then built over exactly those files, so a file or link added to a directory
//! later is not picked up by a scan.

use std::path::PathBuf;

use datafusion::logical_expr::CreateExternalTable;
use datafusion::prelude::SessionContext;

use super::data_roots::{DataRoots, RootError};
use super::location::{self, LocationError};
use super::remote;
use crate::config::TableFormat;

/// Why a client's table cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A location is outside the data roots (PERMISSION_DENIED).
    #[error(transparent)]
    Root(#[from] RootError),
    /// A location inside the roots names no usable files (INVALID_ARGUMENT).
    #[error(transparent)]
    Location(#[from] LocationError),
}

/// Replaces the locations of `cmd` by the canonical files they name, each checked to be
/// inside a data root; remote locations (`s3://`, `http(s)://`) by the URLs of the objects
/// they name, listed through the session's stores.
pub async fn confine(
    cmd: &mut CreateExternalTable,
    roots: &DataRoots,
    ctx: &SessionContext,
) -> Result<(), ConfineError> {
    let mut files: Vec<String> = Vec::new();
    for location in &cmd.locations {
        let checked = roots.locate(location)?;
        if remote::is_remote(&checked) {
            let urls = remote_files_of(&checked, &cmd.file_type, ctx).await?;
            roots.check_urls(location, &urls)?;
            files.extend(urls);
            continue;
        }
        let named = files_of(&checked, &cmd.file_type)?;
        let canonical = roots.check_files(location, &named)?;
        files.extend(canonical.iter().map(|f| f.to_string_lossy().into_owned()));
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(ConfineError::Location(LocationError::Missing(
            cmd.locations.join(", "),
        )));
    }
    cmd.locations = files;
    Ok(())
}

/// The objects a remote location names, for a table stored as `file_type`.
async fn remote_files_of(
    location: &str,
    file_type: &str,
    ctx: &SessionContext,
) -> Result<Vec<String>, LocationError> {
    let (url, _) = remote::parse(location)?;
    let store = remote::store_of(&ctx.runtime_env(), &url).map_err(|e| LocationError::BadUrl {
        location: location.to_string(),
        message: e.strip_backtrace(),
    })?;
    match file_type.parse::<TableFormat>().ok() {
        Some(format) => remote::resolve(store.as_ref(), location, Some(format))
            .await
            .map(|(urls, _)| urls),
        None => {
            let extension = format!(".{}", file_type.to_ascii_lowercase());
            remote::resolve_ending_in(store.as_ref(), location, &extension).await
        }
    }
}

/// The files a local location names, for a table stored as `file_type`.
fn files_of(local: &str, file_type: &str) -> Result<Vec<PathBuf>, LocationError> {
    match file_type.parse::<TableFormat>().ok() {
        Some(format) => location::resolve(local, Some(format)).map(|(resolved, _)| resolved.files),
        None => location::files_ending_in(local, &format!(".{}", file_type.to_ascii_lowercase())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::common::{DFSchema, TableReference};

    use super::*;

    fn command(locations: &[String], file_type: &str) -> CreateExternalTable {
        let mut cmd = CreateExternalTable::builder(
            TableReference::bare("t"),
            locations[0].clone(),
            file_type,
            Arc::new(DFSchema::empty()),
        )
        .build();
        cmd.locations = locations.to_vec();
        cmd
    }

    #[tokio::test]
    async fn a_directory_becomes_its_files_and_a_link_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.csv"), "x\n1\n").unwrap();
        std::fs::write(data.join("sub/b.csv"), "x\n2\n").unwrap();
        std::fs::write(data.join("notes.txt"), "hi").unwrap();
        let roots = DataRoots::new(std::slice::from_ref(&data)).unwrap();
        let mut cmd = command(&[data.display().to_string()], "CSV");
        confine(&mut cmd, &roots, &SessionContext::new())
            .await
            .unwrap();
        let canonical = data.canonicalize().unwrap();
        assert_eq!(
            cmd.locations,
            [
                canonical.join("a.csv").display().to_string(),
                canonical.join("sub/b.csv").display().to_string()
            ]
        );

        std::fs::write(dir.path().join("secret.csv"), "x\n3\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.csv"), data.join("c.csv")).unwrap();
        let mut cmd = command(&[data.display().to_string()], "CSV");
        assert!(matches!(
            confine(&mut cmd, &roots, &SessionContext::new()).await,
            Err(ConfineError::Root(RootError::Outside(_)))
        ));
    }

    #[tokio::test]
    async fn a_missing_file_outside_the_roots_is_refused_without_saying_it_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let roots = DataRoots::new(&[dir.path().to_path_buf()]).unwrap();
        let mut cmd = command(&["/no/such/file.csv".to_string()], "CSV");
        let error = confine(&mut cmd, &roots, &SessionContext::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("not inside a data root"), "{error}");
        assert!(!error.contains("does not exist"), "{error}");
    }
}
