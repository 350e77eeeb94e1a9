//! AWS KMS: data keys (`GenerateDataKey` with `KeySpec=AES_256`),
//! `Decrypt` and `Encrypt`, each with an encryption context (KMS binds it
//! to the ciphertext as additional authenticated data and logs it in
//! CloudTrail). Shapes follow the AWS KMS API reference.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::client::{AwsClient, Service};
use crate::error::{AwsError, AwsErrorKind};

/// A fresh 256-bit data key: the plaintext (zeroized on drop) and the same
/// key encrypted under the KMS key (the only part ever stored).
#[derive(Debug)]
pub struct DataKey {
    /// The ARN of the KMS key that encrypted it.
    pub key_id: String,
    /// The 32 plaintext bytes.
    pub plaintext: Zeroizing<[u8; 32]>,
    /// KMS's ciphertext blob (opaque; only KMS can decrypt it).
    pub ciphertext_blob: Vec<u8>,
}

/// KMS calls over one [`AwsClient`].
#[derive(Debug, Clone)]
pub struct Kms {
    client: AwsClient,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyOutput {
    key_id: String,
    plaintext: Option<Zeroizing<String>>,
    ciphertext_blob: Option<String>,
}

fn context_json(context: &BTreeMap<String, String>) -> serde_json::Value {
    json!(context)
}

fn decode_output(body: &[u8], operation: &str) -> Result<KeyOutput, AwsError> {
    serde_json::from_slice(body).map_err(|_| {
        AwsError::new(
            AwsErrorKind::Unavailable,
            operation,
            "KMS answered with a body that is not the documented JSON",
        )
    })
}

fn base64_field(
    value: Option<&str>,
    operation: &str,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, AwsError> {
    let value = value.ok_or_else(|| {
        AwsError::new(
            AwsErrorKind::Unavailable,
            operation,
            format!("KMS's answer lacks {name}"),
        )
    })?;
    STANDARD
        .decode(value.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| {
            AwsError::new(
                AwsErrorKind::Unavailable,
                operation,
                format!("KMS's {name} is not base64"),
            )
        })
}

impl Kms {
    /// KMS over `client`.
    pub fn new(client: AwsClient) -> Self {
        Self { client }
    }

    /// `GenerateDataKey` under `key_id` (key id, ARN, or `alias/NAME`) with
    /// `KeySpec=AES_256` and `context` as encryption context.
    pub async fn generate_data_key(
        &self,
        key_id: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<DataKey, AwsError> {
        let operation = "kms:GenerateDataKey";
        let request = json!({
            "KeyId": key_id,
            "KeySpec": "AES_256",
            "EncryptionContext": context_json(context),
        });
        let body = self
            .client
            .call_json(Service::Kms, "GenerateDataKey", &request)
            .await?;
        let output = decode_output(&body, operation)?;
        let plaintext = base64_field(
            output.plaintext.as_deref().map(String::as_str),
            operation,
            "Plaintext",
        )?;
        let plaintext: [u8; 32] = plaintext.as_slice().try_into().map_err(|_| {
            AwsError::new(
                AwsErrorKind::Unavailable,
                operation,
                "KMS returned a data key that is not 32 bytes",
            )
        })?;
        let ciphertext = base64_field(
            output.ciphertext_blob.as_deref(),
            operation,
            "CiphertextBlob",
        )?;
        Ok(DataKey {
            key_id: output.key_id,
            plaintext: Zeroizing::new(plaintext),
            ciphertext_blob: ciphertext.to_vec(),
        })
    }

    /// `Decrypt` of `ciphertext_blob` with `context`. `key_id`, when given,
    /// makes KMS refuse a blob made under another key. Returns the ARN of
    /// the key used and the plaintext. A wrong context or a foreign blob is
    /// `Invalid` (`InvalidCiphertextException`).
    pub async fn decrypt(
        &self,
        ciphertext_blob: &[u8],
        key_id: Option<&str>,
        context: &BTreeMap<String, String>,
    ) -> Result<(String, Zeroizing<Vec<u8>>), AwsError> {
        let operation = "kms:Decrypt";
        let mut request = json!({
            "CiphertextBlob": STANDARD.encode(ciphertext_blob),
            "EncryptionContext": context_json(context),
        });
        if let Some(key_id) = key_id {
            request["KeyId"] = json!(key_id);
        }
        let body = self
            .client
            .call_json(Service::Kms, "Decrypt", &request)
            .await?;
        let output = decode_output(&body, operation)?;
        let plaintext = base64_field(
            output.plaintext.as_deref().map(String::as_str),
            operation,
            "Plaintext",
        )?;
        Ok((output.key_id, plaintext))
    }

    /// `Encrypt` of `plaintext` (at most 4096 bytes) under `key_id` with
    /// `context`. Returns the ARN of the key and the ciphertext blob.
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<(String, Vec<u8>), AwsError> {
        let operation = "kms:Encrypt";
        let mut request = json!({
            "KeyId": key_id,
            "Plaintext": STANDARD.encode(plaintext),
            "EncryptionContext": context_json(context),
        });
        let result = self
            .client
            .call_json(Service::Kms, "Encrypt", &request)
            .await;
        if let Some(serde_json::Value::String(text)) = request.get_mut("Plaintext") {
            zeroize::Zeroize::zeroize(text);
        }
        let output = decode_output(&result?, operation)?;
        let ciphertext = base64_field(
            output.ciphertext_blob.as_deref(),
            operation,
            "CiphertextBlob",
        )?;
        Ok((output.key_id, ciphertext.to_vec()))
    }
}
