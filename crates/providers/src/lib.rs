//! Per-provider knowledge: which API dialect a request speaks, where its model
//! is named, which headers carry credentials, how the provider's key is
//! injected, and how errors look in each dialect.
//!
//! Invariant: this crate does no I/O. It is a set of pure functions over
//! paths, headers and bodies, tested with tables.

mod credentials;
mod error_shape;
mod kind;
mod model;
mod prices;
mod request;
mod strip;
mod usage;

pub use credentials::{
    ClientCredential, CredentialError, extract_client_credential, inject_provider_key,
    sanitize_query, sanitize_request_headers, strip_response_headers,
};
pub use error_shape::{ErrorClass, render_error};
pub use kind::{Api, KindError, ProviderKind};
pub use model::{ModelError, RequestModel, max_output_tokens, request_model};
pub use prices::{
    ImagePrice, LongContext, Multiplier, PRIORITY_BOUND, PriceEntry, PriceError, PriceSource,
    PriceTable, Priced, RawImagePrice, RawLongContext, RawPrice, RawTier, TierPrice, TierPrices,
    TokenPrices, UnitPrices, parse_usd_per_million,
};
pub use request::{
    DecodeError, InputSize, LimitEntry, LimitError, LimitSource, LimitTable, ModelLimits,
    OutputBound, OutputFrom, RawLimit, RequestError, RequestFacts, Units, WorstCase,
    content_codings, decode_request_body, insert_include_usage, inspect,
};
pub use strip::{UsageStripper, request_usage_in_stream};
pub use usage::{
    ImageQuality, ImageSize, ImageVariant, Meter, ServiceTier, Usage, UsageSource, usage_from_json,
};
