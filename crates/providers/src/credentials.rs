//! Credentials on the way in and out: find the client's `kf_` key in whatever
//! header its SDK uses, strip every client credential, inject the provider's.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use keyforge_types::{ProviderSecret, VirtualKey, VirtualKeyError};

use crate::kind::Api;

/// Headers the providers' SDKs put API keys in. All of them are read on the
/// way in and removed before forwarding.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "x-api-key", "x-goog-api-key", "api-key"];

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and headers the client
/// library recomputes; never forwarded in either direction.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// [`HOP_BY_HOP`] as header names, plus `set-cookie`: what
/// [`strip_response_headers`] removes without parsing a name per request.
const STRIPPED_RESPONSE_HEADERS: [header::HeaderName; 10] = [
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::SET_COOKIE,
];

/// Prefixes of real provider keys, to tell a user who pasted one where a
/// `kf_` key belongs what to do instead.
const PROVIDER_KEY_PREFIXES: [(&str, &str); 6] = [
    ("sk-ant-", "an Anthropic API key"),
    ("sk-proj-", "an OpenAI API key"),
    ("sk-svcacct-", "an OpenAI API key"),
    ("sk-admin-", "an OpenAI admin key"),
    ("sk-", "an OpenAI-style API key"),
    ("AIza", "a Google API key"),
];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("no API key was sent: pass your KeyForge key (kf_...) as the API key of your SDK")]
    Missing,
    #[error("{0}")]
    Malformed(VirtualKeyError),
    #[error(
        "this request carries {0}, not a KeyForge key: provider keys stay inside KeyForge. Create a KeyForge key with `keyforge key create` and use it as the API key; revoke the provider key if it was shared"
    )]
    ProviderKey(&'static str),
    #[error(
        "the API key is not a KeyForge key: KeyForge keys start with `kf_` (create one with `keyforge key create`)"
    )]
    NotAKeyForgeKey,
}

/// A syntactically valid, checksum-valid virtual key found on a request.
#[derive(Debug)]
pub struct ClientCredential {
    pub key: VirtualKey,
    /// Where it was found (`authorization`, `x-api-key`, `?key=`).
    pub source: &'static str,
}

/// Finds the client's key. A `kf_` candidate anywhere wins; if the only
/// candidates are something else, the error says what they look like
/// (without echoing them).
pub fn extract_client_credential(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<ClientCredential, CredentialError> {
    let mut candidates: Vec<(&'static str, &str)> = Vec::with_capacity(2);
    for name in CREDENTIAL_HEADERS {
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else { continue };
            let text = text.trim();
            let text = if name == "authorization" {
                strip_bearer(text)
            } else {
                text
            };
            if !text.is_empty() {
                candidates.push((name, text));
            }
        }
    }
    if let Some(query) = query {
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("key=")
                && !value.is_empty()
            {
                candidates.push(("?key=", value));
            }
        }
    }
    if let Some((source, text)) = candidates
        .iter()
        .find(|(_, text)| VirtualKey::looks_like(text))
    {
        return VirtualKey::parse(text)
            .map(|key| ClientCredential { key, source })
            .map_err(CredentialError::Malformed);
    }
    let Some((_, text)) = candidates.first() else {
        return Err(CredentialError::Missing);
    };
    match PROVIDER_KEY_PREFIXES
        .iter()
        .find(|(prefix, _)| text.starts_with(prefix))
    {
        Some((_, what)) => Err(CredentialError::ProviderKey(what)),
        None => Err(CredentialError::NotAKeyForgeKey),
    }
}

/// `Bearer X` -> `X` (scheme case-insensitive); a bare `Bearer` is empty.
fn strip_bearer(text: &str) -> &str {
    match text.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        None if text.eq_ignore_ascii_case("bearer") => "",
        _ => text,
    }
}

/// The headers to forward upstream: the client's minus credentials, cookies,
/// hop-by-hop headers, `host`, `content-length` (recomputed) and
/// `accept-encoding` (the gateway reads responses, so it asks for identity).
pub fn sanitize_request_headers(headers: &HeaderMap) -> HeaderMap {
    let listed_in_connection = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        let dropped = CREDENTIAL_HEADERS.contains(&n)
            || HOP_BY_HOP.contains(&n)
            || listed_in_connection.iter().any(|listed| listed == n)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::ACCEPT_ENCODING
            || name == header::COOKIE;
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Removes a `key=` credential from a query string (Gemini clients may send
/// the key there). Returns `None` when nothing is left.
pub fn sanitize_query(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("key="))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

/// Response headers to pass back to the client: the upstream's minus
/// hop-by-hop headers and `set-cookie` (a provider's cookies are no business
/// of the client's).
pub fn strip_response_headers(headers: &mut HeaderMap) {
    let listed = if headers.contains_key(header::CONNECTION) {
        connection_listed(headers)
    } else {
        Vec::new()
    };
    for name in &STRIPPED_RESPONSE_HEADERS {
        headers.remove(name);
    }
    for name in &listed {
        headers.remove(name.as_str());
    }
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// Writes the provider's key into the header its API expects. The value is
/// marked sensitive so HTTP libraries never print it, even at trace level.
pub fn inject_provider_key(
    api: Api,
    headers: &mut HeaderMap,
    secret: &ProviderSecret,
) -> Result<(), http::header::InvalidHeaderValue> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the provider key goes into the upstream request's auth header, marked sensitive"
    )]
    let key = secret.expose();
    let (name, text) = match api {
        Api::OpenAi => (header::AUTHORIZATION, format!("Bearer {key}")),
        Api::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
        Api::Gemini => (HeaderName::from_static("x-goog-api-key"), key.to_owned()),
    };
    let mut value = HeaderValue::from_str(&text)?;
    value.set_sensitive(true);
    headers.insert(name, value);
    if api == Api::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyforge_types::EnvName;
    use secrecy::ExposeSecret;

    #[test]
    fn responses_lose_every_hop_by_hop_header_and_what_connection_lists() {
        let mut headers = HeaderMap::new();
        for name in HOP_BY_HOP
            .iter()
            .chain(&["set-cookie", "x-private", "x-kept"])
        {
            headers.insert(
                header::HeaderName::from_static(name),
                http::HeaderValue::from_static("1"),
            );
        }
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("keep-alive, X-Private"),
        );
        strip_response_headers(&mut headers);
        let left: Vec<&str> = headers.keys().map(header::HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    fn key_text() -> String {
        #[expect(
            clippy::disallowed_methods,
            reason = "the test needs the key's text to put it on a request"
        )]
        let text = VirtualKey::generate(&EnvName::parse("dev").unwrap())
            .secret()
            .expose_secret()
            .to_owned();
        text
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn finds_keys_wherever_sdks_put_them() {
        let key = key_text();
        let bearer = format!("Bearer {key}");
        let cases: Vec<(HeaderMap, Option<String>, &str)> = vec![
            (
                headers(&[("authorization", &bearer)]),
                None,
                "authorization",
            ),
            (headers(&[("x-api-key", &key)]), None, "x-api-key"),
            (headers(&[("x-goog-api-key", &key)]), None, "x-goog-api-key"),
            (headers(&[("api-key", &key)]), None, "api-key"),
            (
                HeaderMap::new(),
                Some(format!("alt=sse&key={key}")),
                "?key=",
            ),
            // The anthropic SDK may send both; the kf_ key wins over a dummy.
            (
                headers(&[("authorization", "Bearer dummy"), ("x-api-key", &key)]),
                None,
                "x-api-key",
            ),
        ];
        for (map, query, source) in cases {
            let found = extract_client_credential(&map, query.as_deref()).unwrap();
            assert_eq!(found.source, source);
        }
    }

    #[test]
    fn explains_what_is_wrong() {
        let key = key_text();
        let mut broken = key.clone();
        broken.pop();
        broken.push(if key.ends_with('A') { 'B' } else { 'A' });
        let cases: Vec<(HeaderMap, CredentialError)> = vec![
            (HeaderMap::new(), CredentialError::Missing),
            (
                headers(&[("authorization", "Bearer ")]),
                CredentialError::Missing,
            ),
            (
                headers(&[("authorization", &format!("Bearer {broken}"))]),
                CredentialError::Malformed(VirtualKeyError::BadChecksum),
            ),
            (
                headers(&[("authorization", "Bearer sk-proj-abc")]),
                CredentialError::ProviderKey("an OpenAI API key"),
            ),
            (
                headers(&[("x-api-key", "sk-ant-api03-abc")]),
                CredentialError::ProviderKey("an Anthropic API key"),
            ),
            (
                headers(&[("x-goog-api-key", "AIzaSyabc")]),
                CredentialError::ProviderKey("a Google API key"),
            ),
            (
                headers(&[("authorization", "Bearer hello")]),
                CredentialError::NotAKeyForgeKey,
            ),
        ];
        for (map, expected) in cases {
            assert_eq!(extract_client_credential(&map, None).unwrap_err(), expected);
        }
    }

    #[test]
    fn error_messages_never_echo_the_credential() {
        let map = headers(&[("authorization", "Bearer sk-proj-canary123")]);
        let message = extract_client_credential(&map, None)
            .unwrap_err()
            .to_string();
        assert!(!message.contains("canary123"));
    }

    #[test]
    fn strips_credentials_and_hop_by_hop_headers() {
        let map = headers(&[
            ("authorization", "Bearer kf_x"),
            ("x-api-key", "kf_x"),
            ("x-goog-api-key", "kf_x"),
            ("api-key", "kf_x"),
            ("cookie", "session=1"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("host", "gateway"),
            ("content-length", "10"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("openai-beta", "assistants=v2"),
        ]);
        let out = sanitize_request_headers(&map);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "anthropic-version", "openai-beta"]);
    }

    #[test]
    fn removes_key_from_query() {
        assert_eq!(sanitize_query("alt=sse&key=kf_x"), Some("alt=sse".into()));
        assert_eq!(sanitize_query("key=kf_x"), None);
    }

    #[test]
    fn injects_the_right_header_marked_sensitive() {
        let secret = ProviderSecret::parse("canary-provider-key").unwrap();
        for (api, name, value) in [
            (Api::OpenAi, "authorization", "Bearer canary-provider-key"),
            (Api::Anthropic, "x-api-key", "canary-provider-key"),
            (Api::Gemini, "x-goog-api-key", "canary-provider-key"),
        ] {
            let mut map = HeaderMap::new();
            inject_provider_key(api, &mut map, &secret).unwrap();
            let injected = map.get(name).unwrap();
            assert_eq!(injected, value);
            assert!(injected.is_sensitive());
            assert!(!format!("{map:?}").contains("canary"));
        }
        let mut map = HeaderMap::new();
        inject_provider_key(Api::Anthropic, &mut map, &secret).unwrap();
        assert_eq!(map.get("anthropic-version").unwrap(), "2023-06-01");
    }
}
