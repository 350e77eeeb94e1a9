//! The process environment as a value, so the credential chain can be
//! tested with any environment without touching the real one.

use std::collections::HashMap;
use std::path::PathBuf;

/// Environment variables and the home directory the AWS client reads.
/// Empty variables count as unset, as in the AWS SDKs.
#[derive(Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
    home: Option<PathBuf>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The values include AWS_SECRET_ACCESS_KEY: only names are shown.
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Environment")
            .field("names", &names)
            .field("home", &self.home)
            .finish()
    }
}

impl Environment {
    /// The variables of this process and its home directory.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(name, value)| {
                    Some((name.into_string().ok()?, value.into_string().ok()?))
                })
                .filter(|(name, _)| name.starts_with("AWS_"))
                .collect(),
            home: dirs::home_dir(),
        }
    }

    /// An environment made of `pairs` and `home` (for tests and embedding).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        home: Option<PathBuf>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            home,
        }
    }

    /// The variable's value, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }

    /// The home directory (`~`), if known.
    pub fn home(&self) -> Option<&std::path::Path> {
        self.home.as_deref()
    }
}
