//! `POST /admin/v1/backup`: a consistent copy of the store while the
//! gateway serves. The `store.backup` entry is committed first (nothing
//! happens unaudited), so the copy holds the record of its own making.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use bytes::Bytes;
use http::StatusCode;
use keyforge_store::StoreError;

use super::api::{BackupRequest, BackupResult};
use super::{AdminError, audit_as, parse_json};
use crate::state::AppState;
use crate::stored_audit::BACKUP_KIND;

/// The file in the data directory where `keyforge backup` records its
/// last successful run (`{"at": RFC 3339, "to": PATH}`), for `doctor`.
pub const LAST_BACKUP_FILE: &str = "last-backup.json";

/// The last backup recorded in `data_dir`: (when, where to).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastBackup {
    /// RFC 3339, UTC.
    pub at: String,
    /// The file written.
    pub to: String,
}

/// Records a backup just taken: written to a scratch file (0600) and
/// renamed over `LAST_BACKUP_FILE`, so a reader never sees half of it.
pub fn record_backup(data_dir: &Path, to: &Path, at: time::OffsetDateTime) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let record = LastBackup {
        at: super::rfc3339(at),
        to: to.display().to_string(),
    };
    let text = serde_json::to_string(&record).map_err(std::io::Error::other)?;
    let scratch = data_dir.join(format!("{LAST_BACKUP_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&scratch)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&scratch, data_dir.join(LAST_BACKUP_FILE))
}

/// The last backup recorded in `data_dir`; `None` when none was (or the
/// record cannot be read).
pub fn last_backup(data_dir: &Path) -> Option<LastBackup> {
    let text = std::fs::read_to_string(data_dir.join(LAST_BACKUP_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

pub(super) async fn backup(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<axum::Json<BackupResult>, AdminError> {
    let request: BackupRequest = parse_json(&body)?;
    let dest = Path::new(&request.to);
    if !dest.is_absolute() {
        return Err(AdminError::bad_request(
            "to: give an absolute path on the gateway's machine",
        ));
    }
    if !request.force && dest.exists() {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{} exists; give --force to replace it", dest.display()),
        ));
    }
    audit_as(
        &state,
        &super::current_actor()?,
        BACKUP_KIND,
        serde_json::json!({"to": request.to, "force": request.force, "online": true}),
    )
    .await?;
    state
        .store
        .backup_to(dest, request.force)
        .await
        .map_err(|error| match error {
            StoreError::Conflict(message) => {
                AdminError::new(StatusCode::CONFLICT, "conflict", message)
            }
            // The path is the operator's own; the error names no secret.
            other => {
                tracing::error!(error = %other, to = %dest.display(), "backup failed");
                AdminError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "backup_failed",
                    format!("cannot write the backup: {other}"),
                )
            }
        })?;
    tracing::info!(to = %dest.display(), "store backed up");
    if let Some(data_dir) = &state.config.deployment.data_dir
        && let Err(error) = record_backup(data_dir, dest, state.clock.now())
    {
        // The copy is made; only doctor's record of it is missing.
        tracing::warn!(error = %error, "could not record the backup for `keyforge doctor`");
    }
    Ok(axum::Json(BackupResult { to: request.to }))
}
