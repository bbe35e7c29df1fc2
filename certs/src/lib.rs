//! The lintas PKI: everything the registry, security servers and auditors need to create,
//! issue, parse and check certificates and signatures.
//!
//! - [`keys`]: ECDSA P-256 key pairs, written 0600 and refused when readable by others.
//! - [`ca`]: the instance CA, which issues certificates from PKCS#10 requests. The
//!   private key never leaves its owner; the CA takes only the public key from a CSR and
//!   decides every other field itself from the [`Profile`].
//! - [`verify`]: chain validation (rustls-webpki, aws-lc-rs) plus the role and identity
//!   checks every component uses.
//! - [`sig`]: domain-separated signatures over exact bytes.
//! - [`signer`]: the [`Signer`] every signature is made with, a key file or a hardware
//!   token's key.
//!
//! Identities live in a URI subject alternative name, `lintas:<role>:<identifier>`, for
//! example `lintas:server:ID/GOV/KEMENDAGRI/SS1` or `lintas:member:ID/GOV/KEMENDAGRI`, and
//! are read back with x509-parser into a typed [`Identity`].
#![forbid(unsafe_code)]

pub mod ca;
pub mod files;
pub mod keys;
pub mod pem;
pub mod sig;
pub mod signer;
pub mod verify;

use std::fmt;
use std::path::PathBuf;

use lintas_identifiers::{Code, IdError, MemberId, ServerId};

pub use ca::{Ca, Profile};
pub use keys::KeyPair;
pub use signer::{SharedSigner, Signer};
pub use verify::{CertInfo, TrustStore};

/// Errors of the PKI layer. Variants say whose input was at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: private key file is accessible by group or others (mode {mode:o}); run chmod 600"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{path}: already exists; refusing to overwrite a key or certificate")]
    AlreadyExists { path: PathBuf },
    #[error("{what}: not valid PEM: {detail}")]
    Pem { what: String, detail: String },
    #[error("private key is not a PKCS#8 ECDSA P-256 key: {0}")]
    BadKey(String),
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
    #[error("certificate could not be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate has no lintas identity (URI SAN 'lintas:<role>:<id>')")]
    NoIdentity,
    #[error("certificate identity '{uri}' is not valid: {reason}")]
    BadIdentity { uri: String, reason: String },
    #[error("certificate is for {found}, expected {expected}")]
    WrongRole { expected: Role, found: Role },
    #[error("certificate chain not trusted: {0}")]
    Untrusted(String),
    #[error("certificate {serial} is revoked")]
    Revoked { serial: String },
    #[error("signature does not verify")]
    BadSignature,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("issuing failed: {0}")]
    Issue(String),
    #[error("hardware token: {0}")]
    Token(String),
}

/// What a certificate is for. Each role has its own key usage profile (see [`Profile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The instance certification authority.
    Ca,
    /// A security server's TLS authentication certificate (server and client auth).
    Server,
    /// A member's signing certificate (nonRepudiation).
    Member,
    /// The registry's TLS server certificate.
    Registry,
    /// The key that signs the global configuration.
    GlobalConf,
    /// An RFC 3161 timestamping authority (critical timeStamping EKU).
    Tsa,
    /// A registry administrator's TLS client certificate.
    Admin,
}

impl Role {
    fn uri_word(self) -> &'static str {
        match self {
            Role::Ca => "ca",
            Role::Server => "server",
            Role::Member => "member",
            Role::Registry => "registry",
            Role::GlobalConf => "globalconf",
            Role::Tsa => "tsa",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Ca => "a certification authority",
            Role::Server => "a security server (TLS authentication)",
            Role::Member => "a member signing key",
            Role::Registry => "the registry's TLS endpoint",
            Role::GlobalConf => "global configuration signing",
            Role::Tsa => "a timestamping authority",
            Role::Admin => "a registry administrator",
        })
    }
}

/// The identity a certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Ca { instance: Code },
    Server(ServerId),
    Member(MemberId),
    Registry { instance: Code },
    GlobalConf { instance: Code },
    Tsa { instance: Code, name: Code },
    Admin { instance: Code, name: Code },
}

pub const URI_SCHEME: &str = "lintas:";

impl Identity {
    pub fn role(&self) -> Role {
        match self {
            Identity::Ca { .. } => Role::Ca,
            Identity::Server(_) => Role::Server,
            Identity::Member(_) => Role::Member,
            Identity::Registry { .. } => Role::Registry,
            Identity::GlobalConf { .. } => Role::GlobalConf,
            Identity::Tsa { .. } => Role::Tsa,
            Identity::Admin { .. } => Role::Admin,
        }
    }

    /// The instance this identity belongs to.
    pub fn instance(&self) -> &Code {
        match self {
            Identity::Ca { instance }
            | Identity::Registry { instance }
            | Identity::GlobalConf { instance }
            | Identity::Tsa { instance, .. }
            | Identity::Admin { instance, .. } => instance,
            Identity::Server(s) => &s.owner.instance,
            Identity::Member(m) => &m.instance,
        }
    }

    /// `lintas:<role>:<identifier>`
    pub fn to_uri(&self) -> String {
        let id = match self {
            Identity::Ca { instance }
            | Identity::Registry { instance }
            | Identity::GlobalConf { instance } => instance.to_string(),
            Identity::Tsa { instance, name } | Identity::Admin { instance, name } => {
                format!("{instance}/{name}")
            }
            Identity::Server(s) => s.to_string(),
            Identity::Member(m) => m.to_string(),
        };
        format!("{URI_SCHEME}{}:{id}", self.role().uri_word())
    }

    /// Parses `lintas:<role>:<identifier>`.
    pub fn from_uri(uri: &str) -> Result<Self, CertError> {
        let bad = |reason: String| CertError::BadIdentity {
            uri: uri.chars().take(120).collect(),
            reason,
        };
        let rest = uri
            .strip_prefix(URI_SCHEME)
            .ok_or_else(|| bad("not a lintas URI".into()))?;
        let (word, id) = rest
            .split_once(':')
            .ok_or_else(|| bad("missing role".into()))?;
        let e = |err: IdError| bad(err.to_string());
        let instance = |id: &str| Code::parse_part(id, "instance code").map_err(e);
        let named = |id: &str| -> Result<(Code, Code), CertError> {
            let (i, n) = id
                .split_once('/')
                .ok_or_else(|| bad("expected INSTANCE/NAME".into()))?;
            Ok((
                Code::parse_part(i, "instance code").map_err(e)?,
                Code::parse_part(n, "name").map_err(e)?,
            ))
        };
        Ok(match word {
            "ca" => Identity::Ca {
                instance: instance(id)?,
            },
            "server" => Identity::Server(id.parse().map_err(e)?),
            "member" => Identity::Member(id.parse().map_err(e)?),
            "registry" => Identity::Registry {
                instance: instance(id)?,
            },
            "globalconf" => Identity::GlobalConf {
                instance: instance(id)?,
            },
            "tsa" => {
                let (instance, name) = named(id)?;
                Identity::Tsa { instance, name }
            }
            "admin" => {
                let (instance, name) = named(id)?;
                Identity::Admin { instance, name }
            }
            other => return Err(bad(format!("unknown role '{other}'"))),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_secs(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Lower-case hexadecimal.
pub fn hex(data: &[u8]) -> String {
    use fmt::Write;
    data.iter()
        .fold(String::with_capacity(data.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses lower- or upper-case hexadecimal (colons allowed, as `openssl` prints them).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uri_round_trip() {
        let ids = [
            Identity::Server("ID/GOV/KEMENDAGRI/SS1".parse().unwrap()),
            Identity::Member("ID/GOV/KEMENDAGRI".parse().unwrap()),
            Identity::Admin {
                instance: "ID".parse().unwrap(),
                name: "alice".parse().unwrap(),
            },
            Identity::Ca {
                instance: "ID".parse().unwrap(),
            },
        ];
        for id in ids {
            assert_eq!(Identity::from_uri(&id.to_uri()).unwrap(), id);
        }
        assert_eq!(
            Identity::Member("ID/GOV/X".parse().unwrap()).to_uri(),
            "lintas:member:ID/GOV/X"
        );
        for bad in [
            "https://x",
            "lintas:",
            "lintas:member",
            "lintas:king:ID",
            "lintas:member:ID/GOV",
            "lintas:admin:ID",
        ] {
            assert!(Identity::from_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00:AB:10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(""), None);
    }
}
