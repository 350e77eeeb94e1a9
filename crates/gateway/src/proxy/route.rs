//! Which provider does a path address, and what is forwarded upstream?
//!
//! - `/p/NAME/REST`: the provider named NAME in the key's environment;
//! - `/openai/REST`, `/anthropic/REST`, `/gemini/REST`: the one provider of
//!   that kind in the key's environment (and the key's scope).
//!
//! `REST` is brought to its canonical form once ([`canonical_path`]: dot
//! segments and encoded separators refused, unreserved escapes decoded), and
//! that one string is both what the scope check reads and what is appended
//! to the provider's base URL (with the query, minus any `key=` credential).

use http::Uri;
use keyforge_providers::{ErrorClass, ProviderKind};
use keyforge_types::ProviderName;

use super::canonical::canonical_path;
use crate::error::GatewayError;

#[derive(Debug, Clone)]
pub(crate) enum Selector {
    Named(ProviderName),
    Kind(ProviderKind),
}

#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) selector: Selector,
    /// Path to append to the provider's base URL, starting with `/`, in
    /// canonical form: the scope check and the upstream see the same path.
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
    let upstream_path = canonical_path(rest).map_err(|refusal| {
        GatewayError::client(
            ErrorClass::InvalidRequest,
            "invalid_path",
            refusal.message(),
        )
    })?;
    Ok(Route {
        selector,
        upstream_path,
    })
}

/// Longest path logged, in bytes.
const MAX_LOGGED_PATH_BYTES: usize = 200;

/// The path as logged: only the route prefix and API path, which hold no
/// secrets (keys travel in headers or the query, which is never logged),
/// cut to at most [`MAX_LOGGED_PATH_BYTES`] bytes at a character boundary:
/// the path is the client's, and a cut inside a character would panic
/// outside the pipeline's `catch_unwind`, leaving the client without an
/// answer.
pub(crate) fn loggable_path(path: &str) -> &str {
    &path[..path.floor_char_boundary(MAX_LOGGED_PATH_BYTES)]
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
        // The canonical path is what is returned, so it is what is both
        // scope-checked and forwarded.
        check(
            "/gemini/v1beta/models/gemini%2D2.0-flash:generateContent",
            Some((
                "kind:gemini",
                "/v1beta/models/gemini-2.0-flash:generateContent",
            )),
        );
        check("/openai//v1/models", Some(("kind:openai", "/v1/models")));
        check(
            "/gemini/v1beta/models/gemini-2.0-flash/%2e%2e/gemini-2.5-pro:generateContent",
            None,
        );
        check(
            "/openai/openai/deployments/gpt-4o-mini/%2E%2E/gpt-4o/chat/completions",
            None,
        );
        check("/p/local/v1/a%2fb", None);
    }

    #[test]
    fn loggable_path_cuts_at_a_character_boundary() {
        // Regression: 199 ASCII bytes and a two-byte character panicked
        // (a byte-200 slice inside `é`) when debug logging was on.
        let check = |path: String, expected: &str| assert_eq!(loggable_path(&path), expected);
        let a199 = "a".repeat(199);
        check(format!("{a199}é"), &a199);
        check(format!("{a199}éz"), &a199);
        check(format!("{}€x", "a".repeat(198)), &"a".repeat(198));
        check("a".repeat(300), &"a".repeat(200));
        check("/openai/v1/é".to_owned(), "/openai/v1/é");
        check(String::new(), "");
    }
}
