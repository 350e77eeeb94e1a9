//! Row MACs shared by both stores: which columns of which table are
//! sealed, and their canonical encoding.
//!
//! A row's MAC covers each sealed column as SQLite's own `quote()` of the
//! stored value (`'text'` with quotes doubled, `X'HEX'`, `42`, `NULL`), so
//! the type of each value is part of what is signed. The input is
//! `label || (len name || name || len value || value)*` with 8-byte
//! big-endian lengths: no two different rows encode alike, whatever their
//! text contains. The SQLite store asks SQLite for `quote()`; the
//! PostgreSQL store reads typed values and quotes them with [`quote`], so
//! a MAC written by one store verifies in the other (`keyforge migrate`).

use crate::SealedTable;

/// The SQLite storage class a sealed column holds, which decides how it is
/// quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Integer,
    Blob,
}

/// One sealed column.
pub(crate) struct Column {
    /// The name in the MAC input, which is also the SQLite expression
    /// reading it.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// The PostgreSQL expression reading the same value.
    pub(crate) pg: &'static str,
}

const fn column(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        pg: name,
    }
}

/// How one table is sealed.
pub(crate) struct Spec {
    pub(crate) table: SealedTable,
    pub(crate) name: &'static str,
    /// Domain separation between tables (and versions of this list).
    pub(crate) label: &'static str,
    /// The SQLite expression naming a row in reports (never a secret).
    pub(crate) id: &'static str,
    /// The same in PostgreSQL.
    pub(crate) pg_id: &'static str,
    /// In order. A subquery may bind related rows (a key's own budgets).
    pub(crate) columns: &'static [Column],
}

use Kind::{Blob, Integer, Text};

pub(crate) const PROVIDERS: Spec = Spec {
    table: SealedTable::Provider,
    name: "providers",
    label: "keyforge/row/providers/v1",
    id: "id",
    pg_id: "id",
    columns: &[
        column("id", Text),
        column("name", Text),
        column("env", Text),
        column("kind", Text),
        column("base_url", Text),
        column("created_at", Integer),
    ],
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
    pg_id: "provider_id || '/v' || version::text",
    columns: &[
        column("provider_id", Text),
        column("version", Integer),
        column("sealed", Blob),
        column("created_at", Integer),
    ],
};

/// Everything that decides what a key may do, including the set of its own
/// budgets (deleting one makes the key fail its check).
pub(crate) const KEYS: Spec = Spec {
    table: SealedTable::VirtualKey,
    name: "virtual_keys",
    label: "keyforge/row/virtual_keys/v1",
    id: "id",
    pg_id: "id",
    columns: &[
        column("id", Text),
        column("env", Text),
        column("hash", Blob),
        column("scope", Text),
        column("project", Text),
        column("rpm", Integer),
        column("tpm", Integer),
        column("max_parallel", Integer),
        column("on_anomaly", Text),
        column("created_at", Integer),
        column("expires_at", Integer),
        column("revoked_at", Integer),
        column("suspended_at", Integer),
        column("parent_id", Text),
        column("can_mint", Integer),
        column("origin", Text),
        Column {
            name: "(SELECT group_concat(id, ',') FROM (SELECT id FROM budgets b \
                   WHERE b.scope_kind = 'key' AND b.scope = virtual_keys.id ORDER BY id))",
            kind: Text,
            // `group_concat` of no rows is NULL, as is `string_agg`'s.
            pg: "(SELECT string_agg(b.id, ',' ORDER BY b.id) FROM budgets b \
                  WHERE b.scope_kind = 'key' AND b.scope = virtual_keys.id)",
        },
    ],
};

pub(crate) const BUDGETS: Spec = Spec {
    table: SealedTable::Budget,
    name: "budgets",
    label: "keyforge/row/budgets/v1",
    id: "id",
    pg_id: "id",
    columns: &[
        column("id", Text),
        column("scope_kind", Text),
        column("scope", Text),
        column("period", Text),
        column("limit_nano_usd", Integer),
    ],
};

pub(crate) const WEBHOOKS: Spec = Spec {
    table: SealedTable::AlertWebhook,
    name: "alert_webhooks",
    label: "keyforge/row/alert_webhooks/v1",
    id: "id",
    pg_id: "id",
    columns: &[
        column("id", Text),
        column("sealed_url", Blob),
        column("thresholds", Text),
    ],
};

/// An earlier secret of a rotated key stays valid until `valid_until`, as
/// the key it belongs to: both are sealed, so it can neither be pointed at
/// another key nor kept alive past its window.
pub(crate) const KEY_GRACE: Spec = Spec {
    table: SealedTable::KeyGrace,
    name: "key_grace",
    label: "keyforge/row/key_grace/v1",
    id: "key_id",
    pg_id: "key_id",
    columns: &[
        column("hash", Blob),
        column("key_id", Text),
        column("prefix", Text),
        column("valid_until", Integer),
    ],
};

/// A named admin (schema 10): its role, token hash and revocation are
/// sealed, so a role raised or a revocation undone outside KeyForge fails.
pub(crate) const ADMINS: Spec = Spec {
    table: SealedTable::Admin,
    name: "admins",
    label: "keyforge/row/admins/v1",
    id: "name",
    pg_id: "name",
    columns: &[
        column("id", Text),
        column("name", Text),
        column("role", Text),
        column("token_hash", Blob),
        column("created_at", Integer),
        column("created_by", Text),
        column("rotated_at", Integer),
        column("revoked_at", Integer),
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

/// A stored value, typed as SQLite types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// `value` exactly as SQLite's `quote()` writes it: `NULL`, a decimal
/// integer, `'text'` with each `'` doubled (nothing else escaped), or
/// `X'HEX'` in upper case.
pub(crate) fn quote(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Integer(n) => n.to_string(),
        Value::Text(text) => format!("'{}'", text.replace('\'', "''")),
        Value::Blob(bytes) => {
            let mut out = String::with_capacity(3 + 2 * bytes.len());
            out.push_str("X'");
            for byte in bytes {
                out.push_str(&format!("{byte:02X}"));
            }
            out.push('\'');
            out
        }
    }
}

/// The canonical MAC input of one row: `label`, then each column's name and
/// quoted value, every piece prefixed by its length.
pub(crate) fn encode(spec: &Spec, values: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut piece = |bytes: &[u8]| {
        out.extend_from_slice(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    piece(spec.label.as_bytes());
    for (column, value) in spec.columns.iter().zip(values) {
        piece(column.name.as_bytes());
        // `quote()` never returns NULL (it returns the text `NULL`), so
        // `None` only stands for a column the row lacks.
        piece(value.as_deref().unwrap_or("").as_bytes());
    }
    out
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

    /// [`quote`] must write what SQLite's `quote()` writes, byte for byte,
    /// or MACs would not carry between the stores.
    #[tokio::test]
    async fn quote_matches_sqlite() {
        use sqlx::Connection;
        let mut sqlite = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let texts = ["", "plain", "it's", "''", "back\\slash", "ünï€ode", "a\nb"];
        for text in texts {
            let quoted: String = sqlx::query_scalar("SELECT quote(?)")
                .bind(text)
                .fetch_one(&mut sqlite)
                .await
                .unwrap();
            assert_eq!(quote(&Value::Text(text.to_owned())), quoted, "{text:?}");
        }
        for n in [0i64, -1, 42, i64::MIN, i64::MAX] {
            let quoted: String = sqlx::query_scalar("SELECT quote(?)")
                .bind(n)
                .fetch_one(&mut sqlite)
                .await
                .unwrap();
            assert_eq!(quote(&Value::Integer(n)), quoted);
        }
        for blob in [vec![], vec![0u8], vec![0xab, 0x01, 0xff]] {
            let quoted: String = sqlx::query_scalar("SELECT quote(?)")
                .bind(blob.as_slice())
                .fetch_one(&mut sqlite)
                .await
                .unwrap();
            assert_eq!(quote(&Value::Blob(blob.clone())), quoted);
        }
        let null: String = sqlx::query_scalar("SELECT quote(NULL)")
            .fetch_one(&mut sqlite)
            .await
            .unwrap();
        assert_eq!(quote(&Value::Null), null);
    }
}
