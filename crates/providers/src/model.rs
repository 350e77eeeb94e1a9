//! Where a request names its model: the JSON body (OpenAI, Anthropic), the
//! path (Gemini `models/NAME:method`, OpenAI `models/NAME`, Azure
//! `deployments/NAME`).

use crate::kind::Api;
use crate::request::{OutputBound, RequestError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestModel {
    /// The request names this model.
    Named(String),
    /// A read-only listing of models: allowed for every key, it spends nothing.
    Listing,
    /// The request names no model we can see (file uploads, batches, ...).
    Unknown,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the `model` field must be a string")]
    ModelNotString,
}

/// Finds the model a request names. `path` is the part forwarded upstream
/// (below the gateway prefix), `body` the buffered request body. A thin
/// wrapper over [`crate::inspect`], for callers that need only the model.
pub fn request_model(
    api: Api,
    method: &http::Method,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<RequestModel, ModelError> {
    match crate::request::inspect(api, method, path, content_type, body) {
        Ok(facts) => Ok(facts.model),
        Err(RequestError::ModelNotString) => Err(ModelError::ModelNotString),
        // A duplicate key is malformed for the gateway: the message names it.
        Err(error @ RequestError::DuplicateKey { .. }) => {
            Err(ModelError::MalformedJson(error.to_string()))
        }
        Err(RequestError::MalformedJson(what)) => Err(ModelError::MalformedJson(what)),
    }
}

pub(crate) fn model_from_path(api: Api, path: &str) -> Option<RequestModel> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // `.../models` alone is the listing in every dialect.
    if segments.last() == Some(&"models") {
        return Some(RequestModel::Listing);
    }
    let after = |marker: &str| {
        segments
            .iter()
            // Case-insensitive: a backend that routes `Deployments/NAME`
            // like `deployments/NAME` must not see a model the scope check
            // missed.
            .position(|s| s.eq_ignore_ascii_case(marker))
            .and_then(|i| segments.get(i + 1))
            .copied()
    };
    match api {
        Api::Gemini => {
            let name = after("models").or_else(|| after("tunedModels"))?;
            let model = name.split(':').next().unwrap_or(name);
            Some(RequestModel::Named(model.to_owned()))
        }
        Api::OpenAi => {
            if let Some(deployment) = after("deployments") {
                return Some(RequestModel::Named(deployment.to_owned()));
            }
            // GET /v1/models/{id} retrieves (or DELETE deletes) one model.
            match segments.as_slice() {
                [.., "models", id] => Some(RequestModel::Named((*id).to_owned())),
                _ => None,
            }
        }
        Api::Anthropic => match segments.as_slice() {
            [.., "models", id] => Some(RequestModel::Named((*id).to_owned())),
            _ => None,
        },
    }
}

/// The most output tokens a request can be billed for, from its own caps,
/// times its copies (see [`crate::inspect`] for the fields read). `Some(0)`
/// for endpoints that generate nothing; `None` when the request sets no
/// usable cap (the model's maximum applies), or its body is not JSON the
/// gateway can read. A thin wrapper for callers without a limits table.
pub fn max_output_tokens(api: Api, path: &str, body: &[u8]) -> Option<u64> {
    let facts = crate::request::inspect(
        api,
        &http::Method::POST,
        path,
        Some("application/json"),
        body,
    )
    .ok()?;
    match facts.output {
        OutputBound::Nothing => Some(0),
        OutputBound::Capped { tokens } | OutputBound::EndpointDefault { tokens } => {
            Some(tokens.saturating_mul(facts.copies))
        }
        OutputBound::Uncapped => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn output_caps() {
        let cases: &[(Api, &str, &str, Option<u64>)] = &[
            (
                Api::OpenAi,
                "/v1/chat/completions",
                r#"{"model":"m","max_tokens":100}"#,
                Some(100),
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                // Two caps: the bound takes the larger (providers differ on
                // which one applies).
                r#"{"max_completion_tokens":50,"max_tokens":100,"n":3}"#,
                Some(300),
            ),
            (
                Api::OpenAi,
                "/v1/responses",
                r#"{"max_output_tokens":70}"#,
                Some(70),
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                r#"{"model":"m","messages":[]}"#,
                None,
            ),
            (
                Api::OpenAi,
                "/v1/embeddings",
                r#"{"model":"m","input":"x"}"#,
                Some(0),
            ),
            (Api::OpenAi, "/v1/chat/completions", "not json", None),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                r#"{"max_tokens":-1}"#,
                None,
            ),
            (
                Api::Anthropic,
                "/v1/messages",
                r#"{"max_tokens":1024,"n":5}"#,
                Some(1024),
            ),
            (
                Api::Anthropic,
                "/v1/messages/count_tokens",
                r#"{}"#,
                Some(0),
            ),
            (
                Api::Gemini,
                "/v1beta/models/g:generateContent",
                r#"{"generationConfig":{"maxOutputTokens":64,"candidateCount":2}}"#,
                Some(128),
            ),
            (
                Api::Gemini,
                "/v1beta/models/g:streamGenerateContent?alt=sse",
                r#"{"contents":[]}"#,
                None,
            ),
            (
                Api::Gemini,
                "/v1beta/models/e:embedContent",
                r#"{}"#,
                Some(0),
            ),
        ];
        for (api, path, body, expected) in cases {
            assert_eq!(
                max_output_tokens(*api, path, body.as_bytes()),
                *expected,
                "{api:?} {path} {body}"
            );
        }
    }

    fn check(
        api: Api,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
        expected: Result<RequestModel, ModelError>,
    ) {
        assert_eq!(
            request_model(api, &method, path, content_type, body.as_bytes()),
            expected,
            "{api:?} {method} {path} {body}"
        );
    }

    #[test]
    fn table() {
        use RequestModel::*;
        let json = Some("application/json");
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/chat/completions",
            json,
            r#"{"model":"gpt-4o-mini","messages":[]}"#,
            Ok(Named("gpt-4o-mini".into())),
        );
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/embeddings",
            Some("application/json; charset=utf-8"),
            r#"{"model":"text-embedding-3-small"}"#,
            Ok(Named("text-embedding-3-small".into())),
        );
        check(
            Api::OpenAi,
            Method::GET,
            "/v1/models",
            None,
            "",
            Ok(Listing),
        );
        check(
            Api::OpenAi,
            Method::GET,
            "/v1/models/gpt-4o",
            None,
            "",
            Ok(Named("gpt-4o".into())),
        );
        check(
            Api::OpenAi,
            Method::POST,
            "/openai/deployments/my-gpt4/chat/completions?api-version=2024-02-01",
            json,
            "{}",
            Ok(Named("my-gpt4".into())),
        );
        // Found by a tester: the marker is matched whatever its case.
        check(
            Api::OpenAi,
            Method::POST,
            "/openai/Deployments/gpt-4o/chat/completions",
            json,
            "{}",
            Ok(Named("gpt-4o".into())),
        );
        check(Api::OpenAi, Method::GET, "/v1/files", None, "", Ok(Unknown));
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/files",
            Some("multipart/form-data; boundary=x"),
            "--x",
            Ok(Unknown),
        );
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/chat/completions",
            json,
            r#"{"messages":[]}"#,
            Ok(Unknown),
        );
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/chat/completions",
            json,
            r#"{"model":4}"#,
            Err(ModelError::ModelNotString),
        );
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/chat/completions",
            None,
            r#"{"model":"o3"}"#,
            Ok(Named("o3".into())),
        );
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/chat/completions",
            Some("application/x-www-form-urlencoded"),
            r#" {"model":"o3"}"#,
            Ok(Named("o3".into())),
        );
        check(
            Api::OpenAi,
            Method::POST,
            "/v1/audio/transcriptions",
            Some("multipart/form-data; boundary=x"),
            r#"{"model":"o3"}"#,
            Ok(Unknown),
        );
        assert!(matches!(
            request_model(
                Api::OpenAi,
                &Method::POST,
                "/v1/chat/completions",
                json,
                b"{\"model\":"
            ),
            Err(ModelError::MalformedJson(_))
        ));
        check(
            Api::Anthropic,
            Method::POST,
            "/v1/messages",
            json,
            r#"{"model":"claude-3-5-haiku-latest","max_tokens":5}"#,
            Ok(Named("claude-3-5-haiku-latest".into())),
        );
        check(
            Api::Anthropic,
            Method::GET,
            "/v1/models",
            None,
            "",
            Ok(Listing),
        );
        check(
            Api::Gemini,
            Method::POST,
            "/v1beta/models/gemini-2.0-flash:generateContent",
            json,
            r#"{"contents":[]}"#,
            Ok(Named("gemini-2.0-flash".into())),
        );
        check(
            Api::Gemini,
            Method::POST,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            json,
            "{}",
            Ok(Named("gemini-2.0-flash".into())),
        );
        check(
            Api::Gemini,
            Method::GET,
            "/v1beta/models",
            None,
            "",
            Ok(Listing),
        );
        check(
            Api::Gemini,
            Method::GET,
            "/v1beta/models/gemini-2.0-flash",
            None,
            "",
            Ok(Named("gemini-2.0-flash".into())),
        );
    }
}
