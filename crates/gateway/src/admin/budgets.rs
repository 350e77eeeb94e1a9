//! `/admin/v1/budgets`: budgets for projects and environments (a key's own
//! budgets are set when it is created), and where every budget stands.

use std::sync::Arc;

use axum::extract::{Path, State};
use bytes::Bytes;
use http::StatusCode;
use keyforge_control::BudgetStatus;
use keyforge_store::BudgetRecord;
use keyforge_types::{BudgetId, BudgetScope};

use super::api::{BudgetList, BudgetView, SetBudgetRequest, UpdateKeyRequest};
use super::{AdminError, parse_json, reload, rfc3339};
use crate::state::AppState;

pub(super) fn view(status: &BudgetStatus) -> BudgetView {
    let limit = status.limit.amount.0;
    let percent = if limit > 0 {
        // One decimal, computed in integers: 1000 * spent / limit.
        let tenths = i128::from(status.spent.0) * 1000 / i128::from(limit);
        f64::from(i32::try_from(tenths).unwrap_or(i32::MAX)) / 10.0
    } else {
        0.0
    };
    BudgetView {
        id: status.id.clone(),
        scope: status.scope.clone(),
        limit: status.limit,
        limit_usd: status.limit.to_string(),
        spent_nano_usd: status.spent.0,
        spent_usd: status.spent.to_string(),
        reserved_nano_usd: status.reserved.0,
        percent_used: percent,
        period_start: rfc3339(status.period_start),
        resets_at: status.resets_at.map(rfc3339),
    }
}

pub(super) async fn list(State(state): State<Arc<AppState>>) -> axum::Json<BudgetList> {
    let now = state.clock.now();
    let snapshot = state.snapshot.load_full();
    let mut budgets: Vec<BudgetView> = Vec::with_capacity(snapshot.budgets.len());
    for cell in snapshot.budgets.values() {
        // In cluster mode the spend is the whole cluster's, from Redis;
        // this instance's own figures while Redis cannot be reached.
        let status = match &state.cluster {
            Some(cluster) => match cluster.counters.status(cell, now).await {
                Ok(status) => status,
                Err(_) => cell.status(now),
            },
            None => cell.status(now),
        };
        budgets.push(view(&status));
    }
    budgets.sort_by(|a, b| (&a.scope, a.limit.period).cmp(&(&b.scope, b.limit.period)));
    axum::Json(BudgetList { budgets })
}

pub(super) async fn set(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<BudgetView>), AdminError> {
    let request: SetBudgetRequest = parse_json(&body)?;
    if request.limit.amount.0 <= 0 {
        return Err(AdminError::bad_request(
            "a budget must be greater than zero",
        ));
    }
    if let BudgetScope::Key(id) = &request.scope {
        return set_for_key(&state, id, request.limit).await;
    }
    if let BudgetScope::Project(project) = &request.scope {
        super::edit::refuse_secret(&state, &state.snapshot.load(), "project", project.as_str())?;
    }
    let now = state.clock.now();
    let record = BudgetRecord {
        id: BudgetId::generate(),
        scope: request.scope,
        limit: request.limit,
        created_at: now,
    };
    let _guard = state.admin_write.lock().await;
    super::audit(
        &state,
        "budget.set",
        serde_json::json!({"scope": record.scope, "limit": record.limit.to_string()}),
    )
    .await?;
    // A new budget counts this period's spend from the ledger: write out
    // what is still queued first.
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    let stored = state
        .store
        .upsert_budget(&record)
        .await
        .map_err(AdminError::store)?;
    reload(&state).await?;
    let cell = state
        .snapshot
        .load()
        .budgets
        .get(&stored.id)
        .cloned()
        .ok_or_else(|| AdminError::internal("the budget is missing from the reloaded snapshot"))?;
    let created = stored.id == record.id;
    tracing::info!(budget_id = %stored.id, scope = %stored.scope, limit = %stored.limit, created, "budget set");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view(&cell.status(now)))))
}

/// `budget set --key`: a change to the key like `key update --budget`,
/// through the same checks (not revoked, within its parent, not below a
/// child), so the two paths can never disagree.
async fn set_for_key(
    state: &AppState,
    id: &keyforge_types::KeyId,
    limit: keyforge_types::BudgetLimit,
) -> Result<(StatusCode, axum::Json<BudgetView>), AdminError> {
    let scope = BudgetScope::Key(id.clone());
    let own = |snapshot: &crate::snapshot::Snapshot| {
        snapshot.budgets.values().find_map(|cell| {
            let status = cell.status(state.clock.now());
            (status.scope == scope && status.limit.period == limit.period).then_some(status)
        })
    };
    let _guard = state.admin_write.lock().await;
    let existed = own(&state.snapshot.load()).is_some();
    let request = UpdateKeyRequest {
        budgets: vec![limit],
        ..UpdateKeyRequest::default()
    };
    super::edit::apply_key_update(state, id, &request).await?;
    let status = own(&state.snapshot.load())
        .ok_or_else(|| AdminError::internal("the budget is missing from the reloaded snapshot"))?;
    tracing::info!(budget_id = %status.id, scope = %status.scope, limit = %status.limit, created = !existed, "budget set");
    let code = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, axum::Json(view(&status))))
}

pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let id = BudgetId::parse(&id).map_err(|error| AdminError::bad_request(error.to_string()))?;
    let _guard = state.admin_write.lock().await;
    super::audit(&state, "budget.remove", serde_json::json!({"id": id})).await?;
    if !state
        .store
        .delete_budget(&id)
        .await
        .map_err(AdminError::store)?
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "budget_not_found",
            format!("no budget with id {id}"),
        ));
    }
    reload(&state).await?;
    tracing::info!(budget_id = %id, "budget removed");
    Ok(StatusCode::NO_CONTENT)
}
