//! KeyForge's shared vocabulary: the `kf_` virtual key and `kfa_` admin token
//! formats and their checksums, admin roles,
//! identifiers, environment and provider names, model scopes, durations, money
//! and secret wrappers.
//!
//! Invariant: this crate does no I/O. Everything here is parsed once from
//! untrusted text into a type that is valid by construction, so the code
//! downstream never re-checks it.

mod admin;
mod base62;
mod budget;
mod duration;
mod ids;
mod money;
mod names;
mod scope;
mod secret;
mod virtual_key;

pub use admin::{AdminRole, AdminToken, AdminTokenError, RoleError};
pub use base62::{decode_u32 as base62_decode_u32, encode_u32_fixed as base62_encode_u32_fixed};
pub use budget::{
    AnomalyAction, BudgetError, BudgetLimit, BudgetScope, KeyLimits, NarrowError, Period,
};
pub use duration::{DurationError, Ttl};
pub use ids::{AdminId, AlertId, BudgetId, IdError, KeyId, ProviderId, random_base62};
pub use money::{NanoUsd, parse_fixed_decimal};
pub use names::{AdminName, EnvName, NameError, ProjectName, ProviderName};
pub use scope::{ModelPattern, PatternError, Scope, glob_match};
pub use secret::{ProviderSecret, SecretError};
pub use virtual_key::{KeyHash, KeyHasher, VirtualKey, VirtualKeyError};
