//! The AWS client against a real `moto_server`: every Secrets Manager and
//! KMS call, staging-label moves, the credential chain (profile files, web
//! identity through moto's STS, refused credentials, access denied) and
//! the server going away and coming back. Container and instance-metadata
//! credentials have no real endpoint here; their documented responses are
//! tested as data in `src/credentials.rs`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Moto, client, random, settings, static_env};
use keyforge_aws::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, AwsClient, AwsErrorKind, Environment, Kms, SecretPayload,
    SecretsManager, VersionSelector,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

fn stages_of(versions: &[keyforge_aws::VersionInfo], id: &str) -> Vec<String> {
    let mut stages = versions
        .iter()
        .find(|version| version.version_id == id)
        .map(|version| version.stages.clone())
        .unwrap_or_default();
    stages.sort();
    stages
}

#[tokio::test(flavor = "multi_thread")]
async fn get_secret_value_by_stage_and_id_and_by_field() {
    let python = require_moto!();
    let moto = Moto::start(&python);
    let api_key = format!("sk-ant-{}", random(40));
    let whole = json!({ "ANTHROPIC_API_KEY": api_key, "org": "acme", "n": 3 }).to_string();
    let created = moto.seed(
        "secretsmanager",
        "create_secret",
        json!({ "Name": "llm/prod/anthropic", "SecretString": whole }),
    );
    let manager = SecretsManager::new(client(&moto));

    let current = manager
        .get_secret_value("llm/prod/anthropic", &VersionSelector::default())
        .await
        .unwrap();
    assert_eq!(current.version_id, created["VersionId"].as_str().unwrap());
    assert_eq!(current.stages, vec![AWSCURRENT.to_owned()]);
    assert_eq!(current.arn, created["ARN"].as_str().unwrap());
    assert_eq!(
        current.select(Some("ANTHROPIC_API_KEY")).unwrap().as_str(),
        api_key
    );
    assert_eq!(current.select(Some("n")).unwrap().as_str(), "3");
    assert_eq!(current.select(None).unwrap().as_str(), whole);
    assert!(!format!("{current:?}").contains(&api_key));

    // A missing field names the fields that exist, never a value.
    let missing = current.select(Some("OPENAI_API_KEY")).unwrap_err();
    assert_eq!(missing.kind(), AwsErrorKind::NotFound);
    let text = missing.to_string();
    assert!(
        text.contains("ANTHROPIC_API_KEY") && text.contains("org"),
        "{text}"
    );
    assert!(!text.contains(&api_key) && !text.contains("acme"), "{text}");

    // By ARN and by version id.
    let by_id = manager
        .get_secret_value(
            created["ARN"].as_str().unwrap(),
            &VersionSelector::Id(current.version_id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        by_id.select(Some("ANTHROPIC_API_KEY")).unwrap().as_str(),
        api_key
    );

    // A plain (non-JSON) secret: whole string only.
    moto.seed(
        "secretsmanager",
        "create_secret",
        json!({ "Name": "groq", "SecretString": "plain-value" }),
    );
    let plain = manager
        .get_secret_value("groq", &VersionSelector::default())
        .await
        .unwrap();
    assert_eq!(plain.select(None).unwrap().as_str(), "plain-value");
    let not_json = plain.select(Some("key")).unwrap_err();
    assert_eq!(not_json.kind(), AwsErrorKind::Invalid);
    assert!(!not_json.to_string().contains("plain-value"), "{not_json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_secret_version_and_label_are_not_found() {
    let python = require_moto!();
    let moto = Moto::start(&python);
    moto.seed(
        "secretsmanager",
        "create_secret",
        json!({ "Name": "s", "SecretString": "v" }),
    );
    let manager = SecretsManager::new(client(&moto));
    for (secret, selector) in [
        ("absent", VersionSelector::default()),
        ("s", VersionSelector::Stage(AWSPENDING.to_owned())),
        (
            "s",
            VersionSelector::Id("00000000-0000-4000-8000-000000000000".to_owned()),
        ),
    ] {
        let error = manager
            .get_secret_value(secret, &selector)
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            AwsErrorKind::NotFound,
            "{secret} {selector:?}: {error}"
        );
        assert_eq!(error.operation(), "secretsmanager:GetSecretValue");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_step_rotation_moves_current_previous_and_pending() {
    let python = require_moto!();
    let moto = Moto::start(&python);
    let first = format!("sk-{}", random(40));
    let created = moto.seed(
        "secretsmanager",
        "create_secret",
        json!({ "Name": "llm/openai", "SecretString": json!({"api_key": first}).to_string() }),
    );
    let v1 = created["VersionId"].as_str().unwrap().to_owned();
    let manager = SecretsManager::new(client(&moto));

    // createSecret: the new version is put with AWSPENDING only.
    let second = format!("sk-{}", random(40));
    let token = "11111111-2222-4333-8444-555555555555";
    let put = manager
        .put_secret_value(
            "llm/openai",
            &SecretString::from(json!({"api_key": second}).to_string()),
            &[AWSPENDING],
            Some(token),
        )
        .await
        .unwrap();
    assert_eq!(put.version_id, token);
    assert_eq!(put.stages, vec![AWSPENDING.to_owned()]);
    let versions = manager
        .list_secret_version_ids("llm/openai", false)
        .await
        .unwrap();
    assert_eq!(stages_of(&versions, &v1), vec![AWSCURRENT]);
    assert_eq!(stages_of(&versions, token), vec![AWSPENDING]);
    // Readers of AWSCURRENT still get the old key; AWSPENDING the new one.
    let current = manager
        .get_secret_value("llm/openai", &VersionSelector::default())
        .await
        .unwrap();
    assert_eq!(current.select(Some("api_key")).unwrap().as_str(), first);
    let pending = manager
        .get_secret_value("llm/openai", &VersionSelector::Stage(AWSPENDING.to_owned()))
        .await
        .unwrap();
    assert_eq!(pending.select(Some("api_key")).unwrap().as_str(), second);

    // finishSecret: AWSCURRENT moves; AWSPREVIOUS follows; AWSPENDING goes.
    let previous = manager.promote("llm/openai", token).await.unwrap();
    assert_eq!(previous.as_deref(), Some(v1.as_str()));
    let versions = manager
        .list_secret_version_ids("llm/openai", false)
        .await
        .unwrap();
    assert_eq!(stages_of(&versions, token), vec![AWSCURRENT]);
    assert_eq!(stages_of(&versions, &v1), vec![AWSPREVIOUS]);
    let current = manager
        .get_secret_value("llm/openai", &VersionSelector::default())
        .await
        .unwrap();
    assert_eq!(current.select(Some("api_key")).unwrap().as_str(), second);
    // Promoting the current version again changes nothing.
    assert_eq!(manager.promote("llm/openai", token).await.unwrap(), None);

    // Rollback: the previous version becomes current again.
    assert_eq!(
        manager.promote("llm/openai", &v1).await.unwrap().as_deref(),
        Some(token)
    );
    let versions = manager
        .list_secret_version_ids("llm/openai", false)
        .await
        .unwrap();
    assert_eq!(stages_of(&versions, &v1), vec![AWSCURRENT]);
    assert_eq!(stages_of(&versions, token), vec![AWSPREVIOUS]);

    // A label moved by hand, and an unknown version refused.
    manager
        .update_secret_version_stage("llm/openai", "blue", Some(token), None)
        .await
        .unwrap();
    let versions = manager
        .list_secret_version_ids("llm/openai", false)
        .await
        .unwrap();
    assert_eq!(stages_of(&versions, token), vec![AWSPREVIOUS, "blue"]);
    let error = manager
        .promote("llm/openai", "no-such-version")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::NotFound);
    // AWS refuses to move AWSCURRENT without naming where it comes from.
    let error = manager
        .update_secret_version_stage("llm/openai", AWSCURRENT, Some(token), None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Invalid, "{error}");
}

fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_data_keys_decrypt_only_with_their_context() {
    let python = require_moto!();
    let moto = Moto::start(&python);
    let key = moto.seed("kms", "create_key", json!({ "Description": "keyforge" }));
    let key_arn = key["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    let kms = Kms::new(client(&moto));
    let ctx = context(&[("keyforge", "root-key")]);

    let data_key = kms.generate_data_key(&key_arn, &ctx).await.unwrap();
    assert_eq!(data_key.key_id, key_arn);
    assert_ne!(
        data_key.ciphertext_blob.as_slice(),
        data_key.plaintext.as_slice()
    );
    let (used, plaintext) = kms
        .decrypt(&data_key.ciphertext_blob, Some(&key_arn), &ctx)
        .await
        .unwrap();
    assert_eq!(used, key_arn);
    assert_eq!(plaintext.as_slice(), data_key.plaintext.as_slice());

    let wrong = kms
        .decrypt(
            &data_key.ciphertext_blob,
            None,
            &context(&[("keyforge", "other")]),
        )
        .await
        .unwrap_err();
    assert_eq!(wrong.kind(), AwsErrorKind::Invalid, "{wrong}");
    let garbage = kms
        .decrypt(b"not a kms blob", None, &ctx)
        .await
        .unwrap_err();
    assert!(!garbage.is_retryable(), "{garbage}");

    let (_, blob) = kms
        .encrypt(&key_arn, b"thirty-two bytes of root key....", &ctx)
        .await
        .unwrap();
    let (_, back) = kms.decrypt(&blob, Some(&key_arn), &ctx).await.unwrap();
    assert_eq!(back.as_slice(), b"thirty-two bytes of root key....");

    let missing = kms
        .generate_data_key("alias/does-not-exist", &ctx)
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), AwsErrorKind::NotFound, "{missing}");
}

/// moto with IAM checks on: an admin and a read-only user, made in the
/// first 6 (unchecked) requests.
struct Iam {
    admin: (String, String),
    reader: (String, String),
}

#[expect(
    clippy::unwrap_used,
    reason = "test setup: a failed seed must fail the test"
)]
fn iam_users(moto: &Moto) -> Iam {
    let make = |name: &str, policy: serde_json::Value| {
        moto.seed("iam", "create_user", json!({ "UserName": name }));
        moto.seed(
            "iam",
            "put_user_policy",
            json!({ "UserName": name, "PolicyName": "p", "PolicyDocument": policy.to_string() }),
        );
        let key = moto.seed("iam", "create_access_key", json!({ "UserName": name }));
        (
            key["AccessKey"]["AccessKeyId"].as_str().unwrap().to_owned(),
            key["AccessKey"]["SecretAccessKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    let admin = make(
        "admin",
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    );
    let reader = make(
        "reader",
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}),
    );
    Iam { admin, reader }
}

#[tokio::test(flavor = "multi_thread")]
#[expect(
    clippy::disallowed_methods,
    reason = "the test compares the value read"
)]
async fn signed_requests_pass_and_bad_credentials_or_policies_are_told_apart() {
    let python = require_moto!();
    let moto = Moto::start_with_auth(&python, 6);
    let iam = iam_users(&moto);
    let (admin_key, admin_secret) = &iam.admin;
    moto.boto3(
        "secretsmanager",
        "create_secret",
        json!({ "Name": "s", "SecretString": "value" }),
        admin_key,
        admin_secret,
    );
    // moto verifies the SigV4 signature: a correct one passes.
    let admin = AwsClient::new(&settings(&moto), static_env(admin_key, admin_secret)).unwrap();
    let secret = SecretsManager::new(admin.clone())
        .get_secret_value("s", &VersionSelector::default())
        .await
        .unwrap();
    assert!(
        matches!(secret.payload, SecretPayload::Text(ref text) if text.expose_secret() == "value")
    );

    // The right key id with a wrong secret: the signature is refused.
    let wrong_secret = random(40);
    let client = AwsClient::new(&settings(&moto), static_env(admin_key, &wrong_secret)).unwrap();
    let error = SecretsManager::new(client)
        .get_secret_value("s", &VersionSelector::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Credentials, "{error}");
    assert!(!error.to_string().contains(&wrong_secret));

    // An unknown key id (a revoked or expired credential).
    let unknown = format!("AKIA{}", random(16).to_uppercase());
    let client = AwsClient::new(&settings(&moto), static_env(&unknown, &random(40))).unwrap();
    let error = Kms::new(client)
        .generate_data_key("alias/x", &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Credentials, "{error}");
    assert!(!error.is_retryable());
    assert!(!error.to_string().contains(&unknown), "{error}");

    // Valid credentials whose policy allows only GetSecretValue.
    let (reader_key, reader_secret) = &iam.reader;
    let reader = AwsClient::new(&settings(&moto), static_env(reader_key, reader_secret)).unwrap();
    let manager = SecretsManager::new(reader);
    manager
        .get_secret_value("s", &VersionSelector::default())
        .await
        .unwrap();
    let error = manager
        .put_secret_value("s", &SecretString::from("new"), &[], None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::AccessDenied, "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn profile_files_supply_credentials_and_region() {
    let python = require_moto!();
    let moto = Moto::start_with_auth(&python, 6);
    let iam = iam_users(&moto);
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    let (key, secret) = &iam.admin;
    std::fs::write(
        aws.join("credentials"),
        format!("[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[ci]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n", random(20), random(40)),
    )
    .unwrap();
    std::fs::write(aws.join("config"), "[profile ci]\nregion = eu-west-1\n").unwrap();
    let endpoint_only = keyforge_aws::AwsSettings {
        region: None,
        ..settings(&moto)
    };

    // AWS_PROFILE picks the section; the region comes from `config`.
    let env = Environment::from_pairs(
        [("AWS_PROFILE", "ci"), ("AWS_EC2_METADATA_DISABLED", "true")],
        Some(home.path().to_owned()),
    );
    let client = AwsClient::new(&endpoint_only, env).unwrap();
    assert_eq!(client.region(), "eu-west-1");
    assert_eq!(client.credentials().await.unwrap().source(), "profile");
    Kms::new(client)
        .generate_data_key("alias/none", &BTreeMap::new())
        .await
        .map(drop)
        .or_else(|error| match error.kind() {
            AwsErrorKind::NotFound => Ok(()),
            _ => Err(error),
        })
        .unwrap();

    // The default profile holds keys moto does not know: refused.
    let env = Environment::from_pairs(
        [("AWS_EC2_METADATA_DISABLED", "true")],
        Some(home.path().to_owned()),
    );
    let client = AwsClient::new(&settings(&moto), env).unwrap();
    let error = Kms::new(client)
        .generate_data_key("alias/none", &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Credentials, "{error}");

    // AWS_SHARED_CREDENTIALS_FILE elsewhere; the environment beats it.
    let moved = home.path().join("elsewhere");
    std::fs::write(
        &moved,
        format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let path = moved.display().to_string();
    let env = Environment::from_pairs(
        [
            ("AWS_SHARED_CREDENTIALS_FILE", path.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        None,
    );
    let client = AwsClient::new(&settings(&moto), env).unwrap();
    assert_eq!(client.credentials().await.unwrap().access_key_id(), key);
    let other = random(20);
    let env = Environment::from_pairs(
        [
            ("AWS_SHARED_CREDENTIALS_FILE", path.as_str()),
            ("AWS_ACCESS_KEY_ID", other.as_str()),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ],
        None,
    );
    let client = AwsClient::new(&settings(&moto), env).unwrap();
    assert_eq!(client.credentials().await.unwrap().source(), "environment");

    // A named profile that does not exist, and nothing at all.
    let env = Environment::from_pairs([("AWS_PROFILE", "nope")], Some(home.path().to_owned()));
    let error = AwsClient::new(&settings(&moto), env)
        .unwrap()
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Config);
    assert!(error.to_string().contains("'nope'"), "{error}");
    let empty = tempfile::tempdir().unwrap();
    let env = Environment::from_pairs(
        [("AWS_EC2_METADATA_DISABLED", "true")],
        Some(empty.path().to_owned()),
    );
    let error = AwsClient::new(&settings(&moto), env)
        .unwrap()
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Credentials);
    assert!(
        error.to_string().contains("no AWS credentials found"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn web_identity_credentials_come_from_sts_and_are_refreshed() {
    let python = require_moto!();
    let moto = Moto::start(&python);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    // A service-account token is a JWT; moto does not verify it.
    std::fs::write(
        &token_file,
        format!("eyJ{}.eyJ{}.{}", random(20), random(40), random(43)),
    )
    .unwrap();
    let token_path = token_file.display().to_string();
    let role = "arn:aws:iam::123456789012:role/keyforge";
    let env = Environment::from_pairs(
        [
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
            ("AWS_ROLE_ARN", role),
            ("AWS_ROLE_SESSION_NAME", "keyforge-test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        None,
    );
    let client = AwsClient::new(&settings(&moto), env.clone()).unwrap();
    let first = client.credentials().await.unwrap();
    assert_eq!(first.source(), "web-identity");
    assert!(first.expiry().is_some());
    // Cached while far from expiry.
    let again = client.credentials().await.unwrap();
    assert_eq!(again.access_key_id(), first.access_key_id());
    // And usable.
    moto.seed(
        "secretsmanager",
        "create_secret",
        json!({ "Name": "s", "SecretString": "v" }),
    );
    SecretsManager::new(client)
        .get_secret_value("s", &VersionSelector::default())
        .await
        .unwrap();

    // With a refresh margin longer than the session, every use refreshes.
    let eager =
        AwsClient::with_refresh_margin(&settings(&moto), env, Duration::from_secs(24 * 3600))
            .unwrap();
    let one = eager.credentials().await.unwrap();
    let two = eager.credentials().await.unwrap();
    assert_ne!(one.access_key_id(), two.access_key_id());

    // A missing token file is a credentials error naming the file.
    let env = Environment::from_pairs(
        [
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
            ("AWS_ROLE_ARN", role),
        ],
        None,
    );
    let error = AwsClient::new(&settings(&moto), env)
        .unwrap()
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Credentials);
    assert!(error.to_string().contains("/nonexistent/token"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_failure_keeps_cached_credentials_until_they_expire() {
    let python = require_moto!();
    let mut moto = Moto::start(&python);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, random(40)).unwrap();
    let token_path = token_file.display().to_string();
    let env = Environment::from_pairs(
        [
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/keyforge"),
        ],
        None,
    );
    // Refresh wanted at every use (margin > session), STS then goes away.
    let client =
        AwsClient::with_refresh_margin(&settings(&moto), env, Duration::from_secs(3000)).unwrap();
    let first = client.credentials().await.unwrap();
    moto.stop();
    let kept = client.credentials().await.unwrap();
    assert_eq!(kept.access_key_id(), first.access_key_id());
}

#[tokio::test(flavor = "multi_thread")]
async fn server_going_away_is_unavailable_and_coming_back_recovers() {
    let python = require_moto!();
    let mut moto = Moto::start(&python);
    let seed = |moto: &Moto| {
        moto.seed(
            "secretsmanager",
            "create_secret",
            json!({ "Name": "s", "SecretString": "v1" }),
        );
    };
    seed(&moto);
    let patient = keyforge_aws::AwsSettings {
        max_attempts: Some(8),
        ..settings(&moto)
    };
    let client = AwsClient::new(&settings(&moto), static_env("testing", "testing")).unwrap();
    let manager = SecretsManager::new(client);
    manager
        .get_secret_value("s", &VersionSelector::default())
        .await
        .unwrap();

    moto.stop();
    let started = Instant::now();
    let error = manager
        .get_secret_value("s", &VersionSelector::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), AwsErrorKind::Unavailable, "{error}");
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .contains(&format!("127.0.0.1:{}", moto.port)),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A call made while AWS is down gets AWS's own answer once it is
    // back, by retrying (moto restarts empty, so the answer is NotFound).
    let patient =
        SecretsManager::new(AwsClient::new(&patient, static_env("testing", "testing")).unwrap());
    let call = tokio::spawn(async move {
        patient
            .get_secret_value("s", &VersionSelector::default())
            .await
            .map(|version| version.version_id)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    moto.restart();
    let answer = call.await.unwrap().unwrap_err();
    assert_eq!(answer.kind(), AwsErrorKind::NotFound, "{answer}");
    seed(&moto);
    // The first client recovers too: nothing was poisoned.
    manager
        .get_secret_value("s", &VersionSelector::default())
        .await
        .unwrap();
}
