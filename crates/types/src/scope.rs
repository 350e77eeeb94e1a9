//! What a virtual key may reach. Scopes are allow-lists: an empty list means
//! "every provider of the key's environment" / "every model", and anything
//! not matched is denied.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::budget::NarrowError;
use crate::names::ProviderName;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("model pattern must not be empty")]
    Empty,
    #[error("model pattern is at most 200 characters long")]
    TooLong,
    #[error("model pattern may not contain whitespace or control characters")]
    BadCharacter,
}

/// An exact model name or a glob where `*` matches any run of characters
/// (`gpt-4o*`, `claude-*-haiku-*`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelPattern(String);

impl ModelPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > 200 {
            return Err(PatternError::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::BadCharacter);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, model: &str) -> bool {
        glob_match(self.0.as_bytes(), model.as_bytes())
    }

    /// Whether every model `other` matches is matched by `self`. Matching
    /// `other`'s text with its `*` taken literally is sound: only a `*` of
    /// `self` can absorb a `*` of `other`, and it absorbs any run. (It may
    /// say no for some exotic pairs that are in fact covered; a refused
    /// child scope can always be written more plainly.)
    pub fn covers(&self, other: &ModelPattern) -> bool {
        self.matches(&other.0)
    }
}

/// Iterative glob matching with `*` only; linear in practice, no recursion.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = backtrack {
            p = star_p + 1;
            t = star_t + 1;
            backtrack = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

impl fmt::Debug for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl TryFrom<String> for ModelPattern {
    type Error = PatternError;
    fn try_from(text: String) -> Result<Self, PatternError> {
        Self::parse(&text)
    }
}

impl From<ModelPattern> for String {
    fn from(pattern: ModelPattern) -> String {
        pattern.0
    }
}

/// Which providers (by name, within the key's environment) and which models a
/// key may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub providers: Vec<ProviderName>,
    #[serde(default)]
    pub models: Vec<ModelPattern>,
}

impl Scope {
    pub fn allows_provider(&self, provider: &ProviderName) -> bool {
        self.providers.is_empty() || self.providers.contains(provider)
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|pattern| pattern.matches(model))
    }

    /// Whether the key is limited to some models (then requests that name no
    /// model are refused, except the read-only model listings).
    pub fn restricts_models(&self) -> bool {
        !self.models.is_empty()
    }

    /// A child key's scope under this one (its parent's): every requested
    /// provider and model pattern must be within the parent's, and a list
    /// left empty is the parent's.
    pub fn narrow(&self, requested: Scope) -> Result<Scope, NarrowError> {
        let providers = if requested.providers.is_empty() {
            self.providers.clone()
        } else {
            if let Some(outside) = requested
                .providers
                .iter()
                .find(|provider| !self.allows_provider(provider))
            {
                return Err(NarrowError(format!(
                    "provider `{outside}` is outside the parent key's scope"
                )));
            }
            requested.providers
        };
        let models = if requested.models.is_empty() {
            self.models.clone()
        } else {
            if !self.models.is_empty()
                && let Some(outside) = requested
                    .models
                    .iter()
                    .find(|child| !self.models.iter().any(|parent| parent.covers(child)))
            {
                return Err(NarrowError(format!(
                    "model pattern `{}` is outside the parent key's models ({})",
                    outside.as_str(),
                    self.models
                        .iter()
                        .map(ModelPattern::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            requested.models
        };
        Ok(Scope { providers, models })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases = [
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-4o*", "gpt-4", false),
            ("claude-*-haiku-*", "claude-3-5-haiku-20241022", true),
            ("claude-*-haiku-*", "claude-3-5-sonnet-20241022", false),
            ("*", "anything", true),
            ("*mini", "gpt-4o-mini", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ];
        for (pattern, model, expected) in cases {
            assert_eq!(
                ModelPattern::parse(pattern).unwrap().matches(model),
                expected,
                "{pattern} vs {model}"
            );
        }
    }

    #[test]
    fn empty_lists_allow_everything_and_lists_deny_the_rest() {
        let open = Scope::default();
        assert!(open.allows_model("x") && !open.restricts_models());
        let scoped = Scope {
            providers: vec![ProviderName::parse("openai").unwrap()],
            models: vec![ModelPattern::parse("gpt-4o*").unwrap()],
        };
        assert!(scoped.allows_provider(&ProviderName::parse("openai").unwrap()));
        assert!(!scoped.allows_provider(&ProviderName::parse("anthropic").unwrap()));
        assert!(scoped.allows_model("gpt-4o-mini"));
        assert!(!scoped.allows_model("o3"));
    }

    fn patterns(list: &[&str]) -> Vec<ModelPattern> {
        list.iter()
            .map(|p| ModelPattern::parse(p).unwrap())
            .collect()
    }

    #[test]
    fn covering_is_sound_for_globs() {
        let covers = |a: &str, b: &str| {
            ModelPattern::parse(a)
                .unwrap()
                .covers(&ModelPattern::parse(b).unwrap())
        };
        assert!(covers("*", "gpt-4o*"));
        assert!(covers("gpt-4*", "gpt-4o-mini"));
        assert!(covers("gpt-4*", "gpt-4o*"));
        assert!(covers("claude-*-haiku-*", "claude-3-5-haiku-*"));
        assert!(covers("gpt-4o", "gpt-4o"));
        assert!(!covers("gpt-4o*", "gpt-4*"));
        assert!(!covers("gpt-4o", "gpt-4o*"));
        assert!(!covers("gpt-4o-mini", "*"));
    }

    #[test]
    fn a_child_scope_narrows_or_inherits() {
        let openai = ProviderName::parse("openai").unwrap();
        let anthropic = ProviderName::parse("anthropic").unwrap();
        let parent = Scope {
            providers: vec![openai.clone()],
            models: patterns(&["gpt-4o*"]),
        };
        assert_eq!(parent.narrow(Scope::default()).unwrap(), parent);
        let narrower = Scope {
            providers: vec![],
            models: patterns(&["gpt-4o-mini"]),
        };
        assert_eq!(
            parent.narrow(narrower).unwrap(),
            Scope {
                providers: vec![openai],
                models: patterns(&["gpt-4o-mini"])
            }
        );
        let wider_provider = Scope {
            providers: vec![anthropic.clone()],
            models: vec![],
        };
        assert!(
            parent
                .narrow(wider_provider)
                .unwrap_err()
                .to_string()
                .contains("provider `anthropic`")
        );
        let wider_model = Scope {
            providers: vec![],
            models: patterns(&["gpt-4*"]),
        };
        assert!(
            parent
                .narrow(wider_model)
                .unwrap_err()
                .to_string()
                .contains("`gpt-4*`")
        );
        // An open parent allows any narrowing.
        let open = Scope::default();
        let child = Scope {
            providers: vec![anthropic],
            models: patterns(&["claude-*"]),
        };
        assert_eq!(open.narrow(child.clone()).unwrap(), child);
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(ModelPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(
            ModelPattern::parse("gpt 4"),
            Err(PatternError::BadCharacter)
        );
    }
}
