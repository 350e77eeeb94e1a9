//! Copying an embedded SQLite store into an empty PostgreSQL store, row by
//! row and byte for byte: every table, MACs included (both stores encode
//! the MAC input alike, see [`crate::row_mac`]), ledger and alert ids kept,
//! in one PostgreSQL transaction (all or nothing). The caller then checks
//! the copy with the master key (row MACs, audit chain, ledger).

use sqlx::Row;
use sqlx::postgres::Postgres;
use sqlx::sqlite::SqliteRow;

use crate::row_mac::{Kind, Value};
use crate::{PgStore, SqliteStore, StoreError};

use Kind::{Blob, Integer, Text};

/// One table to copy: its name and columns in order, with their kinds.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// An identity column whose values are copied (its sequence is moved
    /// past them afterwards).
    identity: Option<&'static str>,
}

/// Every table of schema v9, parents before children.
const TABLES: &[Table] = &[
    Table {
        name: "meta",
        columns: &[("name", Text), ("value", Blob)],
        identity: None,
    },
    Table {
        name: "providers",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("env", Text),
            ("kind", Text),
            ("base_url", Text),
            ("created_at", Integer),
            ("rollout_percent", Integer),
            ("mac", Blob),
        ],
        identity: None,
    },
    Table {
        name: "provider_credentials",
        columns: &[
            ("provider_id", Text),
            ("version", Integer),
            ("stage", Text),
            ("sealed", Blob),
            ("created_at", Integer),
            ("mac", Blob),
        ],
        identity: None,
    },
    Table {
        name: "virtual_keys",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("env", Text),
            ("hash", Blob),
            ("prefix", Text),
            ("scope", Text),
            ("created_at", Integer),
            ("expires_at", Integer),
            ("revoked_at", Integer),
            ("project", Text),
            ("rpm", Integer),
            ("tpm", Integer),
            ("max_parallel", Integer),
            ("on_anomaly", Text),
            ("suspended_at", Integer),
            ("suspended_reason", Text),
            ("parent_id", Text),
            ("can_mint", Integer),
            ("origin", Text),
            ("mac", Blob),
        ],
        identity: None,
    },
    Table {
        name: "ledger",
        columns: &[
            ("id", Integer),
            ("at_ms", Integer),
            ("request_id", Text),
            ("key_id", Text),
            ("env", Text),
            ("provider", Text),
            ("provider_key_version", Integer),
            ("model", Text),
            ("input_tokens", Integer),
            ("cached_input_tokens", Integer),
            ("cache_write_tokens", Integer),
            ("output_tokens", Integer),
            ("reasoning_tokens", Integer),
            ("usage_source", Text),
            ("cost_nano_usd", Integer),
            ("priced_by", Text),
            ("status", Integer),
            ("latency_ms", Integer),
            ("project", Text),
            ("outcome", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "budgets",
        columns: &[
            ("id", Text),
            ("scope_kind", Text),
            ("scope", Text),
            ("period", Text),
            ("limit_nano_usd", Integer),
            ("created_at_ms", Integer),
            ("mac", Blob),
        ],
        identity: None,
    },
    Table {
        name: "alert_webhooks",
        columns: &[
            ("id", Text),
            ("sealed_url", Blob),
            ("display_url", Text),
            ("thresholds", Text),
            ("created_at_ms", Integer),
            ("mac", Blob),
        ],
        identity: None,
    },
    Table {
        name: "admins",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("role", Text),
            ("token_hash", Blob),
            ("created_at", Integer),
            ("created_by", Text),
            ("rotated_at", Integer),
            ("revoked_at", Integer),
            ("mac", Blob),
        ],
        identity: None,
    },
    Table {
        name: "alert_events",
        columns: &[
            ("id", Integer),
            ("at_ms", Integer),
            ("kind", Text),
            ("dedup", Text),
            ("key_id", Text),
            ("budget_id", Text),
            ("message", Text),
            ("payload", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "alert_deliveries",
        columns: &[
            ("event_id", Integer),
            ("webhook_id", Text),
            ("status", Text),
            ("attempts", Integer),
            ("last_error", Text),
            ("updated_at_ms", Integer),
        ],
        identity: None,
    },
    Table {
        name: "key_grace",
        columns: &[
            ("hash", Blob),
            ("key_id", Text),
            ("prefix", Text),
            ("valid_until", Integer),
            ("mac", Blob),
        ],
        identity: None,
    },
    Table {
        name: "key_rotations",
        columns: &[
            ("key_id", Text),
            ("idempotency_key", Text),
            ("sealed_key", Blob),
            ("created_at", Integer),
        ],
        identity: None,
    },
    Table {
        name: "audit_log",
        columns: &[
            ("seq", Integer),
            ("at_ms", Integer),
            ("kind", Text),
            ("line", Text),
            ("hash", Blob),
        ],
        identity: None,
    },
    Table {
        name: "audit_checkpoints",
        columns: &[("seq", Integer), ("line", Text)],
        identity: None,
    },
    Table {
        name: "ledger_rollup",
        columns: &[
            ("bucket_ms", Integer),
            ("key_id", Text),
            ("env", Text),
            ("project", Text),
            ("provider", Text),
            ("provider_key_version", Integer),
            ("model", Text),
            ("requests", Integer),
            ("input_tokens", Integer),
            ("cached_input_tokens", Integer),
            ("cache_write_tokens", Integer),
            ("output_tokens", Integer),
            ("reasoning_tokens", Integer),
            ("cost_nano_usd", Integer),
            ("errors", Integer),
            ("estimated", Integer),
            ("fallback_priced", Integer),
            ("unmetered", Integer),
            ("client_cancelled", Integer),
            ("ok", Integer),
            ("rejected", Integer),
            ("rate_limited", Integer),
            ("failed", Integer),
            ("client_errors", Integer),
            ("last_ms", Integer),
            ("last_status", Integer),
        ],
        identity: None,
    },
];

/// Rows per INSERT statement (PostgreSQL binds at most 65,535 values).
const ROWS_PER_STATEMENT: usize = 1_000;

/// What [`copy_sqlite_to_postgres`] copied: rows per table, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
}

fn value(row: &SqliteRow, index: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Text => row
            .try_get::<Option<String>, _>(index)?
            .map_or(Value::Null, Value::Text),
        Integer => row
            .try_get::<Option<i64>, _>(index)?
            .map_or(Value::Null, Value::Integer),
        Blob => row
            .try_get::<Option<Vec<u8>>, _>(index)?
            .map_or(Value::Null, Value::Blob),
    })
}

/// Orders keys so every parent comes before its children (the foreign
/// key is checked row by row).
fn parents_first(rows: Vec<Vec<Value>>, id: usize, parent: usize) -> Vec<Vec<Value>> {
    let mut done = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    let mut rest = rows;
    while !rest.is_empty() {
        let before = rest.len();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            rest.into_iter().partition(|row| match &row[parent] {
                Value::Text(parent) => done.contains(parent),
                _ => true,
            });
        for row in &ready {
            if let Value::Text(id) = &row[id] {
                done.insert(id.clone());
            }
        }
        out.extend(ready);
        rest = waiting;
        if rest.len() == before {
            // A parent that does not exist: let the foreign key say so.
            out.extend(rest);
            break;
        }
    }
    out
}

/// Copies every row of `from` into `to`, which must be empty (schema v9,
/// no keys, providers, ledger or audit entries), in one transaction.
pub async fn copy_sqlite_to_postgres(
    from: &SqliteStore,
    to: &PgStore,
) -> Result<CopyReport, StoreError> {
    let mut read = from.pool_ref().begin().await?;
    let mut tx = to.pool_ref().begin().await?;
    for table in TABLES.iter().filter(|t| t.name != "meta") {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", table.name))
            .fetch_one(&mut *tx)
            .await?;
        if rows > 0 {
            return Err(StoreError::Conflict(format!(
                "the PostgreSQL database is not empty ({} holds {rows} rows); migrate into a new database",
                table.name
            )));
        }
    }
    // `meta` holds what the gateway wrote at its first start there (the
    // key-hashing secret): the source's values replace it.
    sqlx::query("DELETE FROM meta").execute(&mut *tx).await?;
    let mut report = CopyReport { tables: Vec::new() };
    for table in TABLES {
        let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
        let list = columns.join(", ");
        let rows = sqlx::query(&format!("SELECT {list} FROM {}", table.name))
            .fetch_all(&mut *read)
            .await?;
        let mut values = rows
            .iter()
            .map(|row| {
                table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| value(row, i, *kind))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        if table.name == "virtual_keys" {
            let position = |name: &str| columns.iter().position(|c| *c == name).unwrap_or(0);
            values = parents_first(values, position("id"), position("parent_id"));
        }
        let overriding = if table.identity.is_some() {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        for chunk in values.chunks(ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<Postgres>::new(format!(
                "INSERT INTO {} ({list}){overriding} ",
                table.name
            ));
            insert.push_values(chunk, |mut row, values| {
                for ((_, kind), value) in table.columns.iter().zip(values) {
                    match (kind, value) {
                        (_, Value::Integer(n)) => row.push_bind(*n),
                        (_, Value::Text(text)) => row.push_bind(text.clone()),
                        (_, Value::Blob(bytes)) => row.push_bind(bytes.clone()),
                        (Integer, Value::Null) => row.push_bind(None::<i64>),
                        (Text, Value::Null) => row.push_bind(None::<String>),
                        (Blob, Value::Null) => row.push_bind(None::<Vec<u8>>),
                    };
                }
            });
            insert.build().execute(&mut *tx).await?;
        }
        if let Some(identity) = table.identity {
            // Later rows continue after the copied ids.
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{name}', '{identity}'), \
                 GREATEST((SELECT MAX({identity}) FROM {name}), 1), (SELECT COUNT(*) > 0 FROM {name}))",
                name = table.name
            ))
            .execute(&mut *tx)
            .await?;
        }
        report
            .tables
            .push((table.name, u64::try_from(values.len()).unwrap_or(0)));
    }
    tx.commit().await?;
    read.commit().await?;
    Ok(report)
}
