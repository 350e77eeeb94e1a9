//! The store conformance suite: one set of tests that every [`Store`]
//! implementation must pass, run against SQLite (in memory) and against
//! PostgreSQL (a fresh database `kf_test_<random>` per test, dropped after).
//!
//! The PostgreSQL server is `KEYFORGE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the test user must be able to
//! create databases. Without a server the PostgreSQL tests are skipped with
//! a printed reason, except under `CI=true`, where that is a failure.
//!
//! Tests that only make sense for one store (SQLite files, locks, backups,
//! upgrades of old SQLite schemas) stay beside that store.

use async_trait::async_trait;
use keyforge_types::{
    AlertId, AnomalyAction, BudgetId, BudgetLimit, BudgetScope, EnvName, KeyId, KeyLimits,
    ModelPattern, ProjectName, ProviderId, ProviderName, Scope, VirtualKey,
};
use time::macros::datetime;

use crate::model::{
    AdminRecord, AdminRevokeOutcome, AlertDelivery, AlertEvent, AlertWebhookRecord, BudgetRecord,
    CredentialRecord, CredentialStage, KeyRotation, KeyRotationOutcome, KeyUpdate, LedgerRecord,
    NewProvider, RevokeOutcome, Suspension, UpstreamHealth, UsageGroup, UsageQuery, UsageRow,
    VersionUsage, VirtualKeyRecord,
};
use crate::{PgStore, RowMac, SealedTable, SqliteStore, Store, StoreError};

/// A store under test, and a way around it to the database, as an
/// attacker with write access to the database has.
#[async_trait(?Send)]
pub(crate) trait Harness {
    fn store(&self) -> &dyn Store;
    /// Runs one SQL statement on the database directly.
    async fn execute(&self, sql: &str);
    /// Runs a query returning one integer.
    async fn count(&self, sql: &str) -> i64;
    /// The SQLite store itself, when this is one.
    fn sqlite(&self) -> Option<&SqliteStore> {
        None
    }
}

/// Opens fresh, empty stores of one kind.
#[async_trait(?Send)]
pub(crate) trait Factory {
    async fn open(&self) -> Box<dyn Harness>;
    /// The SQL literal of a blob (`hex` digits) in this store's dialect.
    fn blob_literal(&self, hex: &str) -> String;
}

pub(crate) struct SqliteFactory;

struct SqliteHarness(SqliteStore);

#[async_trait(?Send)]
impl Harness for SqliteHarness {
    fn store(&self) -> &dyn Store {
        &self.0
    }
    fn sqlite(&self) -> Option<&SqliteStore> {
        Some(&self.0)
    }
    async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(self.0.pool()).await.unwrap();
    }
    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.0.pool())
            .await
            .unwrap()
    }
}

#[async_trait(?Send)]
impl Factory for SqliteFactory {
    async fn open(&self) -> Box<dyn Harness> {
        Box::new(SqliteHarness(SqliteStore::open_in_memory().await.unwrap()))
    }
    fn blob_literal(&self, hex: &str) -> String {
        format!("x'{hex}'")
    }
}

/// The server the PostgreSQL tests create their databases on.
pub(crate) fn pg_admin_url() -> String {
    std::env::var("KEYFORGE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `url` with its database replaced by `database`.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |at| scheme_end + at);
    format!("{}/{database}{query}", &base[..host_end])
}

pub(crate) struct PgFactory {
    admin_url: String,
}

impl PgFactory {
    /// `None` (with the reason printed) when no server answers, except
    /// under `CI=true`, where a missing server fails the test.
    pub(crate) async fn new() -> Option<Self> {
        let admin_url = pg_admin_url();
        let reachable = sqlx::PgPool::connect(&admin_url).await;
        match reachable {
            Ok(pool) => {
                pool.close().await;
                Some(Self { admin_url })
            }
            Err(error) => {
                let where_ = crate::redact_url(&admin_url);
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("CI=true and no PostgreSQL server answers at {where_}: {error}");
                }
                eprintln!(
                    "skipped: no PostgreSQL server at {where_} ({error}); set KEYFORGE_TEST_PG_URL"
                );
                None
            }
        }
    }

    /// Creates a fresh database; dropped with the returned guard.
    pub(crate) async fn database(&self) -> TestDatabase {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        let name = format!(
            "kf_test_{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let admin = sqlx::PgPool::connect(&self.admin_url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        TestDatabase {
            url: with_database(&self.admin_url, &name),
            admin_url: self.admin_url.clone(),
            name,
        }
    }
}

/// A database created for one test, dropped when this goes out of scope
/// (also when the test panics).
pub(crate) struct TestDatabase {
    pub(crate) url: String,
    admin_url: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be the one calling:
        // the drop runs on a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let admin = sqlx::PgPool::connect(&admin_url).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("cannot drop test database {}: {error}", self.name);
        }
    }
}

struct PgHarness {
    store: PgStore,
    _database: TestDatabase,
}

#[async_trait(?Send)]
impl Harness for PgHarness {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(self.store.pool()).await.unwrap();
    }
    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

#[async_trait(?Send)]
impl Factory for PgFactory {
    async fn open(&self) -> Box<dyn Harness> {
        let database = self.database().await;
        let store = PgStore::connect(&database.url).await.unwrap();
        Box::new(PgHarness {
            store,
            _database: database,
        })
    }
    fn blob_literal(&self, hex: &str) -> String {
        format!("'\\x{hex}'::bytea")
    }
}

/// Runs each named test against SQLite and against PostgreSQL.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::SqliteFactory).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(factory) = super::PgFactory::new().await {
                        super::$name(&factory).await;
                    }
                }
            )*
        }
    };
}

suite!(
    providers_are_unique_per_environment,
    keys_round_trip_and_revoke_once,
    meta_first_writer_wins,
    ledger_sums_by_key_model_day_and_env,
    usage_windows_end_before_until_to_the_millisecond,
    keys_keep_project_limits_and_suspension,
    budgets_are_one_per_scope_and_period,
    spend_and_recent_requests_come_from_the_ledger,
    alerts_are_raised_once_and_track_deliveries,
    credential_stages_keep_one_current_version,
    revoking_a_parent_revokes_its_whole_tree_and_its_budget_counts_the_tree,
    keys_retired_before_a_cutoff_are_left_out_of_the_listing,
    every_write_path_leaves_its_rows_intact,
    rows_edited_outside_the_store_fail_their_check,
    a_tampered_key_can_be_revoked_but_is_never_resealed,
    updates_in_place_keep_rows_sealed_and_never_launder_an_edit,
    pruning_raw_rows_keeps_usage_budgets_rotation_and_health,
    health_reports_the_latest_status_of_each_key_version,
    admins_round_trip_and_the_last_owner_is_never_revoked,
    an_admin_row_edited_outside_the_store_fails_its_check
);

pub(crate) fn provider(name: &str, env: &str) -> NewProvider {
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

pub(crate) fn key(env: &str) -> VirtualKeyRecord {
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
        project: Some(ProjectName::parse("checkout").unwrap()),
        limits: KeyLimits {
            rpm: Some(60),
            tpm: None,
            max_parallel: Some(4),
        },
        on_anomaly: AnomalyAction::Suspend,
        created_at: datetime!(2026-01-02 03:04:05 UTC),
        expires_at: Some(datetime!(2026-02-02 03:04:05 UTC)),
        revoked_at: None,
        suspended: None,
        parent: None,
        can_mint: false,
        origin: "admin".into(),
    }
}

pub(crate) async fn providers_are_unique_per_environment(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
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

pub(crate) async fn keys_round_trip_and_revoke_once(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let record = key("dev");
    store.insert_virtual_key(&record, &[]).await.unwrap();
    let loaded = store.get_virtual_key(&record.id).await.unwrap().unwrap();
    assert!(loaded.hash.ct_eq(&record.hash));
    assert_eq!(loaded.scope, record.scope);
    assert_eq!(loaded.expires_at, record.expires_at);
    let at = datetime!(2026-01-03 00:00:00 UTC);
    assert_eq!(
        store.revoke_virtual_key(&record.id, at).await.unwrap(),
        RevokeOutcome::Revoked {
            descendants: vec![]
        }
    );
    assert_eq!(
        store.revoke_virtual_key(&record.id, at).await.unwrap(),
        RevokeOutcome::AlreadyRevoked {
            descendants: vec![]
        }
    );
    assert_eq!(
        store
            .revoke_virtual_key(&KeyId::generate(), at)
            .await
            .unwrap(),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        store.list_virtual_keys(None).await.unwrap()[0].revoked_at,
        Some(at)
    );
}

pub(crate) async fn meta_first_writer_wins(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
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

pub(crate) fn ledger(key: &KeyId, env: &str, model: &str, at_ms: i64, cost: i64) -> LedgerRecord {
    LedgerRecord {
        at_ms,
        request_id: format!("req_{at_ms}"),
        key_id: key.clone(),
        env: EnvName::parse(env).unwrap(),
        project: None,
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
        outcome: "ok",
    }
}

pub(crate) async fn ledger_sums_by_key_model_day_and_env(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let (a, b) = (KeyId::generate(), KeyId::generate());
    let day1 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let day2 = day1 + 86_400_000;
    store
        .insert_ledger(&[
            ledger(&a, "dev", "gpt-4o-mini", day1, 100),
            LedgerRecord {
                usage_source: "estimated",
                outcome: "client_cancelled",
                ..ledger(&a, "dev", "gpt-4o", day2, 300)
            },
            LedgerRecord {
                priced_by: "fallback",
                ..ledger(&b, "prod", "my-model", day2 + 5, 1000)
            },
            LedgerRecord {
                usage_source: "none",
                priced_by: "unmetered",
                ..ledger(&b, "prod", "dall-e-3", day2 + 5, 50_000_000)
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
        until_ms: None,
        key_id,
        env: env.map(|e| EnvName::parse(e).unwrap()),
        project: None,
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
            a_row.estimated,
            a_row.client_cancelled
        ),
        (2, 20, 10, 400, 1, 1)
    );
    let b_row = by_key.iter().find(|r| r.group == b.as_str()).unwrap();
    assert_eq!(
        (
            b_row.requests,
            b_row.fallback_priced,
            b_row.errors,
            b_row.unmetered,
            b_row.cost_nano_usd
        ),
        (3, 1, 1, 1, 50_001_000)
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
        [("2026-01-01", 1), ("2026-01-02", 4)]
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
        ("prod", 3)
    );
    assert!(
        store
            .query_usage(&query(UsageGroup::Key, day2 + 100, None, None))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `until_ms` ends a usage window exactly, excluded, whether it falls on a
/// minute (read from the rollups) or inside one (the raw rows of that
/// partial minute), and a window inside one minute reads raw rows only.
pub(crate) async fn usage_windows_end_before_until_to_the_millisecond(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let a = KeyId::generate();
    let day1 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let day2 = day1 + 86_400_000;
    let times = [
        day1,
        day1 + 30_000,
        day1 + 90_000,
        day2 - 1,
        day2,
        day2 + 45_000,
    ];
    let records: Vec<LedgerRecord> = times
        .iter()
        .map(|at| ledger(&a, "dev", "gpt-4o-mini", *at, 10))
        .collect();
    store.insert_ledger(&records).await.unwrap();
    let count = |since_ms: i64, until_ms: Option<i64>| async move {
        store
            .query_usage(&UsageQuery {
                since_ms,
                until_ms,
                key_id: None,
                env: None,
                project: None,
                group_by: UsageGroup::Key,
            })
            .await
            .unwrap()
            .iter()
            .map(|row| row.requests)
            .sum::<u64>()
    };
    // (since, until, requests expected)
    let cases: &[(i64, Option<i64>, u64)] = &[
        (0, None, 6),
        (0, Some(day2), 4),
        (day1, Some(day2), 4),
        (day2, Some(day2 + 86_400_000), 2),
        (day1 + 10_000, Some(day1 + 95_000), 2),
        (day1 + 20_000, Some(day1 + 40_000), 1),
        (day1 + 30_000, Some(day1 + 30_000), 0),
        (day1 + 30_001, Some(day2), 2),
        (0, Some(day2 + 45_000), 5),
        (0, Some(day2 + 45_001), 6),
    ];
    for (since_ms, until_ms, expected) in cases {
        assert_eq!(
            count(*since_ms, *until_ms).await,
            *expected,
            "[{since_ms}, {until_ms:?})"
        );
    }
}

pub(crate) async fn keys_keep_project_limits_and_suspension(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let record = key("dev");
    let budget = BudgetRecord {
        id: BudgetId::generate(),
        scope: BudgetScope::Key(record.id.clone()),
        limit: BudgetLimit::parse("5usd/day").unwrap(),
        created_at: datetime!(2026-01-02 03:04:05 UTC),
    };
    store
        .insert_virtual_key(&record, std::slice::from_ref(&budget))
        .await
        .unwrap();
    let stored = store.get_virtual_key(&record.id).await.unwrap().unwrap();
    assert_eq!(stored.project, record.project);
    assert_eq!(stored.limits, record.limits);
    assert_eq!(stored.on_anomaly, AnomalyAction::Suspend);
    assert_eq!(store.list_budgets().await.unwrap(), [budget]);

    let suspension = Suspension {
        at: datetime!(2026-01-03 00:00 UTC),
        reason: "request rate spike".into(),
    };
    assert!(
        store
            .set_key_suspension(&record.id, Some(&suspension))
            .await
            .unwrap()
    );
    let stored = store.get_virtual_key(&record.id).await.unwrap().unwrap();
    assert_eq!(stored.suspended, Some(suspension));
    assert!(store.set_key_suspension(&record.id, None).await.unwrap());
    let stored = store.get_virtual_key(&record.id).await.unwrap().unwrap();
    assert_eq!(stored.suspended, None);
    assert!(
        !store
            .set_key_suspension(&KeyId::generate(), None)
            .await
            .unwrap()
    );
}

pub(crate) async fn budgets_are_one_per_scope_and_period(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let project = BudgetScope::Project(ProjectName::parse("checkout").unwrap());
    let first = BudgetRecord {
        id: BudgetId::generate(),
        scope: project.clone(),
        limit: BudgetLimit::parse("50usd/month").unwrap(),
        created_at: datetime!(2026-01-02 03:04:05 UTC),
    };
    assert_eq!(store.upsert_budget(&first).await.unwrap(), first);
    // Setting the same scope and period again changes the amount, keeps the id.
    let again = BudgetRecord {
        id: BudgetId::generate(),
        limit: BudgetLimit::parse("80usd/month").unwrap(),
        ..first.clone()
    };
    let stored = store.upsert_budget(&again).await.unwrap();
    assert_eq!(stored.id, first.id);
    assert_eq!(stored.limit, again.limit);
    // Another period is another budget.
    let daily = BudgetRecord {
        id: BudgetId::generate(),
        limit: BudgetLimit::parse("5usd/day").unwrap(),
        ..first.clone()
    };
    store.upsert_budget(&daily).await.unwrap();
    assert_eq!(store.list_budgets().await.unwrap().len(), 2);
    assert!(store.delete_budget(&daily.id).await.unwrap());
    assert!(!store.delete_budget(&daily.id).await.unwrap());
    assert_eq!(store.list_budgets().await.unwrap().len(), 1);
}

pub(crate) async fn spend_and_recent_requests_come_from_the_ledger(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let (a, b) = (KeyId::generate(), KeyId::generate());
    let checkout = ProjectName::parse("checkout").unwrap();
    store
        .insert_ledger(&[
            LedgerRecord {
                project: Some(checkout.clone()),
                ..ledger(&a, "dev", "m", 1_000, 100)
            },
            LedgerRecord {
                project: Some(checkout.clone()),
                ..ledger(&b, "prod", "m", 2_000, 20)
            },
            ledger(&b, "prod", "m", 3_000, 3),
        ])
        .await
        .unwrap();
    let spend =
        |scope: BudgetScope, since| async move { store.spend_since(&scope, since).await.unwrap() };
    assert_eq!(spend(BudgetScope::Project(checkout.clone()), 0).await, 120);
    assert_eq!(spend(BudgetScope::Project(checkout), 1_500).await, 20);
    assert_eq!(spend(BudgetScope::Key(b.clone()), 0).await, 23);
    assert_eq!(
        spend(BudgetScope::Env(EnvName::parse("prod").unwrap()), 2_500).await,
        3
    );
    assert_eq!(
        spend(BudgetScope::Env(EnvName::parse("qa").unwrap()), 0).await,
        0
    );
    let recent = store.recent_requests(1_500).await.unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|r| (r.key_id.clone(), r.at_ms, r.tokens))
            .collect::<Vec<_>>(),
        [(b.clone(), 2_000, 15), (b, 3_000, 15)]
    );
}

pub(crate) async fn alerts_are_raised_once_and_track_deliveries(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let webhook = AlertWebhookRecord {
        id: AlertId::generate(),
        sealed_url: vec![1, 2, 3],
        display_url: "https://hooks.example".into(),
        thresholds: vec![25, 50, 75, 100],
        created_at: datetime!(2026-01-02 03:04:05 UTC),
    };
    store.insert_alert_webhook(&webhook).await.unwrap();
    let listed = store.list_alert_webhooks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].thresholds, [25, 50, 75, 100]);
    assert_eq!(listed[0].sealed_url, [1, 2, 3]);

    let event = AlertEvent {
        at_ms: 5,
        kind: "budget".into(),
        dedup: Some("budget/bgt_x/0/50".into()),
        key_id: None,
        budget_id: Some(BudgetId::generate()),
        message: "half spent".into(),
        payload: "{}".into(),
    };
    let id = store
        .insert_alert(&event, std::slice::from_ref(&webhook.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .insert_alert(&event, std::slice::from_ref(&webhook.id))
            .await
            .unwrap(),
        None,
        "the same threshold in the same period fires once"
    );
    let delivered = AlertDelivery {
        webhook_id: webhook.id.clone(),
        status: "delivered".into(),
        attempts: 2,
        last_error: Some("HTTP 500".into()),
    };
    store
        .update_alert_delivery(id, &delivered, 9)
        .await
        .unwrap();
    let alerts = store.list_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event, event);
    assert_eq!(alerts[0].deliveries, [delivered]);
    assert!(store.delete_alert_webhook(&webhook.id).await.unwrap());
    assert!(store.list_alert_webhooks().await.unwrap().is_empty());
}

pub(crate) async fn credential_stages_keep_one_current_version(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let new = provider("openai", "dev");
    store.insert_provider(&new).await.unwrap();
    let v2 = CredentialRecord {
        version: 2,
        sealed: vec![4, 5],
        created_at: datetime!(2026-02-01 00:00 UTC),
    };
    store
        .insert_credential(&new.id, &v2, CredentialStage::Pending)
        .await
        .unwrap();
    let duplicate = store
        .insert_credential(&new.id, &v2, CredentialStage::Pending)
        .await
        .unwrap_err();
    assert!(matches!(duplicate, StoreError::Conflict(_)), "{duplicate}");
    let listed = store.list_providers().await.unwrap();
    assert_eq!(listed[0].pending.as_ref().map(|c| c.version), Some(2));
    assert!(listed[0].previous.is_none());

    // Two current versions would be a broken provider: refused, nothing changed.
    let refused = store
        .set_credential_stages(&new.id, &[(2, CredentialStage::Current)], 0)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused}");
    store
        .set_credential_stages(
            &new.id,
            &[
                (2, CredentialStage::Current),
                (1, CredentialStage::Previous),
            ],
            0,
        )
        .await
        .unwrap();
    let listed = store.list_providers().await.unwrap();
    assert_eq!(listed[0].current.version, 2);
    assert_eq!(listed[0].current.sealed, [4, 5]);
    assert_eq!(listed[0].previous.as_ref().map(|c| c.version), Some(1));
    assert!(listed[0].pending.is_none());
    let versions = store.list_credentials(&new.id).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.stage))
            .collect::<Vec<_>>(),
        [
            (2, CredentialStage::Current),
            (1, CredentialStage::Previous)
        ]
    );
}

pub(crate) async fn revoking_a_parent_revokes_its_whole_tree_and_its_budget_counts_the_tree(
    new: &dyn Factory,
) {
    let h = new.open().await;
    let store = h.store();
    let root = key("dev");
    let mut child = key("dev");
    child.parent = Some(root.id.clone());
    child.origin = format!("key:{}", root.id);
    let mut grandchild = key("dev");
    grandchild.parent = Some(child.id.clone());
    let sibling = key("dev");
    for record in [&root, &child, &grandchild, &sibling] {
        store.insert_virtual_key(record, &[]).await.unwrap();
    }
    let loaded = store
        .get_virtual_key(&grandchild.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.parent.as_ref(), Some(&child.id));
    assert_eq!(
        store
            .get_virtual_key(&child.id)
            .await
            .unwrap()
            .unwrap()
            .origin,
        format!("key:{}", root.id)
    );

    store
        .insert_ledger(&[
            ledger(&root.id, "dev", "gpt-4o", 1_000, 5),
            ledger(&child.id, "dev", "gpt-4o", 1_000, 7),
            ledger(&grandchild.id, "dev", "gpt-4o", 1_000, 11),
            ledger(&sibling.id, "dev", "gpt-4o", 1_000, 13),
        ])
        .await
        .unwrap();
    let spent = |id: &KeyId| {
        let scope = BudgetScope::Key(id.clone());
        let store = &store;
        async move { store.spend_since(&scope, 0).await.unwrap() }
    };
    assert_eq!(spent(&root.id).await, 5 + 7 + 11);
    assert_eq!(spent(&child.id).await, 7 + 11);
    assert_eq!(spent(&grandchild.id).await, 11);

    // A grandchild revoked on its own is not listed again.
    let at = datetime!(2026-01-03 00:00:00 UTC);
    store.revoke_virtual_key(&grandchild.id, at).await.unwrap();
    let mut expected = vec![child.id.clone()];
    expected.sort();
    assert_eq!(
        store.revoke_virtual_key(&root.id, at).await.unwrap(),
        RevokeOutcome::Revoked {
            descendants: expected
        }
    );
    for id in [&root.id, &child.id, &grandchild.id] {
        let record = store.get_virtual_key(id).await.unwrap().unwrap();
        assert_eq!(record.revoked_at, Some(at), "{id}");
    }
    let sibling = store.get_virtual_key(&sibling.id).await.unwrap().unwrap();
    assert_eq!(sibling.revoked_at, None);
}

pub(crate) async fn keys_retired_before_a_cutoff_are_left_out_of_the_listing(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let mut live = key("dev");
    live.expires_at = None;
    let mut expired_long_ago = key("dev");
    expired_long_ago.expires_at = Some(datetime!(2026-01-01 00:00:00 UTC));
    let mut expired_lately = key("dev");
    expired_lately.expires_at = Some(datetime!(2026-03-01 00:00:00 UTC));
    let mut revoked_long_ago = key("dev");
    revoked_long_ago.expires_at = None;
    revoked_long_ago.revoked_at = Some(datetime!(2026-01-01 00:00:00 UTC));
    for record in [&live, &expired_long_ago, &expired_lately, &revoked_long_ago] {
        store.insert_virtual_key(record, &[]).await.unwrap();
    }
    let cutoff = datetime!(2026-02-01 00:00:00 UTC);
    let mut listed: Vec<KeyId> = store
        .list_virtual_keys(Some(cutoff))
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.id)
        .collect();
    listed.sort();
    let mut expected = vec![live.id.clone(), expired_lately.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.list_virtual_keys(None).await.unwrap().len(), 4);
    // Archived keys are still found by id.
    assert!(
        store
            .get_virtual_key(&revoked_long_ago.id)
            .await
            .unwrap()
            .is_some()
    );
}

pub(crate) fn row_mac() -> RowMac {
    RowMac::new(&[42; 32])
}

/// A store with its row key installed, a provider, a parent key with a
/// child and a key budget, a project budget and a webhook, each written
/// through the API.
pub(crate) async fn sealed_store(
    new: &dyn Factory,
) -> (
    Box<dyn Harness>,
    NewProvider,
    VirtualKeyRecord,
    VirtualKeyRecord,
) {
    let h = new.open().await;
    let store = h.store();
    store.install_row_mac(row_mac()).await.unwrap();
    let provider = provider("openai", "prod");
    store.insert_provider(&provider).await.unwrap();
    let parent = key("prod");
    let budget = BudgetRecord {
        id: BudgetId::generate(),
        scope: BudgetScope::Key(parent.id.clone()),
        limit: BudgetLimit::parse("5usd/day").unwrap(),
        created_at: datetime!(2026-01-02 03:04:05 UTC),
    };
    store.insert_virtual_key(&parent, &[budget]).await.unwrap();
    let child = VirtualKeyRecord {
        parent: Some(parent.id.clone()),
        ..key("prod")
    };
    store.insert_virtual_key(&child, &[]).await.unwrap();
    store
        .upsert_budget(&BudgetRecord {
            id: BudgetId::generate(),
            scope: BudgetScope::Project(ProjectName::parse("checkout").unwrap()),
            limit: BudgetLimit::parse("50usd/month").unwrap(),
            created_at: datetime!(2026-01-02 03:04:05 UTC),
        })
        .await
        .unwrap();
    store
        .insert_alert_webhook(&AlertWebhookRecord {
            id: AlertId::generate(),
            sealed_url: vec![4, 5, 6],
            display_url: "https://hooks.example".into(),
            thresholds: vec![50, 100],
            created_at: datetime!(2026-01-02 03:04:05 UTC),
        })
        .await
        .unwrap();
    (h, provider, parent, child)
}

pub(crate) async fn failures(store: &dyn Store) -> Vec<(SealedTable, String)> {
    let mut failed: Vec<_> = store
        .integrity_failures()
        .await
        .unwrap()
        .into_iter()
        .map(|failure| (failure.table, failure.id))
        .collect();
    failed.sort_by(|a, b| a.1.cmp(&b.1));
    failed
}

pub(crate) async fn every_write_path_leaves_its_rows_intact(new: &dyn Factory) {
    let (h, provider, parent, child) = sealed_store(new).await;
    let store = h.store();
    assert_eq!(failures(store).await, []);
    let at = datetime!(2026-01-05 00:00 UTC);
    // Each legitimate change, then the whole store still verifies.
    store
        .insert_credential(
            &provider.id,
            &CredentialRecord {
                version: 2,
                sealed: vec![7, 8],
                created_at: at,
            },
            CredentialStage::Pending,
        )
        .await
        .unwrap();
    store
        .set_credential_stages(
            &provider.id,
            &[
                (2, CredentialStage::Current),
                (1, CredentialStage::Previous),
            ],
            0,
        )
        .await
        .unwrap();
    let suspension = Suspension {
        at,
        reason: "spike".into(),
    };
    store
        .set_key_suspension(&child.id, Some(&suspension))
        .await
        .unwrap();
    store.set_key_suspension(&child.id, None).await.unwrap();
    let hasher = keyforge_types::KeyHasher::new(&[7; 32]);
    let successor = VirtualKey::generate(&parent.env);
    let rotated = store
        .rotate_virtual_key(&KeyRotation {
            key_id: parent.id.clone(),
            new_hash: hasher.hash(&successor),
            new_prefix: successor.display_prefix(),
            grace_until: at + time::Duration::hours(1),
            force: false,
            idempotency: None,
            at,
        })
        .await
        .unwrap();
    assert_eq!(rotated, KeyRotationOutcome::Rotated);
    let daily = BudgetRecord {
        id: BudgetId::generate(),
        scope: BudgetScope::Key(parent.id.clone()),
        limit: BudgetLimit::parse("1usd/day").unwrap(),
        created_at: at,
    };
    store.upsert_budget(&daily).await.unwrap();
    let weekly = BudgetRecord {
        id: BudgetId::generate(),
        limit: BudgetLimit::parse("3usd/week").unwrap(),
        ..daily.clone()
    };
    store.upsert_budget(&weekly).await.unwrap();
    assert!(store.delete_budget(&weekly.id).await.unwrap());
    assert_eq!(failures(store).await, []);
    store.revoke_virtual_key(&parent.id, at).await.unwrap();
    store
        .revoke_virtual_keys_where(Some(&parent.env), None, at)
        .await
        .unwrap();
    assert_eq!(failures(store).await, []);
}

/// Each edit an attacker with write access to the file could make, and the
/// row it must show up on.
pub(crate) async fn rows_edited_outside_the_store_fail_their_check(new: &dyn Factory) {
    let cases: &[(&str, SealedTable)] = &[
        (
            "UPDATE providers SET base_url = 'https://attacker.example'",
            SealedTable::Provider,
        ),
        ("UPDATE providers SET env = 'dev'", SealedTable::Provider),
        (
            "UPDATE providers SET kind = 'anthropic'",
            SealedTable::Provider,
        ),
        (
            "UPDATE provider_credentials SET sealed = {blob 00}",
            SealedTable::Credential,
        ),
        (
            "UPDATE virtual_keys SET scope = '{\"providers\":[],\"models\":[]}' WHERE parent_id IS NULL",
            SealedTable::VirtualKey,
        ),
        (
            "UPDATE virtual_keys SET rpm = NULL WHERE parent_id IS NULL",
            SealedTable::VirtualKey,
        ),
        (
            "UPDATE virtual_keys SET expires_at = NULL WHERE parent_id IS NULL",
            SealedTable::VirtualKey,
        ),
        (
            "UPDATE virtual_keys SET can_mint = 1 WHERE parent_id IS NULL",
            SealedTable::VirtualKey,
        ),
        (
            "UPDATE virtual_keys SET env = 'dev' WHERE parent_id IS NULL",
            SealedTable::VirtualKey,
        ),
        // The mac column cleared: a row without a MAC is refused too.
        (
            "UPDATE virtual_keys SET mac = NULL WHERE parent_id IS NULL",
            SealedTable::VirtualKey,
        ),
        // A key's own budget deleted: the key fails (its budget is gone).
        (
            "DELETE FROM budgets WHERE scope_kind = 'key'",
            SealedTable::VirtualKey,
        ),
        (
            "UPDATE budgets SET limit_nano_usd = limit_nano_usd * 1000 WHERE scope_kind = 'project'",
            SealedTable::Budget,
        ),
        (
            "UPDATE budgets SET period = 'year' WHERE scope_kind = 'project'",
            SealedTable::Budget,
        ),
        (
            "UPDATE alert_webhooks SET thresholds = '100'",
            SealedTable::AlertWebhook,
        ),
    ];
    for (edit, table) in cases {
        let edit = &edit.replace("{blob 00}", &new.blob_literal("00"));
        let (h, _, _, _) = sealed_store(new).await;
        let store = h.store();
        h.execute(edit).await;
        let failed = failures(store).await;
        assert_eq!(failed.len(), 1, "{edit}: {failed:?}");
        assert_eq!(failed[0].0, *table, "{edit}");
    }
    // A MAC copied from another row of the same table does not fit.
    let (h, _, parent, child) = sealed_store(new).await;
    let store = h.store();
    h.execute(&format!(
        "UPDATE virtual_keys SET mac = (SELECT mac FROM virtual_keys WHERE id = '{}') WHERE id = '{}'",
        parent.id, child.id
    ))
    .await;
    assert_eq!(
        failures(store).await,
        [(SealedTable::VirtualKey, child.id.to_string())]
    );
}

pub(crate) async fn a_tampered_key_can_be_revoked_but_is_never_resealed(new: &dyn Factory) {
    let (h, _, parent, child) = sealed_store(new).await;
    let store = h.store();
    h.execute(&format!(
        "UPDATE virtual_keys SET can_mint = 1 WHERE id = '{}'",
        child.id
    ))
    .await;
    let at = datetime!(2026-01-05 00:00 UTC);
    // Suspending and resuming must not launder the edit.
    let suspension = Suspension {
        at,
        reason: "spike".into(),
    };
    store
        .set_key_suspension(&child.id, Some(&suspension))
        .await
        .unwrap();
    store.set_key_suspension(&child.id, None).await.unwrap();
    assert_eq!(
        failures(store).await,
        [(SealedTable::VirtualKey, child.id.to_string())]
    );
    // Revoking the parent still revokes the tampered child.
    let outcome = store.revoke_virtual_key(&parent.id, at).await.unwrap();
    assert_eq!(
        outcome,
        RevokeOutcome::Revoked {
            descendants: vec![child.id.clone()]
        }
    );
    let stored = store.get_virtual_key(&child.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(at));
    assert_eq!(
        failures(store).await,
        [(SealedTable::VirtualKey, child.id.to_string())]
    );
}

/// An in-place update of `key`: a new name, scope, limits and expiry, its
/// daily budget replaced and a weekly one added.
pub(crate) fn key_update(key: &VirtualKeyRecord, remove: Vec<BudgetId>) -> KeyUpdate {
    KeyUpdate {
        id: key.id.clone(),
        name: "renamed".into(),
        scope: Scope {
            providers: vec![ProviderName::parse("openai").unwrap()],
            models: Vec::new(),
        },
        project: Some(ProjectName::parse("shop").unwrap()),
        limits: KeyLimits {
            rpm: Some(7),
            tpm: None,
            max_parallel: Some(2),
        },
        on_anomaly: AnomalyAction::Suspend,
        expires_at: Some(datetime!(2026-03-01 00:00 UTC)),
        set_budgets: vec![BudgetRecord {
            id: BudgetId::generate(),
            scope: BudgetScope::Key(key.id.clone()),
            limit: BudgetLimit::parse("3usd/week").unwrap(),
            created_at: datetime!(2026-01-05 00:00 UTC),
        }],
        remove_budgets: remove,
    }
}

pub(crate) async fn updates_in_place_keep_rows_sealed_and_never_launder_an_edit(new: &dyn Factory) {
    let (h, provider, parent, child) = sealed_store(new).await;
    let store = h.store();
    // A key updated with its budgets, and a provider pointed elsewhere,
    // still verify.
    let daily: Vec<BudgetId> = store
        .list_budgets()
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.scope == BudgetScope::Key(parent.id.clone()))
        .map(|b| b.id)
        .collect();
    assert!(
        store
            .update_virtual_key(&key_update(&parent, daily))
            .await
            .unwrap()
    );
    let stored = store.get_virtual_key(&parent.id).await.unwrap().unwrap();
    assert_eq!(stored.name, "renamed");
    assert_eq!(stored.limits.rpm, Some(7));
    assert_eq!(stored.on_anomaly, AnomalyAction::Suspend);
    let budgets: Vec<String> = store
        .list_budgets()
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.scope == BudgetScope::Key(parent.id.clone()))
        .map(|b| b.limit.to_string())
        .collect();
    assert_eq!(budgets.len(), 1, "{budgets:?}");
    assert!(
        store
            .update_provider(
                &provider.id,
                "openai-compatible",
                Some("https://proxy.example")
            )
            .await
            .unwrap()
    );
    assert_eq!(failures(store).await, []);
    let providers = store.list_providers().await.unwrap();
    assert_eq!(
        providers[0].base_url.as_deref(),
        Some("https://proxy.example")
    );
    // A budget that is not the key's own is refused, and nothing changes.
    let mut foreign = key_update(&child, Vec::new());
    foreign.set_budgets[0].scope = BudgetScope::Key(parent.id.clone());
    assert!(store.update_virtual_key(&foreign).await.is_err());
    assert_ne!(
        store
            .get_virtual_key(&child.id)
            .await
            .unwrap()
            .unwrap()
            .name,
        "renamed"
    );
    // Unknown rows: false.
    assert!(
        !store
            .update_virtual_key(&key_update(&key("prod"), Vec::new()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_provider(&ProviderId::generate(), "openai", None)
            .await
            .unwrap()
    );

    // Rows edited outside the store stay refused through an update.
    h.execute(&format!(
        "UPDATE virtual_keys SET can_mint = 1 WHERE id = '{}'",
        child.id
    ))
    .await;
    h.execute("UPDATE providers SET env = 'dev'").await;
    assert!(
        store
            .update_virtual_key(&key_update(&child, Vec::new()))
            .await
            .unwrap()
    );
    assert!(
        store
            .update_provider(&provider.id, "openai", None)
            .await
            .unwrap()
    );
    assert_eq!(failures(store).await.len(), 2);

    // Deleting a provider takes every version of its key with it.
    assert!(store.delete_provider(&provider.id).await.unwrap());
    assert!(!store.delete_provider(&provider.id).await.unwrap());
    assert!(store.list_providers().await.unwrap().is_empty());
    assert!(
        store
            .list_credentials(&provider.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        failures(store).await,
        [(SealedTable::VirtualKey, child.id.to_string())]
    );
}

/// The aggregates every reader of the ledger asks for, as one comparable
/// value.
pub(crate) async fn aggregates(
    store: &dyn Store,
    keys: &[KeyId],
    since_ms: i64,
) -> (
    Vec<UsageRow>,
    Vec<i64>,
    Vec<VersionUsage>,
    Vec<UpstreamHealth>,
) {
    let mut usage = Vec::new();
    for group_by in [
        UsageGroup::Key,
        UsageGroup::Model,
        UsageGroup::Day,
        UsageGroup::Env,
        UsageGroup::Project,
    ] {
        usage.extend(
            store
                .query_usage(&UsageQuery {
                    since_ms,
                    until_ms: None,
                    key_id: None,
                    env: None,
                    project: None,
                    group_by,
                })
                .await
                .unwrap(),
        );
    }
    let mut spend = Vec::new();
    for id in keys {
        spend.push(
            store
                .spend_since(&BudgetScope::Key(id.clone()), since_ms)
                .await
                .unwrap(),
        );
    }
    for scope in [
        BudgetScope::Project(ProjectName::parse("checkout").unwrap()),
        BudgetScope::Env(EnvName::parse("prod").unwrap()),
    ] {
        spend.push(store.spend_since(&scope, since_ms).await.unwrap());
    }
    let versions = store
        .version_usage(
            &EnvName::parse("prod").unwrap(),
            &ProviderName::parse("openai").unwrap(),
            since_ms,
        )
        .await
        .unwrap();
    let health = store.upstream_health(since_ms).await.unwrap();
    (usage, spend, versions, health)
}

/// Records over three days for a parent key and its child, with errors,
/// two key versions and two models, a few seconds apart within minutes.
pub(crate) fn three_days_of_records(parent: &KeyId, child: &KeyId) -> Vec<LedgerRecord> {
    let day1 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    (0..600)
        .map(|n: i64| {
            let key = if n % 3 == 0 { child } else { parent };
            LedgerRecord {
                request_id: format!("req_{n}"),
                project: (n % 2 == 0).then(|| ProjectName::parse("checkout").unwrap()),
                provider_key_version: 1 + u32::from(n % 5 == 0),
                status: match n % 7 {
                    0 => 429,
                    1 => 401,
                    2 => 503,
                    _ => 200,
                },
                ..ledger(
                    key,
                    if n % 4 == 0 { "dev" } else { "prod" },
                    if n % 2 == 0 { "gpt-4o" } else { "gpt-4o-mini" },
                    // Three days, 7 minutes 13 seconds apart.
                    day1 + n * 433_000,
                    100 + n,
                )
            }
        })
        .collect()
}

pub(crate) async fn pruning_raw_rows_keeps_usage_budgets_rotation_and_health(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let parent = key("prod");
    let child = VirtualKeyRecord {
        parent: Some(parent.id.clone()),
        ..key("prod")
    };
    store.insert_virtual_key(&parent, &[]).await.unwrap();
    store.insert_virtual_key(&child, &[]).await.unwrap();
    let records = three_days_of_records(&parent.id, &child.id);
    // In batches, as the writer sends them.
    for batch in records.chunks(64) {
        store.insert_ledger(batch).await.unwrap();
    }
    let keys = [parent.id.clone(), child.id.clone()];
    // The parent's budget counts its child's spend; mid-minute windows
    // count only what arrived after their start.
    let day1 = 1_767_225_600_000;
    let since_mid_minute = day1 + 100 * 433_000 + 1;
    let expected_parent: i64 = records
        .iter()
        .filter(|r| r.at_ms >= since_mid_minute)
        .map(|r| r.cost_nano_usd)
        .sum();
    let expected_child: i64 = records
        .iter()
        .filter(|r| r.at_ms >= since_mid_minute && r.key_id == child.id)
        .map(|r| r.cost_nano_usd)
        .sum();
    let spent = |id: &KeyId, since| {
        let scope = BudgetScope::Key(id.clone());
        let store = &store;
        async move { store.spend_since(&scope, since).await.unwrap() }
    };
    assert_eq!(spent(&parent.id, since_mid_minute).await, expected_parent);
    assert_eq!(spent(&child.id, since_mid_minute).await, expected_child);

    // Windows starting on the hour (every budget period does) and after
    // the cut-off, before and after pruning and merging into hours.
    let cut = day1 + 86_400_000 + 5 * 3_600_000 + 17 * 60_000 + 3_000;
    let windows = [0, day1 + 3_600_000, day1 + 86_400_000, cut, cut + 600_000];
    let mut before = Vec::new();
    for since in windows {
        before.push(aggregates(store, &keys, since).await);
    }
    let mut pruned = 0;
    loop {
        let deleted = store.prune_ledger(cut, 50).await.unwrap();
        assert!(deleted <= 50);
        pruned += deleted;
        if deleted == 0 {
            break;
        }
    }
    let expected_pruned = records.iter().filter(|r| r.at_ms < cut).count() as u64;
    assert_eq!(pruned, expected_pruned);
    assert_eq!(
        store.ledger_oldest_ms().await.unwrap(),
        records
            .iter()
            .map(|r| r.at_ms)
            .filter(|at| *at >= cut)
            .min()
    );
    let minute_rows = h.count("SELECT COUNT(*) FROM ledger_rollup").await;
    while store.coarsen_rollups(cut).await.unwrap() {}
    let rows_after = h.count("SELECT COUNT(*) FROM ledger_rollup").await;
    assert!(
        rows_after < minute_rows,
        "old minutes are merged into hours: {minute_rows} -> {rows_after}"
    );
    // Up to the hour the cut-off falls in.
    let not_on_the_hour = h
        .count(&format!(
            "SELECT COUNT(*) FROM ledger_rollup WHERE bucket_ms < {} AND bucket_ms % 3600000 != 0",
            cut - cut % 3_600_000
        ))
        .await;
    assert_eq!(not_on_the_hour, 0);
    for (since, expected) in windows.into_iter().zip(before) {
        assert_eq!(
            aggregates(store, &keys, since).await,
            expected,
            "since {since}"
        );
    }
    // A window asked to start inside a merged hour starts on that hour and
    // takes all of it; one inside the kept minutes starts where asked.
    let mid_hour = day1 + 3_600_000 + 17 * 60_000 + 5_000;
    assert_eq!(
        store.usage_window_start(mid_hour).await.unwrap(),
        day1 + 3_600_000
    );
    assert_eq!(
        store.usage_window_start(cut + 600_000).await.unwrap(),
        cut + 600_000
    );
    let whole_hour = records
        .iter()
        .filter(|r| r.at_ms >= day1 + 3_600_000)
        .count() as u64;
    let effective = store.usage_window_start(mid_hour).await.unwrap();
    let counted: u64 = store
        .query_usage(&UsageQuery {
            since_ms: effective,
            until_ms: None,
            key_id: None,
            env: None,
            project: None,
            group_by: UsageGroup::Key,
        })
        .await
        .unwrap()
        .iter()
        .map(|row| row.requests)
        .sum();
    assert_eq!(counted, whole_hour);
    // A second round finds nothing left to do.
    assert_eq!(store.prune_ledger(cut, 50).await.unwrap(), 0);
    assert!(!store.coarsen_rollups(cut).await.unwrap());
}

pub(crate) async fn health_reports_the_latest_status_of_each_key_version(new: &dyn Factory) {
    let h = new.open().await;
    let store = h.store();
    let a = KeyId::generate();
    // Two batches in one minute; the later arrival wins whatever the
    // order of writing.
    store
        .insert_ledger(&[
            LedgerRecord {
                status: 401,
                ..ledger(&a, "prod", "m", 60_000 + 9_000, 1)
            },
            ledger(&a, "prod", "m", 60_000 + 1_000, 1),
        ])
        .await
        .unwrap();
    store
        .insert_ledger(&[LedgerRecord {
            status: 503,
            ..ledger(&a, "prod", "m", 60_000 + 5_000, 1)
        }])
        .await
        .unwrap();
    let health = store.upstream_health(0).await.unwrap();
    assert_eq!(health.len(), 1);
    assert_eq!(
        (
            health[0].ok,
            health[0].rejected,
            health[0].failed,
            health[0].last_status,
            health[0].last_ms
        ),
        (1, 1, 1, 401, 69_000)
    );
}

pub(crate) fn admin(name: &str, role: keyforge_types::AdminRole, hash: u8) -> AdminRecord {
    AdminRecord {
        id: keyforge_types::AdminId::generate(),
        name: keyforge_types::AdminName::parse(name).unwrap(),
        role,
        token_hash: keyforge_types::KeyHash::from_bytes([hash; 32]),
        created_at: datetime!(2026-12-01 10:00 UTC),
        created_by: "gateway".to_owned(),
        rotated_at: None,
        revoked_at: None,
    }
}

pub(crate) async fn admins_round_trip_and_the_last_owner_is_never_revoked(new: &dyn Factory) {
    use keyforge_types::AdminRole::{Owner, Viewer};
    let h = new.open().await;
    let store = h.store();
    store.install_row_mac(row_mac()).await.unwrap();
    let owner = admin("owner", Owner, 1);
    let viewer = admin("fin", Viewer, 2);
    store.insert_admin(&owner).await.unwrap();
    store.insert_admin(&viewer).await.unwrap();
    // Names and token hashes are unique.
    for duplicate in [admin("fin", Owner, 3), admin("other", Viewer, 2)] {
        assert!(matches!(
            store.insert_admin(&duplicate).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert_eq!(
        store.list_admins().await.unwrap(),
        [viewer.clone(), owner.clone()]
    );
    assert_eq!(
        store
            .get_admin_by_token_hash(&keyforge_types::KeyHash::from_bytes([2; 32]))
            .await
            .unwrap(),
        Some(viewer.clone())
    );
    assert_eq!(
        store
            .get_admin_by_token_hash(&keyforge_types::KeyHash::from_bytes([9; 32]))
            .await
            .unwrap(),
        None
    );

    let at = datetime!(2026-12-02 10:00 UTC);
    let cases = [
        ("owner", AdminRevokeOutcome::LastOwner),
        ("nobody", AdminRevokeOutcome::NotFound),
        ("fin", AdminRevokeOutcome::Revoked),
        ("fin", AdminRevokeOutcome::AlreadyRevoked),
    ];
    for (name, outcome) in cases {
        let name = keyforge_types::AdminName::parse(name).unwrap();
        assert_eq!(
            store.revoke_admin(&name, at).await.unwrap(),
            outcome,
            "{name}"
        );
    }
    // A second owner makes the first revocable; then the second is last.
    store.insert_admin(&admin("boss", Owner, 4)).await.unwrap();
    let owner_name = keyforge_types::AdminName::parse("owner").unwrap();
    let boss = keyforge_types::AdminName::parse("boss").unwrap();
    assert_eq!(
        store.revoke_admin(&owner_name, at).await.unwrap(),
        AdminRevokeOutcome::Revoked
    );
    assert_eq!(
        store.revoke_admin(&boss, at).await.unwrap(),
        AdminRevokeOutcome::LastOwner
    );

    // A new token hash replaces the old one; revoked admins get none.
    let new_hash = keyforge_types::KeyHash::from_bytes([5; 32]);
    assert!(
        store
            .replace_admin_token(&boss, &new_hash, at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_admin_token(
                &owner_name,
                &keyforge_types::KeyHash::from_bytes([6; 32]),
                at
            )
            .await
            .unwrap()
    );
    let found = store
        .get_admin_by_token_hash(&new_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.name.as_str(), found.rotated_at), ("boss", Some(at)));
    assert_eq!(
        store
            .get_admin_by_token_hash(&keyforge_types::KeyHash::from_bytes([4; 32]))
            .await
            .unwrap(),
        None
    );
    // Every write above left its row sealed.
    assert_eq!(failures(store).await, []);
}

pub(crate) async fn an_admin_row_edited_outside_the_store_fails_its_check(new: &dyn Factory) {
    use keyforge_types::AdminRole::{Owner, Viewer};
    let edits = [
        "UPDATE admins SET role = 'owner' WHERE name = 'fin'",
        "UPDATE admins SET token_hash = {blob 07} WHERE name = 'fin'",
        "UPDATE admins SET revoked_at = NULL WHERE name = 'fin'",
    ];
    for edit in edits {
        let edit = &edit.replace("{blob 07}", &new.blob_literal(&"07".repeat(32)));
        let h = new.open().await;
        let store = h.store();
        store.install_row_mac(row_mac()).await.unwrap();
        store.insert_admin(&admin("owner", Owner, 1)).await.unwrap();
        store.insert_admin(&admin("fin", Viewer, 2)).await.unwrap();
        store
            .revoke_admin(
                &keyforge_types::AdminName::parse("fin").unwrap(),
                datetime!(2026-12-02 10:00 UTC),
            )
            .await
            .unwrap();
        h.execute(edit).await;
        assert_eq!(
            failures(store).await,
            [(SealedTable::Admin, "fin".to_owned())],
            "{edit}"
        );
    }
}
