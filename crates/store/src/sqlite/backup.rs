//! Backups of the SQLite file: an online, consistent copy taken with
//! `VACUUM INTO` (sqlx exposes no binding of SQLite's online backup API;
//! `VACUUM INTO` reads the database in one read transaction, so the copy is
//! the state of one commit while writers carry on in the WAL), and the
//! checks a copy must pass before it is restored.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::{SCHEMA_VERSION, SqliteStore};
use crate::StoreError;

/// What [`check_file`] found in a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// `PRAGMA user_version`: the schema the file was written with.
    pub schema_version: i64,
}

/// Checks a database file without changing it: SQLite's
/// `PRAGMA integrity_check` passes and its schema version is one this build
/// knows (an older one is upgraded when a server opens it).
pub async fn check_file(path: &Path) -> Result<FileCheck, StoreError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    let mut connection = SqliteConnection::connect_with(&options).await?;
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut connection)
        .await?;
    if problems.iter().any(|line| line != "ok") {
        return Err(StoreError::Corrupt(format!(
            "integrity check failed: {}",
            problems.join("; ")
        )));
    }
    let schema_version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    if schema_version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: schema_version,
            known: SCHEMA_VERSION,
        });
    }
    if schema_version < 1 {
        return Err(StoreError::Corrupt(
            "the file holds no KeyForge schema (user_version 0)".to_owned(),
        ));
    }
    Ok(FileCheck { schema_version })
}

/// Moves the WAL of a database no process has open back into its file and
/// empties it, so the file alone holds every commit (before it is moved
/// aside by a restore).
pub async fn checkpoint_file(path: &Path) -> Result<(), StoreError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false);
    let mut connection = SqliteConnection::connect_with(&options).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(())
}

/// A private scratch file beside `dest`, removed on drop unless it was
/// moved into place.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn scratch_beside(dest: &Path) -> Result<(Scratch, std::fs::File), StoreError> {
    let dir = parent_dir(dest);
    let name = dest
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    for attempt in 0..16u32 {
        let path = dir.join(format!(".{name}.tmp-{}-{attempt}", std::process::id()));
        // Created 0600 and empty: `VACUUM INTO` writes into an empty file
        // and keeps its mode, so the copy is never readable by others.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((Scratch { path, keep: false }, file)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(StoreError::Io(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "cannot create a scratch file beside the backup",
    )))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename or link in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Puts `scratch` at `dest` in one step: over an existing file only with
/// `overwrite` (a rename), else as a hard link that fails if `dest` exists.
fn install(scratch: &mut Scratch, dest: &Path, overwrite: bool) -> Result<(), StoreError> {
    if overwrite {
        std::fs::rename(&scratch.path, dest)?;
        scratch.keep = true;
    } else {
        std::fs::hard_link(&scratch.path, dest).map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                StoreError::Conflict(format!(
                    "{} exists; give --force to replace it",
                    dest.display()
                ))
            } else {
                StoreError::Io(error)
            }
        })?;
    }
    sync_dir(&parent_dir(dest))?;
    Ok(())
}

impl SqliteStore {
    /// Closes every connection (the WAL is checkpointed into the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes a consistent copy of the database to `dest` (mode 0600):
    /// `VACUUM INTO` a scratch file in the same directory, fsync, then
    /// moved into place in one step, so `dest` is either absent, the old
    /// file or the whole copy. An existing `dest` is replaced only with
    /// `overwrite`.
    pub async fn write_backup(&self, dest: &Path, overwrite: bool) -> Result<(), StoreError> {
        if !overwrite && dest.exists() {
            return Err(StoreError::Conflict(format!(
                "{} exists; give --force to replace it",
                dest.display()
            )));
        }
        let (mut scratch, file) = scratch_beside(dest)?;
        drop(file);
        let target = scratch.path.to_string_lossy().into_owned();
        sqlx::query("VACUUM INTO ?")
            .bind(&target)
            .execute(&self.pool)
            .await?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&scratch.path)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        install(&mut scratch, dest, overwrite)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn a_backup_is_private_checked_and_never_replaces_a_file_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keyforge.db"))
            .await
            .unwrap();
        let dest = dir.path().join("backup.db");
        store.write_backup(&dest, false).await.unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            check_file(&dest).await.unwrap().schema_version,
            SCHEMA_VERSION
        );
        let refused = store.write_backup(&dest, false).await.unwrap_err();
        assert!(refused.to_string().contains("--force"), "{refused}");
        store.write_backup(&dest, true).await.unwrap();
        // No scratch file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        assert!(check_file(&junk).await.is_err());
    }
}
