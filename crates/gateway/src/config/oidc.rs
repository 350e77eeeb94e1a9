//! `[[oidc.issuer]]` and `[[oidc.role]]`: which identity providers are
//! trusted, and which tokens of theirs become which keys. Checked when the
//! configuration is loaded: a role that binds no claim is refused there, so
//! no configuration can accept every token an issuer signs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use keyforge_types::{
    AnomalyAction, BudgetLimit, EnvName, KeyLimits, ModelPattern, ProjectName, ProviderName, Ttl,
};
use serde::Deserialize;

/// GitHub Actions' issuer.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// Default lifetime of a key minted by a role.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// No role can mint a key that lives longer than this.
pub const HARD_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// How long a fetched JWKS is used before it is fetched again.
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(3600);

/// Claims that pin a GitHub token to a repository or an owner; a GitHub
/// role must bind one of them (every repository on GitHub can get a token
/// from the same issuer, with any audience it likes).
const GITHUB_IDENTITY_CLAIMS: &[&str] = &[
    "sub",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "job_workflow_ref",
];

/// The `[oidc]` section as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// Clock skew tolerated on `exp`, `nbf`, `iat` (`30s`).
    leeway: Option<String>,
    #[serde(default)]
    issuer: Vec<RawIssuer>,
    #[serde(default)]
    role: Vec<RawRole>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: String,
    /// `github-actions` or `kubernetes`.
    preset: Option<String>,
    /// The issuer URL, as in the tokens' `iss`; a trailing `/` on either
    /// side is ignored.
    url: Option<String>,
    /// The audience tokens must be minted for (`aud`).
    audience: String,
    /// Where the JWKS is, if not found through OIDC discovery.
    jwks_url: Option<String>,
    /// A JWKS file (air-gapped installs, a cluster's published keys).
    jwks_file: Option<String>,
    /// A JWKS document inline.
    jwks: Option<String>,
    /// How often a fetched JWKS is fetched again (`1h`).
    jwks_refresh: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    issuer: String,
    /// Claim name (or `a/b/c` path into nested claims) to a glob or a list
    /// of globs, one of which the claim must match.
    #[serde(default)]
    bound_claims: BTreeMap<String, OneOrMany>,
    /// Audiences accepted (default: the issuer's audience).
    #[serde(default)]
    bound_audiences: Vec<String>,
    env: String,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    project: Option<String>,
    #[serde(default)]
    budgets: Vec<String>,
    rpm: Option<u32>,
    tpm: Option<u64>,
    max_parallel: Option<u32>,
    on_anomaly: Option<String>,
    /// Lifetime of the keys minted (default `1h`).
    ttl: Option<String>,
    /// Longest lifetime a login may ask for (default: `ttl`; at most 24h).
    max_ttl: Option<String>,
    /// Whether minted keys may mint child keys (for agents).
    #[serde(default)]
    can_mint: bool,
    /// Whether each token may be exchanged once only (by its `jti`).
    #[serde(default)]
    single_use: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Given in the configuration (inline or a file): never fetched.
    Static(JwkSet),
    /// Fetched from this URL and cached.
    Url(String),
    /// Found through `<issuer>/.well-known/openid-configuration`.
    Discovery,
}

/// A trusted issuer, validated.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub url: String,
    pub audience: String,
    pub jwks: JwksSource,
    pub jwks_refresh: Duration,
    pub github: bool,
}

/// A claim binding: the claim (a path) and the globs it may match.
#[derive(Debug, Clone)]
pub struct ClaimBinding {
    pub claim: String,
    pub patterns: Vec<String>,
}

/// A role, validated.
#[derive(Debug, Clone)]
pub struct RoleConfig {
    pub name: String,
    pub issuer: String,
    pub bound_claims: Vec<ClaimBinding>,
    pub bound_audiences: Vec<String>,
    pub env: EnvName,
    pub providers: Vec<ProviderName>,
    pub models: Vec<ModelPattern>,
    pub project: Option<ProjectName>,
    pub budgets: Vec<BudgetLimit>,
    pub limits: KeyLimits,
    pub on_anomaly: AnomalyAction,
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub can_mint: bool,
    /// Each token is exchanged at most once: its `jti` is remembered until
    /// the token expires, and a token without one is refused.
    pub single_use: bool,
}

/// Workload identity, validated.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub leeway: Duration,
    pub issuers: Vec<IssuerConfig>,
    pub roles: Vec<RoleConfig>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            leeway: DEFAULT_LEEWAY,
            issuers: Vec::new(),
            roles: Vec::new(),
        }
    }
}

fn duration(text: &str, what: &str) -> Result<Duration, String> {
    Ttl::parse(text)
        .map(|ttl| ttl.as_duration())
        .map_err(|error| format!("{what}: {error}"))
}

/// An issuer identifier as compared: without trailing `/`. OIDC Discovery
/// 1.0 section 3 says `iss` is the issuer URL exactly, but issuers and
/// operators disagree on the trailing slash (`https://accounts.google.com`
/// against `https://example.okta.com/`), and both spellings name the same
/// issuer, so the configured URL, the tokens' `iss` and the discovery
/// document's `issuer` are all compared in this form.
pub(crate) fn normalize_issuer(url: &str) -> &str {
    url.trim_end_matches('/')
}

pub(crate) fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => rest.split(['/', ':']).next().unwrap_or_default(),
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

pub(crate) fn check_url(url: &str, what: &str) -> Result<(), String> {
    let parsed: http::Uri = url
        .parse()
        .map_err(|error| format!("{what} `{url}` is not a URL: {error}"))?;
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("{what} `{url}` names no host"));
    }
    if url.starts_with("https://") || is_loopback_http(url) {
        Ok(())
    } else {
        Err(format!(
            "{what} `{url}` must use https:// (plain http is accepted only on loopback, for tests)"
        ))
    }
}

impl RawOidc {
    /// Validates the section; relative `jwks_file` paths are resolved
    /// against `base` (the configuration file's directory).
    pub fn validate(self, base: &Path) -> Result<OidcConfig, String> {
        let leeway = match &self.leeway {
            Some(text) => duration(text, "oidc.leeway")?,
            None => DEFAULT_LEEWAY,
        };
        if leeway > Duration::from_secs(300) {
            return Err("oidc.leeway is at most 5m".into());
        }
        let mut issuers: Vec<IssuerConfig> = Vec::new();
        for raw in self.issuer {
            let issuer = validate_issuer(raw, base)?;
            if issuers.iter().any(|other| other.name == issuer.name) {
                return Err(format!("two OIDC issuers are named `{}`", issuer.name));
            }
            issuers.push(issuer);
        }
        let mut roles: Vec<RoleConfig> = Vec::new();
        for raw in self.role {
            let role = validate_role(raw, &issuers)?;
            if roles.iter().any(|other| other.name == role.name) {
                return Err(format!("two OIDC roles are named `{}`", role.name));
            }
            roles.push(role);
        }
        Ok(OidcConfig {
            leeway,
            issuers,
            roles,
        })
    }
}

fn validate_issuer(raw: RawIssuer, base: &Path) -> Result<IssuerConfig, String> {
    let what = format!("OIDC issuer `{}`", raw.name);
    if raw.name.is_empty() || raw.name.len() > 64 {
        return Err("an OIDC issuer needs a name of 1 to 64 characters".into());
    }
    let github = match raw.preset.as_deref() {
        None | Some("kubernetes") => false,
        Some("github-actions") => true,
        Some(other) => {
            return Err(format!(
                "{what}: unknown preset `{other}` (known: github-actions, kubernetes)"
            ));
        }
    };
    let url = match (&raw.url, github) {
        (Some(url), _) => normalize_issuer(url).to_owned(),
        (None, true) => GITHUB_ACTIONS_ISSUER.to_owned(),
        (None, false) => return Err(format!("{what} needs `url`, the tokens' `iss`")),
    };
    check_url(&url, &format!("{what}: url"))?;
    if raw.audience.trim().is_empty() {
        return Err(format!(
            "{what} needs an `audience`, the `aud` its tokens are minted for"
        ));
    }
    let sources = [
        raw.jwks_url.is_some(),
        raw.jwks_file.is_some(),
        raw.jwks.is_some(),
    ];
    if sources.iter().filter(|given| **given).count() > 1 {
        return Err(format!(
            "{what}: give at most one of jwks_url, jwks_file and jwks"
        ));
    }
    let parse_set = |text: &str, from: &str| -> Result<JwkSet, String> {
        serde_json::from_str::<JwkSet>(text)
            .map_err(|error| format!("{what}: {from} is not a JWKS document: {error}"))
    };
    let jwks = if let Some(url) = raw.jwks_url {
        check_url(&url, &format!("{what}: jwks_url"))?;
        JwksSource::Url(url)
    } else if let Some(file) = raw.jwks_file {
        let path = base.join(&file);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            format!("{what}: cannot read jwks_file {}: {error}", path.display())
        })?;
        JwksSource::Static(parse_set(&text, "jwks_file")?)
    } else if let Some(text) = raw.jwks {
        JwksSource::Static(parse_set(&text, "jwks")?)
    } else {
        JwksSource::Discovery
    };
    if let JwksSource::Static(set) = &jwks
        && set.keys.is_empty()
    {
        return Err(format!("{what}: the JWKS has no keys"));
    }
    let jwks_refresh = match &raw.jwks_refresh {
        Some(text) => duration(text, &format!("{what}: jwks_refresh"))?,
        None => DEFAULT_JWKS_REFRESH,
    };
    Ok(IssuerConfig {
        name: raw.name,
        url,
        audience: raw.audience,
        jwks,
        jwks_refresh,
        github,
    })
}

fn validate_role(raw: RawRole, issuers: &[IssuerConfig]) -> Result<RoleConfig, String> {
    let what = format!("OIDC role `{}`", raw.name);
    if raw.name.is_empty()
        || raw.name.len() > 64
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{what}: a role name is 1 to 64 letters, digits, `-` or `_`"
        ));
    }
    let issuer = issuers
        .iter()
        .find(|issuer| issuer.name == raw.issuer)
        .ok_or_else(|| format!("{what}: no OIDC issuer named `{}`", raw.issuer))?;
    let mut bound_claims = Vec::new();
    for (claim, patterns) in raw.bound_claims {
        let patterns = match patterns {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        };
        if patterns.is_empty() {
            return Err(format!("{what}: bound claim `{claim}` lists no value"));
        }
        bound_claims.push(ClaimBinding { claim, patterns });
    }
    // A binding whose every pattern matches anything binds nothing.
    let binds = |binding: &ClaimBinding| {
        binding
            .patterns
            .iter()
            .all(|pattern| !pattern.chars().all(|c| c == '*'))
    };
    if !bound_claims.iter().any(binds) {
        return Err(format!(
            "{what} binds no claim: it would accept every token `{}` signs. Add bound_claims (for example `sub`, `repository` or `kubernetes.io/serviceaccount/name`)",
            issuer.name
        ));
    }
    if issuer.github
        && !bound_claims.iter().any(|binding| {
            GITHUB_IDENTITY_CLAIMS.contains(&binding.claim.as_str())
                && binding
                    .patterns
                    .iter()
                    .all(|pattern| !pattern.starts_with('*'))
        })
    {
        return Err(format!(
            "{what}: every GitHub repository can get a token from GitHub's issuer, so a GitHub role must bind one of {} to a value that does not start with `*`",
            GITHUB_IDENTITY_CLAIMS.join(", ")
        ));
    }
    let bound_audiences = if raw.bound_audiences.is_empty() {
        vec![issuer.audience.clone()]
    } else {
        raw.bound_audiences
    };
    let env = EnvName::parse(&raw.env).map_err(|error| format!("{what}: env: {error}"))?;
    let providers = raw
        .providers
        .iter()
        .map(|p| ProviderName::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{what}: providers: {error}"))?;
    let models = raw
        .models
        .iter()
        .map(|m| ModelPattern::parse(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{what}: models: {error}"))?;
    let project = raw
        .project
        .as_deref()
        .map(ProjectName::parse)
        .transpose()
        .map_err(|error| format!("{what}: project: {error}"))?;
    let budgets = raw
        .budgets
        .iter()
        .map(|b| BudgetLimit::parse(b).map_err(|error| format!("{what}: budget `{b}`: {error}")))
        .collect::<Result<Vec<_>, _>>()?;
    let on_anomaly = match raw.on_anomaly.as_deref() {
        None => AnomalyAction::Alert,
        Some(text) => AnomalyAction::parse(text)
            .ok_or_else(|| format!("{what}: on_anomaly is alert or suspend"))?,
    };
    let ttl = match &raw.ttl {
        Some(text) => duration(text, &format!("{what}: ttl"))?,
        None => DEFAULT_TTL,
    };
    let max_ttl = match &raw.max_ttl {
        Some(text) => duration(text, &format!("{what}: max_ttl"))?,
        None => ttl,
    };
    if ttl > max_ttl {
        return Err(format!("{what}: ttl is longer than max_ttl"));
    }
    if max_ttl > HARD_MAX_TTL {
        return Err(format!(
            "{what}: keys minted from a workload identity live at most 24h (max_ttl)"
        ));
    }
    Ok(RoleConfig {
        name: raw.name,
        issuer: issuer.name.clone(),
        bound_claims,
        bound_audiences,
        env,
        providers,
        models,
        project,
        budgets,
        limits: KeyLimits {
            rpm: raw.rpm,
            tpm: raw.tpm,
            max_parallel: raw.max_parallel,
        },
        on_anomaly,
        ttl,
        max_ttl,
        can_mint: raw.can_mint,
        single_use: raw.single_use,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<OidcConfig, String> {
        let raw: RawOidc = toml::from_str(text).map_err(|error| error.to_string())?;
        raw.validate(Path::new("."))
    }

    #[test]
    fn a_github_role_loads_with_its_defaults() {
        let config = load(
            r#"
            [[issuer]]
            name = "github"
            preset = "github-actions"
            audience = "keyforge"

            [[role]]
            name = "deploy"
            issuer = "github"
            env = "prod"
            bound_claims = { repository = "acme/app", ref = ["refs/heads/main", "refs/tags/v*"] }
            budgets = ["5usd/day"]
            "#,
        )
        .unwrap();
        assert_eq!(config.issuers[0].url, GITHUB_ACTIONS_ISSUER);
        assert!(matches!(config.issuers[0].jwks, JwksSource::Discovery));
        let role = &config.roles[0];
        assert_eq!(role.ttl, Duration::from_secs(3600));
        assert_eq!(role.max_ttl, role.ttl);
        assert_eq!(role.bound_audiences, ["keyforge"]);
        assert_eq!(role.bound_claims.len(), 2);
    }

    #[test]
    fn issuer_urls_are_compared_without_trailing_slashes() {
        fn check(url: &str, expected: &str) {
            assert_eq!(normalize_issuer(url), expected, "{url}");
        }
        check(
            "https://token.actions.githubusercontent.com",
            "https://token.actions.githubusercontent.com",
        );
        check("https://example.okta.com/", "https://example.okta.com");
        check(
            "https://login.example.com/tenant/v2.0/",
            "https://login.example.com/tenant/v2.0",
        );
        check("https://x//", "https://x");
        let config = load(
            r#"[[issuer]]
            name = "okta"
            url = "https://example.okta.com/"
            audience = "a""#,
        )
        .unwrap();
        assert_eq!(config.issuers[0].url, "https://example.okta.com");
    }

    #[test]
    fn a_role_is_single_use_only_when_it_says_so() {
        let issuer = r#"
            [[issuer]]
            name = "k8s"
            url = "https://kubernetes.default.svc"
            audience = "keyforge"
        "#;
        let role = |extra: &str| {
            format!(
                "{issuer}\n[[role]]\nname = \"r\"\nissuer = \"k8s\"\nenv = \"dev\"\nbound_claims = {{ sub = \"x\" }}\n{extra}"
            )
        };
        assert!(!load(&role("")).unwrap().roles[0].single_use);
        assert!(load(&role("single_use = true")).unwrap().roles[0].single_use);
    }

    #[test]
    fn unsafe_or_broken_roles_are_refused_when_loaded() {
        let issuer = r#"
            [[issuer]]
            name = "github"
            preset = "github-actions"
            audience = "keyforge"
            [[issuer]]
            name = "k8s"
            preset = "kubernetes"
            url = "https://kubernetes.default.svc.cluster.local"
            audience = "keyforge"
            jwks_url = "https://10.0.0.1/openid/v1/jwks"
        "#;
        let cases = [
            (
                r#"[[role]]
                name = "open"
                issuer = "k8s"
                env = "dev""#,
                "binds no claim",
            ),
            (
                r#"[[role]]
                name = "star"
                issuer = "k8s"
                env = "dev"
                bound_claims = { sub = "*" }"#,
                "binds no claim",
            ),
            (
                r#"[[role]]
                name = "any-repo"
                issuer = "github"
                env = "dev"
                bound_claims = { ref = "refs/heads/main" }"#,
                "every GitHub repository",
            ),
            (
                r#"[[role]]
                name = "wild-repo"
                issuer = "github"
                env = "dev"
                bound_claims = { repository = "*/app" }"#,
                "every GitHub repository",
            ),
            (
                r#"[[role]]
                name = "long"
                issuer = "k8s"
                env = "dev"
                bound_claims = { sub = "system:serviceaccount:ci:runner" }
                max_ttl = "2d""#,
                "at most 24h",
            ),
            (
                r#"[[role]]
                name = "nowhere"
                issuer = "gitlab"
                env = "dev"
                bound_claims = { sub = "x" }"#,
                "no OIDC issuer named `gitlab`",
            ),
        ];
        for (role, expected) in cases {
            let error = load(&format!("{issuer}\n{role}")).unwrap_err();
            assert!(error.contains(expected), "{role}: {error}");
        }
        let plain_http = load(
            r#"[[issuer]]
            name = "x"
            url = "http://issuer.example.com"
            audience = "a""#,
        )
        .unwrap_err();
        assert!(plain_http.contains("https"), "{plain_http}");
        let loopback = load(
            r#"[[issuer]]
            name = "x"
            url = "http://127.0.0.1:9999"
            audience = "a""#,
        );
        assert!(loopback.is_ok(), "{loopback:?}");
    }
}
