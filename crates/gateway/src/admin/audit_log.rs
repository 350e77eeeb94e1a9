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

/// At most this many entries are read per request when filtering or
/// paging backwards, whatever matches: a filter that matches nothing never
/// makes one request read the whole log. The answer then says where to go
/// on (the `next-before` and `scanned-to` headers).
const SCAN_BUDGET: u64 = 10_000;

/// Entries read from the store per round trip of a scan.
const SCAN_CHUNK: u64 = 1_000;

/// Backward paging: the entries older than this sequence number were not
/// scanned; ask again with `before=` it for them. Absent when the scan
/// reached the start of the log (or of `since`).
pub const NEXT_BEFORE_HEADER: &str = "x-keyforge-audit-next-before";

/// Forward filtered reading: the highest sequence number scanned, matching
/// or not; a follower asks next with `after=` it. Backward: the head's
/// sequence number when the request was served, where following starts.
pub const SCANNED_TO_HEADER: &str = "x-keyforge-audit-scanned-to";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TailParams {
    /// Forward: entries after this sequence number.
    after: Option<u64>,
    /// Forward: at most this many entries (default 1,000, at most 10,000).
    limit: Option<u32>,
    /// Backward: the newest `last` matching entries (at most 10,000),
    /// oldest first.
    last: Option<u32>,
    /// Backward: only entries older than this sequence number.
    before: Option<u64>,
    /// Exact kind (`admin.key.create`), or a prefix ending in `*` (`admin.key.*`).
    kind: Option<String>,
    /// Exact actor (`admin:fin`, `gateway`).
    actor: Option<String>,
    /// A key id appearing anywhere in the entry's data (`key.use` entries
    /// name it in `data.uses[].key_id`).
    key: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD` (UTC), included.
    since: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD` (UTC), excluded.
    until: Option<String>,
}

/// What an entry must be to be shown.
struct Filter {
    kind: Option<String>,
    actor: Option<String>,
    key: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

impl Filter {
    fn from_params(params: &TailParams) -> Result<Self, AdminError> {
        let instant = |name: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    super::range::parse_instant(text)
                        .map(super::range::unix_ms)
                        .map_err(|error| AdminError::bad_request(format!("{name}: {error}")))
                })
                .transpose()
        };
        let key = params
            .key
            .as_deref()
            .map(super::parse_key_id)
            .transpose()?
            .map(|id| id.as_str().to_owned());
        Ok(Self {
            kind: params.kind.clone().filter(|kind| !kind.is_empty()),
            actor: params.actor.clone().filter(|actor| !actor.is_empty()),
            key,
            since_ms: instant("since", &params.since)?,
            until_ms: instant("until", &params.until)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.kind.is_none()
            && self.actor.is_none()
            && self.key.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
    }

    /// Whether an entry line matches; checkpoint lines never do.
    fn matches(&self, line: &str) -> bool {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        let Some(kind) = entry.get("kind").and_then(serde_json::Value::as_str) else {
            return false;
        };
        if let Some(wanted) = &self.kind {
            let hit = match wanted.strip_suffix('*') {
                Some(prefix) => kind.starts_with(prefix),
                None => kind == wanted,
            };
            if !hit {
                return false;
            }
        }
        if let Some(wanted) = &self.actor
            && entry.get("actor").and_then(serde_json::Value::as_str) != Some(wanted.as_str())
        {
            return false;
        }
        if let Some(wanted) = &self.key
            && !entry.get("data").is_some_and(|data| mentions(data, wanted))
        {
            return false;
        }
        if self.since_ms.is_some() || self.until_ms.is_some() {
            let at_ms = entry
                .get("at")
                .and_then(serde_json::Value::as_str)
                .and_then(|at| super::range::parse_instant(at).ok())
                .map(super::range::unix_ms);
            let Some(at_ms) = at_ms else {
                return false;
            };
            if self.since_ms.is_some_and(|since| at_ms < since)
                || self.until_ms.is_some_and(|until| at_ms >= until)
            {
                return false;
            }
        }
        true
    }
}

/// Whether `value` holds the string `wanted` anywhere (as a value, at any
/// depth).
fn mentions(value: &serde_json::Value, wanted: &str) -> bool {
    match value {
        serde_json::Value::String(text) => text == wanted,
        serde_json::Value::Array(items) => items.iter().any(|item| mentions(item, wanted)),
        serde_json::Value::Object(fields) => fields.values().any(|item| mentions(item, wanted)),
        _ => false,
    }
}

fn lines_response(lines: String) -> Response {
    let mut response = lines.into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

fn with_seq_header(mut response: Response, name: &'static str, seq: u64) -> Response {
    response.headers_mut().insert(name, HeaderValue::from(seq));
    response
}

/// The head's sequence number (0 for an empty log), and the sequence
/// numbers `since`/`until` bound, from the store's index of entry times:
/// `(after, through)`, entries in `after < seq <= through`; `None`: no
/// entry can match.
async fn seq_bounds(
    state: &AppState,
    filter: &Filter,
) -> Result<(u64, Option<(u64, u64)>), AdminError> {
    let Some((head, _)) = state.store.audit_head().await.map_err(AdminError::store)? else {
        return Ok((0, None));
    };
    let after = match filter.since_ms {
        None => 0,
        Some(since) => match state
            .store
            .audit_seq_since(since)
            .await
            .map_err(AdminError::store)?
        {
            Some(first) => first.saturating_sub(1),
            None => return Ok((head, None)),
        },
    };
    let through = match filter.until_ms {
        None => head,
        Some(until) => match state
            .store
            .audit_seq_since(until)
            .await
            .map_err(AdminError::store)?
        {
            Some(first) => first.saturating_sub(1),
            None => head,
        },
    };
    Ok((head, (after < through).then_some((after, through))))
}

/// Entry lines with `after < seq <= through`, checkpoints left out.
async fn entries_between(
    state: &AppState,
    after: u64,
    through: u64,
) -> Result<Vec<(u64, String)>, AdminError> {
    let count = u32::try_from(through.saturating_sub(after)).unwrap_or(u32::MAX);
    let lines = state
        .store
        .audit_lines(after, count)
        .await
        .map_err(AdminError::store)?;
    // A checkpoint follows the entry it covers, with the same number.
    let mut entries: Vec<(u64, String)> = Vec::with_capacity(lines.len());
    for (seq, line) in lines {
        if seq <= through && entries.last().is_none_or(|(last, _)| *last != seq) {
            entries.push((seq, line));
        }
    }
    Ok(entries)
}

/// Entries (and their checkpoints) after a sequence number: what `audit
/// tail -f` polls. With `last`, the newest matching entries instead,
/// scanning backwards from the head (or from `before`); with any filter,
/// entries only. Either way one request reads at most [`SCAN_BUDGET`]
/// entries, and a header says where to go on.
pub(super) async fn tail(
    State(state): State<Arc<AppState>>,
    params: Result<Query<TailParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(params) = params.map_err(|error| {
        AdminError::bad_request(format!("invalid query: {}", error.body_text()))
    })?;
    let filter = Filter::from_params(&params)?;
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    match params.last {
        Some(last) => {
            if params.after.is_some() || params.limit.is_some() {
                return Err(AdminError::bad_request(
                    "`last` pages backwards from the newest entry; it does not take `after` or `limit`",
                ));
            }
            backward(&state, &filter, last.clamp(1, PAGE), params.before).await
        }
        None if params.before.is_some() => Err(AdminError::bad_request(
            "`before` goes with `last` (the newest entries before it)",
        )),
        None if filter.is_empty() => {
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
        None => {
            forward(
                &state,
                &filter,
                params.after.unwrap_or(0),
                params.limit.unwrap_or(1000).clamp(1, PAGE),
            )
            .await
        }
    }
}

/// The newest `last` matching entries below `before`, oldest first.
async fn backward(
    state: &AppState,
    filter: &Filter,
    last: u32,
    before: Option<u64>,
) -> Result<Response, AdminError> {
    let (head, bounds) = seq_bounds(state, filter).await?;
    let Some((floor, through)) = bounds else {
        return Ok(with_seq_header(
            lines_response(String::new()),
            SCANNED_TO_HEADER,
            head,
        ));
    };
    // Entries with `floor < seq <= top` are still to scan.
    let mut top = before.map_or(through, |before| through.min(before.saturating_sub(1)));
    let wanted = last as usize;
    let mut found: Vec<String> = Vec::new();
    let mut scanned = 0u64;
    while top > floor && found.len() < wanted && scanned < SCAN_BUDGET {
        let bottom = top.saturating_sub(SCAN_CHUNK).max(floor);
        let entries = entries_between(state, bottom, top).await?;
        scanned += top - bottom;
        let mut next_top = bottom;
        for (seq, line) in entries.into_iter().rev() {
            if filter.matches(&line) {
                found.push(line);
                if found.len() == wanted {
                    next_top = seq - 1;
                    break;
                }
            }
        }
        top = next_top;
    }
    let mut out = String::new();
    for line in found.iter().rev() {
        out.push_str(line);
        out.push('\n');
    }
    // A follower goes on from the head, whatever this page showed.
    let mut response = with_seq_header(lines_response(out), SCANNED_TO_HEADER, head);
    if top > floor {
        response = with_seq_header(response, NEXT_BEFORE_HEADER, top + 1);
    }
    Ok(response)
}

/// Matching entries after `after`, oldest first, at most `limit`.
async fn forward(
    state: &AppState,
    filter: &Filter,
    after: u64,
    limit: u32,
) -> Result<Response, AdminError> {
    let (_, bounds) = seq_bounds(state, filter).await?;
    let (floor, through) = bounds.unwrap_or((after, after));
    // Entries with `seq <= position` are done.
    let mut position = after.max(floor);
    let wanted = limit as usize;
    let mut found: Vec<String> = Vec::new();
    let mut scanned = 0u64;
    while position < through && found.len() < wanted && scanned < SCAN_BUDGET {
        let end = through.min(position + SCAN_CHUNK);
        let entries = entries_between(state, position, end).await?;
        scanned += end - position;
        let mut next = end;
        for (seq, line) in entries {
            if filter.matches(&line) {
                found.push(line);
                if found.len() == wanted {
                    next = seq;
                    break;
                }
            }
        }
        position = next;
    }
    let mut out = String::new();
    for line in &found {
        out.push_str(line);
        out.push('\n');
    }
    Ok(with_seq_header(
        lines_response(out),
        SCANNED_TO_HEADER,
        position.max(after),
    ))
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
