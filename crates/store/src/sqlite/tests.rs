use keyforge_types::{ModelPattern, VirtualKey};
use time::macros::datetime;

use super::*;
use crate::model::{LedgerRecord, UsageGroup, UsageQuery};

fn provider(name: &str, env: &str) -> NewProvider {
    NewProvider {
        id: ProviderId::generate(),
        name: ProviderName::parse(name).unwrap(),
        env: EnvName::parse(env).unwrap(),
        kind: "openai".into(),
        base_url: Some("http://127.0.0.1:9".into()),
        created_at: datetime!(2026-01-02 03:04:05 UTC),
        credential: CredentialRecord {
            version: 1,
            sealed: vec![1, 2, 3],
            created_at: datetime!(2026-01-02 03:04:05 UTC),
        },
    }
}

fn key(env: &str) -> VirtualKeyRecord {
    let env = EnvName::parse(env).unwrap();
    let virtual_key = VirtualKey::generate(&env);
    VirtualKeyRecord {
        id: KeyId::generate(),
        name: "app".into(),
        hash: keyforge_types::KeyHasher::new(&[7; 32]).hash(&virtual_key),
        prefix: virtual_key.display_prefix(),
        env,
        scope: Scope {
            providers: vec![],
            models: vec![ModelPattern::parse("gpt-*").unwrap()],
        },
        created_at: datetime!(2026-01-02 03:04:05 UTC),
        expires_at: Some(datetime!(2026-02-02 03:04:05 UTC)),
        revoked_at: None,
    }
}

#[tokio::test]
async fn providers_are_unique_per_environment() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store
        .insert_provider(&provider("openai", "dev"))
        .await
        .unwrap();
    store
        .insert_provider(&provider("openai", "prod"))
        .await
        .unwrap();
    let error = store
        .insert_provider(&provider("openai", "dev"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error}");
    let listed = store.list_providers().await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.env.as_str()).collect::<Vec<_>>(),
        ["dev", "prod"]
    );
    assert_eq!(listed[0].current.sealed, vec![1, 2, 3]);
    assert_eq!(listed[0].current.version, 1);
}

#[tokio::test]
async fn keys_round_trip_and_revoke_once() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let record = key("dev");
    store.insert_virtual_key(&record).await.unwrap();
    let loaded = store.get_virtual_key(&record.id).await.unwrap().unwrap();
    assert!(loaded.hash.ct_eq(&record.hash));
    assert_eq!(loaded.scope, record.scope);
    assert_eq!(loaded.expires_at, record.expires_at);
    let at = datetime!(2026-01-03 00:00:00 UTC);
    assert_eq!(
        store.revoke_virtual_key(&record.id, at).await.unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        store.revoke_virtual_key(&record.id, at).await.unwrap(),
        RevokeOutcome::AlreadyRevoked
    );
    assert_eq!(
        store
            .revoke_virtual_key(&KeyId::generate(), at)
            .await
            .unwrap(),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        store.list_virtual_keys().await.unwrap()[0].revoked_at,
        Some(at)
    );
}

#[tokio::test]
async fn meta_first_writer_wins() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    assert_eq!(store.get_meta("x").await.unwrap(), None);
    assert_eq!(
        store.put_meta_if_absent("x", b"first").await.unwrap(),
        b"first"
    );
    assert_eq!(
        store.put_meta_if_absent("x", b"second").await.unwrap(),
        b"first"
    );
}

#[tokio::test]
async fn file_database_is_private_and_reopens() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    let record = key("dev");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert_virtual_key(&record).await.unwrap();
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.list_virtual_keys().await.unwrap().len(), 1);
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
                known: 2
            }
        ),
        "{error}"
    );
}

fn ledger(key: &KeyId, env: &str, model: &str, at_ms: i64, cost: i64) -> LedgerRecord {
    LedgerRecord {
        at_ms,
        request_id: format!("req_{at_ms}"),
        key_id: key.clone(),
        env: EnvName::parse(env).unwrap(),
        provider: ProviderName::parse("openai").unwrap(),
        provider_key_version: 1,
        model: Some(model.into()),
        input_tokens: 10,
        cached_input_tokens: 1,
        cache_write_tokens: 0,
        output_tokens: 5,
        reasoning_tokens: 2,
        usage_source: "reported",
        cost_nano_usd: cost,
        priced_by: "table",
        status: 200,
        latency_ms: 12,
    }
}

#[tokio::test]
async fn ledger_sums_by_key_model_day_and_env() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (a, b) = (KeyId::generate(), KeyId::generate());
    let day1 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let day2 = day1 + 86_400_000;
    store
        .insert_ledger(&[
            ledger(&a, "dev", "gpt-4o-mini", day1, 100),
            LedgerRecord {
                usage_source: "estimated",
                ..ledger(&a, "dev", "gpt-4o", day2, 300)
            },
            LedgerRecord {
                priced_by: "fallback",
                ..ledger(&b, "prod", "my-model", day2 + 5, 1000)
            },
            LedgerRecord {
                usage_source: "none",
                priced_by: "none",
                status: 500,
                ..ledger(&b, "prod", "gpt-4o", day2 + 6, 0)
            },
        ])
        .await
        .unwrap();
    let query = |group_by, since_ms, key_id: Option<KeyId>, env: Option<&str>| UsageQuery {
        since_ms,
        key_id,
        env: env.map(|e| EnvName::parse(e).unwrap()),
        group_by,
    };

    let by_key = store
        .query_usage(&query(UsageGroup::Key, 0, None, None))
        .await
        .unwrap();
    let a_row = by_key.iter().find(|r| r.group == a.as_str()).unwrap();
    assert_eq!(
        (
            a_row.requests,
            a_row.input_tokens,
            a_row.output_tokens,
            a_row.cost_nano_usd,
            a_row.estimated
        ),
        (2, 20, 10, 400, 1)
    );
    let b_row = by_key.iter().find(|r| r.group == b.as_str()).unwrap();
    assert_eq!(
        (
            b_row.requests,
            b_row.fallback_priced,
            b_row.errors,
            b_row.cost_nano_usd
        ),
        (2, 1, 1, 1000)
    );

    let by_day = store
        .query_usage(&query(UsageGroup::Day, 0, None, None))
        .await
        .unwrap();
    assert_eq!(
        by_day
            .iter()
            .map(|r| (r.group.as_str(), r.requests))
            .collect::<Vec<_>>(),
        [("2026-01-01", 1), ("2026-01-02", 3)]
    );

    let by_model_for_a = store
        .query_usage(&query(UsageGroup::Model, 0, Some(a.clone()), None))
        .await
        .unwrap();
    assert_eq!(
        by_model_for_a
            .iter()
            .map(|r| r.group.as_str())
            .collect::<Vec<_>>(),
        ["gpt-4o", "gpt-4o-mini"]
    );

    let recent_prod = store
        .query_usage(&query(UsageGroup::Env, day2, None, Some("prod")))
        .await
        .unwrap();
    assert_eq!(recent_prod.len(), 1);
    assert_eq!(
        (recent_prod[0].group.as_str(), recent_prod[0].requests),
        ("prod", 2)
    );
    assert!(
        store
            .query_usage(&query(UsageGroup::Key, day2 + 100, None, None))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert_virtual_key(&key("dev")).await.unwrap();
        // Roll the file back to what version 1 wrote.
        sqlx::raw_sql("DROP TABLE ledger; PRAGMA user_version = 1")
            .execute(&store.pool)
            .await
            .unwrap();
        store.pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.list_virtual_keys().await.unwrap().len(), 1);
    store
        .insert_ledger(&[ledger(&KeyId::generate(), "dev", "m", 1, 1)])
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(version, 2);
}
