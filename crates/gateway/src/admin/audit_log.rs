//! `/admin/v1/audit`: read, export and verify the audit log (see
//! `crate::audit` for the format and what verification proves).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use super::AdminError;
use crate::audit::Verification;
use crate::snapshot::unix_ms;
use crate::state::AppState;

const PAGE: u32 = 10_000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TailParams {
    after: Option<u64>,
    limit: Option<u32>,
}

fn lines_response(lines: String) -> Response {
    let mut response = lines.into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Entries (and their checkpoints) after a sequence number: what `audit
/// tail` polls.
pub(super) async fn tail(
    State(state): State<Arc<AppState>>,
    params: Result<Query<TailParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(params) = params.map_err(|error| {
        AdminError::bad_request(format!("invalid query: {}", error.body_text()))
    })?;
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    let lines = state
        .store
        .audit_lines(
            params.after.unwrap_or(0),
            params.limit.unwrap_or(1000).clamp(1, PAGE),
        )
        .await
        .map_err(AdminError::store)?;
    let mut out = String::new();
    for (_, line) in lines {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(lines_response(out))
}

/// Every line from `after` on, ending with a signed end marker over the
/// stored head, once the queued entries are written.
async fn signed_lines(state: &AppState, after: u64) -> Result<String, AdminError> {
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    crate::stored_audit::signed_lines(state.store.as_ref(), &state.audit_key, after)
        .await
        .map_err(AdminError::store)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportParams {
    since: Option<String>,
}

/// JSON lines for a SIEM, verifiable offline with `keyforge audit verify
/// --file`.
pub(super) async fn export(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(params) = params.map_err(|error| {
        AdminError::bad_request(format!("invalid query: {}", error.body_text()))
    })?;
    let after = match params.since {
        None => 0,
        Some(since) => {
            let since = keyforge_types::Ttl::parse(&since)
                .map_err(|error| AdminError::bad_request(format!("since: {error}")))?;
            let from = unix_ms(state.clock.now() - since.as_duration());
            state.ledger.flush(std::time::Duration::from_secs(5)).await;
            match state
                .store
                .audit_seq_since(from)
                .await
                .map_err(AdminError::store)?
            {
                Some(first) => first - 1,
                None => state
                    .store
                    .audit_head()
                    .await
                    .map_err(AdminError::store)?
                    .map_or(0, |(seq, _)| seq),
            }
        }
    };
    Ok(lines_response(signed_lines(&state, after).await?))
}

/// Verifies the whole stored log and the ledger against it.
pub(super) async fn check(
    State(state): State<Arc<AppState>>,
) -> Result<(StatusCode, axum::Json<Verification>), AdminError> {
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    let checked = crate::stored_audit::verify_store(state.store.as_ref(), &state.audit_key)
        .await
        .map_err(AdminError::store)?;
    let verification = checked.verification;
    if let Some(problem) = &verification.problem {
        tracing::error!(problem = %problem, "the audit log failed verification");
    }
    Ok((StatusCode::OK, axum::Json(verification)))
}
