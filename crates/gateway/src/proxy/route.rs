//! Which provider does a path address, and what is forwarded upstream?
//!
//! - `/p/NAME/REST`: the provider named NAME in the key's environment;
//! - `/openai/REST`, `/anthropic/REST`, `/gemini/REST`: the one provider of
//!   that kind in the key's environment (and the key's scope).
//!
//! `REST` (with its query, minus any `key=` credential) is appended to the
//! provider's base URL unchanged.

use http::Uri;
use keyforge_providers::{ErrorClass, ProviderKind};
use keyforge_types::ProviderName;

use crate::error::GatewayError;

#[derive(Debug, Clone)]
pub(crate) enum Selector {
    Named(ProviderName),
    Kind(ProviderKind),
}

#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) selector: Selector,
    /// Path to append to the provider's base URL, starting with `/`.
    pub(crate) upstream_path: String,
}

pub(crate) fn resolve(uri: &Uri) -> Result<Route, GatewayError> {
    let path = uri.path();
    let not_found = || {
        GatewayError::client(
            ErrorClass::NotFound,
            "unknown_route",
            "KeyForge serves provider APIs under /openai/v1, /anthropic, /gemini or /p/PROVIDER_NAME; set your SDK's base URL to one of them",
        )
    };
    let rest = path.strip_prefix('/').ok_or_else(not_found)?;
    let (first, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (selector, rest) = if first == "p" {
        let (name, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let name = ProviderName::parse(name).map_err(|error| {
            GatewayError::client(
                ErrorClass::NotFound,
                "unknown_route",
                format!("invalid provider in path: {error}"),
            )
        })?;
        (Selector::Named(name), rest)
    } else {
        (
            Selector::Kind(ProviderKind::from_shortcut(first).ok_or_else(not_found)?),
            rest,
        )
    };
    if rest
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err(GatewayError::client(
            ErrorClass::InvalidRequest,
            "invalid_path",
            "the path may not contain `.` or `..` segments",
        ));
    }
    Ok(Route {
        selector,
        upstream_path: format!("/{rest}"),
    })
}

/// The path as logged: only the route prefix and API path, which hold no
/// secrets (keys travel in headers or the query, which is never logged).
pub(crate) fn loggable_path(path: &str) -> &str {
    &path[..path.len().min(200)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, expected: Option<(&str, &str)>) {
        let result = resolve(&uri.parse().unwrap());
        match (result, expected) {
            (Ok(route), Some((selector, upstream))) => {
                let got = match route.selector {
                    Selector::Named(name) => format!("named:{name}"),
                    Selector::Kind(kind) => format!("kind:{kind}"),
                };
                assert_eq!(
                    (got.as_str(), route.upstream_path.as_str()),
                    (selector, upstream),
                    "{uri}"
                );
            }
            (Err(_), None) => {}
            (other, expected) => panic!("{uri}: got {other:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn table() {
        check(
            "/openai/v1/chat/completions",
            Some(("kind:openai", "/v1/chat/completions")),
        );
        check(
            "/anthropic/v1/messages?beta=true",
            Some(("kind:anthropic", "/v1/messages")),
        );
        check(
            "/gemini/v1beta/models/g:generateContent",
            Some(("kind:gemini", "/v1beta/models/g:generateContent")),
        );
        check(
            "/p/groq/openai/v1/models",
            Some(("named:groq", "/openai/v1/models")),
        );
        check("/p/local", Some(("named:local", "/")));
        check("/p/Bad_Name/v1", None);
        check("/v1/chat/completions", None);
        check("/", None);
        check("/openai/v1/../admin", None);
    }
}
