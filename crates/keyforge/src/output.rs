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
        "Rotation policy: provider keys at most {} days old.",
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

pub(crate) fn usage_table(report: &UsageReport) -> anyhow::Result<()> {
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
        vec![
            r.group.clone(),
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.cached_input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cost_usd.clone(),
            flags.join("; "),
        ]
    };
    let mut rows: Vec<Vec<String>> = report.rows.iter().map(row).collect();
    if rows.is_empty() {
        return table(&[], &[], &format!("no requests since {}", report.since));
    }
    rows.push(row(&report.total));
    writeln!(
        std::io::stdout().lock(),
        "Usage since {}, by {}:",
        report.since,
        report.group_by
    )?;
    table(
        &[
            report.group_by.to_uppercase().as_str(),
            "REQUESTS",
            "INPUT",
            "CACHED",
            "OUTPUT",
            "COST",
            "NOTES",
        ],
        &rows,
        "",
    )
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

pub(crate) fn admins(admins: &[keyforge_gateway::admin::api::AdminView]) -> anyhow::Result<()> {
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
    Ok(())
}
