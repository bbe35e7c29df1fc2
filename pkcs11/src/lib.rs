//! Signing keys held in hardware tokens, through PKCS#11, beside key files.
//!
//! A node names its token in its configuration (`[pkcs11]`: the module, the token's
//! label and a file holding the user PIN). A key made in the token leaves only a small
//! reference where its key file would be (`sign.key.pem`, `conf.key.pem`, ...): the
//! token, the key's CKA_ID and label, and the SHA-256 of its public key, so a key
//! swapped in the token is noticed. [`load`] reads either kind and gives a
//! [`Signer`](lintas_certs::Signer); nothing that signs learns which.
//!
//! Signing uses CKM_ECDSA over a SHA-256 digest made here (the mechanism every token
//! has), and turns the token's r || s into DER. A session the token dropped is opened
//! again, and the signature tried once more, before an error is returned.
#![forbid(unsafe_code)]

mod der;
mod token;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::types::AuthPin;
use lintas_certs::{CertError, SharedSigner, keys};
use serde::{Deserialize, Serialize};

/// The token a node keeps its keys in (`[pkcs11]` in its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The token's PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// A file holding the token user's PIN, readable by its owner only; relative to
    /// the configuration file.
    pub pin_file: PathBuf,
}

/// What a key file holds when its key is in a token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef {
    pkcs11_token: String,
    /// CKA_ID, hex.
    pkcs11_key_id: String,
    pkcs11_key_label: String,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex (as `keys::fingerprint` gives).
    public_key_sha256: String,
}

const REF_HEADER: &str =
    "# lintas: this key is held in a PKCS#11 token; this file only names it.\n";

fn token_error(path: &Path, detail: impl std::fmt::Display) -> CertError {
    CertError::Token(format!("{}: {detail}", path.display()))
}

/// Reads the signing key `path` names: a PKCS#8 PEM key file (see
/// [`keys::read`]), or a reference to a key in the token of `pkcs11`.
pub fn load(path: &Path, pkcs11: Option<&Pkcs11Config>) -> Result<SharedSigner, CertError> {
    let text = std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    if text.trim_start().starts_with("-----BEGIN") {
        return Ok(Arc::new(keys::read(path)?));
    }
    let reference: KeyRef = toml::from_str(&text).map_err(|e| {
        token_error(
            path,
            format!("neither a PEM private key nor a reference to a token's key: {e}"),
        )
    })?;
    let config = pkcs11.ok_or_else(|| {
        token_error(
            path,
            format!(
                "names key '{}' in PKCS#11 token '{}', but the configuration has no [pkcs11] section",
                reference.pkcs11_key_label, reference.pkcs11_token
            ),
        )
    })?;
    if config.token != reference.pkcs11_token {
        return Err(token_error(
            path,
            format!(
                "names a key in token '{}', but [pkcs11] token is '{}'",
                reference.pkcs11_token, config.token
            ),
        ));
    }
    let id = lintas_certs::unhex(&reference.pkcs11_key_id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| token_error(path, "pkcs11_key_id is not hex"))?;
    let place = token::Place::new(config, read_pin(&config.pin_file)?);
    let session = place.session(false).map_err(|e| token_error(path, e))?;
    let (private, public) = token::find(&session, &id).map_err(|e| {
        token_error(
            path,
            format!(
                "key '{}' in token '{}': {e}",
                reference.pkcs11_key_label, config.token
            ),
        )
    })?;
    let key = TokenKey {
        place,
        id,
        label: reference.pkcs11_key_label,
        public,
        live: Mutex::new(Live { session, private }),
    };
    if keys::fingerprint(&key) != reference.public_key_sha256 {
        return Err(token_error(
            path,
            format!(
                "key '{}' in token '{}' is not the key this file was written for (its public key differs)",
                key.label, config.token
            ),
        ));
    }
    key.self_test().map_err(|e| token_error(path, e))?;
    Ok(Arc::new(key))
}

/// Makes a new signing key and writes `path` (never replacing a file): inside the token
/// of `pkcs11`, labelled `label`, leaving a reference at `path`; or, without a token, a
/// key file.
pub fn generate(
    path: &Path,
    pkcs11: Option<&Pkcs11Config>,
    label: &str,
) -> Result<SharedSigner, CertError> {
    let Some(config) = pkcs11 else {
        let key = keys::generate()?;
        keys::write(path, &key)?;
        return Ok(Arc::new(key));
    };
    if path.exists() {
        return Err(CertError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let mut id = vec![0; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| token_error(path, "no random bytes"))?;
    let place = token::Place::new(config, read_pin(&config.pin_file)?);
    let session = place.session(true).map_err(|e| token_error(path, e))?;
    let (private, public) = token::generate(&session, &id, label).map_err(|e| {
        token_error(
            path,
            format!("making key '{label}' in token '{}': {e}", config.token),
        )
    })?;
    let key = TokenKey {
        place,
        id,
        label: label.to_owned(),
        public,
        live: Mutex::new(Live { session, private }),
    };
    key.self_test().map_err(|e| token_error(path, e))?;
    let reference = KeyRef {
        pkcs11_token: config.token.clone(),
        pkcs11_key_id: lintas_certs::hex(&key.id),
        pkcs11_key_label: key.label.clone(),
        public_key_sha256: keys::fingerprint(&key),
    };
    let text = toml::to_string(&reference).map_err(|e| token_error(path, e))?;
    lintas_certs::files::write_new(path, format!("{REF_HEADER}{text}").as_bytes(), 0o600)?;
    Ok(Arc::new(key))
}

/// Whether the key file at `path` names a token's key rather than holding a key.
pub fn is_reference(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.starts_with(REF_HEADER))
}

/// The PIN in `path`, which only its owner may read (like a key file). Trailing line
/// ends are not part of it. The PIN never appears in an error.
fn read_pin(path: &Path) -> Result<AuthPin, CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mode = f.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut pin = String::new();
    f.read_to_string(&mut pin).map_err(io)?;
    let pin = pin.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(token_error(path, "the PIN file is empty"));
    }
    Ok(AuthPin::from(pin))
}

/// A P-256 private key inside a token.
pub struct TokenKey {
    place: token::Place,
    id: Vec<u8>,
    label: String,
    /// The uncompressed point.
    public: Vec<u8>,
    live: Mutex<Live>,
}

/// The session signatures go through, and the key's handle in it (handles belong to
/// sessions of one module's run, so both are replaced together).
struct Live {
    session: Session,
    private: ObjectHandle,
}

impl TokenKey {
    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, String> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let raw = match token::sign(&live.session, live.private, digest) {
            Ok(raw) => raw,
            Err(e) if token::session_lost(&e) => {
                // The token dropped the session (removed and put back, restarted):
                // open another, find the key again, and try once more.
                let session = self.place.session(false)?;
                let (private, public) = token::find(&session, &self.id)?;
                if public != self.public {
                    return Err("the key's public key changed in the token".into());
                }
                *live = Live { session, private };
                token::sign(&live.session, live.private, digest).map_err(token::said)?
            }
            Err(e) => return Err(token::said(e)),
        };
        der::signature_from_raw(&raw)
    }

    /// Signs once and checks the signature with the public key: the PIN, the mechanism
    /// and the key pair all work before the key is used.
    fn self_test(&self) -> Result<(), String> {
        let message = b"lintas pkcs11 self-test";
        let signature = rcgen::SigningKey::sign(self, message)
            .map_err(|_| format!("key '{}' could not sign", self.label))?;
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &self.public,
        )
        .verify(message, &signature)
        .map_err(|_| {
            format!(
                "key '{}': the token's signature does not verify with its public key",
                self.label
            )
        })
    }
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        self.sign_digest(digest.as_ref()).map_err(|e| {
            // rcgen's error cannot carry the reason; the operator's log does.
            tracing::error!(
                key = %self.label,
                token = %self.place.token(),
                "signing failed: {e}"
            );
            rcgen::Error::RemoteKeyError
        })
    }
}

impl lintas_certs::Signer for TokenKey {
    fn held_in(&self) -> String {
        format!("key '{}' in token '{}'", self.label, self.place.token())
    }
}
