//! A small AWS client for what KeyForge needs: Secrets Manager
//! (`GetSecretValue`, `ListSecretVersionIds`, `PutSecretValue`,
//! `UpdateSecretVersionStage`) and KMS (`GenerateDataKey`, `Decrypt`,
//! `Encrypt`), signed with SigV4 (the `aws-sigv4` crate) over KeyForge's
//! one HTTP client (reqwest, rustls with aws-lc-rs), with credentials from
//! AWS's standard provider chain.
//!
//! It owns: region and endpoint resolution, the credential chain and its
//! refresh, signing, the AWS JSON 1.1 protocol, retries with backoff, and
//! one error type ([`AwsError`]) that says whose fault a failure is.
//!
//! Invariants: secret values and credentials live in zeroizing types and
//! never appear in a `Debug`, `Display`, error or log line; the process
//! environment is read only through [`Environment`] (passed in, so tests
//! use their own); nothing here knows about providers, rotation or the
//! store — that is the caller's.

mod client;
mod credentials;
mod env;
mod error;
mod kms;
mod profile;
mod secrets_manager;

pub use client::{AwsClient, AwsSettings, DEFAULT_REFRESH_MARGIN};
pub use credentials::{
    Credentials, parse_container_response, parse_imds_response, parse_imds_role_list,
    parse_sts_response, validate_container_uri,
};
pub use env::Environment;
pub use error::{AwsError, AwsErrorKind};
pub use kms::{DataKey, Kms};
pub use secrets_manager::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretPayload, SecretVersion, SecretsManager, VersionInfo,
    VersionSelector,
};
