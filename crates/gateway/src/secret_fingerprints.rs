//! Keyed fingerprints of provider secrets, held in the gateway's state: the
//! admin API compares them to find one secret used by several providers
//! (`admin/edit.rs`), without comparing or storing the secrets.

use keyforge_types::ProviderSecret;

/// The master-key derivation label of the key provider secrets are
/// fingerprinted under, to find one secret used by several providers
/// without comparing (or storing) secrets.
pub(crate) const SECRET_FINGERPRINT_LABEL: &str = "keyforge/provider-secret-fingerprint/v1";

/// HMAC-SHA-256 of provider secrets under a master-derived key. Nothing is
/// stored: fingerprints are computed from the snapshot's decrypted keys
/// when an admin change needs them.
#[derive(Clone)]
pub(crate) struct SecretFingerprints {
    key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for SecretFingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretFingerprints(..)")
    }
}

impl SecretFingerprints {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
        }
    }

    pub(crate) fn tag(&self, secret: &ProviderSecret) -> aws_lc_rs::hmac::Tag {
        #[expect(
            clippy::disallowed_methods,
            reason = "the provider key is only hashed under a keyed HMAC, to compare fingerprints"
        )]
        let bytes = secret.expose().as_bytes();
        aws_lc_rs::hmac::sign(&self.key, bytes)
    }

    /// Whether `secret` has the fingerprint `tag` (constant time).
    pub(crate) fn matches(&self, secret: &ProviderSecret, tag: &aws_lc_rs::hmac::Tag) -> bool {
        #[expect(
            clippy::disallowed_methods,
            reason = "the provider key is only hashed under a keyed HMAC, to compare fingerprints"
        )]
        let bytes = secret.expose().as_bytes();
        aws_lc_rs::hmac::verify(&self.key, bytes, tag.as_ref()).is_ok()
    }
}
