//! PostgreSQL-only tests: several instances on one database. The shared
//! behaviour is in the conformance suite (`crate::conformance`).

use std::sync::Arc;

use super::*;
use crate::conformance::{PgFactory, key, ledger, provider, row_mac};

/// One instance's appender: chains `n` entries of its own onto whatever
/// the stored head is, each batch with ledger records, re-chaining when
/// another instance got there first (as the gateway's writer does).
async fn append(store: Arc<PgStore>, instance: &'static str, keys: Vec<KeyId>, n: u64) -> u64 {
    let mut moved = 0;
    for i in 0..n {
        let records: Vec<LedgerRecord> = keys
            .iter()
            .enumerate()
            .map(|(k, id)| LedgerRecord {
                request_id: format!("{instance}_{i}_{k}"),
                ..ledger(
                    id,
                    "prod",
                    "m",
                    1_767_225_600_000 + i64::try_from(i).unwrap() * 7_000,
                    3,
                )
            })
            .collect();
        loop {
            let (seq, prev) = store
                .audit_head()
                .await
                .unwrap()
                .unwrap_or((0, vec![0; 32]));
            let line = format!("{}|{}|{instance}", seq + 1, hex(&prev));
            let row = AuditRow {
                seq: seq + 1,
                at_ms: 0,
                kind: "test".into(),
                hash: digest(&line),
                line,
            };
            let checkpoint = AuditCheckpoint {
                seq: seq + 1,
                line: format!("checkpoint {}", seq + 1),
            };
            match store
                .commit_batch(&records, &[row], Some(&checkpoint))
                .await
            {
                Ok(()) => break,
                Err(StoreError::ChainMoved { head }) => {
                    assert!(head > seq, "the head moved forward");
                    moved += 1;
                }
                Err(error) => panic!("{instance}: {error}"),
            }
        }
    }
    moved
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(line: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, line.as_bytes())
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn two_instances_append_one_chain_and_exact_rollups() {
    let Some(factory) = PgFactory::new().await else {
        return;
    };
    let database = factory.database().await;
    let a = Arc::new(PgStore::connect(&database.url).await.unwrap());
    let b = Arc::new(PgStore::connect(&database.url).await.unwrap());
    // Both write to the same rollup groups (same keys, same minutes).
    let keys: Vec<KeyId> = (0..3).map(|_| KeyId::generate()).collect();
    const N: u64 = 40;
    let (moved_a, moved_b) = tokio::join!(
        tokio::spawn(append(a.clone(), "a", keys.clone(), N)),
        tokio::spawn(append(b.clone(), "b", keys.clone(), N)),
    );
    let moved = moved_a.unwrap() + moved_b.unwrap();
    eprintln!("batches chained again after the other instance appended: {moved}");

    // One dense chain: every entry names the hash of the one before.
    let lines = a.audit_lines(0, 10_000).await.unwrap();
    let entries: Vec<&(u64, String)> = lines
        .iter()
        .filter(|(_, line)| !line.starts_with("checkpoint"))
        .collect();
    assert_eq!(entries.len() as u64, 2 * N);
    let mut prev = vec![0u8; 32];
    for (n, (seq, line)) in entries.iter().enumerate() {
        assert_eq!(*seq, n as u64 + 1);
        let mut parts = line.split('|');
        assert_eq!(parts.next(), Some(seq.to_string().as_str()));
        assert_eq!(parts.next(), Some(hex(&prev).as_str()), "entry {seq}");
        prev = digest(line);
    }
    assert_eq!(lines.len() as u64, 4 * N, "one checkpoint after each entry");
    let (head, hash) = b.audit_head().await.unwrap().unwrap();
    assert_eq!((head, hash), (2 * N, prev));

    // Rollups equal the raw rows' sums.
    let rows = a.ledger_rows(0, 10_000).await.unwrap();
    assert_eq!(rows.len() as u64, 2 * N * 3);
    let totals = a.rollup_totals().await.unwrap();
    let requests: i64 = totals.iter().map(|t| t.requests).sum();
    let cost: i64 = totals.iter().map(|t| t.cost_nano_usd).sum();
    assert_eq!(requests, rows.len() as i64);
    assert_eq!(cost, rows.iter().map(|r| r.cost_nano_usd).sum::<i64>());
    for id in &keys {
        let spent = a
            .spend_since(&BudgetScope::Key(id.clone()), 0)
            .await
            .unwrap();
        assert_eq!(spent, 3 * 2 * i64::try_from(N).unwrap());
    }
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn instances_starting_at_once_migrate_once() {
    let Some(factory) = PgFactory::new().await else {
        return;
    };
    let database = factory.database().await;
    let url = database.url.as_str();
    // Four connects at once, each on connections of its own.
    let (a, b, c, d) = tokio::join!(
        PgStore::connect(url),
        PgStore::connect(url),
        PgStore::connect(url),
        PgStore::connect(url)
    );
    let stores = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM keyforge_schema")
        .fetch_all(stores[0].pool())
        .await
        .unwrap();
    assert_eq!(versions, [SCHEMA_VERSION]);
    // Every instance works on the one schema.
    stores[1]
        .insert_provider(&provider("openai", "prod"))
        .await
        .unwrap();
    assert_eq!(stores[3].list_providers().await.unwrap().len(), 1);
    for store in stores {
        store.close().await;
    }
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    let Some(factory) = PgFactory::new().await else {
        return;
    };
    let database = factory.database().await;
    let store = PgStore::connect(&database.url).await.unwrap();
    sqlx::query("UPDATE keyforge_schema SET version = 99")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let error = PgStore::connect(&database.url).await.unwrap_err();
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

/// A row sealed by SQLite verifies in PostgreSQL and the other way round:
/// both stores write the same MAC for the same row.
#[tokio::test]
async fn row_macs_are_the_same_in_both_stores() {
    let Some(factory) = PgFactory::new().await else {
        return;
    };
    let database = factory.database().await;
    let pg = PgStore::connect(&database.url).await.unwrap();
    let sqlite = crate::SqliteStore::open_in_memory().await.unwrap();
    let provider = provider("openai", "prod");
    let mut parent = key("prod");
    // Text that quoting must get right.
    parent.name = "it's \\ mine".into();
    parent.origin = "oidc:o'brien".into();
    let child = VirtualKeyRecord {
        parent: Some(parent.id.clone()),
        can_mint: true,
        ..key("prod")
    };
    let budget = BudgetRecord {
        id: BudgetId::generate(),
        scope: BudgetScope::Key(parent.id.clone()),
        limit: BudgetLimit::parse("5usd/day").unwrap(),
        created_at: time::macros::datetime!(2026-01-02 03:04:05 UTC),
    };
    for store in [&pg as &dyn Store, &sqlite] {
        store.install_row_mac(row_mac()).await.unwrap();
        store.insert_provider(&provider).await.unwrap();
        store
            .insert_virtual_key(&parent, std::slice::from_ref(&budget))
            .await
            .unwrap();
        store.insert_virtual_key(&child, &[]).await.unwrap();
    }
    for table in [
        "providers",
        "provider_credentials",
        "virtual_keys",
        "budgets",
    ] {
        let order = if table == "provider_credentials" {
            "provider_id, version"
        } else {
            "id"
        };
        let sql = format!("SELECT mac FROM {table} ORDER BY {order}");
        let in_pg: Vec<Option<Vec<u8>>> =
            sqlx::query_scalar(&sql).fetch_all(pg.pool()).await.unwrap();
        let in_sqlite: Vec<Option<Vec<u8>>> = sqlx::query_scalar(&sql)
            .fetch_all(sqlite.pool())
            .await
            .unwrap();
        assert!(in_pg.iter().all(Option::is_some), "{table}");
        assert_eq!(in_pg, in_sqlite, "{table}");
    }
    assert_eq!(pg.integrity_failures().await.unwrap(), []);
    pg.close().await;
}

#[tokio::test]
async fn backups_are_left_to_pg_dump() {
    let Some(factory) = PgFactory::new().await else {
        return;
    };
    let database = factory.database().await;
    let store = PgStore::connect(&database.url).await.unwrap();
    let error = store
        .backup_to(std::path::Path::new("/tmp/never"), false)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("pg_dump"), "{error}");
    store.close().await;
}

#[test]
fn passwords_are_redacted_from_urls() {
    let secret = ["s3", "cr3t"].concat();
    let url = format!("postgres://kf:{secret}@db:5432/keyforge?sslmode=require");
    assert_eq!(
        redact_url(&url),
        "postgres://kf:***@db:5432/keyforge?sslmode=require"
    );
    assert!(url_has_password(&url));
    assert!(!url_has_password("postgres://kf@db/keyforge"));
    assert!(!url_has_password("postgres://db/keyforge"));
    let in_query = format!("postgres://kf@db/keyforge?sslmode=require&password={secret}");
    assert_eq!(
        redact_url(&in_query),
        "postgres://kf@db/keyforge?sslmode=require&password=***"
    );
    assert!(url_has_password(&in_query));
}

/// An embedded store copied into PostgreSQL keeps every row as it was:
/// MACs verify there under the same row key, the audit log, ledger,
/// rollups, alerts and keys read back the same, and new rows continue
/// after the copied ids.
#[tokio::test]
async fn a_sqlite_store_copies_into_postgres_and_verifies_there() {
    let Some(factory) = PgFactory::new().await else {
        return;
    };
    let source = crate::conformance::SqliteFactory;
    let (sqlite, _provider, parent, _child) = crate::conformance::sealed_store(&source).await;
    let sqlite_store = sqlite.store();
    let records = crate::conformance::three_days_of_records(&parent.id, &KeyId::generate());
    sqlite_store
        .commit_batch(
            &records[..100],
            &[AuditRow {
                seq: 1,
                at_ms: 5,
                kind: "test".into(),
                line: "{\"seq\":1}".into(),
                hash: vec![7; 32],
            }],
            Some(&AuditCheckpoint {
                seq: 1,
                line: "{\"checkpoint\":1}".into(),
            }),
        )
        .await
        .unwrap();
    sqlite_store
        .insert_alert(
            &AlertEvent {
                at_ms: 9,
                kind: "budget".into(),
                dedup: Some("b-50".into()),
                key_id: Some(parent.id.clone()),
                budget_id: None,
                message: "half".into(),
                payload: "{}".into(),
            },
            &[],
        )
        .await
        .unwrap();
    let database = factory.database().await;
    let target = PgStore::connect(&database.url).await.unwrap();
    // What a gateway's first start on the new database would have written.
    target
        .put_meta_if_absent("hash_secret", b"other")
        .await
        .unwrap();
    let sqlite_file = sqlite.sqlite().unwrap();
    let report = crate::copy_sqlite_to_postgres(sqlite_file, &target)
        .await
        .unwrap();
    let copied = |name: &str| {
        report
            .tables
            .iter()
            .find(|(table, _)| *table == name)
            .map(|(_, n)| *n)
    };
    assert_eq!(copied("virtual_keys"), Some(2));
    assert_eq!(copied("ledger"), Some(100));
    assert_eq!(copied("audit_log"), Some(1));

    target.install_row_mac(row_mac()).await.unwrap();
    assert_eq!(target.integrity_failures().await.unwrap(), []);
    let debug = |keys: Vec<VirtualKeyRecord>| format!("{keys:?}");
    assert_eq!(
        debug(target.list_virtual_keys(None).await.unwrap()),
        debug(sqlite_store.list_virtual_keys(None).await.unwrap())
    );
    assert_eq!(
        target.list_budgets().await.unwrap(),
        sqlite_store.list_budgets().await.unwrap()
    );
    assert_eq!(
        target.audit_lines(0, 100).await.unwrap(),
        sqlite_store.audit_lines(0, 100).await.unwrap()
    );
    assert_eq!(
        target.audit_head().await.unwrap(),
        sqlite_store.audit_head().await.unwrap()
    );
    assert_eq!(
        target.ledger_rows(0, 1000).await.unwrap(),
        sqlite_store.ledger_rows(0, 1000).await.unwrap()
    );
    assert_eq!(
        target.list_alerts(10).await.unwrap(),
        sqlite_store.list_alerts(10).await.unwrap()
    );
    let keys = [parent.id.clone()];
    assert_eq!(
        crate::conformance::aggregates(&target, &keys, 0).await,
        crate::conformance::aggregates(sqlite_store, &keys, 0).await
    );
    assert_eq!(
        target.get_meta("hash_secret").await.unwrap(),
        sqlite_store.get_meta("hash_secret").await.unwrap()
    );
    // New rows continue after the copied ones.
    target.insert_ledger(&records[100..101]).await.unwrap();
    let rows = target.ledger_rows(100, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, 101);
    // A database that is not empty is refused.
    let again = crate::copy_sqlite_to_postgres(sqlite_file, &target).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    target.close().await;
}

/// Waits up to 10 s for the listener's next notice (a lost test, not a
/// hung one, when none comes).
async fn next_notice(listener: &mut Box<dyn ChangeListener>) -> i64 {
    tokio::time::timeout(std::time::Duration::from_secs(10), listener.next())
        .await
        .expect("a change notice within 10 s")
        .expect("the listener keeps its connection")
}

/// What another instance learns of a change: one notice per committed
/// transaction carrying the change sequence number that transaction
/// reached (a key revoked with its child is one transaction, one
/// notice), and ledger batches, written for every request, send none.
#[tokio::test]
async fn committed_changes_notify_other_instances_once_and_ledger_batches_do_not() {
    let Some(factory) = PgFactory::new().await else {
        return;
    };
    let database = factory.database().await;
    let writer = PgStore::connect(&database.url).await.unwrap();
    writer.install_row_mac(row_mac()).await.unwrap();
    let watcher = PgStore::connect(&database.url).await.unwrap();
    let mut listener = watcher.listen_changes().await.unwrap().unwrap();
    let start = watcher.change_seq().await.unwrap().unwrap();

    let parent = key("prod");
    writer.insert_virtual_key(&parent, &[]).await.unwrap();
    assert_eq!(next_notice(&mut listener).await, start + 1);
    let child = VirtualKeyRecord {
        parent: Some(parent.id.clone()),
        ..key("prod")
    };
    writer.insert_virtual_key(&child, &[]).await.unwrap();
    assert_eq!(next_notice(&mut listener).await, start + 2);

    // Ledger rows and their audit entry: no notice, no new number.
    writer
        .insert_ledger(&[ledger(&parent.id, "prod", "m", 1_767_225_600_000, 3)])
        .await
        .unwrap();
    // The revocation (two rows, one transaction) is the next notice.
    writer
        .revoke_virtual_key(&parent.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(next_notice(&mut listener).await, start + 3);
    assert_eq!(watcher.change_seq().await.unwrap(), Some(start + 3));
    writer.close().await;
    watcher.close().await;
}
