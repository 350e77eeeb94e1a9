//! Provider kinds and the API dialects they speak.

use std::fmt;

/// The wire dialect of a request: it decides where the model is named, which
/// header carries the key and what an error looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Api {
    /// Best guess at the dialect before the provider is known, used only to
    /// shape errors raised that early (missing key, malformed key). Clients of
    /// each SDK send a distinctive header; paths are the fallback.
    pub fn guess(path: &str, headers: &http::HeaderMap) -> Api {
        if headers.contains_key("anthropic-version") || path.contains("/messages") {
            Api::Anthropic
        } else if headers.contains_key("x-goog-api-key")
            || path.contains(":generateContent")
            || path.contains(":streamGenerateContent")
        {
            Api::Gemini
        } else {
            Api::OpenAi
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
            Api::Gemini => "gemini",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KindError {
    #[error("unknown provider kind `{0}`: expected openai, anthropic, gemini or openai-compatible")]
    Unknown(String),
}

/// What a configured provider is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Gemini,
    /// Any server speaking the OpenAI API (vLLM, Ollama, Groq, Together, ...):
    /// it has no default base URL.
    OpenAiCompatible,
}

impl ProviderKind {
    pub fn parse(text: &str) -> Result<Self, KindError> {
        match text {
            "openai" => Ok(Self::OpenAi),
            "anthropic" => Ok(Self::Anthropic),
            "gemini" => Ok(Self::Gemini),
            "openai-compatible" => Ok(Self::OpenAiCompatible),
            other => Err(KindError::Unknown(other.chars().take(40).collect())),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::OpenAiCompatible => "openai-compatible",
        }
    }

    pub fn api(&self) -> Api {
        match self {
            Self::OpenAi | Self::OpenAiCompatible => Api::OpenAi,
            Self::Anthropic => Api::Anthropic,
            Self::Gemini => Api::Gemini,
        }
    }

    /// The provider's public API root; the client's path below the gateway
    /// prefix is appended to it unchanged.
    pub fn default_base_url(&self) -> Option<&'static str> {
        match self {
            Self::OpenAi => Some("https://api.openai.com"),
            Self::Anthropic => Some("https://api.anthropic.com"),
            Self::Gemini => Some("https://generativelanguage.googleapis.com"),
            Self::OpenAiCompatible => None,
        }
    }

    /// The gateway's shortcut prefix for this kind (`/openai`, ...); a
    /// provider can always be reached by name under `/p/NAME` as well.
    pub fn from_shortcut(prefix: &str) -> Option<Self> {
        match prefix {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "gemini" => Some(Self::Gemini),
            _ => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for text in ["openai", "anthropic", "gemini", "openai-compatible"] {
            assert_eq!(ProviderKind::parse(text).unwrap().as_str(), text);
        }
        assert!(ProviderKind::parse("azure").is_err());
        assert_eq!(ProviderKind::OpenAiCompatible.default_base_url(), None);
    }

    #[test]
    fn guesses_dialect() {
        let mut anthropic = http::HeaderMap::new();
        anthropic.insert(
            "anthropic-version",
            http::HeaderValue::from_static("2023-06-01"),
        );
        assert_eq!(Api::guess("/p/x/v1/complete", &anthropic), Api::Anthropic);
        assert_eq!(
            Api::guess(
                "/p/x/v1beta/models/g:generateContent",
                &http::HeaderMap::new()
            ),
            Api::Gemini
        );
        assert_eq!(
            Api::guess("/p/x/v1/chat/completions", &http::HeaderMap::new()),
            Api::OpenAi
        );
    }
}
