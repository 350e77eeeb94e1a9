//! [`SecretBackend`] over AWS Secrets Manager (`crates/aws`): versions are
//! staging labels, and `promote` moves `AWSCURRENT` the way AWS's own
//! four-step rotation does.

use async_trait::async_trait;
use keyforge_aws::{AWSCURRENT, AWSPENDING, SecretsManager, VersionSelector};

use crate::{
    BackendError, BackendErrorKind, BackendKind, BackendSecret, SecretBackend, SecretRef,
    VersionState,
};

/// Provider keys in AWS Secrets Manager.
#[derive(Debug, Clone)]
pub struct AwsSecretsManagerBackend {
    secrets: SecretsManager,
}

impl AwsSecretsManagerBackend {
    /// The backend over a configured Secrets Manager client.
    pub fn new(secrets: SecretsManager) -> Self {
        Self { secrets }
    }

    fn check(reference: &SecretRef) -> Result<(), BackendError> {
        if reference.backend != BackendKind::AwsSecretsManager {
            return Err(BackendError::new(
                BackendKind::AwsSecretsManager,
                BackendErrorKind::Config,
                "reference",
                format!("{reference} is not an aws-sm:// reference"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl SecretBackend for AwsSecretsManagerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AwsSecretsManager
    }

    async fn read(
        &self,
        reference: &SecretRef,
        version: Option<&str>,
    ) -> Result<BackendSecret, BackendError> {
        Self::check(reference)?;
        let selector = match version {
            Some(id) => VersionSelector::Id(id.to_owned()),
            None => VersionSelector::Stage(AWSCURRENT.to_owned()),
        };
        let secret = self
            .secrets
            .get_secret_value(&reference.path, &selector)
            .await?;
        let value = secret.select(reference.field.as_deref())?;
        Ok(BackendSecret {
            version: secret.version_id.clone(),
            value,
        })
    }

    async fn versions(&self, reference: &SecretRef) -> Result<VersionState, BackendError> {
        Self::check(reference)?;
        let versions = self
            .secrets
            .list_secret_version_ids(&reference.path, false)
            .await?;
        let labelled = |label: &str| {
            versions
                .iter()
                .find(|version| version.stages.iter().any(|stage| stage == label))
                .map(|version| version.version_id.clone())
        };
        let current = labelled(AWSCURRENT).ok_or_else(|| {
            BackendError::new(
                BackendKind::AwsSecretsManager,
                BackendErrorKind::NotFound,
                "secretsmanager:ListSecretVersionIds",
                format!("{reference} has no version labelled AWSCURRENT"),
            )
        })?;
        let pending = labelled(AWSPENDING).filter(|pending| *pending != current);
        Ok(VersionState { current, pending })
    }

    async fn promote(&self, reference: &SecretRef, version: &str) -> Result<bool, BackendError> {
        Self::check(reference)?;
        self.secrets.promote(&reference.path, version).await?;
        Ok(true)
    }

    async fn retire(
        &self,
        reference: &SecretRef,
        _version: &str,
    ) -> Result<&'static str, BackendError> {
        Self::check(reference)?;
        Ok("kept")
    }
}
