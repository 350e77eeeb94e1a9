use super::*;
use crate::conformance::{
    aggregates, failures, key, ledger, provider, row_mac, three_days_of_records,
};

#[tokio::test]
async fn file_database_is_private_and_reopens() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    let record = key("dev");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert_virtual_key(&record, &[]).await.unwrap();
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.list_virtual_keys(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    let store = SqliteStore::open(&path).await.unwrap();
    sqlx::raw_sql("PRAGMA user_version = 99")
        .execute(&store.pool)
        .await
        .unwrap();
    store.pool.close().await;
    let error = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::TooNew {
                found: 99,
                known: SCHEMA_VERSION
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    {
        // What version 1 wrote: its schema and one key.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(SCHEMA_V1).execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO virtual_keys (id, name, env, hash, prefix, scope, created_at) VALUES (?, 'old', 'dev', ?, 'kf_dev_x', '{\"providers\":[],\"models\":[]}', 1767225600)")
            .bind(KeyId::generate().as_str())
            .bind(vec![9_u8; 32])
            .execute(&pool)
            .await
            .unwrap();
        sqlx::raw_sql("PRAGMA user_version = 1")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let keys = store.list_virtual_keys(None).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].name, "old");
    assert_eq!(keys[0].project, None);
    assert_eq!(keys[0].limits, KeyLimits::default());
    assert_eq!(keys[0].on_anomaly, AnomalyAction::Alert);
    assert_eq!(keys[0].suspended, None);
    store
        .insert_ledger(&[ledger(&KeyId::generate(), "dev", "m", 1, 1)])
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn a_version_7_database_is_sealed_once_at_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    {
        // Rows as version 7 held them: no mac column.
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .insert_provider(&provider("openai", "prod"))
            .await
            .unwrap();
        store.insert_virtual_key(&key("prod"), &[]).await.unwrap();
        sqlx::raw_sql(
            "ALTER TABLE providers DROP COLUMN mac; ALTER TABLE provider_credentials DROP COLUMN mac; \
             ALTER TABLE virtual_keys DROP COLUMN mac; ALTER TABLE budgets DROP COLUMN mac; \
             ALTER TABLE alert_webhooks DROP COLUMN mac; ALTER TABLE key_grace DROP COLUMN mac; DELETE FROM meta WHERE name = 'row_mac_backfill'; \
             DROP TABLE ledger_rollup; DROP TABLE admins; PRAGMA user_version = 7",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.install_row_mac(row_mac()).await.unwrap(), 3);
    assert_eq!(failures(&store).await, []);
    store.pool.close().await;
    // The backfill happens once: a mac cleared later is not filled in again.
    let store = SqliteStore::open(&path).await.unwrap();
    sqlx::query("UPDATE virtual_keys SET mac = NULL")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(store.install_row_mac(row_mac()).await.unwrap(), 0);
    assert_eq!(failures(&store).await.len(), 1);
    // A different master key's row key finds every row failing.
    let other = SqliteStore::open(&path).await.unwrap();
    other.install_row_mac(RowMac::new(&[1; 32])).await.unwrap();
    assert_eq!(failures(&other).await.len(), 3);
}

#[tokio::test]
async fn a_version_8_database_keeps_its_figures_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    let parent = key("prod");
    let child = VirtualKeyRecord {
        parent: Some(parent.id.clone()),
        ..key("prod")
    };
    let records = three_days_of_records(&parent.id, &child.id);
    {
        // Version 8 exactly as shipped: its migrations and raw rows only.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        for schema in [
            SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
        ] {
            sqlx::raw_sql(schema).execute(&pool).await.unwrap();
        }
        for k in [&parent, &child] {
            sqlx::query("INSERT INTO virtual_keys (id, name, env, hash, prefix, scope, created_at, parent_id) VALUES (?, 'k', 'prod', ?, 'kf_prod_x', '{\"providers\":[],\"models\":[]}', 1767225600, ?)")
                .bind(k.id.as_str())
                .bind(k.hash.as_bytes().as_slice())
                .bind(k.parent.as_ref().map(KeyId::as_str))
                .execute(&pool)
                .await
                .unwrap();
        }
        let mut tx = pool.begin().await.unwrap();
        for r in &records {
            sqlx::query(
                "INSERT INTO ledger (at_ms, request_id, key_id, env, project, provider, provider_key_version, model, input_tokens, \
                 cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, usage_source, cost_nano_usd, priced_by, \
                 status, latency_ms, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(r.at_ms)
            .bind(&r.request_id)
            .bind(r.key_id.as_str())
            .bind(r.env.as_str())
            .bind(r.project.as_ref().map(ProjectName::as_str))
            .bind(r.provider.as_str())
            .bind(i64::from(r.provider_key_version))
            .bind(r.model.as_deref())
            .bind(to_i64(r.input_tokens))
            .bind(to_i64(r.cached_input_tokens))
            .bind(to_i64(r.cache_write_tokens))
            .bind(to_i64(r.output_tokens))
            .bind(to_i64(r.reasoning_tokens))
            .bind(r.usage_source)
            .bind(r.cost_nano_usd)
            .bind(r.priced_by)
            .bind(i64::from(r.status))
            .bind(to_i64(r.latency_ms))
            .bind(r.outcome)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        sqlx::raw_sql("PRAGMA user_version = 8")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let upgraded = SqliteStore::open(&path).await.unwrap();
    // The same records written by this version, for comparison.
    let fresh = SqliteStore::open_in_memory().await.unwrap();
    for k in [&parent, &child] {
        fresh.insert_virtual_key(k, &[]).await.unwrap();
    }
    for batch in records.chunks(100) {
        fresh.insert_ledger(batch).await.unwrap();
    }
    let keys = [parent.id.clone(), child.id.clone()];
    let day1 = 1_767_225_600_000;
    for since in [0, day1 + 3_600_000, day1 + 86_400_000 + 30_001] {
        let figures = aggregates(&upgraded, &keys, since).await;
        assert_eq!(
            figures,
            aggregates(&fresh, &keys, since).await,
            "since {since}"
        );
        // And the figures are the records' own: total spend of the tree.
        let total: i64 = records
            .iter()
            .filter(|r| r.at_ms >= since)
            .map(|r| r.cost_nano_usd)
            .sum();
        assert_eq!(figures.1[0], total, "since {since}");
    }
    // The raw rows keep one index besides the table.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger' ORDER BY name",
    )
    .fetch_all(&upgraded.pool)
    .await
    .unwrap();
    assert_eq!(indexes, ["ledger_at"]);
}

#[tokio::test]
async fn a_version_9_database_gains_an_empty_admins_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    {
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        for schema in [
            SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
            SCHEMA_V9,
        ] {
            sqlx::raw_sql(schema).execute(&pool).await.unwrap();
        }
        sqlx::raw_sql("PRAGMA user_version = 9")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.list_admins().await.unwrap(), []);
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(version, 10);
}
