//! The shared config and credentials files (`~/.aws/config`,
//! `~/.aws/credentials`), in the format of the AWS SDKs and tools reference
//! guide, "Shared config and credentials files": INI sections, `[name]` in
//! the credentials file and `[profile name]` (or `[default]`) in the config
//! file; `#` and `;` start comments; keys are case-insensitive. Indented
//! sub-properties (used by S3 settings) are skipped. A profile's keys from
//! the credentials file win over the same keys from the config file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::env::Environment;
use crate::error::AwsError;

/// The settings of one named profile, merged from both files.
#[derive(Clone, Default)]
pub(crate) struct Profile {
    properties: HashMap<String, String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values include aws_secret_access_key: only names are shown.
        let mut names: Vec<&str> = self.properties.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Profile").field("keys", &names).finish()
    }
}

impl Profile {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .get(key)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }
}

/// Which profile is meant, and whether someone asked for it by name (then
/// its absence is an error, not a reason to try the next provider).
#[derive(Debug, Clone)]
pub(crate) struct ProfileChoice {
    pub(crate) name: String,
    pub(crate) explicit: bool,
}

impl ProfileChoice {
    pub(crate) fn resolve(configured: Option<&str>, env: &Environment) -> Self {
        match configured.or_else(|| env.get("AWS_PROFILE")) {
            Some(name) => Self {
                name: name.to_owned(),
                explicit: true,
            },
            None => Self {
                name: "default".to_owned(),
                explicit: false,
            },
        }
    }
}

fn file_path(env: &Environment, variable: &str, default_name: &str) -> Option<PathBuf> {
    if let Some(path) = env.get(variable) {
        return Some(expand_home(path, env));
    }
    env.home().map(|home| home.join(".aws").join(default_name))
}

fn expand_home(path: &str, env: &Environment) -> PathBuf {
    match (path.strip_prefix("~/"), env.home()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

/// Loads `choice` from the files the environment points at
/// (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/`).
/// `Ok(None)`: neither file defines the profile.
pub(crate) fn load(env: &Environment, choice: &ProfileChoice) -> Result<Option<Profile>, AwsError> {
    let config = read_optional(file_path(env, "AWS_CONFIG_FILE", "config").as_deref())?;
    let credentials =
        read_optional(file_path(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials").as_deref())?;
    let config_section = if choice.name == "default" {
        "default".to_owned()
    } else {
        format!("profile {}", choice.name)
    };
    let mut found = false;
    let mut properties = HashMap::new();
    if let Some(text) = config {
        let sections = parse(&text);
        // `[default]` and `[profile default]` both name the default profile.
        for name in [config_section.as_str(), &format!("profile {}", choice.name)] {
            if let Some(section) = sections.get(name) {
                found = true;
                properties.extend(section.clone());
            }
        }
    }
    if let Some(text) = credentials
        && let Some(section) = parse(&text).get(&choice.name)
    {
        found = true;
        properties.extend(section.clone());
    }
    Ok(found.then_some(Profile { properties }))
}

fn read_optional(path: Option<&Path>) -> Result<Option<String>, AwsError> {
    let Some(path) = path else {
        return Ok(None);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(AwsError::config(format!(
            "cannot read AWS profile file {}: {error}",
            path.display()
        ))),
    }
}

type Sections = HashMap<String, HashMap<String, String>>;

fn parse(text: &str) -> Sections {
    let mut sections: Sections = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            // A sub-property of the previous key (`s3 =\n  max_concurrent_requests = 10`).
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name.split(']').next().unwrap_or_default();
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        let value = strip_comment(value.trim());
        if let Some(properties) = sections.get_mut(section) {
            properties.insert(key.trim().to_ascii_lowercase(), value.to_owned());
        }
    }
    sections
}

/// ` # comment` after a value is a comment; `#` inside a value is not.
fn strip_comment(value: &str) -> &str {
    let cut = value
        .find(" #")
        .into_iter()
        .chain(value.find(" ;"))
        .chain(value.find("\t#"))
        .chain(value.find("\t;"))
        .min();
    match cut {
        Some(index) => value[..index].trim_end(),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_comments_and_sub_properties() {
        let text = "# top\n[default]\nregion = eu-west-1 # trailing\n\n[profile ci]\nAWS_ACCESS_KEY_ID=a#b\ns3 =\n  max_concurrent_requests = 10\n; note\noutput=json\n";
        let sections = parse(text);
        assert_eq!(sections["default"]["region"], "eu-west-1");
        assert_eq!(sections["profile ci"]["aws_access_key_id"], "a#b");
        assert_eq!(sections["profile ci"]["output"], "json");
        assert!(!sections["profile ci"].contains_key("max_concurrent_requests"));
    }
}
