//! Certificates made at test time for TLS tests: a CA, server certificates
//! it issues for `localhost` and `127.0.0.1`, and their keys in every PEM
//! form a server may be given. Nothing is committed: each run makes new
//! ones.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_RSA_SHA256, RsaKeySize,
};

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate in PEM, for clients to trust.
    pub cert_pem: String,
}

/// A server certificate and its key.
pub struct ServerCert {
    /// The certificate in PEM (one block).
    pub cert_pem: String,
    /// The certificate in DER, to compare with what a client was served.
    pub cert_der: Vec<u8>,
    /// The private key as PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub key_pem: String,
    /// The private key as PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCert([key redacted])")
    }
}

/// The key algorithm of a server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

impl TestCa {
    /// A fresh CA named `name`.
    ///
    /// # Errors
    /// rcgen's, if the key cannot be made.
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// A server certificate for `localhost` and `127.0.0.1`, issued by this
    /// CA.
    ///
    /// # Errors
    /// rcgen's, if the key cannot be made.
    pub fn server_cert(&self, kind: KeyKind) -> Result<ServerCert, rcgen::Error> {
        let key = match kind {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            KeyKind::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?,
        };
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "keyforge test server");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
}

impl ServerCert {
    /// The key in its algorithm's own legacy PEM form: PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) for RSA, SEC1 (`BEGIN EC PRIVATE KEY`)
    /// for EC. Cut out of the PKCS#8 wrapping (RFC 5208: a SEQUENCE of the
    /// version, the algorithm and an OCTET STRING holding exactly that
    /// structure).
    pub fn legacy_key_pem(&self, kind: KeyKind) -> Option<String> {
        let inner = pkcs8_inner_key(&self.key_der)?;
        let label = match kind {
            KeyKind::EcdsaP256 => "EC PRIVATE KEY",
            KeyKind::Rsa2048 => "RSA PRIVATE KEY",
        };
        Some(pem_block(label, inner))
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    ///
    /// # Errors
    /// The file system's.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A PEM block (RFC 7468) with base64 lines of 64 characters.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let bytes = text.as_bytes();
    for line in bytes.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER element at the start of `der`: (tag, contents, rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    let (_, sequence, _) = der_element(der)?;
    let (_, _version, rest) = der_element(sequence)?;
    let (_, _algorithm, rest) = der_element(rest)?;
    let (tag, key, _) = der_element(rest)?;
    (tag == 0x04).then_some(key)
}
