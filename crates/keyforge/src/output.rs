//! Human and JSON output of the admin commands. Writes go through a locked
//! stdout so a closed pipe is an error, not a panic.

use std::io::Write;

use keyforge_gateway::admin::api::{
    AlertView, AlertWebhookView, BudgetView, CreatedKey, DoctorReport, KeyView, PriceList,
    ProviderView, RevokeResult, RotatedKey, RotationStatus, StatusReport, UsageReport,
    UsageRowView,
};
use serde::Serialize;

pub(crate) fn json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn line(text: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Warnings of an admin change, on stderr (stdout stays the answer).
pub(crate) fn warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

pub(crate) fn provider_added(view: &ProviderView) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Added provider {} ({}) in environment {} as {}",
        view.name, view.kind, view.env, view.id
    )?;
    writeln!(out, "Upstream: {}", view.base_url)?;
    writeln!(
        out,
        "Its API key is stored encrypted and will not be shown again."
    )?;
    Ok(())
}

pub(crate) fn provider_table(providers: &[ProviderView]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = providers
        .iter()
        .map(|p| {
            vec![
                p.name.to_string(),
                p.kind.clone(),
                p.env.to_string(),
                p.base_url.clone(),
                format!("v{}", p.credential_version),
                p.id.to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "KIND", "ENV", "BASE URL", "KEY", "ID"],
        &rows,
        "no providers yet: add one with `keyforge provider add NAME --kind openai --env dev`",
    )
}

fn scope_text(key: &KeyView) -> String {
    let providers = if key.scope.providers.is_empty() {
        "all providers".to_owned()
    } else {
        key.scope
            .providers
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let models = if key.scope.models.is_empty() {
        "all models".to_owned()
    } else {
        key.scope
            .models
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{providers}; {models}")
}

pub(crate) fn key_created(created: &CreatedKey) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let view = &created.view;
    writeln!(
        out,
        "Created key {} ({}) for environment {}; scope: {}",
        view.id,
        view.name,
        view.env,
        scope_text(view)
    )?;
    if let Some(expires) = &view.expires_at {
        writeln!(out, "Expires: {expires}")?;
    }
    if let Some(project) = &view.project {
        writeln!(out, "Project: {project}")?;
    }
    if let Some(parent) = &view.parent {
        writeln!(out, "Parent: {parent} (this key can only narrow it)")?;
    }
    if view.can_mint {
        writeln!(out, "May mint child keys")?;
    }
    let limits = limits_text(view);
    if limits != "none" {
        writeln!(out, "Limits: {limits}")?;
    }
    for budget in &view.budgets {
        writeln!(
            out,
            "Budget: {} ({})",
            budget.limit_usd,
            budget_scope(budget)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "    {}", created.key)?;
    writeln!(out)?;
    writeln!(
        out,
        "This is the only time the key is shown. Store it in your app's secret store; KeyForge keeps only a hash."
    )?;
    Ok(())
}

pub(crate) fn doctor(report: &DoctorReport) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Rotation policy: provider keys and owner tokens at most {} days old.",
        report.max_age_days
    )?;
    if report.findings.is_empty() {
        writeln!(
            out,
            "All good: nothing overdue, no rotation left half done."
        )?;
    }
    for finding in &report.findings {
        writeln!(
            out,
            "{:<8} {}: {}",
            finding.severity, finding.subject, finding.message
        )?;
    }
    Ok(())
}

pub(crate) fn status(report: &StatusReport) -> anyhow::Result<()> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "KeyForge: {} providers, {} virtual keys; provider health over the last {}:",
            report.providers.len(),
            report.virtual_keys,
            report.window
        )?;
        if report.audit_failing {
            writeln!(
                out,
                "WARNING: the audit log could not be written; admin changes are refused until it can (see the gateway's log)."
            )?;
        }
        match report.redis.as_deref() {
            Some("reachable") => writeln!(
                out,
                "Cluster admission: Redis reachable; budgets and limits are shared by every instance."
            )?,
            Some(_) => writeln!(
                out,
                "WARNING: Redis is unreachable; admission follows [redis] on_unavailable (503 admission_unavailable, or this instance's share of each limit) and reconnects by itself."
            )?,
            None => {}
        }
        if let Some(changes) = &report.changes {
            if changes.listener == "listening" {
                writeln!(
                    out,
                    "Cluster changes: listening; {} reloads for other instances' changes, {} reconnects of the listener (each followed by a reload), {} changes found by the {}s check; at change {}.",
                    changes.reloads,
                    changes.reconnects,
                    changes.found_by_check,
                    changes.check_interval_secs,
                    changes.seq,
                )?;
            } else {
                writeln!(
                    out,
                    "WARNING: the change listener is disconnected from PostgreSQL; it reconnects by itself and reloads then, and other instances' changes are checked for every {}s meanwhile ({} reconnects so far).",
                    changes.check_interval_secs, changes.reconnects,
                )?;
            }
            if changes.reload_failures > 0 {
                writeln!(
                    out,
                    "WARNING: {} reloads for other instances' changes failed (see the gateway's log); they are retried every second.",
                    changes.reload_failures
                )?;
            }
        }
        let ledger = &report.ledger;
        writeln!(
            out,
            "Ledger: {} of {} queued, {} waiting for room, {} written in {} batches, {} dropped; {} requests refused for backlog, {} raw rows pruned.",
            ledger.queue_depth,
            ledger.queue_capacity,
            ledger.waiting_for_room,
            ledger.written_total,
            ledger.batches_total,
            ledger.dropped_total,
            ledger.refused_total,
            ledger.pruned_total,
        )?;
        if ledger.waiting_for_room > ledger.waiting_limit {
            writeln!(
                out,
                "WARNING: the ledger is not keeping up; keys with a budget are refused (503 ledger_backlog) until it catches up."
            )?;
        }
    }
    let rows: Vec<Vec<String>> = report
        .providers
        .iter()
        .map(|p| {
            vec![
                p.name.to_string(),
                p.env.to_string(),
                p.verdict.clone(),
                p.detail.clone(),
            ]
        })
        .collect();
    table(
        &["PROVIDER", "ENV", "STATE", "DETAIL"],
        &rows,
        "no providers yet",
    )
}

pub(crate) fn key_rotated(rotated: &RotatedKey) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Rotated key {} ({}): its id, scope, budgets and history stay the same.",
        rotated.view.id, rotated.view.name
    )?;
    match &rotated.grace_until {
        Some(until) => writeln!(out, "The previous secret keeps working until {until}.")?,
        None => writeln!(
            out,
            "This rotation was done before (same idempotency key): here is its successor again."
        )?,
    }
    writeln!(out)?;
    writeln!(out, "    {}", rotated.key)?;
    writeln!(out)?;
    writeln!(
        out,
        "Deploy the new key before the grace period ends. KeyForge keeps only a hash."
    )?;
    Ok(())
}

pub(crate) fn key_table(keys: &[KeyView]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.name.clone(),
                k.env.to_string(),
                k.prefix.clone(),
                k.status.clone(),
                k.expires_at.clone().unwrap_or_else(|| "never".into()),
                scope_text(k),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "ENV", "PREFIX", "STATUS", "EXPIRES", "SCOPE"],
        &rows,
        "no keys yet: create one with `keyforge key create --name NAME --env dev`",
    )
}

pub(crate) fn key_detail(key: &KeyView) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for (label, value) in [
        ("id", key.id.to_string()),
        ("name", key.name.clone()),
        ("environment", key.env.to_string()),
        ("prefix", key.prefix.clone()),
        ("status", key.status.clone()),
        ("scope", scope_text(key)),
        ("created", key.created_at.clone()),
        (
            "expires",
            key.expires_at.clone().unwrap_or_else(|| "never".into()),
        ),
        (
            "revoked",
            key.revoked_at.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "project",
            key.project
                .as_ref()
                .map_or_else(|| "-".into(), ToString::to_string),
        ),
        ("limits", limits_text(key)),
        ("on anomaly", key.on_anomaly.as_str().to_owned()),
        (
            "parent",
            key.parent
                .as_ref()
                .map_or_else(|| "-".into(), ToString::to_string),
        ),
        (
            "can mint",
            if key.can_mint { "yes" } else { "no" }.to_owned(),
        ),
        ("origin", key.origin.clone()),
    ] {
        writeln!(out, "{label:<12} {value}")?;
    }
    if let (Some(at), Some(reason)) = (&key.suspended_at, &key.suspended_reason) {
        writeln!(out, "{:<12} {at}: {reason}", "suspended")?;
    }
    for budget in &key.budgets {
        writeln!(
            out,
            "{:<12} {} of {} spent ({}%), {}",
            "budget",
            budget.spent_usd,
            budget.limit_usd,
            budget.percent_used,
            budget_scope(budget)
        )?;
    }
    Ok(())
}

fn limits_text(key: &KeyView) -> String {
    let mut parts = Vec::new();
    if let Some(rpm) = key.limits.rpm {
        parts.push(format!("{rpm} requests/min"));
    }
    if let Some(tpm) = key.limits.tpm {
        parts.push(format!("{tpm} tokens/min"));
    }
    if let Some(max) = key.limits.max_parallel {
        parts.push(format!("{max} in flight"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

fn budget_scope(budget: &BudgetView) -> String {
    budget.scope.to_string()
}

pub(crate) fn webhook_table(webhooks: &[AlertWebhookView]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = webhooks
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                w.url.clone(),
                w.thresholds
                    .iter()
                    .map(|t| format!("{t}%"))
                    .collect::<Vec<_>>()
                    .join(","),
                w.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "WEBHOOK", "THRESHOLDS", "CREATED"],
        &rows,
        "no alert webhooks: `keyforge alerts add --webhook -` (reads the URL from stdin)",
    )
}

/// One row per webhook a test alert went to: delivered or failed, with
/// the HTTP status (the URL shown as scheme and host only).
pub(crate) fn test_alerts(
    outcomes: &[keyforge_gateway::admin::api::TestAlertOutcome],
) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.webhook_id.to_string(),
                o.url.clone(),
                if o.delivered { "delivered" } else { "failed" }.to_owned(),
                o.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                o.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["ID", "WEBHOOK", "RESULT", "HTTP", "ERROR"],
        &rows,
        "no alert webhooks to test: `keyforge alerts add --webhook -` (reads the URL from stdin)",
    )
}

pub(crate) fn alert_log(alerts: &[AlertView]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            let deliveries = if a.deliveries.is_empty() {
                "-".to_owned()
            } else {
                a.deliveries
                    .iter()
                    .map(|d| format!("{}:{}x{}", d.webhook_id, d.status, d.attempts))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            vec![a.at.clone(), a.kind.clone(), a.message.clone(), deliveries]
        })
        .collect();
    table(
        &["AT", "KIND", "MESSAGE", "DELIVERIES"],
        &rows,
        "no alerts raised yet",
    )
}

pub(crate) fn rotation_status(status: &RotationStatus) -> anyhow::Result<()> {
    let provider = &status.provider;
    {
        let mut out = std::io::stdout().lock();
        write!(
            out,
            "Provider {} ({}, environment {}, {})",
            provider.name, provider.kind, provider.env, provider.id
        )?;
        if status.rollout_percent > 0 {
            write!(
                out,
                "; the pending key serves {} % of requests",
                status.rollout_percent
            )?;
        }
        writeln!(out)?;
    }
    let rows: Vec<Vec<String>> = status
        .versions
        .iter()
        .map(|v| {
            vec![
                format!("v{}", v.version),
                v.stage.clone(),
                v.created_at.clone(),
                format!("{}d", v.age_days),
                v.requests_last_hour.to_string(),
                v.requests_last_day.to_string(),
                v.requests_last_week.to_string(),
                v.last_used.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "VERSION",
            "STAGE",
            "CREATED",
            "AGE",
            "LAST HOUR",
            "LAST DAY",
            "LAST WEEK",
            "LAST USED",
        ],
        &rows,
        "no key versions",
    )
}

pub(crate) fn budget_set(budget: &BudgetView) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Budget {} for {}: {}; {} spent this period ({}%).",
        budget.id,
        budget_scope(budget),
        budget.limit_usd,
        budget.spent_usd,
        budget.percent_used
    )?;
    Ok(())
}

pub(crate) fn budget_table(budgets: &[BudgetView]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = budgets
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                budget_scope(b),
                b.limit_usd.clone(),
                b.spent_usd.clone(),
                format!("{}%", b.percent_used),
                keyforge_types::NanoUsd(b.reserved_nano_usd).to_string(),
                b.resets_at.clone().unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    table(
        &["ID", "FOR", "LIMIT", "SPENT", "USED", "IN FLIGHT", "RESETS"],
        &rows,
        "no budgets yet: `keyforge budget set --project NAME 50usd/month`, or `key create --budget 5usd/day`",
    )
}

pub(crate) fn revoked(result: &RevokeResult) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match result.outcome.as_str() {
        "already_revoked" => writeln!(out, "Key {} was already revoked.", result.id)?,
        _ => writeln!(
            out,
            "Revoked key {}: it is refused from the next request on.",
            result.id
        )?,
    }
    if !result.descendants.is_empty() {
        let ids: Vec<String> = result.descendants.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "Also revoked its {} descendant key(s): {}",
            ids.len(),
            ids.join(", ")
        )?;
    }
    Ok(())
}

/// The window of a usage report for people: `since 2026-11-01T00:00:00Z`
/// or `from 2026-11-01T00:00:00Z until 2026-12-01T00:00:00Z`, and the
/// key it is limited to, by name.
fn usage_window(report: &UsageReport) -> String {
    let window = match &report.until {
        Some(until) => format!("from {} until {until}", report.since),
        None => format!("since {}", report.since),
    };
    match &report.key {
        Some(key) => format!(
            "{window}, key {} ({})",
            key.id,
            key_label(&key.name, &key.env, key.project.as_deref())
        ),
        None => window,
    }
}

/// `checkout, env prod, project shop`.
fn key_label(name: &str, env: &str, project: Option<&str>) -> String {
    match project {
        Some(project) => format!("{name}, env {env}, project {project}"),
        None => format!("{name}, env {env}"),
    }
}

pub(crate) fn usage_table(report: &UsageReport) -> anyhow::Result<()> {
    let by_key = report.group_by == "key";
    let row = |r: &UsageRowView| {
        let mut flags = Vec::new();
        if r.estimated > 0 {
            flags.push(format!("{} estimated (cut streams)", r.estimated));
        }
        if r.fallback_priced > 0 {
            flags.push(format!(
                "{} at fallback price (model not in the price table)",
                r.fallback_priced
            ));
        }
        if r.unmetered > 0 {
            flags.push(format!(
                "{} unmetered (no usage or priced unit in the response: charged the per-request fallback)",
                r.unmetered
            ));
        }
        if r.client_cancelled > 0 {
            flags.push(format!(
                "{} cancelled by the client (billed: the provider ran them)",
                r.client_cancelled
            ));
        }
        if r.errors > 0 {
            flags.push(format!("{} errors", r.errors));
        }
        let mut cells = vec![r.group.clone()];
        if by_key {
            cells.push(r.key_name.clone().unwrap_or_else(|| "-".to_owned()));
            cells.push(r.project.clone().unwrap_or_else(|| "-".to_owned()));
        }
        cells.extend([
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.cached_input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cost_usd.clone(),
            flags.join("; "),
        ]);
        cells
    };
    let mut rows: Vec<Vec<String>> = report.rows.iter().map(row).collect();
    if rows.is_empty() {
        return table(&[], &[], &format!("no requests {}", usage_window(report)));
    }
    rows.push(row(&report.total));
    writeln!(
        std::io::stdout().lock(),
        "Usage {}, by {}:",
        usage_window(report),
        report.group_by
    )?;
    let group = report.group_by.to_uppercase();
    let mut headers = vec![group.as_str()];
    if by_key {
        headers.extend(["NAME", "PROJECT"]);
    }
    headers.extend(["REQUESTS", "INPUT", "CACHED", "OUTPUT", "COST", "NOTES"]);
    table(&headers, &rows, "")
}

/// The columns of `usage --format csv`, after the group (and, by key, its
/// name, environment and project).
const USAGE_CSV_COLUMNS: [&str; 13] = [
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_nano_usd",
    "estimated",
    "fallback_priced",
    "unmetered",
    "client_cancelled",
    "errors",
];

/// `usage --format csv`: a header row, then one row per group, no total
/// (a spreadsheet sums); CRLF line ends and RFC 4180 quoting. Costs in
/// dollars without the `$` and in nano-USD. Grouped by key, the key's
/// name, environment and project follow its id.
pub(crate) fn usage_csv(report: &UsageReport) -> anyhow::Result<()> {
    let by_key = report.group_by == "key";
    let mut out = std::io::stdout().lock();
    let mut header = vec![report.group_by.as_str()];
    if by_key {
        header.extend(["key_name", "env", "project"]);
    }
    header.extend(USAGE_CSV_COLUMNS);
    write!(out, "{}\r\n", csv_row(header.iter().copied()))?;
    for r in &report.rows {
        let mut cells = vec![r.group.clone()];
        if by_key {
            for cell in [&r.key_name, &r.env, &r.project] {
                cells.push(cell.clone().unwrap_or_default());
            }
        }
        cells.extend([
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.cached_input_tokens.to_string(),
            r.cache_write_tokens.to_string(),
            r.output_tokens.to_string(),
            r.reasoning_tokens.to_string(),
            r.cost_usd.trim_start_matches('$').to_owned(),
            r.cost_nano_usd.to_string(),
            r.estimated.to_string(),
            r.fallback_priced.to_string(),
            r.unmetered.to_string(),
            r.client_cancelled.to_string(),
            r.errors.to_string(),
        ]);
        write!(out, "{}\r\n", csv_row(cells.iter().map(String::as_str)))?;
    }
    Ok(())
}

/// One CSV record (RFC 4180): a field holding a comma, a double quote, CR
/// or LF is quoted, its quotes doubled.
fn csv_row<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    fields
        .map(|field| {
            if field.contains([',', '"', '\r', '\n']) {
                format!("\"{}\"", field.replace('"', "\"\""))
            } else {
                field.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn price_table(list: &PriceList) -> anyhow::Result<()> {
    writeln!(
        std::io::stdout().lock(),
        "Price table {} (USD per million tokens)",
        list.version
    )?;
    let rows: Vec<Vec<String>> = list
        .prices
        .iter()
        .chain(std::iter::once(&list.fallback))
        .map(|p| {
            vec![
                p.api.clone(),
                p.model.clone(),
                p.since.clone(),
                p.input.clone(),
                p.cached_input.clone(),
                p.cache_write.clone(),
                p.output.clone(),
                p.origin.clone(),
            ]
        })
        .collect();
    table(
        &[
            "API",
            "MODEL",
            "SINCE",
            "INPUT",
            "CACHED",
            "CACHE WRITE",
            "OUTPUT",
            "ORIGIN",
        ],
        &rows,
        "",
    )
}

fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        writeln!(out, "{empty}")?;
        return Ok(());
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// An admin's token, the one time it is shown (`admin add`,
/// `admin rotate-token`).
pub(crate) fn admin_token(
    created: &keyforge_gateway::admin::api::AdminWithToken,
    what: &str,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let admin = &created.admin;
    writeln!(out, "{what} admin {} ({})", admin.name, admin.role)?;
    writeln!(out)?;
    writeln!(out, "    {}", created.token)?;
    writeln!(out)?;
    writeln!(
        out,
        "This is the only time the token is shown. Store it in a password manager; the admin uses it as KEYFORGE_ADMIN_TOKEN. KeyForge keeps only a hash."
    )?;
    Ok(())
}

pub(crate) fn admins(
    admins: &[keyforge_gateway::admin::api::AdminView],
    sessions: &[keyforge_gateway::admin::sessions::SessionView],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<9} {:<8} {:<21} CREATED BY",
        "NAME", "ROLE", "STATUS", "CREATED"
    )?;
    for admin in admins {
        writeln!(
            out,
            "{:<24} {:<9} {:<8} {:<21} {}",
            admin.name.as_str(),
            admin.role.as_str(),
            admin.status,
            admin.created_at,
            admin.created_by
        )?;
    }
    if !sessions.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<24} {:<9} {:<8} {:<21} IDENTITY",
            "SESSION", "ROLE", "STATUS", "EXPIRES"
        )?;
        for session in sessions {
            writeln!(
                out,
                "{:<24} {:<9} {:<8} {:<21} {}",
                session.name,
                session.role.as_str(),
                session.status,
                session.expires_at,
                session.identity
            )?;
        }
    }
    Ok(())
}

/// An instant as RFC 3339, UTC (`2026-11-01T09:30:00Z`).
pub(crate) fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One audit entry as a line for people: time, sequence number, kind,
/// actor, the key it names (`key_a +2` when several) and a short summary
/// of its data. `None` for lines that are no entry (checkpoints).
pub(crate) fn audit_text_line(line: &str) -> Option<String> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
    let kind = text("kind")?;
    let seq = entry.get("seq").and_then(serde_json::Value::as_u64)?;
    let data = entry.get("data").cloned().unwrap_or_default();
    let mut keys: Vec<&str> = Vec::new();
    key_ids(&data, &mut keys);
    let key = match keys.as_slice() {
        [] => "-".to_owned(),
        [one] => (*one).to_owned(),
        [first, rest @ ..] => format!("{first} +{}", rest.len()),
    };
    Some(format!(
        "{}  #{seq:<6} {kind:<28} {:<16} {key:<24} {}",
        text("at").unwrap_or("-"),
        text("actor").unwrap_or("-"),
        audit_summary(kind, &data)
    ))
}

/// Every distinct `key_...` id among the values of `value`, in order.
fn key_ids<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(text)
            if text.starts_with("key_") && !out.contains(&text.as_str()) =>
        {
            out.push(text);
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| key_ids(item, out)),
        serde_json::Value::Object(fields) => fields.values().for_each(|item| key_ids(item, out)),
        _ => {}
    }
}

/// At most this many characters of an entry's summary.
const SUMMARY_CHARS: usize = 100;

/// `key.use`: how many uses and their outcomes; otherwise the data's
/// top-level fields as `name=value` (lists as their length).
fn audit_summary(kind: &str, data: &serde_json::Value) -> String {
    let summary = if kind == "key.use"
        && let Some(uses) = data.get("uses").and_then(serde_json::Value::as_array)
    {
        let mut outcomes: std::collections::BTreeMap<&str, usize> = Default::default();
        for one in uses {
            let outcome = one
                .get("outcome")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            *outcomes.entry(outcome).or_default() += 1;
        }
        let outcomes: Vec<String> = outcomes
            .iter()
            .map(|(outcome, count)| format!("{outcome} {count}"))
            .collect();
        format!(
            "{} use{} ({})",
            uses.len(),
            if uses.len() == 1 { "" } else { "s" },
            outcomes.join(", ")
        )
    } else if let Some(fields) = data.as_object() {
        fields
            .iter()
            .filter_map(|(name, value)| match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(text) => Some(format!("{name}={text}")),
                serde_json::Value::Array(items) => Some(format!("{name}=[{}]", items.len())),
                serde_json::Value::Object(_) => Some(format!("{name}={{..}}")),
                other => Some(format!("{name}={other}")),
            })
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        String::new()
    };
    if summary.chars().count() > SUMMARY_CHARS {
        let cut: String = summary.chars().take(SUMMARY_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        summary
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        // (fields, record)
        let cases: &[(&[&str], &str)] = &[
            (&["a", "b"], "a,b"),
            (&["a,b", "c"], "\"a,b\",c"),
            (&["say \"hi\""], "\"say \"\"hi\"\"\""),
            (&["two\nlines", ""], "\"two\nlines\","),
            (&["cr\r"], "\"cr\r\""),
        ];
        for (fields, record) in cases {
            assert_eq!(
                super::csv_row(fields.iter().copied()),
                *record,
                "{fields:?}"
            );
        }
    }
}
