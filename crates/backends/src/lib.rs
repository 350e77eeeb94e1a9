//! Provider keys held outside KeyForge: references to secrets in HashiCorp
//! Vault / OpenBao (KV v2) and AWS Secrets Manager, read through one
//! [`SecretBackend`] interface, plus Vault's Transit engine for wrapping
//! KeyForge's own data keys.
//!
//! It owns: the reference syntax ([`SecretRef`], `vault://MOUNT/PATH#FIELD`
//! and `aws-sm://SECRET_ID[#FIELD]`), each backend's authentication and
//! token lifecycle (Vault token file, AppRole, JWT/OIDC and Kubernetes
//! logins, renewal before expiry, re-login when renewal fails), version
//! discovery (which version is current, which is pending), and one error
//! type ([`BackendError`]) saying whose fault a failure is.
//!
//! It never: writes a secret value anywhere (values live in zeroizing
//! buffers and never appear in `Debug`, `Display`, an error or a log line),
//! knows about providers, rotation state or the store (the gateway decides
//! what a new version means), or runs on the request path (reads happen at
//! start, when polling, and on `provider refresh`).

mod aws_sm;
mod error;
mod reference;
pub mod vault;

use std::fmt;

use async_trait::async_trait;
use zeroize::Zeroizing;

pub use aws_sm::AwsSecretsManagerBackend;
pub use error::{BackendError, BackendErrorKind};
pub use reference::{BackendKind, SecretRef};
pub use vault::{OldVersionPolicy, VaultAuth, VaultBackend, VaultSettings};

/// One version of a secret as read from a backend: the backend's version
/// id (Vault: the KV v2 version number as text; AWS: the version UUID) and
/// the selected value. `Debug` never shows the value.
pub struct BackendSecret {
    /// The backend's id of the version that was read.
    pub version: String,
    /// The selected value (the `#field` of the secret, or all of it).
    pub value: Zeroizing<String>,
}

impl fmt::Debug for BackendSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendSecret")
            .field("version", &self.version)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// Which versions of a secret the backend calls current and pending.
///
/// Vault KV v2 has no staging labels: `current` is the newest version that
/// is neither deleted nor destroyed, and `pending` is always `None` (a new
/// version is the signal to rotate). AWS Secrets Manager: `current` carries
/// `AWSCURRENT`, `pending` is the version carrying `AWSPENDING` when that
/// is another version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionState {
    /// The version the backend serves by default.
    pub current: String,
    /// A version staged to replace it, when the backend has that notion.
    pub pending: Option<String>,
}

/// A place provider keys live, read by reference.
///
/// Every method makes network calls and may take seconds; none is called
/// on the request path. Errors never hold a secret value or a credential.
#[async_trait]
pub trait SecretBackend: Send + Sync + fmt::Debug {
    /// Which backend this is (the scheme of the references it reads).
    fn kind(&self) -> BackendKind;

    /// Reads `reference` at `version` (the backend's version id), or at
    /// the current version when `None`. Errors: `NotFound` for an unknown
    /// secret, version or field; `Invalid` when the value is not text or a
    /// field cannot be selected; `Auth`/`AccessDenied` for credentials;
    /// `Unavailable` when the backend cannot be reached.
    async fn read(
        &self,
        reference: &SecretRef,
        version: Option<&str>,
    ) -> Result<BackendSecret, BackendError>;

    /// The current (and pending) version ids of `reference`, without
    /// reading any value.
    async fn versions(&self, reference: &SecretRef) -> Result<VersionState, BackendError>;

    /// Makes `version` the backend's current version, where the backend
    /// has staging labels and the credentials may move them (AWS: the
    /// four-step rotation's `finishSecret`). Returns `false` when the
    /// backend has no such notion (Vault), so the caller only follows.
    async fn promote(&self, reference: &SecretRef, version: &str) -> Result<bool, BackendError>;

    /// Called once a rotation away from `version` has finished: Vault
    /// soft-deletes or destroys it when configured to; AWS leaves it (its
    /// `AWSPREVIOUS` label is AWS's own rollback). Returns what was done,
    /// for the audit entry (`"kept"`, `"deleted"`, `"destroyed"`).
    async fn retire(
        &self,
        reference: &SecretRef,
        version: &str,
    ) -> Result<&'static str, BackendError>;
}
