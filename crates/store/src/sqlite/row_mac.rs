//! Row MACs: which columns of which table are sealed, their canonical
//! encoding, and sealing and checking rows inside a transaction.
//!
//! A row's MAC covers each sealed column as SQLite's own `quote()` of the
//! stored value (`'text'` with quotes doubled, `X'hex'`, `42`, `NULL`), so
//! the type of each value is part of what is signed. The input is
//! `label || (len name || name || len value || value)*` with 8-byte
//! big-endian lengths: no two different rows encode alike, whatever their
//! text contains.

use sqlx::{Row, SqliteConnection};

use crate::{RowFailure, RowMac, SealedTable, StoreError};

/// How one table is sealed.
pub(crate) struct Spec {
    pub(crate) table: SealedTable,
    name: &'static str,
    /// Domain separation between tables (and versions of this list).
    label: &'static str,
    /// The SQL expression naming a row in reports (never a secret).
    id: &'static str,
    /// SQL expressions over the row, in order. A subquery may bind related
    /// rows (a key's own budgets).
    columns: &'static [&'static str],
}

pub(crate) const PROVIDERS: Spec = Spec {
    table: SealedTable::Provider,
    name: "providers",
    label: "keyforge/row/providers/v1",
    id: "id",
    columns: &["id", "name", "env", "kind", "base_url", "created_at"],
};

/// A credential row is bound to its provider and version (the ciphertext's
/// associated data binds the same pair, so a sealed key moved to another
/// row fails twice). The stage moves with rotation and is not sealed: the
/// ciphertext itself decides which provider key can be used.
pub(crate) const CREDENTIALS: Spec = Spec {
    table: SealedTable::Credential,
    name: "provider_credentials",
    label: "keyforge/row/provider_credentials/v1",
    id: "provider_id || '/v' || version",
    columns: &["provider_id", "version", "sealed", "created_at"],
};

/// Everything that decides what a key may do, including the set of its own
/// budgets (deleting one makes the key fail its check).
pub(crate) const KEYS: Spec = Spec {
    table: SealedTable::VirtualKey,
    name: "virtual_keys",
    label: "keyforge/row/virtual_keys/v1",
    id: "id",
    columns: &[
        "id",
        "env",
        "hash",
        "scope",
        "project",
        "rpm",
        "tpm",
        "max_parallel",
        "on_anomaly",
        "created_at",
        "expires_at",
        "revoked_at",
        "suspended_at",
        "parent_id",
        "can_mint",
        "origin",
        "(SELECT group_concat(id, ',') FROM (SELECT id FROM budgets b \
          WHERE b.scope_kind = 'key' AND b.scope = virtual_keys.id ORDER BY id))",
    ],
};

pub(crate) const BUDGETS: Spec = Spec {
    table: SealedTable::Budget,
    name: "budgets",
    label: "keyforge/row/budgets/v1",
    id: "id",
    columns: &["id", "scope_kind", "scope", "period", "limit_nano_usd"],
};

pub(crate) const WEBHOOKS: Spec = Spec {
    table: SealedTable::AlertWebhook,
    name: "alert_webhooks",
    label: "keyforge/row/alert_webhooks/v1",
    id: "id",
    columns: &["id", "sealed_url", "thresholds"],
};

/// An earlier secret of a rotated key stays valid until `valid_until`, as
/// the key it belongs to: both are sealed, so it can neither be pointed at
/// another key nor kept alive past its window.
pub(crate) const KEY_GRACE: Spec = Spec {
    table: SealedTable::KeyGrace,
    name: "key_grace",
    label: "keyforge/row/key_grace/v1",
    id: "key_id",
    columns: &["hash", "key_id", "prefix", "valid_until"],
};

/// A named admin: its role, token hash and revocation are what an
/// attacker with the database file would want to change.
pub(crate) const ADMINS: Spec = Spec {
    table: SealedTable::Admin,
    name: "admins",
    label: "keyforge/row/admins/v1",
    id: "name",
    columns: &[
        "id",
        "name",
        "role",
        "token_hash",
        "created_at",
        "created_by",
        "rotated_at",
        "revoked_at",
    ],
};

pub(crate) const ALL: [&Spec; 7] = [
    &PROVIDERS,
    &CREDENTIALS,
    &KEYS,
    &BUDGETS,
    &WEBHOOKS,
    &KEY_GRACE,
    &ADMINS,
];

/// The canonical MAC input of one row: `label`, then each column's name and
/// quoted value, every piece prefixed by its length.
fn encode(spec: &Spec, values: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut piece = |bytes: &[u8]| {
        out.extend_from_slice(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    piece(spec.label.as_bytes());
    for (column, value) in spec.columns.iter().zip(values) {
        piece(column.as_bytes());
        // `quote()` never returns NULL (it returns the text `NULL`), so
        // `None` only stands for a column the row lacks.
        piece(value.as_deref().unwrap_or("").as_bytes());
    }
    out
}

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
        .map(|column| format!("quote({column})"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_unambiguous() {
        // Moving text between adjacent columns must change the encoding.
        let a = encode(&BUDGETS, &[Some("'ab'".into()), Some("'c'".into())]);
        let b = encode(&BUDGETS, &[Some("'a'".into()), Some("'bc'".into())]);
        assert_ne!(a, b);
        // And tables are domain-separated.
        let providers = encode(&PROVIDERS, &[Some("'x'".into())]);
        let budgets = encode(&BUDGETS, &[Some("'x'".into())]);
        assert_ne!(providers, budgets);
    }
}
