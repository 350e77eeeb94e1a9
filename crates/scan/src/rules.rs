//! Rules are data: the built-in `rules/builtin.toml` is compiled in, and a
//! user's rule file adds rules or replaces built-in ones by id.

use regex::bytes::Regex;
use serde::Deserialize;

/// The built-in rules, as shipped.
pub const BUILTIN_RULES: &str = include_str!("../rules/builtin.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// A rule as written in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: String,
    pub description: String,
    /// Literal anchors (case-insensitive); at least one must appear near a
    /// match for the regex to run. A rule without keywords runs on every
    /// input (slow: avoid).
    #[serde(default)]
    pub keywords: Vec<String>,
    pub regex: String,
    /// Minimum Shannon entropy of the secret, in bits per character, for a
    /// secret drawn from 64 symbols (base64). A secret drawn from a smaller
    /// alphabet (hex, digits, one case) is held to the same share of its
    /// alphabet's maximum: `entropy × log2(alphabet) / 6`.
    pub entropy: Option<f64>,
    /// `kf-checksum`: the secret must be a checksum-valid KeyForge key;
    /// `netrc-entry`: the match must follow a .netrc entry's `machine HOST
    /// login USER`; `http-credentials`: after `Basic`, the secret must be
    /// base64 of `user:password`; `key-block`: the regex matches a private
    /// key's header, and the secret is its whole block (a bare header is
    /// none); `jwk-private`: a JWK's `"d"`, and the secret goes on over
    /// its other private members.
    pub validate: Option<String>,
    /// The secret is the value of an assignment: it must be a literal, not
    /// a reference to where the secret lives (an environment lookup,
    /// `${X}`, `$(…)`, a variable or attribute name, a function call).
    #[serde(default)]
    pub literal: bool,
    /// A regex over the file's path (`/`-separated): the rule runs only on
    /// files whose path matches, over the whole file when it has no
    /// keywords (`(^|/)\.pgpass$`).
    pub path: Option<String>,
    /// Bytes after a keyword that the regex may reach (default 1024): a
    /// private key block needs more.
    pub window: Option<usize>,
    /// A cheap test of the text at each keyword occurrence, run before the
    /// rule's regex gets a window there (see [`Gate`]).
    pub gate: Option<RawGate>,
    /// For a rule with `path`: the path its examples and negatives are
    /// scanned as.
    pub example_path: Option<String>,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub negatives: Vec<String>,
    #[serde(default)]
    pub fix: String,
}

/// A gate as written: `{ kind = "assignment", value_min = 20 }` or
/// `{ kind = "url-authority" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub kind: String,
    pub value_min: Option<usize>,
}

/// What must follow (or precede) a keyword occurrence for the rule's regex
/// to possibly match through it. A keyword occurrence failing its rule's
/// gate opens no window for that rule, and one passing opens a window that
/// starts at the setting's name rather than up to
/// `WINDOW_BEFORE` bytes earlier. Gates are necessary conditions of the
/// regexes they guard, never extra judgements: a gated scan finds exactly
/// what an ungated one does (a test compares both over every example and
/// the repository's own files), only faster. Most keyword occurrences in
/// code (`token: Token`, `fn key(`, `https://docs…`) fail them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The keyword is part of a setting's name (`[A-Za-z0-9_.-]` run)
    /// followed by a quote, `]`, white space, then `=`, `:`, `:=`, `=>`
    /// (or a quoted name then `,`), then a value on the same line: a
    /// quoted string or a bare run of at least `value_min` bytes, or a
    /// YAML block scalar indicator. Or the name is an XML element
    /// (`<Pass …>`). Where decoded or joined views are built is decided
    /// over the keywords' lines, gates or not.
    Assignment {
        /// Shortest value the regex accepts, in bytes.
        value_min: usize,
    },
    /// A URL's authority after `://` holds a `:` and then an `@` before
    /// any white space, `/`, `?`, quote or angle bracket (`user:pw@host`).
    UrlAuthority,
}

/// How a candidate is validated beyond its regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    None,
    /// The KeyForge key's CRC32 checksum must match.
    KfChecksum,
    /// The match follows a .netrc entry's `machine HOST` and at least one
    /// `login USER` (`account`, `port`) pair, in the 2 KiB before it.
    NetrcEntry,
    /// An HTTP `Authorization` header's credentials: after `Basic`, base64
    /// of `user:password` (text holding a `:`); after another scheme, any
    /// token.
    HttpCredentials,
    /// The match is a private key block's header; the secret is the block,
    /// up to its END line or last body line (see
    /// [`crate::blocks::key_block_end`]), and a header with no base64 body
    /// is no secret.
    KeyBlock,
    /// A JSON Web Key's `"d"`: the secret goes on to the last of an RSA
    /// key's other private members (`p`, `q`, `dp`, `dq`, `qi`) before the
    /// object closes (see [`crate::blocks::jwk_private_end`]).
    JwkPrivate,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub keywords: Vec<String>,
    pub regex: Regex,
    pub entropy: Option<f64>,
    pub validation: Validation,
    pub literal: bool,
    pub path: Option<regex::Regex>,
    /// Bytes after a keyword the regex may reach.
    pub window: usize,
    /// The test each keyword occurrence must pass first, if any.
    pub gate: Option<Gate>,
    pub example_path: Option<String>,
    pub examples: Vec<String>,
    pub negatives: Vec<String>,
    pub fix: String,
}

/// Bytes after a keyword a rule's regex looks at, unless the rule says.
pub const DEFAULT_WINDOW: usize = 1024;
/// The largest `window` a rule may ask for.
pub const MAX_WINDOW: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rule file is not valid TOML: {0}")]
    Toml(String),
    #[error("rule `{id}`: {reason}")]
    Rule { id: String, reason: String },
}

fn compile(raw: RawRule) -> Result<Rule, RuleError> {
    let fail = |reason: String| RuleError::Rule {
        id: raw.id.clone(),
        reason,
    };
    if raw.id.is_empty()
        || !raw
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(fail("an id is letters, digits, `-` and `_`".into()));
    }
    let regex = regex::bytes::RegexBuilder::new(&raw.regex)
        .size_limit(8 * 1024 * 1024)
        .build()
        .map_err(|error| fail(format!("regex does not compile: {error}")))?;
    let validation = match raw.validate.as_deref() {
        None => Validation::None,
        Some("kf-checksum") => Validation::KfChecksum,
        Some("netrc-entry") => Validation::NetrcEntry,
        Some("http-credentials") => Validation::HttpCredentials,
        Some("key-block") => Validation::KeyBlock,
        Some("jwk-private") => Validation::JwkPrivate,
        Some(other) => return Err(fail(format!("unknown validate `{other}`"))),
    };
    if raw.keywords.iter().any(String::is_empty) {
        return Err(fail("a keyword may not be empty".into()));
    }
    if let Some(entropy) = raw.entropy
        && !(0.0..=8.0).contains(&entropy)
    {
        return Err(fail("entropy is between 0 and 8 bits per character".into()));
    }
    let path = raw
        .path
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|error| fail(format!("path regex does not compile: {error}")))?;
    let window = raw.window.unwrap_or(DEFAULT_WINDOW);
    if !(1..=MAX_WINDOW).contains(&window) {
        return Err(fail(format!("window is 1 to {MAX_WINDOW} bytes")));
    }
    let gate = match raw.gate {
        None => None,
        Some(RawGate { kind, value_min }) => match (kind.as_str(), value_min) {
            ("assignment", Some(value_min)) if value_min >= 1 => {
                Some(Gate::Assignment { value_min })
            }
            ("url-authority", None) => Some(Gate::UrlAuthority),
            _ => {
                return Err(fail(
                    "gate is { kind = \"assignment\", value_min = N } (N at least 1) or { kind = \"url-authority\" }"
                        .into(),
                ));
            }
        },
    };
    if gate.is_some() && raw.keywords.is_empty() {
        return Err(fail("a gate needs keywords to test".into()));
    }
    Ok(Rule {
        gate,
        literal: raw.literal,
        path,
        window,
        example_path: raw.example_path,
        keywords: raw.keywords,
        id: raw.id,
        description: raw.description,
        regex,
        entropy: raw.entropy,
        validation,
        examples: raw.examples,
        negatives: raw.negatives,
        fix: raw.fix,
    })
}

/// Parses a rule file.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, RuleError> {
    let file: RawRuleFile =
        toml::from_str(text).map_err(|error| RuleError::Toml(error.to_string()))?;
    let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
    for raw in file.rule {
        let rule = compile(raw)?;
        if rules.iter().any(|other| other.id == rule.id) {
            return Err(RuleError::Rule {
                id: rule.id,
                reason: "defined twice in one file".into(),
            });
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// The built-in rules with `extra` added (a rule with a built-in id
/// replaces it).
pub fn rules_with(extra: Option<&str>) -> Result<Vec<Rule>, RuleError> {
    let mut rules = parse_rules(BUILTIN_RULES)?;
    if let Some(text) = extra {
        for rule in parse_rules(text)? {
            match rules.iter_mut().find(|existing| existing.id == rule.id) {
                Some(existing) => *existing = rule,
                None => rules.push(rule),
            }
        }
    }
    Ok(rules)
}
