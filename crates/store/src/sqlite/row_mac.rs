//! Row MACs in SQLite: sealing and checking rows inside a transaction.
//! Which columns are sealed and how they are encoded is shared with the
//! PostgreSQL store ([`crate::row_mac`]); here SQLite's own `quote()`
//! writes each value.

use sqlx::{Row, SqliteConnection};

pub(crate) use crate::row_mac::{
    ADMINS, ALL, BUDGETS, CREDENTIALS, KEY_GRACE, KEYS, PROVIDERS, Spec, WEBHOOKS, encode,
};
use crate::{RowFailure, RowMac, StoreError};

/// One row as read for sealing: its rowid, report id, stored MAC and the
/// quoted values of its sealed columns.
struct SealedRow {
    rowid: i64,
    id: String,
    mac: Option<Vec<u8>>,
    values: Vec<Option<String>>,
}

async fn read_rows(
    connection: &mut SqliteConnection,
    spec: &Spec,
    rowid: Option<i64>,
) -> Result<Vec<SealedRow>, StoreError> {
    let quoted: Vec<String> = spec
        .columns
        .iter()
        .map(|column| format!("quote({})", column.name))
        .collect();
    let sql = format!(
        "SELECT rowid, {id} AS row_id, mac, {columns} FROM {table} WHERE ?1 IS NULL OR rowid = ?1",
        id = spec.id,
        columns = quoted.join(", "),
        table = spec.name,
    );
    let rows = sqlx::query(&sql).bind(rowid).fetch_all(connection).await?;
    rows.iter()
        .map(|row| {
            let values = (0..spec.columns.len())
                .map(|i| row.try_get::<Option<String>, _>(i + 3))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SealedRow {
                rowid: row.try_get(0)?,
                id: row.try_get(1)?,
                mac: row.try_get(2)?,
                values,
            })
        })
        .collect()
}

fn intact(mac: &RowMac, spec: &Spec, row: &SealedRow) -> bool {
    row.mac
        .as_deref()
        .is_some_and(|tag| mac.verify(&encode(spec, &row.values), tag))
}

/// Computes and stores the MAC of one row as it stands now. Without a row
/// key (a store used without a gateway, in tests) the row keeps no MAC and
/// fails its check later: the safe direction.
pub(crate) async fn seal(
    connection: &mut SqliteConnection,
    mac: Option<&RowMac>,
    spec: &Spec,
    rowid: i64,
) -> Result<(), StoreError> {
    let Some(mac) = mac else {
        return Ok(());
    };
    for row in read_rows(&mut *connection, spec, Some(rowid)).await? {
        let tag = mac.sign(&encode(spec, &row.values));
        sqlx::query(&format!("UPDATE {} SET mac = ? WHERE rowid = ?", spec.name))
            .bind(tag.as_slice())
            .bind(row.rowid)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Whether a row's MAC holds now. Writers that change a row in place ask
/// this first and re-seal only rows that were intact, so an admin action
/// on a tampered row never launders it (a revocation still applies: the
/// row stays refused and is now revoked too).
pub(crate) async fn is_intact(
    connection: &mut SqliteConnection,
    mac: Option<&RowMac>,
    spec: &Spec,
    rowid: i64,
) -> Result<bool, StoreError> {
    let Some(mac) = mac else {
        return Ok(false);
    };
    Ok(read_rows(connection, spec, Some(rowid))
        .await?
        .iter()
        .all(|row| intact(mac, spec, row)))
}

/// Every row of every sealed table whose MAC is missing or wrong.
pub(crate) async fn failures(
    connection: &mut SqliteConnection,
    mac: &RowMac,
) -> Result<Vec<RowFailure>, StoreError> {
    let mut failed = Vec::new();
    for spec in ALL {
        for row in read_rows(&mut *connection, spec, None).await? {
            if !intact(mac, spec, &row) {
                failed.push(RowFailure {
                    table: spec.table,
                    id: row.id,
                });
            }
        }
    }
    Ok(failed)
}

/// Seals every row of every table (the one-time upgrade to schema 8).
pub(crate) async fn seal_all(
    connection: &mut SqliteConnection,
    mac: &RowMac,
) -> Result<u64, StoreError> {
    let mut sealed = 0;
    for spec in ALL {
        for row in read_rows(&mut *connection, spec, None).await? {
            let tag = mac.sign(&encode(spec, &row.values));
            sqlx::query(&format!("UPDATE {} SET mac = ? WHERE rowid = ?", spec.name))
                .bind(tag.as_slice())
                .bind(row.rowid)
                .execute(&mut *connection)
                .await?;
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// The rowid of a row by its text primary key, if it exists.
pub(crate) async fn rowid(
    connection: &mut SqliteConnection,
    spec: &Spec,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar(&format!("SELECT rowid FROM {} WHERE id = ?", spec.name))
            .bind(id)
            .fetch_optional(connection)
            .await?,
    )
}
