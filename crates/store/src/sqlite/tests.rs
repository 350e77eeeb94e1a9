use keyforge_types::{ModelPattern, VirtualKey};
use time::macros::datetime;

use super::*;

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
                known: 1
            }
        ),
        "{error}"
    );
}
