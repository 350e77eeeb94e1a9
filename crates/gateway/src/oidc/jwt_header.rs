//! The header of a compact JWT (RFC 7519 §5, RFC 7515 §4), read before
//! anything else so a bad algorithm is refused by name. Pure: only
//! `base64` and `serde_json`, so `fuzz/` includes this file by path.

use base64::Engine;
use serde_json::{Map, Value};

/// Longest token accepted (GitHub's are about 1.2 KB, Kubernetes' 1 KB).
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The algorithms KeyForge verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtAlg {
    Rs256,
    Es256,
}

/// A token's header: its algorithm and the signing key's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JwtHeader {
    pub(crate) alg: JwtAlg,
    pub(crate) kid: Option<String>,
}

/// Reads the header of `token` (`HEADER.PAYLOAD.SIGNATURE`, base64url
/// without padding). The error is the message shown to the client, built
/// from fixed text and at most 16 characters of the `alg` value.
pub(crate) fn parse_header(token: &str) -> Result<JwtHeader, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("the token is too long to be a JWT".to_owned());
    }
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT: expected three base64url parts separated by `.`".to_owned());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| "not a JWT: the header is not base64url".to_owned())?;
    let json: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| "not a JWT: the header is not a JSON object".to_owned())?;
    let alg = match json.get("alg").and_then(Value::as_str).unwrap_or("") {
        "RS256" => JwtAlg::Rs256,
        "ES256" => JwtAlg::Es256,
        "" => return Err("the token's header names no `alg`".to_owned()),
        "none" | "None" | "NONE" => {
            return Err(
                "the token is unsigned (`alg: none`); KeyForge accepts RS256 and ES256 tokens only"
                    .to_owned(),
            );
        }
        hmac if hmac.starts_with("HS") => {
            let shown: String = hmac.chars().take(16).collect();
            return Err(format!(
                "the token uses {shown}, a shared-secret algorithm an issuer's public keys cannot verify; KeyForge accepts RS256 and ES256 tokens only"
            ));
        }
        other => {
            let shown: String = other.chars().take(16).collect();
            return Err(format!(
                "the token's algorithm `{shown}` is not accepted; KeyForge accepts RS256 and ES256 tokens only"
            ));
        }
    };
    let kid = json.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok(JwtHeader { alg, kid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str) -> String {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!("{}.{}.sig", encode(header), encode("{}"))
    }

    fn check(token: &str, expected: Result<(JwtAlg, Option<&str>), &str>) {
        let got = parse_header(token);
        match (&got, expected) {
            (Ok(header), Ok((alg, kid))) => {
                assert_eq!((header.alg, header.kid.as_deref()), (alg, kid), "{token}")
            }
            (Err(message), Err(part)) => assert!(message.contains(part), "{token}: {message}"),
            _ => panic!("{token}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn table() {
        check(
            &token(r#"{"alg":"RS256","kid":"k1"}"#),
            Ok((JwtAlg::Rs256, Some("k1"))),
        );
        check(&token(r#"{"alg":"ES256"}"#), Ok((JwtAlg::Es256, None)));
        check(&token(r#"{"alg":"none"}"#), Err("unsigned"));
        check(&token(r#"{"alg":"HS256"}"#), Err("shared-secret"));
        check(&token(r#"{"alg":"PS256"}"#), Err("`PS256` is not accepted"));
        check(&token(r#"{"kid":"k1"}"#), Err("names no `alg`"));
        check(&token("[1]"), Err("not a JSON object"));
        check("a.b", Err("three base64url parts"));
        check("a.b.c.d", Err("three base64url parts"));
        check("!!.b.c", Err("not base64url"));
        check(&"a".repeat(MAX_TOKEN_BYTES + 1), Err("too long"));
        // Regression guard: an `alg` of long multi-byte text is cut by
        // characters, never inside one.
        check(
            &token(&format!(r#"{{"alg":"HS{}"}}"#, "é".repeat(40))),
            Err("HSéééééééééééééé,"),
        );
        check(
            &token(&format!(r#"{{"alg":"{}"}}"#, "€".repeat(40))),
            Err("not accepted"),
        );
    }
}
