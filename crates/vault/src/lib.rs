//! The vault: the master key and envelope encryption of secrets at rest.
//!
//! Every secret is encrypted under its own random data key with AES-256-GCM;
//! the data key is encrypted (wrapped) under the master key. Both encryptions
//! take the record's identity (`keyforge/provider/<id>/v<version>`) as
//! associated data, so a ciphertext copied onto another row fails to open.
//!
//! Invariants: plaintext secrets never leave this crate except as zeroizing
//! buffers; the master key is never stored next to the data it protects (an
//! environment variable, or a 0600 file of its own); nothing here logs.

mod envelope;
mod master_key;

pub use envelope::{Sealer, VaultError, random_secret};
pub use master_key::{
    MASTER_KEY_ENV, MasterKey, MasterKeyError, MasterKeySource, write_private_file,
};
