//! AWS Secrets Manager: read a version, list versions, write a version,
//! move staging labels. Shapes follow the Secrets Manager API reference
//! (`GetSecretValue`, `ListSecretVersionIds`, `PutSecretValue`,
//! `UpdateSecretVersionStage`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::client::{AwsClient, Service};
use crate::error::{AwsError, AwsErrorKind};

/// The label on the version applications should use.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The label on the version AWSCURRENT was last moved away from.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
/// The label on a version being rotated in, not yet current.
pub const AWSPENDING: &str = "AWSPENDING";

/// Which version of a secret to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// The version carrying this staging label (`AWSCURRENT`, `AWSPENDING`).
    Stage(String),
    /// The version with this id (a UUID).
    Id(String),
}

impl Default for VersionSelector {
    fn default() -> Self {
        Self::Stage(AWSCURRENT.to_owned())
    }
}

/// A secret's value: `SecretString`, or `SecretBinary` (bytes). Zeroized on
/// drop; `Debug` never shows it.
pub enum SecretPayload {
    /// The `SecretString` of the version.
    Text(SecretString),
    /// The `SecretBinary` of the version, decoded from base64.
    Binary(Zeroizing<Vec<u8>>),
}

impl fmt::Debug for SecretPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(_) => f.write_str("Text([redacted])"),
            Self::Binary(_) => f.write_str("Binary([redacted])"),
        }
    }
}

/// One version of a secret, as `GetSecretValue` returned it.
#[derive(Debug)]
pub struct SecretVersion {
    /// The secret's ARN.
    pub arn: String,
    /// The secret's friendly name.
    pub name: String,
    /// The version's id (UUID).
    pub version_id: String,
    /// The staging labels attached to this version.
    pub stages: Vec<String>,
    /// The value.
    pub payload: SecretPayload,
}

impl SecretVersion {
    /// The value to use: with `field`, that key of a JSON-object
    /// `SecretString` (a string, or a number or boolean as written); without
    /// it, the whole `SecretString`. Errors say which secret and field, and
    /// never show the value.
    #[expect(
        clippy::disallowed_methods,
        reason = "the value is copied once into the zeroizing buffer returned to the caller"
    )]
    pub fn select(&self, field: Option<&str>) -> Result<Zeroizing<String>, AwsError> {
        let operation = "secretsmanager:GetSecretValue";
        let invalid = |detail: String| AwsError::new(AwsErrorKind::Invalid, operation, detail);
        let SecretPayload::Text(text) = &self.payload else {
            return Err(invalid(format!(
                "secret {} version {} holds SecretBinary; KeyForge needs a SecretString",
                self.name, self.version_id
            )));
        };
        let Some(field) = field else {
            return Ok(Zeroizing::new(text.expose_secret().to_owned()));
        };
        // Parsed into a map whose strings are wiped as soon as the field
        // is copied out.
        let mut object: Value = serde_json::from_str(text.expose_secret()).map_err(|_| {
            invalid(format!(
                "secret {} version {} is not a JSON object, so field #{field} cannot be selected",
                self.name, self.version_id
            ))
        })?;
        let result = select_field(&object, field).map_err(|detail| match detail {
            FieldError::Missing(names) => AwsError::new(
                AwsErrorKind::NotFound,
                operation,
                format!(
                    "secret {} version {} has no field #{field} (fields: {names})",
                    self.name, self.version_id
                ),
            ),
            FieldError::NotObject => invalid(format!(
                "secret {} version {} is not a JSON object, so field #{field} cannot be selected",
                self.name, self.version_id
            )),
            FieldError::NotScalar => invalid(format!(
                "field #{field} of secret {} is not a string",
                self.name
            )),
        });
        wipe(&mut object);
        result
    }
}

enum FieldError {
    NotObject,
    NotScalar,
    /// The names of the fields that exist (names, never values).
    Missing(String),
}

fn select_field(object: &Value, field: &str) -> Result<Zeroizing<String>, FieldError> {
    let Value::Object(map) = object else {
        return Err(FieldError::NotObject);
    };
    match map.get(field) {
        Some(Value::String(value)) => Ok(Zeroizing::new(value.clone())),
        Some(Value::Number(number)) => Ok(Zeroizing::new(number.to_string())),
        Some(Value::Bool(flag)) => Ok(Zeroizing::new(flag.to_string())),
        Some(_) => Err(FieldError::NotScalar),
        None => Err(FieldError::Missing(
            map.keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Overwrites every string of `value` (a parsed secret) before it is dropped.
fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => zeroize::Zeroize::zeroize(text),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// One entry of `ListSecretVersionIds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version's id.
    pub version_id: String,
    /// Its staging labels (empty for a deprecated version).
    pub stages: Vec<String>,
}

/// Secrets Manager calls over one [`AwsClient`].
#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: AwsClient,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetSecretValueOutput {
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
    version_id: String,
    #[serde(default)]
    version_stages: Vec<String>,
    secret_string: Option<Zeroizing<String>>,
    secret_binary: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListOutput {
    #[serde(default)]
    versions: Vec<ListEntry>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListEntry {
    version_id: String,
    #[serde(default)]
    version_stages: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutOutput {
    version_id: String,
    #[serde(default)]
    version_stages: Vec<String>,
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8], operation: &str) -> Result<T, AwsError> {
    serde_json::from_slice(body).map_err(|_| {
        AwsError::new(
            AwsErrorKind::Unavailable,
            operation,
            "AWS answered with a body that is not the documented JSON",
        )
    })
}

impl SecretsManager {
    /// Secrets Manager over `client` (its region, endpoint, credentials).
    pub fn new(client: AwsClient) -> Self {
        Self { client }
    }

    /// `GetSecretValue` of `secret_id` (a name or an ARN) at `version`.
    /// Errors: `NotFound` for an unknown secret, version or label.
    pub async fn get_secret_value(
        &self,
        secret_id: &str,
        version: &VersionSelector,
    ) -> Result<SecretVersion, AwsError> {
        let mut request = json!({ "SecretId": secret_id });
        match version {
            VersionSelector::Stage(stage) => request["VersionStage"] = json!(stage),
            VersionSelector::Id(id) => request["VersionId"] = json!(id),
        }
        let body = self
            .client
            .call_json(Service::SecretsManager, "GetSecretValue", &request)
            .await?;
        let output: GetSecretValueOutput = decode(&body, "secretsmanager:GetSecretValue")?;
        let payload = match (output.secret_string, output.secret_binary) {
            (Some(text), _) => SecretPayload::Text(SecretString::from(text.as_str())),
            (None, Some(encoded)) => SecretPayload::Binary(Zeroizing::new(
                STANDARD.decode(encoded.as_bytes()).map_err(|_| {
                    AwsError::new(
                        AwsErrorKind::Unavailable,
                        "secretsmanager:GetSecretValue",
                        "SecretBinary is not base64",
                    )
                })?,
            )),
            (None, None) => {
                return Err(AwsError::new(
                    AwsErrorKind::Invalid,
                    "secretsmanager:GetSecretValue",
                    format!(
                        "secret {} version {} has no value",
                        output.name, output.version_id
                    ),
                ));
            }
        };
        Ok(SecretVersion {
            arn: output.arn,
            name: output.name,
            version_id: output.version_id,
            stages: output.version_stages,
            payload,
        })
    }

    /// Every version of `secret_id` that carries a staging label
    /// (`ListSecretVersionIds`, all pages), plus the deprecated ones when
    /// `include_deprecated`.
    pub async fn list_secret_version_ids(
        &self,
        secret_id: &str,
        include_deprecated: bool,
    ) -> Result<Vec<VersionInfo>, AwsError> {
        let mut versions = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let mut request = json!({
                "SecretId": secret_id,
                "IncludeDeprecated": include_deprecated,
                "MaxResults": 100,
            });
            if let Some(token) = &next_token {
                request["NextToken"] = json!(token);
            }
            let body = self
                .client
                .call_json(Service::SecretsManager, "ListSecretVersionIds", &request)
                .await?;
            let page: ListOutput = decode(&body, "secretsmanager:ListSecretVersionIds")?;
            versions.extend(page.versions.into_iter().map(|entry| VersionInfo {
                version_id: entry.version_id,
                stages: entry.version_stages,
            }));
            match page.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return Ok(versions),
            }
        }
    }

    /// `PutSecretValue`: a new version of `secret_id` holding `value`, with
    /// `stages` as its labels (AWS's default, `AWSCURRENT`, when empty).
    /// `client_request_token` makes the call idempotent and becomes the
    /// version id (a UUID). Returns the version id and its labels.
    #[expect(
        clippy::disallowed_methods,
        reason = "the value goes only into the request body, wiped after the call"
    )]
    pub async fn put_secret_value(
        &self,
        secret_id: &str,
        value: &SecretString,
        stages: &[&str],
        client_request_token: Option<&str>,
    ) -> Result<VersionInfo, AwsError> {
        let mut request = json!({
            "SecretId": secret_id,
            "SecretString": value.expose_secret(),
        });
        if !stages.is_empty() {
            request["VersionStages"] = json!(stages);
        }
        if let Some(token) = client_request_token {
            request["ClientRequestToken"] = json!(token);
        }
        let result = self
            .client
            .call_json(Service::SecretsManager, "PutSecretValue", &request)
            .await;
        // The request held the secret: clear it before anything else.
        if let Some(Value::String(text)) = request.get_mut("SecretString") {
            zeroize::Zeroize::zeroize(text);
        }
        let output: PutOutput = decode(&result?, "secretsmanager:PutSecretValue")?;
        Ok(VersionInfo {
            version_id: output.version_id,
            stages: output.version_stages,
        })
    }

    /// `UpdateSecretVersionStage`: attaches `stage` to `move_to` and/or
    /// removes it from `remove_from`. Moving `AWSCURRENT` needs
    /// `remove_from` (the version that holds it); AWS then moves
    /// `AWSPREVIOUS` to that version by itself.
    pub async fn update_secret_version_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), AwsError> {
        let mut request = json!({ "SecretId": secret_id, "VersionStage": stage });
        if let Some(version) = move_to {
            request["MoveToVersionId"] = json!(version);
        }
        if let Some(version) = remove_from {
            request["RemoveFromVersionId"] = json!(version);
        }
        self.client
            .call_json(
                Service::SecretsManager,
                "UpdateSecretVersionStage",
                &request,
            )
            .await
            .map(drop)
    }

    /// Makes `version_id` the current version, as the last step
    /// (`finishSecret`) of AWS's four-step rotation does: `AWSCURRENT` moves
    /// to it from the version that held it (which AWS labels `AWSPREVIOUS`),
    /// then `AWSPENDING` is removed from it. Returns the version that was
    /// current before (`None` if `version_id` already was). Rolling back is
    /// the same call with the previous version's id.
    pub async fn promote(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<Option<String>, AwsError> {
        let versions = self.list_secret_version_ids(secret_id, false).await?;
        let Some(target) = versions
            .iter()
            .find(|version| version.version_id == version_id)
        else {
            return Err(AwsError::new(
                AwsErrorKind::NotFound,
                "secretsmanager:UpdateSecretVersionStage",
                format!("secret {secret_id} has no labelled version {version_id}"),
            ));
        };
        let has = |version: &VersionInfo, stage: &str| version.stages.iter().any(|s| s == stage);
        let pending_on_target = has(target, AWSPENDING);
        let current = versions
            .iter()
            .find(|version| has(version, AWSCURRENT))
            .map(|version| version.version_id.clone());
        let previous = match current {
            Some(current) if current == version_id => None,
            current => {
                self.update_secret_version_stage(
                    secret_id,
                    AWSCURRENT,
                    Some(version_id),
                    current.as_deref(),
                )
                .await?;
                current
            }
        };
        if pending_on_target {
            self.update_secret_version_stage(secret_id, AWSPENDING, None, Some(version_id))
                .await?;
        }
        Ok(previous)
    }
}
