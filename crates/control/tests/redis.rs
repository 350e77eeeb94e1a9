//! The shared counters against a real Redis (127.0.0.1:6379, or
//! `KEYFORGE_TEST_REDIS_URL`). Two `RedisCounters` in one process stand for
//! two gateway instances: they share nothing but Redis. Each test uses a
//! key prefix of its own; the flush test uses a database of its own.
//!
//! Without a reachable Redis these tests say so and pass, except under
//! `CI=true`, where a missing Redis is a failure (scripts/test starts one).

#![expect(
    clippy::unwrap_used,
    clippy::disallowed_types,
    reason = "test helpers: a failed setup must fail the test loudly; the figures' mutex is test-only"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyforge_control::InFlight;
use keyforge_control::{
    BudgetCell, BudgetSpend, Counters, Limiter, LocalCounters, Place, RateLimiter, RedisCounters,
    RedisSettings, Refusal, SpendSource,
};
use keyforge_types::{BudgetId, BudgetLimit, BudgetScope, KeyId, NanoUsd, random_base62};
use time::OffsetDateTime;

const USD: i64 = NanoUsd::PER_USD;

fn redis_url(db: u8) -> String {
    let base = std::env::var("KEYFORGE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    format!("{}/{db}", base.trim_end_matches('/'))
}

/// Whether Redis answers; a failure under CI.
async fn redis_is_up(db: u8) -> bool {
    let up = match redis::Client::open(redis_url(db)) {
        Ok(client) => match client.get_multiplexed_async_connection().await {
            Ok(mut connection) => redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .is_ok(),
            Err(_) => false,
        },
        Err(_) => false,
    };
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is not reachable at {} and CI=true: scripts/test must start it",
            redis_url(db)
        );
        eprintln!("skipped: no Redis at {}", redis_url(db));
    }
    up
}

/// The store's figures, as the gateway would read them from its ledger.
#[derive(Debug, Default)]
struct Figures {
    spend: Mutex<Vec<BudgetSpend>>,
    reads: AtomicU64,
}

#[async_trait::async_trait]
impl SpendSource for Figures {
    async fn current_spend(&self, _now: OffsetDateTime) -> Result<Vec<BudgetSpend>, String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.spend.lock().unwrap().clone())
    }
}

struct Cluster {
    prefix: String,
    db: u8,
    figures: Arc<Figures>,
}

impl Cluster {
    fn new(db: u8) -> Self {
        Self {
            prefix: format!("kftest:{}:", random_base62(12)),
            db,
            figures: Arc::new(Figures::default()),
        }
    }

    /// One more instance of the cluster.
    fn instance(&self, lease: Duration) -> RedisCounters {
        RedisCounters::new(
            &redis_url(self.db),
            RedisSettings {
                prefix: self.prefix.clone(),
                lease,
                timeout: Duration::from_secs(5),
            },
            self.figures.clone(),
        )
        .unwrap()
    }

    async fn get(&self, key: &str) -> i64 {
        let client = redis::Client::open(redis_url(self.db)).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(format!("{}{key}", self.prefix))
            .query_async::<Option<i64>>(&mut connection)
            .await
            .unwrap()
            .unwrap_or(0)
    }
}

/// A budget as each instance's snapshot holds it: same id and limit, its
/// own in-memory cell.
fn cell(id: &BudgetId, limit: &str, now: OffsetDateTime) -> Arc<BudgetCell> {
    Arc::new(BudgetCell::new(
        id.clone(),
        BudgetScope::Key(KeyId::generate()),
        BudgetLimit::parse(limit).unwrap(),
        NanoUsd(0),
        now,
    ))
}

fn spent_key(id: &BudgetId, limit: &str, now: OffsetDateTime) -> String {
    let start = BudgetCell::period_start(BudgetLimit::parse(limit).unwrap(), now);
    format!("spent:{id}:{}", start.unix_timestamp() * 1000)
}

/// 2 instances x 12 tasks race to reserve 3 cents and settle 1 cent
/// against one 1 USD budget. Every reservation's check is atomic across
/// the two instances, so admission stops exactly when 98 cents are spent
/// (2 left, less than a worst case), never past the limit, and nothing
/// stays reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_overspend_one_budget() {
    if !redis_is_up(0).await {
        return;
    }
    let cluster = Cluster::new(0);
    let now = OffsetDateTime::now_utc();
    let id = BudgetId::generate();
    let instances = [
        Arc::new(cluster.instance(Duration::from_secs(300))),
        Arc::new(cluster.instance(Duration::from_secs(300))),
    ];
    assert!(instances[0].rebuild(now).await.unwrap());
    assert!(!instances[1].rebuild(now).await.unwrap());
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for instance in &instances {
        let cells = Arc::new(vec![cell(&id, "1usd/day", now)]);
        for _ in 0..12 {
            let (instance, cells, admitted) = (instance.clone(), cells.clone(), admitted.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    match instance.reserve(&cells, NanoUsd(3 * USD / 100), now).await {
                        Ok(hold) => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            instance
                                .settle(hold, NanoUsd(USD / 100), now)
                                .await
                                .unwrap();
                        }
                        // Refused while others hold reservations: try again;
                        // refused with nothing held: the true limit.
                        Err(Refusal::Exhausted(exhausted)) => {
                            assert!(
                                exhausted.status.spent.0 + exhausted.status.reserved.0 <= USD,
                                "spent plus reserved went past the limit: {:?}",
                                exhausted.status
                            );
                            if exhausted.status.reserved.0 == 0 {
                                return;
                            }
                            tokio::task::yield_now().await;
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 98);
    assert_eq!(
        cluster.get(&spent_key(&id, "1usd/day", now)).await,
        98 * USD / 100
    );
    assert_eq!(cluster.get(&format!("reserved:{id}")).await, 0);
}

/// The same race on the local counters behind the same interface: each
/// instance alone stops at its own budget (what `local` mode gives).
#[tokio::test]
async fn the_local_counters_answer_through_the_same_interface() {
    let now = OffsetDateTime::now_utc();
    let counters: &dyn Counters = &LocalCounters;
    let cells = vec![cell(&BudgetId::generate(), "1usd/day", now)];
    let hold = counters.reserve(&cells, NanoUsd(USD), now).await.unwrap();
    assert!(matches!(
        counters.reserve(&cells, NanoUsd(1), now).await,
        Err(Refusal::Exhausted(_))
    ));
    let changes = counters.settle(hold, NanoUsd(USD / 2), now).await.unwrap();
    assert_eq!(changes[0].after, USD / 2);
    assert!(
        counters
            .reserve(&cells, NanoUsd(USD / 2), now)
            .await
            .is_ok()
    );
}

/// An instance reserves the whole budget and dies (its hold is never
/// settled). Another instance is refused until the lease is over, then
/// admitted.
#[tokio::test]
async fn a_crashed_instances_reservation_expires() {
    if !redis_is_up(0).await {
        return;
    }
    let cluster = Cluster::new(0);
    let now = OffsetDateTime::now_utc();
    let id = BudgetId::generate();
    let crashed = cluster.instance(Duration::from_secs(300));
    let survivor = cluster.instance(Duration::from_secs(300));
    crashed.rebuild(now).await.unwrap();
    let hold = crashed
        .reserve(&[cell(&id, "1usd/day", now)], NanoUsd(USD), now)
        .await
        .unwrap();
    std::mem::forget(hold);
    drop(crashed);
    let cells = [cell(&id, "1usd/day", now)];
    let refused = survivor
        .reserve(&cells, NanoUsd(1), now + Duration::from_secs(299))
        .await
        .unwrap_err();
    let Refusal::Exhausted(exhausted) = refused else {
        panic!("{refused}")
    };
    assert_eq!(exhausted.status.reserved, NanoUsd(USD));
    let after_lease = now + Duration::from_secs(301);
    let hold = survivor
        .reserve(&cells, NanoUsd(USD), after_lease)
        .await
        .unwrap();
    survivor.release(hold).await.unwrap();
    assert_eq!(cluster.get(&format!("reserved:{id}")).await, 0);
}

/// RPM 10 shared by two instances taking turns: ten requests in all, not
/// ten each; a TPM correction on one is seen by the other.
#[tokio::test]
async fn rate_limits_are_global_across_instances() {
    if !redis_is_up(0).await {
        return;
    }
    let cluster = Cluster::new(0);
    let a = cluster.instance(Duration::from_secs(300));
    let b = cluster.instance(Duration::from_secs(300));
    let now_ns = 1_800_000_000_000_000_000_i64;
    let (rpm_a, rpm_b) = (RateLimiter::new(10), RateLimiter::new(10));
    let name = format!("{}:rpm", KeyId::generate());
    let mut admitted = 0;
    for turn in 0..20 {
        let (counters, local) = if turn % 2 == 0 {
            (&a, &rpm_a)
        } else {
            (&b, &rpm_b)
        };
        let limiter = Limiter {
            name: &name,
            local,
            limit: 10,
        };
        match counters.acquire(limiter, 1, now_ns).await {
            Ok(grant) => {
                admitted += 1;
                assert_eq!(grant.remaining, 10 - admitted);
            }
            Err(Refusal::Rate(denied)) => {
                assert_eq!(denied.retry_after, Duration::from_secs(6));
                assert_eq!(denied.remaining, 0);
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(admitted, 10);
    // Six seconds later one request's worth came back, for either instance.
    let later = now_ns + 6_000_000_000;
    assert!(
        b.acquire(
            Limiter {
                name: &name,
                local: &rpm_b,
                limit: 10,
            },
            1,
            later
        )
        .await
        .is_ok()
    );
    assert!(
        a.acquire(
            Limiter {
                name: &name,
                local: &rpm_a,
                limit: 10,
            },
            1,
            later
        )
        .await
        .is_err()
    );

    let tpm_name = format!("{}:tpm", KeyId::generate());
    let (tpm_a, tpm_b) = (RateLimiter::new(1000), RateLimiter::new(1000));
    let on_a = Limiter {
        name: &tpm_name,
        local: &tpm_a,
        limit: 1000,
    };
    let on_b = Limiter {
        name: &tpm_name,
        local: &tpm_b,
        limit: 1000,
    };
    assert_eq!(a.acquire(on_a, 600, now_ns).await.unwrap().remaining, 400);
    assert!(b.acquire(on_b, 600, now_ns).await.is_err());
    // The request on A used only 100 tokens: B gets the 500 back.
    a.adjust(on_a, -500, now_ns).await.unwrap();
    assert_eq!(b.acquire(on_b, 600, now_ns).await.unwrap().remaining, 300);
}

/// In-flight places are counted across instances and leased.
#[tokio::test]
async fn places_in_flight_are_shared_and_leased() {
    if !redis_is_up(0).await {
        return;
    }
    let cluster = Cluster::new(0);
    let a = cluster.instance(Duration::from_secs(300));
    let b = cluster.instance(Duration::from_secs(300));
    let name = KeyId::generate().to_string();
    let (max_a, max_b) = (InFlight::new(2), InFlight::new(2));
    let now_ns = OffsetDateTime::now_utc().unix_timestamp() * 1_000_000_000;
    let on_a = Place {
        name: &name,
        local: &max_a,
        max: 2,
    };
    let on_b = Place {
        name: &name,
        local: &max_b,
        max: 2,
    };
    let first = a.enter(on_a, now_ns).await.unwrap();
    let _second = b.enter(on_b, now_ns).await.unwrap();
    assert!(matches!(
        a.enter(on_a, now_ns).await,
        Err(Refusal::Full { max: 2 })
    ));
    a.leave(first).await.unwrap();
    let third = b.enter(on_b, now_ns).await.unwrap();
    std::mem::forget(third);
    // Both places are held (one by a "crashed" instance) until their leases end.
    assert!(a.enter(on_a, now_ns).await.is_err());
    assert!(a.enter(on_a, now_ns + 301_000_000_000).await.is_ok());
}

/// Redis loses everything (FLUSHDB): the next reservation finds the marker
/// missing and rebuilds spend from the store's figures, so the budget is
/// not reset to zero; settlements made while the marker was missing are
/// not counted twice.
#[tokio::test]
async fn spend_is_rebuilt_from_the_store_after_a_flush() {
    // A database of its own: FLUSHDB empties it whole.
    let db = 13;
    if !redis_is_up(db).await {
        return;
    }
    let cluster = Cluster::new(db);
    let now = OffsetDateTime::now_utc();
    let id = BudgetId::generate();
    let limit = BudgetLimit::parse("1usd/day").unwrap();
    let a = cluster.instance(Duration::from_secs(300));
    let b = cluster.instance(Duration::from_secs(300));
    *cluster.figures.spend.lock().unwrap() = vec![BudgetSpend {
        id: id.clone(),
        limit,
        spent: NanoUsd(9 * USD / 10),
    }];
    let cells = [cell(&id, "1usd/day", now)];
    // At start nothing is in Redis: the first reservation rebuilds.
    assert!(matches!(
        a.reserve(&cells, NanoUsd(2 * USD / 10), now).await,
        Err(Refusal::Exhausted(_))
    ));
    assert_eq!(cluster.figures.reads.load(Ordering::SeqCst), 1);
    let hold = b.reserve(&cells, NanoUsd(USD / 10), now).await.unwrap();

    let client = redis::Client::open(redis_url(db)).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    // Settled while Redis is empty: the store's ledger counts this one.
    assert!(
        b.settle(hold, NanoUsd(USD / 10), now)
            .await
            .unwrap()
            .is_empty()
    );
    *cluster.figures.spend.lock().unwrap() = vec![BudgetSpend {
        id: id.clone(),
        limit,
        spent: NanoUsd(USD),
    }];
    let refused = a.reserve(&cells, NanoUsd(1), now).await.unwrap_err();
    let Refusal::Exhausted(exhausted) = refused else {
        panic!("{refused}")
    };
    assert_eq!(exhausted.status.spent, NanoUsd(USD));
    assert_eq!(cluster.figures.reads.load(Ordering::SeqCst), 2);
    assert_eq!(cluster.get(&spent_key(&id, "1usd/day", now)).await, USD);
}

/// A closed port: every operation answers `Unavailable`, promptly, never
/// an admission.
#[tokio::test]
async fn an_unreachable_redis_admits_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let counters = RedisCounters::new(
        &format!("redis://127.0.0.1:{port}"),
        RedisSettings::default(),
        Arc::new(Figures::default()),
    )
    .unwrap();
    let now = OffsetDateTime::now_utc();
    let cells = [cell(&BudgetId::generate(), "1usd/day", now)];
    assert!(matches!(
        counters.reserve(&cells, NanoUsd(1), now).await,
        Err(Refusal::Unavailable(_))
    ));
    let rpm = RateLimiter::new(10);
    let limiter = Limiter {
        name: "k:rpm",
        local: &rpm,
        limit: 10,
    };
    assert!(matches!(
        counters.acquire(limiter, 1, 0).await,
        Err(Refusal::Unavailable(_))
    ));
    assert!(!counters.reachable());
    // A URL that is not one is refused up front, without echoing it.
    let secret = format!("not a url {}", random_base62(8));
    let error = RedisCounters::new(
        &secret,
        RedisSettings::default(),
        Arc::new(Figures::default()),
    )
    .unwrap_err();
    assert!(!error.to_string().contains(&secret));
}
