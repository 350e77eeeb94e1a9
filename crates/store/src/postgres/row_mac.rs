//! Row MACs in PostgreSQL: sealing and checking rows inside a transaction.
//! Which columns are sealed and their encoding are shared with SQLite
//! ([`crate::row_mac`]); values are read typed and quoted as SQLite's
//! `quote()` would, so a MAC verifies in either store.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

pub(crate) use crate::row_mac::{
    ADMINS, ALL, BUDGETS, CREDENTIALS, KEY_GRACE, KEYS, PROVIDERS, Spec, WEBHOOKS,
};
use crate::row_mac::{Kind, Value, encode, quote};
use crate::{RowFailure, RowMac, StoreError};

/// One row as read for sealing: its `rid`, report id, stored MAC and the
/// quoted values of its sealed columns.
struct SealedRow {
    rid: i64,
    id: String,
    mac: Option<Vec<u8>>,
    values: Vec<Option<String>>,
}

fn value(row: &PgRow, index: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Kind::Text => row
            .try_get::<Option<String>, _>(index)?
            .map_or(Value::Null, Value::Text),
        Kind::Integer => row
            .try_get::<Option<i64>, _>(index)?
            .map_or(Value::Null, Value::Integer),
        Kind::Blob => row
            .try_get::<Option<Vec<u8>>, _>(index)?
            .map_or(Value::Null, Value::Blob),
    })
}

async fn read_rows(
    connection: &mut PgConnection,
    spec: &Spec,
    rid: Option<i64>,
) -> Result<Vec<SealedRow>, StoreError> {
    let columns: Vec<&str> = spec.columns.iter().map(|column| column.pg).collect();
    let sql = format!(
        "SELECT rid, {id} AS row_id, mac, {columns} FROM {table} WHERE $1::BIGINT IS NULL OR rid = $1 ORDER BY rid",
        id = spec.pg_id,
        columns = columns.join(", "),
        table = spec.name,
    );
    let rows = sqlx::query(&sql).bind(rid).fetch_all(connection).await?;
    rows.iter()
        .map(|row| {
            let values = spec
                .columns
                .iter()
                .enumerate()
                .map(|(i, column)| value(row, i + 3, column.kind).map(|v| Some(quote(&v))))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SealedRow {
                rid: row.try_get(0)?,
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

async fn write_mac(
    connection: &mut PgConnection,
    spec: &Spec,
    rid: i64,
    tag: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(&format!("UPDATE {} SET mac = $1 WHERE rid = $2", spec.name))
        .bind(tag)
        .bind(rid)
        .execute(connection)
        .await?;
    Ok(())
}

/// Computes and stores the MAC of one row as it stands now. Without a row
/// key (a store used without a gateway, in tests) the row keeps no MAC and
/// fails its check later: the safe direction.
pub(crate) async fn seal(
    connection: &mut PgConnection,
    mac: Option<&RowMac>,
    spec: &Spec,
    rid: i64,
) -> Result<(), StoreError> {
    let Some(mac) = mac else {
        return Ok(());
    };
    for row in read_rows(&mut *connection, spec, Some(rid)).await? {
        let tag = mac.sign(&encode(spec, &row.values));
        write_mac(&mut *connection, spec, row.rid, &tag).await?;
    }
    Ok(())
}

/// Whether a row's MAC holds now. The caller holds the row's lock
/// ([`rid_for_update`]) from this check to its re-seal, so no other
/// instance changes the row in between.
pub(crate) async fn is_intact(
    connection: &mut PgConnection,
    mac: Option<&RowMac>,
    spec: &Spec,
    rid: i64,
) -> Result<bool, StoreError> {
    let Some(mac) = mac else {
        return Ok(false);
    };
    Ok(read_rows(connection, spec, Some(rid))
        .await?
        .iter()
        .all(|row| intact(mac, spec, row)))
}

/// Every row of every sealed table whose MAC is missing or wrong.
pub(crate) async fn failures(
    connection: &mut PgConnection,
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

/// Seals every row of every table (rows copied in without MACs).
pub(crate) async fn seal_all(
    connection: &mut PgConnection,
    mac: &RowMac,
) -> Result<u64, StoreError> {
    let mut sealed = 0;
    for spec in ALL {
        for row in read_rows(&mut *connection, spec, None).await? {
            let tag = mac.sign(&encode(spec, &row.values));
            write_mac(&mut *connection, spec, row.rid, &tag).await?;
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// The `rid` of a row by its text primary key, if it exists, locked until
/// the transaction ends (`FOR UPDATE`): check-then-reseal stays atomic
/// across instances.
pub(crate) async fn rid_for_update(
    connection: &mut PgConnection,
    spec: &Spec,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT rid FROM {} WHERE id = $1 FOR UPDATE",
        spec.name
    ))
    .bind(id)
    .fetch_optional(connection)
    .await?)
}
