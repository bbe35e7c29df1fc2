//! Signing keys held in hardware tokens, through PKCS#11, beside key files.
//!
//! A node names its token in its configuration (`[pkcs11]`: the module, the token's
//! label and a file holding the user PIN). A key made in the token leaves only a small
//! reference where its key file would be (`sign.key.pem`, `globalconf.key.pem`, ...):
//! the token, the key's CKA_ID and label, and its public key, which the token's key must
//! sign for (checked as it is loaded), so a key swapped in the token is noticed. [`load`] reads either kind and gives a
//! [`Signer`](lintas_certs::Signer); nothing that signs learns which.
//!
//! Signing uses CKM_ECDSA over a SHA-256 digest made here (the mechanism every token
//! has), and turns the token's r || s into DER. A session the token dropped is opened
//! again, and the signature tried once more, before an error is returned.
#![forbid(unsafe_code)]

mod der;
mod token;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

impl Pkcs11Config {
    /// Takes a relative `pin_file` as relative to the configuration file `config`.
    pub fn resolve(&mut self, config: &Path) {
        if self.pin_file.is_relative()
            && let Some(dir) = config.parent()
        {
            self.pin_file = dir.join(&self.pin_file);
        }
    }
}

/// What a key file holds when its key is in a token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef {
    pkcs11_token: String,
    /// CKA_ID, hex.
    pkcs11_key_id: String,
    pkcs11_key_label: String,
    /// The uncompressed P-256 point, hex: the token's key must sign for it.
    public_key: String,
}

const REF_HEADER: &str =
    "# lintas: this key is held in a PKCS#11 token; this file only names it.\n";

fn token_error(path: &Path, detail: impl std::fmt::Display) -> CertError {
    CertError::Token(format!("{}: {detail}", path.display()))
}

/// What the key file at `path` holds: a PEM key (None) or a token key's reference.
fn reference(path: &Path) -> Result<Option<KeyRef>, CertError> {
    // Read as a secret (owner only, wiped after): it may be a private key.
    let text = lintas_certs::files::read_private(path)?;
    if text.contains("-----BEGIN") {
        return Ok(None);
    }
    toml::from_str(&text).map(Some).map_err(|e| {
        // The message only, never the parser's quote of the file.
        token_error(
            path,
            format!(
                "neither a PEM private key nor a reference to a token's key ({})",
                e.message()
            ),
        )
    })
}

/// Reads the signing key `path` names: a PKCS#8 PEM key file (see
/// [`keys::read`]), or a reference to a key in the token of `pkcs11`.
pub fn load(path: &Path, pkcs11: Option<&Pkcs11Config>) -> Result<SharedSigner, CertError> {
    let Some(reference) = reference(path)? else {
        return Ok(Arc::new(keys::read(path)?));
    };
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
    let hex = |s: &str, what: &str| {
        lintas_certs::unhex(s)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| token_error(path, format!("{what} is not hex")))
    };
    let id = hex(&reference.pkcs11_key_id, "pkcs11_key_id")?;
    let public = hex(&reference.public_key, "public_key")?;
    let place = token::Place::new(config, read_pin(&config.pin_file)?);
    let in_token = |e: String| {
        token_error(
            path,
            format!(
                "key '{}' in token '{}': {e}",
                reference.pkcs11_key_label, config.token
            ),
        )
    };
    let session = place.session(false).map_err(|e| token_error(path, e))?;
    let private = token::find(&session, &id).map_err(in_token)?;
    let label = reference.pkcs11_key_label.clone();
    TokenKey::new(place, id, label, public, session, private)
        .map(|k| Arc::new(k) as SharedSigner)
        .map_err(in_token)
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
    let in_token = |e: String| {
        token_error(
            path,
            format!("making key '{label}' in token '{}': {e}", config.token),
        )
    };
    let (private, public) = token::generate(&session, &id, label).map_err(in_token)?;
    let reference = KeyRef {
        pkcs11_token: config.token.clone(),
        pkcs11_key_id: lintas_certs::hex(&id),
        pkcs11_key_label: label.to_owned(),
        public_key: lintas_certs::hex(&public),
    };
    let written = toml::to_string(&reference)
        .map_err(|e| token_error(path, e))
        .and_then(|text| {
            lintas_certs::files::write_new(path, format!("{REF_HEADER}{text}").as_bytes(), 0o600)
        });
    if let Err(e) = written {
        // Nothing names the key: it is not kept.
        forget(&session, &id);
        return Err(e);
    }
    TokenKey::new(place, id, label.to_owned(), public, session, private)
        .map(|k| Arc::new(k) as SharedSigner)
        .map_err(in_token)
}

/// Removes the key pair with CKA_ID `id` from the token.
fn forget(session: &Session, id: &[u8]) {
    if let Ok(objects) = session.find_objects(&[cryptoki::object::Attribute::Id(id.to_vec())]) {
        for object in objects {
            token::destroy(session, object);
        }
    }
}

/// Whether the key file at `path` names a token's key rather than holding a key; an
/// error when it cannot be told (unreadable, readable by others, neither kind).
pub fn is_reference(path: &Path) -> Result<bool, CertError> {
    Ok(reference(path)?.is_some())
}

/// The PIN in `path`, which only its owner may read (like a key file). Trailing line
/// ends are not part of it. The PIN never appears in an error.
fn read_pin(path: &Path) -> Result<AuthPin, CertError> {
    let text = lintas_certs::files::read_private(path)?;
    let pin = text.trim_end_matches(['\n', '\r']);
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
    /// When opening a session again last failed: not tried again for a while.
    failed_at: Option<Instant>,
}

/// How long after a failed try to reach the token again signatures fail at once.
const RETRY_AFTER: Duration = Duration::from_secs(5);

impl TokenKey {
    /// The key, once it has signed and its signature verified with `public` (the PIN,
    /// the mechanism and the key pair all work, and the token holds the key the
    /// reference was written for).
    fn new(
        place: token::Place,
        id: Vec<u8>,
        label: String,
        public: Vec<u8>,
        session: Session,
        private: ObjectHandle,
    ) -> Result<Self, String> {
        let key = TokenKey {
            place,
            id,
            label,
            public,
            live: Mutex::new(Live {
                session,
                private,
                failed_at: None,
            }),
        };
        let message = b"lintas pkcs11 self-test";
        let signature = key
            .sign_digest(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message).as_ref())?;
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &key.public,
        )
        .verify(message, &signature)
        .map_err(|_| {
            "its signature does not verify with the public key this file names: the token holds another key under this id".to_string()
        })?;
        Ok(key)
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, String> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let raw = match token::sign(&live.session, live.private, digest) {
            Ok(raw) => raw,
            Err(e) if token::session_lost(&e) => {
                if live.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                    return Err(format!(
                        "{} (the token was not reached again)",
                        token::said(e)
                    ));
                }
                // The token dropped the session (removed and put back, restarted):
                // open another, find the key again, and try once more.
                let reopened = self.place.session(false).and_then(|session| {
                    let private = token::find(&session, &self.id)?;
                    Ok((session, private))
                });
                match reopened {
                    Ok((session, private)) => {
                        *live = Live {
                            session,
                            private,
                            failed_at: None,
                        };
                        token::sign(&live.session, live.private, digest).map_err(|e| {
                            live.failed_at = Some(Instant::now());
                            token::said(e)
                        })?
                    }
                    Err(again) => {
                        live.failed_at = Some(Instant::now());
                        return Err(format!(
                            "{}; reopening the session: {again}",
                            token::said(e)
                        ));
                    }
                }
            }
            Err(e) => return Err(token::said(e)),
        };
        der::signature_from_raw(&raw)
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

    fn blocking(&self) -> bool {
        true
    }

    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, CertError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        self.sign_digest(digest.as_ref()).map_err(|e| {
            CertError::Token(format!(
                "signing with key '{}' in token '{}': {e}",
                self.label,
                self.place.token()
            ))
        })
    }
}
