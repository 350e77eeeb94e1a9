//! The live admin sessions of humans who logged in with OIDC
//! (`[admin.oidc]`), and that login's verifier: core state, held in
//! `AppState`; the login handler and the views are `admin/sessions.rs`.
//! Sessions are in this process's memory, keyed by the keyed hash of their
//! token (never the token): a restart ends them, and in a cluster each
//! instance knows only its own.

use std::collections::HashMap;
use std::sync::Arc;

use keyforge_store::AdminRecord;
use keyforge_types::KeyHash;
use time::OffsetDateTime;

use crate::config::admin_oidc::AdminOidcConfig;
use crate::oidc::jwks::Jwks;

/// Sessions alive at once, at most (each login adds one; expired ones are
/// dropped first). Past it a login is refused with 503.
const MAX_SESSIONS: usize = 10_000;

/// One session, as kept: never the token, only its hash (the map's key).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Seen by the rest of the admin API as this admin record: its name is
    /// the session's handle, its role the bound role.
    pub(crate) record: Arc<AdminRecord>,
    /// `oidc:<email>` (or `oidc:<sub>` for a token without an email).
    pub(crate) identity: String,
    pub(crate) issued_at: OffsetDateTime,
    pub(crate) expires_at: OffsetDateTime,
}

/// The admin OIDC verifier and the live sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    pub(crate) config: Option<(AdminOidcConfig, Jwks)>,
    /// Keyed hash of the session token to the session. A `std` mutex: the
    /// critical sections are map lookups and inserts that never cross an
    /// `.await`, taken once per admin request (never on the proxy path).
    #[expect(
        clippy::disallowed_types,
        reason = "tiny critical sections (a map lookup or insert) that never cross an await"
    )]
    live: std::sync::Mutex<HashMap<KeyHash, Session>>,
}

impl Sessions {
    pub(crate) fn new(config: Option<&AdminOidcConfig>) -> Self {
        Self {
            config: config.map(|config| (config.clone(), Jwks::new(&config.issuer))),
            #[expect(
                clippy::disallowed_types,
                reason = "see the field: never held across an await"
            )]
            live: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The session a token hash names, if it is live at `now`. Expired
    /// sessions are `Err(handle)`, so the refusal can say so.
    pub(crate) fn find(
        &self,
        hash: &KeyHash,
        now: OffsetDateTime,
    ) -> Option<Result<Session, String>> {
        let live = self.live.lock().ok()?;
        let session = live.get(hash)?;
        if now >= session.expires_at || session.record.revoked_at.is_some() {
            return Some(Err(session.record.name.to_string()));
        }
        Some(Ok(session.clone()))
    }

    /// Every session not yet expired, revoked ones included, oldest first.
    pub(crate) fn list(&self, now: OffsetDateTime) -> Vec<Session> {
        let mut sessions: Vec<Session> = self
            .live
            .lock()
            .map(|live| {
                live.values()
                    .filter(|session| now < session.expires_at)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        sessions.sort_by_key(|session| session.issued_at);
        sessions
    }

    /// Ends the session with this handle; `None` when there is none live.
    pub(crate) fn revoke(&self, handle: &str, now: OffsetDateTime) -> Option<Session> {
        let mut live = self.live.lock().ok()?;
        let session = live
            .values_mut()
            .find(|session| session.record.name.as_str() == handle && now < session.expires_at)?;
        let mut record = (*session.record).clone();
        record.revoked_at.get_or_insert(now);
        session.record = Arc::new(record);
        Some(session.clone())
    }

    pub(crate) fn insert(&self, hash: KeyHash, session: Session, now: OffsetDateTime) -> bool {
        let Ok(mut live) = self.live.lock() else {
            return false;
        };
        live.retain(|_, session| now < session.expires_at);
        if live.len() >= MAX_SESSIONS {
            return false;
        }
        live.insert(hash, session);
        true
    }
}
