//! Tokens already exchanged, for roles with `single_use = true`: a token
//! stolen from a CI log after its job logged in cannot be exchanged again
//! while it is still valid.
//!
//! Each exchanged token's (issuer, `jti`) is remembered until the token
//! expires (its `exp` plus the leeway, the last moment the gateway would
//! accept it), in memory: one gateway's memory, so in a cluster a token can
//! be exchanged once per instance. Memory is bounded: expired entries are
//! evicted when the set is full, and if it is still full, exchanges are
//! refused (503) rather than an entry forgotten early, which would let that
//! token be replayed.

use std::collections::HashMap;
use std::sync::PoisonError;

/// Tokens remembered at once, at most. An entry is an issuer name, a `jti`
/// of at most [`MAX_JTI_BYTES`] and a timestamp, so the set stays under
/// about 30 MB; at one exchange a second with tokens valid an hour (longer
/// than GitHub's five minutes), it holds 3,600.
pub(crate) const MAX_REMEMBERED_TOKENS: usize = 100_000;

/// Longest `jti` accepted for a single-use role (a UUID is 36 bytes).
pub(crate) const MAX_JTI_BYTES: usize = 256;

/// Why a single-use token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// This token was exchanged before and has not expired.
    AlreadyUsed,
    /// The set is full of unexpired tokens.
    Full,
}

#[expect(
    clippy::disallowed_types,
    reason = "one map operation per single-use login, never across an await, never on the request path"
)]
#[derive(Debug, Default)]
pub(crate) struct UsedTokens {
    /// (issuer name, `jti`) to the Unix second after which the token is
    /// refused anyway. A `std::sync::Mutex`: held for one map operation
    /// (an eviction pass at worst, when full), never across an `.await`,
    /// and only by single-use logins, never by the request path.
    used: std::sync::Mutex<HashMap<(String, String), i64>>,
}

impl UsedTokens {
    /// Records the token `jti` of `issuer`, valid until `expires_at` (Unix
    /// seconds), as exchanged at `now`, unless it already was.
    pub(crate) fn claim(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), Reuse> {
        self.claim_bounded(issuer, jti, expires_at, now, MAX_REMEMBERED_TOKENS)
    }

    fn claim_bounded(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
        max: usize,
    ) -> Result<(), Reuse> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (issuer.to_owned(), jti.to_owned());
        if used.get(&key).is_some_and(|until| *until >= now) {
            return Err(Reuse::AlreadyUsed);
        }
        if used.len() >= max && !used.contains_key(&key) {
            used.retain(|_, until| *until >= now);
            if used.len() >= max {
                return Err(Reuse::Full);
            }
        }
        used.insert(key, expires_at);
        Ok(())
    }

    /// Forgets a token whose exchange failed after it was claimed (the key
    /// could not be minted), so it can be tried again.
    pub(crate) fn release(&self, issuer: &str, jti: &str) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.remove(&(issuer.to_owned(), jti.to_owned()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_exchanged_once_until_it_expires() {
        let used = UsedTokens::default();
        assert_eq!(used.claim("gh", "a", 100, 0), Ok(()));
        assert_eq!(used.claim("gh", "a", 100, 50), Err(Reuse::AlreadyUsed));
        assert_eq!(used.claim("gh", "a", 100, 100), Err(Reuse::AlreadyUsed));
        assert_eq!(used.claim("gh", "b", 100, 50), Ok(()), "another jti");
        assert_eq!(used.claim("k8s", "a", 100, 50), Ok(()), "another issuer");
        // Past its expiry the gateway refuses the token on `exp` anyway;
        // the entry may then be replaced.
        assert_eq!(used.claim("gh", "a", 300, 101), Ok(()));
        used.release("gh", "a");
        assert_eq!(used.claim("gh", "a", 300, 102), Ok(()));
    }

    #[test]
    fn a_full_set_evicts_expired_tokens_and_never_forgets_live_ones() {
        let used = UsedTokens::default();
        let claim = |jti: &str, expires_at: i64, now: i64| {
            used.claim_bounded("gh", jti, expires_at, now, 3)
        };
        assert_eq!(claim("a", 10, 0), Ok(()));
        assert_eq!(claim("b", 20, 0), Ok(()));
        assert_eq!(claim("c", 30, 0), Ok(()));
        assert_eq!(claim("d", 40, 5), Err(Reuse::Full), "all three still live");
        assert_eq!(claim("d", 40, 15), Ok(()), "`a` expired and was evicted");
        assert_eq!(used.len(), 3);
        assert_eq!(claim("b", 20, 16), Err(Reuse::AlreadyUsed), "`b` kept");
    }
}
