//! TLS on the gateway's listeners (`keyforge serve --tls-cert --tls-key`):
//! the certificate chain and private key read from PEM files, checked
//! against each other, and swapped in place by [`TlsCertificates::reload`]
//! (SIGHUP) without touching open connections.
//!
//! rustls with aws-lc-rs, the one TLS stack of the project. ALPN offers
//! `h2` then `http/1.1`; a client offering neither gets HTTP/1.1.
//!
//! Invariants: no error or log line holds a byte of a key file (messages
//! are fixed text and paths); a reload that fails leaves the certificate in
//! force untouched; a handshake reads the certificate in force when its
//! ClientHello arrives, so open connections keep theirs and every new one
//! gets the newest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocol ids offered, in order of preference (RFC 7301; the
/// strings are IANA's registry entries).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key file cannot be used. Built from paths and
/// fixed text only: never from the files' contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the TLS certificate file {0} holds no PEM certificate (expected `-----BEGIN CERTIFICATE-----` blocks, the server's first, then its intermediates)"
    )]
    NoCertificate(PathBuf),
    #[error("the TLS certificate file {0} is not valid PEM (a block is cut or badly encoded)")]
    BadCertificatePem(PathBuf),
    #[error(
        "the TLS key file {0} holds no private key in PEM (expected `-----BEGIN PRIVATE KEY-----` (PKCS#8), `-----BEGIN RSA PRIVATE KEY-----` or `-----BEGIN EC PRIVATE KEY-----`; an encrypted key must be decrypted first)"
    )]
    NoKey(PathBuf),
    #[error(
        "the TLS key file {0} holds a private key of a kind that cannot sign TLS handshakes (supported: RSA of 2048 bits or more, ECDSA P-256/P-384/P-521, Ed25519)"
    )]
    UnsupportedKey(PathBuf),
    #[error(
        "the TLS key file {key} does not belong to the first certificate of {cert} (the server's certificate must come first, and its key must be the one it was issued for)"
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the TLS certificate file {path} cannot be used: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
}

/// Where the certificate chain and key are read from (and read again on
/// every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates: the server's own first, then the intermediates
    /// clients need (the root may be left out).
    pub cert: PathBuf,
    /// The server certificate's private key in PEM: PKCS#8
    /// (`BEGIN PRIVATE KEY`), PKCS#1 RSA or SEC1 EC; not encrypted.
    pub key: PathBuf,
}

/// What a successful load or reload put in force, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedCertificate {
    /// Certificates in the chain served (the server's own included).
    pub chain_len: usize,
}

/// The certificate in force, swapped whole by a reload.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The TLS side of a listener: a rustls server configuration whose
/// certificate can be replaced while it serves. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct TlsCertificates {
    files: TlsFiles,
    resolver: Arc<Resolver>,
    config: Arc<rustls::ServerConfig>,
}

impl TlsCertificates {
    /// Reads and checks `files`: at least one certificate, one supported
    /// private key, and the key matching the first certificate.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = read_certified_key(&files, &provider)?;
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(certified),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::BadCertificate {
                path: files.cert.clone(),
                reason: error.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Self {
            files,
            resolver,
            config: Arc::new(config),
        })
    }

    /// Reads the files again and, if they pass every check of
    /// [`TlsCertificates::load`], serves them to every handshake from now
    /// on. Open connections are not touched. On error the certificate in
    /// force stays.
    ///
    /// # Errors
    /// [`TlsError`] as for `load`; nothing changed.
    pub fn reload(&self) -> Result<LoadedCertificate, TlsError> {
        let certified = read_certified_key(&self.files, self.config.crypto_provider())?;
        let loaded = LoadedCertificate {
            chain_len: certified.cert.len(),
        };
        self.resolver.current.store(Arc::new(certified));
        Ok(loaded)
    }

    /// The certificate now in force.
    pub fn current(&self) -> LoadedCertificate {
        LoadedCertificate {
            chain_len: self.resolver.current.load().cert.len(),
        }
    }

    /// The files read (and read again on reload).
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

fn read_certified_key(
    files: &TlsFiles,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<CertifiedKey, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path)
            .map(zeroize::Zeroizing::new)
            .map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
    };
    let cert_pem = read("certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::BadCertificatePem(files.cert.clone()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key_pem = read("key", &files.key)?;
    // The PEM reader's own errors may quote a line of the file: they are
    // replaced by fixed text.
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(files.key.clone()))?;
    drop(key_pem);
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| TlsError::UnsupportedKey(files.key.clone()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        // The certificate itself does not parse (the key is fine): rustls'
        // message names the certificate's problem, never the key.
        Err(error) => Err(TlsError::BadCertificate {
            path: files.cert.clone(),
            reason: error.to_string(),
        }),
    }
}

/// `true` if the ALPN protocol agreed on a connection is HTTP/2.
pub(crate) fn negotiated_h2(connection: &rustls::ServerConnection) -> bool {
    connection.alpn_protocol() == Some(b"h2")
}
