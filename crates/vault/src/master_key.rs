//! The master key: 32 random bytes, base64 in the `KEYFORGE_MASTER_KEY`
//! environment variable or in a file only its owner can read.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub const MASTER_KEY_ENV: &str = "KEYFORGE_MASTER_KEY";

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "{source_name} does not hold a master key: expected 32 bytes in base64 (44 characters)"
    )]
    Malformed { source_name: String },
    #[error(
        "master key file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot read master key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create master key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the master key came from, for the startup message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    Environment,
    File(PathBuf),
    CreatedFile(PathBuf),
}

#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        // Without an entropy source no key can be made safely; aborting is
        // the only correct outcome.
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            std::process::abort();
        }
        Self(bytes)
    }

    pub fn from_base64(text: &str, source_name: &str) -> Result<Self, MasterKeyError> {
        let malformed = || MasterKeyError::Malformed {
            source_name: source_name.to_owned(),
        };
        let decoded = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| malformed())?);
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| malformed())?;
        Ok(Self(bytes))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key for one purpose, derived from the master key (HMAC-SHA-256 of
    /// the label under the master key), so one secret serves many uses
    /// without any of them revealing another.
    pub fn derive(&self, label: &str) -> zeroize::Zeroizing<[u8; 32]> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let tag = aws_lc_rs::hmac::sign(&key, label.as_bytes());
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Reads the key from an existing file (base64, surrounding white
    /// space ignored): a master key file of a data directory, a systemd
    /// credential (`LoadCredential=`), a mounted secret.
    ///
    /// # Errors
    /// [`MasterKeyError::TooOpen`] if the group or others may read it
    /// (whatever the content: the file is refused before it is read),
    /// `Read` if it cannot be read, `Malformed` if it is not a key.
    pub fn from_file(path: &Path) -> Result<Self, MasterKeyError> {
        let meta = std::fs::metadata(path).map_err(|source| MasterKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            MasterKeyError::Read {
                path: path.to_owned(),
                source,
            }
        })?);
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Reads the key from `env_value` if given (the caller reads
    /// `KEYFORGE_MASTER_KEY`), else from `path`, creating the file with a
    /// fresh key if it does not exist.
    pub fn load_or_create(
        env_value: Option<&str>,
        path: &Path,
    ) -> Result<(Self, MasterKeySource), MasterKeyError> {
        if let Some(text) = env_value {
            return Ok((
                Self::from_base64(text, MASTER_KEY_ENV)?,
                MasterKeySource::Environment,
            ));
        }
        match std::fs::metadata(path) {
            Ok(_) => Ok((
                Self::from_file(path)?,
                MasterKeySource::File(path.to_owned()),
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                let mut text = key.to_base64();
                text.push('\n');
                write_private_file(path, text.as_bytes()).map_err(|source| {
                    MasterKeyError::Create {
                        path: path.to_owned(),
                        source,
                    }
                })?;
                Ok((key, MasterKeySource::CreatedFile(path.to_owned())))
            }
            Err(source) => Err(MasterKeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Creates `path` with mode 0600 (never overwriting) and writes `contents`.
/// The mode is set at creation, so the file is never readable by others,
/// not even for an instant.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_0600_file_then_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (created, source) = MasterKey::load_or_create(None, &path).unwrap();
        assert_eq!(source, MasterKeySource::CreatedFile(path.clone()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (loaded, source) = MasterKey::load_or_create(None, &path).unwrap();
        assert_eq!(source, MasterKeySource::File(path.clone()));
        assert_eq!(created.bytes(), loaded.bytes());
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(None, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = MasterKey::load_or_create(None, &path).unwrap_err();
        assert!(
            matches!(error, MasterKeyError::TooOpen { mode: 0o644, .. }),
            "{error}"
        );
    }

    #[test]
    fn environment_wins_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let key = MasterKey::generate();
        let (loaded, source) = MasterKey::load_or_create(Some(&key.to_base64()), &path).unwrap();
        assert_eq!(source, MasterKeySource::Environment);
        assert_eq!(loaded.bytes(), key.bytes());
        assert!(!path.exists());
        let error = MasterKey::load_or_create(Some("c2hvcnQ="), &path).unwrap_err();
        assert!(error.to_string().contains("32 bytes"));
        assert!(!error.to_string().contains("c2hvcnQ"));
    }

    #[test]
    fn redacts_and_zeroizes() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<MasterKey>();
        assert_eq!(
            format!("{:?}", MasterKey::generate()),
            "MasterKey([redacted])"
        );
    }
}
