//! `[admin.oidc]`: humans log in to the admin API with their identity
//! provider's ID token and get a short-lived admin session. The issuer,
//! the client id the tokens are minted for, and the bindings from claims
//! (`groups` contains, `email` equals or ends with) to admin roles are
//! checked when the configuration is loaded; a bad block stops the start.

use std::time::Duration;

use keyforge_types::AdminRole;
use serde::Deserialize;

use super::oidc::{IssuerConfig, JwksSource};

/// Session lifetime when `session_ttl` is not given.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(3600);
/// No session lives longer than this.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// `[admin]` as written: only `oidc` for now.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub oidc: Option<RawAdminOidc>,
}

/// `[admin.oidc]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminOidc {
    /// The issuer URL, as in the tokens' `iss`.
    issuer: String,
    /// The OAuth client id registered at the issuer for KeyForge; used by
    /// `keyforge admin login --oidc` for the device flow.
    client_id: String,
    /// The audience ID tokens must carry (default: `client_id`, as OIDC
    /// Core says ID tokens are issued for the client).
    audience: Option<String>,
    /// Session lifetime (`1h` by default, at most `12h`).
    session_ttl: Option<String>,
    /// Scopes the CLI asks for in the device flow (default
    /// `openid email groups`).
    scopes: Option<String>,
    #[serde(default)]
    binding: Vec<RawBinding>,
}

/// One `[[admin.oidc.binding]]`: a role and exactly one claim test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    role: String,
    /// The `groups` claim (a string or a list) contains this group.
    group: Option<String>,
    /// The `email` claim equals this address (case-insensitive).
    email: Option<String>,
    /// The `email` claim ends with this (`@example.com`).
    email_suffix: Option<String>,
}

/// What a binding tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingTest {
    /// `groups` contains this group (exactly).
    Group(String),
    /// `email` equals this, compared in lower case.
    Email(String),
    /// `email` ends with this, compared in lower case.
    EmailSuffix(String),
}

/// A claim binding to a role, validated.
#[derive(Debug, Clone)]
pub struct RoleBinding {
    pub role: AdminRole,
    pub test: BindingTest,
}

/// `[admin.oidc]`, validated.
#[derive(Debug, Clone)]
pub struct AdminOidcConfig {
    /// The verifier's view of the issuer: its URL, the audience (client id
    /// or `audience`), keys found through discovery.
    pub issuer: IssuerConfig,
    pub client_id: String,
    pub scopes: String,
    pub session_ttl: Duration,
    pub bindings: Vec<RoleBinding>,
}

impl RawAdminOidc {
    /// Validates the block; every error names the setting.
    pub fn validate(self) -> Result<AdminOidcConfig, String> {
        super::oidc::check_url(&self.issuer, "admin.oidc.issuer")?;
        if self.client_id.trim().is_empty() {
            return Err("admin.oidc.client_id is empty: give the client id registered at the issuer for KeyForge".into());
        }
        let audience = self.audience.unwrap_or_else(|| self.client_id.clone());
        let session_ttl = match &self.session_ttl {
            None => DEFAULT_SESSION_TTL,
            Some(text) => keyforge_types::Ttl::parse(text)
                .map(|ttl| ttl.as_duration())
                .map_err(|error| format!("admin.oidc.session_ttl: {error}"))?,
        };
        if session_ttl > MAX_SESSION_TTL || session_ttl.is_zero() {
            return Err(format!(
                "admin.oidc.session_ttl is {}s; it must be more than 0 and at most 12h",
                session_ttl.as_secs()
            ));
        }
        if self.binding.is_empty() {
            return Err("admin.oidc has no [[admin.oidc.binding]]: with none, nobody could log in; bind a group or an email to a role".into());
        }
        let mut bindings = Vec::with_capacity(self.binding.len());
        for (index, raw) in self.binding.into_iter().enumerate() {
            let what = format!("admin.oidc.binding[{index}]");
            let role =
                AdminRole::parse(&raw.role).map_err(|error| format!("{what}.role: {error}"))?;
            let test = match (raw.group, raw.email, raw.email_suffix) {
                (Some(group), None, None) if !group.is_empty() => BindingTest::Group(group),
                (None, Some(email), None) if email.contains('@') => {
                    BindingTest::Email(email.to_lowercase())
                }
                (None, None, Some(suffix)) if suffix.starts_with('@') && suffix.len() > 1 => {
                    BindingTest::EmailSuffix(suffix.to_lowercase())
                }
                (None, None, Some(suffix)) => {
                    return Err(format!(
                        "{what}.email_suffix `{suffix}` must start with `@` (`@example.com`), or `@evil-example.com` would match too"
                    ));
                }
                _ => {
                    return Err(format!(
                        "{what} needs exactly one of `group`, `email` (an address) or `email_suffix`"
                    ));
                }
            };
            bindings.push(RoleBinding { role, test });
        }
        Ok(AdminOidcConfig {
            issuer: IssuerConfig {
                name: "admin-oidc".to_owned(),
                url: self.issuer,
                audience,
                jwks: JwksSource::Discovery,
                jwks_refresh: Duration::from_secs(3600),
                github: false,
            },
            client_id: self.client_id,
            scopes: self
                .scopes
                .unwrap_or_else(|| "openid email groups".to_owned()),
            session_ttl,
            bindings,
        })
    }
}

impl AdminOidcConfig {
    /// The most powerful role any binding gives these claims; `None`: no
    /// binding matches (the login is refused).
    pub fn role_for(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<AdminRole> {
        let email = claims
            .get("email")
            .and_then(serde_json::Value::as_str)
            .map(str::to_lowercase);
        let groups: Vec<&str> = match claims.get("groups") {
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            Some(serde_json::Value::Array(many)) => {
                many.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        self.bindings
            .iter()
            .filter(|binding| match &binding.test {
                BindingTest::Group(group) => groups.contains(&group.as_str()),
                BindingTest::Email(address) => email.as_deref() == Some(address.as_str()),
                BindingTest::EmailSuffix(suffix) => email
                    .as_deref()
                    .is_some_and(|email| email.ends_with(suffix.as_str())),
            })
            .map(|binding| binding.role)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<AdminOidcConfig, String> {
        let raw: RawAdmin = toml::from_str(text).map_err(|error| error.to_string())?;
        raw.oidc.ok_or_else(|| "no block".to_owned())?.validate()
    }

    const HEAD: &str =
        "[oidc]\nissuer = \"https://id.example.com\"\nclient_id = \"keyforge-cli\"\n";

    #[test]
    fn the_most_powerful_matching_binding_wins() {
        let config = load(&format!(
            "{HEAD}[[oidc.binding]]\nrole = \"viewer\"\nemail_suffix = \"@example.com\"\n[[oidc.binding]]\nrole = \"operator\"\ngroup = \"platform\"\n[[oidc.binding]]\nrole = \"owner\"\nemail = \"Root@Example.com\"\n"
        ))
        .expect("valid");
        assert_eq!(config.session_ttl, DEFAULT_SESSION_TTL);
        assert_eq!(config.issuer.audience, "keyforge-cli");
        let check = |claims: serde_json::Value, expected: Option<AdminRole>| {
            let claims = claims.as_object().cloned().unwrap_or_default();
            assert_eq!(config.role_for(&claims), expected, "{claims:?}");
        };
        check(
            serde_json::json!({"email": "bob@example.com"}),
            Some(AdminRole::Viewer),
        );
        check(
            serde_json::json!({"email": "alice@example.com", "groups": ["dev", "platform"]}),
            Some(AdminRole::Operator),
        );
        check(
            serde_json::json!({"email": "root@example.com", "groups": "platform"}),
            Some(AdminRole::Owner),
        );
        check(
            serde_json::json!({"email": "eve@example.com.evil.org"}),
            None,
        );
        check(serde_json::json!({"groups": ["Platform"]}), None);
        check(serde_json::json!({}), None);
    }

    #[test]
    fn bad_blocks_are_refused_with_the_setting_named() {
        let cases = [
            (
                "[oidc]\nissuer = \"http://id.example.com\"\nclient_id = \"c\"\n[[oidc.binding]]\nrole = \"viewer\"\ngroup = \"g\"\n",
                "must use https://",
            ),
            (HEAD, "has no [[admin.oidc.binding]]"),
            (
                &format!(
                    "{HEAD}session_ttl = \"13h\"\n[[oidc.binding]]\nrole = \"viewer\"\ngroup = \"g\"\n"
                ),
                "at most 12h",
            ),
            (
                &format!("{HEAD}[[oidc.binding]]\nrole = \"king\"\ngroup = \"g\"\n"),
                "binding[0].role",
            ),
            (
                &format!("{HEAD}[[oidc.binding]]\nrole = \"viewer\"\n"),
                "exactly one of",
            ),
            (
                &format!(
                    "{HEAD}[[oidc.binding]]\nrole = \"viewer\"\ngroup = \"g\"\nemail = \"a@b.c\"\n"
                ),
                "exactly one of",
            ),
            (
                &format!(
                    "{HEAD}[[oidc.binding]]\nrole = \"viewer\"\nemail_suffix = \"example.com\"\n"
                ),
                "must start with `@`",
            ),
            (
                "[oidc]\nissuer = \"https://id.example.com\"\nclient_id = \" \"\n[[oidc.binding]]\nrole = \"viewer\"\ngroup = \"g\"\n",
                "client_id is empty",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
