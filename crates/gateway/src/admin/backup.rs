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
    Ok(axum::Json(BackupResult { to: request.to }))
}
