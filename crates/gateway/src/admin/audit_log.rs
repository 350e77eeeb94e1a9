//! `/admin/v1/audit`: read, export and verify the audit log (see
//! `crate::audit` for the format and what verification proves).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use super::AdminError;
use crate::audit::{Verification, end_line, hash_hex, verify, verify_ledger};
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
/// stored head.
async fn signed_lines(state: &AppState, after: u64) -> Result<String, AdminError> {
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    let head = state.store.audit_head().await.map_err(AdminError::store)?;
    let mut out = String::new();
    let mut cursor = after;
    let mut count = 0u64;
    loop {
        let page = state
            .store
            .audit_lines(cursor, PAGE)
            .await
            .map_err(AdminError::store)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        let last = *last;
        for (seq, line) in &page {
            if !line.starts_with("{\"checkpoint\"") && *seq > cursor {
                count += 1;
            }
            out.push_str(line);
            out.push('\n');
        }
        if last == cursor {
            break;
        }
        cursor = last;
    }
    let head = head
        .filter(|(seq, _)| *seq > after)
        .and_then(|(seq, hash)| {
            <[u8; 32]>::try_from(hash.as_slice())
                .ok()
                .map(|h| (seq, hash_hex(&h)))
        });
    out.push_str(&end_line(&state.audit_key, head, count));
    out.push('\n');
    Ok(out)
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

/// Verifies the whole stored log.
pub(super) async fn check(
    State(state): State<Arc<AppState>>,
) -> Result<(StatusCode, axum::Json<Verification>), AdminError> {
    let lines = signed_lines(&state, 0).await?;
    let mut verification = verify(lines.lines(), &state.audit_key);
    if verification.problem.is_none() {
        // The chain is intact; now the ledger must match the key uses it
        // sealed (rows deleted or edited to reset spend).
        let mut rows = Vec::new();
        let mut after = 0;
        loop {
            let page = state
                .store
                .ledger_rows(after, PAGE)
                .await
                .map_err(AdminError::store)?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id;
            rows.extend(page);
        }
        let rollups = state
            .store
            .rollup_totals()
            .await
            .map_err(AdminError::store)?;
        let problems = verify_ledger(lines.lines(), rows, Some(rollups));
        if !problems.is_empty() {
            const SHOWN: usize = 20;
            let mut text = format!(
                "the ledger does not match the audit log ({} problems): {}",
                problems.len(),
                problems[..problems.len().min(SHOWN)].join("; ")
            );
            if problems.len() > SHOWN {
                text.push_str(&format!("; and {} more", problems.len() - SHOWN));
            }
            verification.problem = Some(text);
        }
    }
    if let Some(problem) = &verification.problem {
        tracing::error!(problem = %problem, "the audit log failed verification");
    }
    Ok((StatusCode::OK, axum::Json(verification)))
}
