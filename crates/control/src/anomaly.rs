//! Rogue-client detection: each key compared with its own recent past.
//!
//! The rules, per key:
//! - **Spike**: requests (or tokens) in the current minute exceed
//!   `spike_factor` times the key's baseline, and at least
//!   `spike_min_requests` (or `spike_min_tokens`). The baseline is an
//!   exponentially weighted average of past minutes (each minute weighs 20 %,
//!   quiet minutes count as zero), trusted once the key has been watched for
//!   `learning_minutes`.
//! - **New client address**: a request from an address the key has not used
//!   before, once the key has been in use for `new_address_after`. Up to
//!   1,024 addresses are remembered per key.
//! - **Auth failures**: `auth_failure_burst` refused requests (revoked,
//!   expired, suspended, out of scope) for one key id within a minute.
//!
//! State is in memory (rebuilt by watching after a restart) behind one short
//! lock per key.

use std::collections::HashSet;
use std::net::IpAddr;
#[expect(
    clippy::disallowed_types,
    reason = "one short critical section per key: counters and a set lookup, never across an await"
)]
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const MINUTE_MS: i64 = 60_000;
const WEIGHT: f64 = 0.2;
const MAX_ADDRESSES: usize = 1024;

/// Thresholds of the rules; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyConfig {
    pub spike_factor: f64,
    pub spike_min_requests: u64,
    pub spike_min_tokens: u64,
    pub learning_minutes: u32,
    pub new_address_after: Duration,
    pub auth_failure_burst: u32,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            spike_factor: 10.0,
            spike_min_requests: 60,
            spike_min_tokens: 100_000,
            learning_minutes: 10,
            new_address_after: Duration::from_secs(3600),
            auth_failure_burst: 20,
        }
    }
}

/// What a rule found.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    RequestSpike { requests: u64, baseline: f64 },
    TokenSpike { tokens: u64, baseline: f64 },
    NewAddress { address: IpAddr },
    AuthFailures { failures: u32 },
}

impl Finding {
    /// `spike`, `new_address` or `auth_failures`.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::RequestSpike { .. } | Self::TokenSpike { .. } => "spike",
            Self::NewAddress { .. } => "new_address",
            Self::AuthFailures { .. } => "auth_failures",
        }
    }

    /// One line for people (alerts, suspension reasons): numbers and an
    /// address, never request content.
    pub fn describe(&self) -> String {
        match self {
            Self::RequestSpike { requests, baseline } => format!(
                "request spike: {requests} requests this minute against a baseline of {baseline:.1} a minute"
            ),
            Self::TokenSpike { tokens, baseline } => format!(
                "token spike: {tokens} tokens this minute against a baseline of {baseline:.0} a minute"
            ),
            Self::NewAddress { address } => {
                format!("requests from a new client address, {address}")
            }
            Self::AuthFailures { failures } => {
                format!(
                    "{failures} refused requests (revoked, expired, suspended or out of scope) within a minute"
                )
            }
        }
    }
}

/// One key's recent behaviour.
#[derive(Debug, Default)]
pub struct KeyWatch {
    /// Set the moment a rule suspends the key, before the store knows: the
    /// request path refuses the key at once.
    suspended: AtomicBool,
    #[expect(clippy::disallowed_types, reason = "see the module's explanation")]
    state: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    minute: i64,
    requests: u64,
    tokens: u64,
    baseline_requests: f64,
    baseline_tokens: f64,
    minutes_watched: u32,
    request_spike_alerted: bool,
    token_spike_alerted: bool,
    first_seen_ms: Option<i64>,
    addresses: HashSet<IpAddr>,
    failure_minute: i64,
    failures: u32,
    failures_alerted: bool,
}

impl WatchState {
    /// Moves to the minute containing `now_ms`, folding finished minutes
    /// into the baselines.
    fn roll(&mut self, now_ms: i64) {
        let minute = now_ms.div_euclid(MINUTE_MS);
        if self.first_seen_ms.is_none() {
            self.minute = minute;
            return;
        }
        if minute <= self.minute {
            return;
        }
        let elapsed = minute - self.minute;
        // After an hour of silence the old baseline has decayed to nothing.
        for step in 0..elapsed.min(60) {
            let (requests, tokens) = if step == 0 {
                (self.requests, self.tokens)
            } else {
                (0, 0)
            };
            self.baseline_requests =
                WEIGHT * requests as f64 + (1.0 - WEIGHT) * self.baseline_requests;
            self.baseline_tokens = WEIGHT * tokens as f64 + (1.0 - WEIGHT) * self.baseline_tokens;
        }
        if elapsed >= 60 {
            self.baseline_requests = 0.0;
            self.baseline_tokens = 0.0;
        }
        self.minutes_watched = self
            .minutes_watched
            .saturating_add(u32::try_from(elapsed).unwrap_or(u32::MAX));
        self.minute = minute;
        self.requests = 0;
        self.tokens = 0;
        self.request_spike_alerted = false;
        self.token_spike_alerted = false;
    }
}

impl KeyWatch {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    pub fn set_suspended(&self, suspended: bool) {
        self.suspended.store(suspended, Ordering::Release);
    }

    /// A request was admitted for this key from `address`.
    pub fn on_request(
        &self,
        now_ms: i64,
        address: Option<IpAddr>,
        config: &AnomalyConfig,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut state = self.lock();
        state.roll(now_ms);
        let first_seen = *state.first_seen_ms.get_or_insert(now_ms);
        state.requests += 1;
        if !state.request_spike_alerted
            && state.minutes_watched >= config.learning_minutes
            && state.requests >= config.spike_min_requests
            && state.requests as f64 > config.spike_factor * state.baseline_requests
        {
            state.request_spike_alerted = true;
            findings.push(Finding::RequestSpike {
                requests: state.requests,
                baseline: state.baseline_requests,
            });
        }
        if let Some(address) = address
            && !state.addresses.contains(&address)
            && state.addresses.len() < MAX_ADDRESSES
        {
            let learned = now_ms.saturating_sub(first_seen)
                >= i64::try_from(config.new_address_after.as_millis()).unwrap_or(i64::MAX);
            let known_before = !state.addresses.is_empty();
            state.addresses.insert(address);
            if learned && known_before {
                findings.push(Finding::NewAddress { address });
            }
        }
        findings
    }

    /// A request of this key finished having used `tokens`.
    pub fn on_tokens(&self, now_ms: i64, tokens: u64, config: &AnomalyConfig) -> Option<Finding> {
        let mut state = self.lock();
        state.roll(now_ms);
        state.tokens = state.tokens.saturating_add(tokens);
        if !state.token_spike_alerted
            && state.minutes_watched >= config.learning_minutes
            && state.tokens >= config.spike_min_tokens
            && state.tokens as f64 > config.spike_factor * state.baseline_tokens
        {
            state.token_spike_alerted = true;
            return Some(Finding::TokenSpike {
                tokens: state.tokens,
                baseline: state.baseline_tokens,
            });
        }
        None
    }

    /// A request naming this key was refused (revoked, expired, suspended,
    /// out of scope).
    pub fn on_refused(&self, now_ms: i64, config: &AnomalyConfig) -> Option<Finding> {
        let mut state = self.lock();
        let minute = now_ms.div_euclid(MINUTE_MS);
        if minute != state.failure_minute {
            state.failure_minute = minute;
            state.failures = 0;
            state.failures_alerted = false;
        }
        state.failures = state.failures.saturating_add(1);
        if !state.failures_alerted && state.failures >= config.auth_failure_burst {
            state.failures_alerted = true;
            return Some(Finding::AuthFailures {
                failures: state.failures,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn config() -> AnomalyConfig {
        AnomalyConfig {
            spike_min_requests: 20,
            ..AnomalyConfig::default()
        }
    }

    /// Ten quiet minutes of `per_minute` requests each.
    fn warm_up(watch: &KeyWatch, per_minute: u64) -> i64 {
        let mut now = T0;
        for _ in 0..10 {
            for _ in 0..per_minute {
                assert!(watch.on_request(now, LOCAL, &config()).is_empty());
            }
            now += MINUTE_MS;
        }
        now
    }

    #[test]
    fn a_runaway_client_is_a_spike_once_a_minute() {
        let watch = KeyWatch::new();
        let now = warm_up(&watch, 3);
        // The first request past ten times the baseline (just under three,
        // as the first minutes started from nothing) is the spike.
        let findings: Vec<Finding> = (0..40)
            .flat_map(|_| watch.on_request(now, LOCAL, &config()))
            .collect();
        assert_eq!(findings.len(), 1, "{findings:?}");
        match &findings[0] {
            Finding::RequestSpike { requests, baseline } => {
                assert!((2.5..=3.0).contains(baseline), "{baseline}");
                assert!(*requests as f64 > 10.0 * baseline);
                assert!((*requests - 1) as f64 <= 10.0 * baseline);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(findings[0].rule(), "spike");
        assert!(findings[0].describe().contains("27 requests this minute"));
    }

    #[test]
    fn no_spike_while_learning_or_below_the_floor() {
        let watch = KeyWatch::new();
        // A new key going fast from its first minute is not yet judged.
        assert!(
            (0..500)
                .flat_map(|_| watch.on_request(T0, LOCAL, &config()))
                .next()
                .is_none()
        );
        let quiet = KeyWatch::new();
        let now = warm_up(&quiet, 1);
        // Fifteen is fifteen times the baseline, but under the floor of 20.
        assert!(
            (0..15)
                .flat_map(|_| quiet.on_request(now, LOCAL, &config()))
                .next()
                .is_none()
        );
    }

    #[test]
    fn the_baseline_follows_a_new_normal() {
        let watch = KeyWatch::new();
        let mut now = warm_up(&watch, 3);
        let mut spikes = 0;
        // A sustained 50 a minute alerts at first, then becomes the baseline.
        for _ in 0..20 {
            spikes += (0..50)
                .flat_map(|_| watch.on_request(now, LOCAL, &config()))
                .count();
            now += MINUTE_MS;
        }
        assert!((1..=3).contains(&spikes), "{spikes}");
    }

    #[test]
    fn token_spikes() {
        let watch = KeyWatch::new();
        let config = AnomalyConfig {
            spike_min_tokens: 1000,
            ..config()
        };
        let mut now = T0;
        for _ in 0..10 {
            watch.on_request(now, LOCAL, &config);
            assert!(watch.on_tokens(now, 100, &config).is_none());
            now += MINUTE_MS;
        }
        watch.on_request(now, LOCAL, &config);
        let finding = watch.on_tokens(now, 5000, &config).unwrap();
        assert!(matches!(finding, Finding::TokenSpike { tokens: 5000, .. }));
        assert!(
            watch.on_tokens(now, 5000, &config).is_none(),
            "once a minute"
        );
    }

    #[test]
    fn new_addresses_after_the_learning_period() {
        let watch = KeyWatch::new();
        let other: IpAddr = "10.1.2.3".parse().unwrap();
        let third: IpAddr = "10.9.9.9".parse().unwrap();
        // While the key is young, new addresses are learned silently.
        assert!(watch.on_request(T0, LOCAL, &config()).is_empty());
        assert!(
            watch
                .on_request(T0 + 1000, Some(other), &config())
                .is_empty()
        );
        let later = T0 + 3_600_000;
        assert!(watch.on_request(later, LOCAL, &config()).is_empty());
        assert!(watch.on_request(later, Some(other), &config()).is_empty());
        assert_eq!(
            watch.on_request(later, Some(third), &config()),
            [Finding::NewAddress { address: third }]
        );
        assert!(
            watch.on_request(later, Some(third), &config()).is_empty(),
            "once per address"
        );
    }

    #[test]
    fn auth_failure_bursts() {
        let watch = KeyWatch::new();
        let config = config();
        let found: Vec<_> = (0..30)
            .filter_map(|_| watch.on_refused(T0, &config))
            .collect();
        assert_eq!(found, [Finding::AuthFailures { failures: 20 }]);
        // A new minute starts counting again.
        assert!(
            (0..19)
                .filter_map(|_| watch.on_refused(T0 + MINUTE_MS, &config))
                .next()
                .is_none()
        );
    }
}
