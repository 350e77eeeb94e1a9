//! AES-256-GCM envelope encryption.
//!
//! Sealed layout (all fields fixed-size except the last):
//! `version(1) | dek_nonce(12) | wrapped_dek(32 + 16 tag) | nonce(12) | ciphertext + tag(16)`.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::master_key::MasterKey;

const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
const WRAPPED_DEK_LEN: usize = 32 + TAG_LEN;
const HEADER_LEN: usize = 1 + NONCE_LEN + WRAPPED_DEK_LEN + NONCE_LEN;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("sealed secret is truncated or not in a format this version understands")]
    Format,
    #[error(
        "sealed secret does not open: wrong master key, or the ciphertext was altered or moved to another record"
    )]
    Open,
}

/// Seals and opens secrets under the master key.
pub struct Sealer {
    master: LessSafeKey,
}

impl Sealer {
    pub fn new(master: &MasterKey) -> Self {
        Self {
            master: aes_key(master.bytes()),
        }
    }

    /// Encrypts `plaintext`, binding the result to `associated_data` (the
    /// record's identity).
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        let dek = Zeroizing::new(random_array::<32>());
        let dek_nonce = random_array::<NONCE_LEN>();
        let nonce = random_array::<NONCE_LEN>();

        let mut wrapped = dek.to_vec();
        seal_in_place(&self.master, dek_nonce, associated_data, &mut wrapped);
        let mut ciphertext = plaintext.to_vec();
        seal_in_place(&aes_key(&dek), nonce, associated_data, &mut ciphertext);

        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&dek_nonce);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts what [`Sealer::seal`] produced for the same associated data.
    pub fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
            return Err(VaultError::Format);
        }
        let (dek_nonce, rest) = sealed[1..].split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(WRAPPED_DEK_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);

        let mut dek = Zeroizing::new(wrapped.to_vec());
        let dek_len = open_in_place(&self.master, dek_nonce, associated_data, &mut dek)?;
        let dek: [u8; 32] = dek[..dek_len].try_into().map_err(|_| VaultError::Format)?;
        let dek = Zeroizing::new(dek);

        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        let len = open_in_place(&aes_key(&dek), nonce, associated_data, &mut plaintext)?;
        plaintext.truncate(len);
        Ok(plaintext)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn aes_key(bytes: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for AES-256; the only failure mode of
    // `UnboundKey::new` is a wrong length, which the type rules out.
    match UnboundKey::new(&AES_256_GCM, bytes) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => std::process::abort(),
    }
}

/// A fresh 32-byte secret (for example the virtual-key hashing key), held
/// in a buffer that is zeroized on drop.
pub fn random_secret() -> Zeroizing<[u8; 32]> {
    Zeroizing::new(random_array::<32>())
}

fn random_array<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        std::process::abort();
    }
    bytes
}

fn seal_in_place(key: &LessSafeKey, nonce: [u8; NONCE_LEN], aad: &[u8], in_out: &mut Vec<u8>) {
    // Sealing only fails for inputs beyond GCM's 64 GiB limit, far above any
    // API key; treat it as the impossible case it is.
    if key
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
        .is_err()
    {
        std::process::abort();
    }
}

fn open_in_place(
    key: &LessSafeKey,
    nonce: &[u8],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<usize, VaultError> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Format)?;
    key.open_in_place(nonce, Aad::from(aad), in_out)
        .map(|plaintext| plaintext.len())
        .map_err(|_| VaultError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal(b"canary-provider-secret", b"keyforge/provider/prv_a/v1");
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(
            sealer
                .open(&sealed, b"keyforge/provider/prv_a/v1")
                .unwrap()
                .as_slice(),
            b"canary-provider-secret"
        );
        // Same plaintext twice gives different ciphertexts (fresh keys and nonces).
        assert_ne!(
            sealed,
            sealer.seal(b"canary-provider-secret", b"keyforge/provider/prv_a/v1")
        );
    }

    #[test]
    fn ciphertext_is_bound_to_its_record() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal(b"secret", b"keyforge/provider/prv_a/v1");
        assert_eq!(
            sealer.open(&sealed, b"keyforge/provider/prv_b/v1"),
            Err(VaultError::Open)
        );
        assert_eq!(
            sealer.open(&sealed, b"keyforge/provider/prv_a/v2"),
            Err(VaultError::Open)
        );
    }

    #[test]
    fn wrong_master_key_and_tampering_fail() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal(b"secret", b"aad");
        assert_eq!(
            Sealer::new(&MasterKey::generate()).open(&sealed, b"aad"),
            Err(VaultError::Open)
        );
        for index in [1, 20, HEADER_LEN, sealed.len() - 1] {
            let mut altered = sealed.clone();
            altered[index] ^= 1;
            assert_eq!(
                sealer.open(&altered, b"aad"),
                Err(VaultError::Open),
                "byte {index}"
            );
        }
        assert_eq!(
            sealer.open(&sealed[..HEADER_LEN], b"aad"),
            Err(VaultError::Format)
        );
        let mut future = sealed.clone();
        future[0] = 9;
        assert_eq!(sealer.open(&future, b"aad"), Err(VaultError::Format));
    }
}
