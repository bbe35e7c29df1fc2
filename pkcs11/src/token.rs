//! Talking to a token: the module loaded once per process, a session logged in as the
//! token's user, and keys found by their CKA_ID or made inside the token.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::Pkcs11Config;
use crate::der;

/// A failed PKCS#11 call, said briefly: the function and the return value's name.
pub(crate) fn said(e: Error) -> String {
    match e {
        Error::Pkcs11(rv, function) => format!("{function}: {rv:?}"),
        other => other.to_string(),
    }
}

/// The module at `path`, loaded and initialised once per process: every token and key
/// of a module shares its context (a second C_Initialize would be refused).
fn module(path: &Path) -> Result<Pkcs11, String> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = loaded.get(path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path)
        .map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", path.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("{}: {}", path.display(), said(e))),
    }
    loaded.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// The slot holding the token labelled `label`: exactly one must.
fn slot(ctx: &Pkcs11, label: &str) -> Result<Slot, String> {
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for slot in ctx.get_slots_with_initialized_token().map_err(said)? {
        let info = ctx.get_token_info(slot).map_err(said)?;
        let name = info.label().trim_end().to_owned();
        if name == label {
            found.push(slot);
        }
        seen.push(name);
    }
    match found[..] {
        [slot] => Ok(slot),
        [] => Err(format!(
            "no token is labelled '{label}' (the module has: {})",
            if seen.is_empty() {
                "no initialised tokens".to_owned()
            } else {
                seen.join(", ")
            }
        )),
        _ => Err(format!("{} tokens are labelled '{label}'", found.len())),
    }
}

/// Where a key lives and how to reach it again: what a session needs to be reopened
/// after the token dropped it.
pub(crate) struct Place {
    module: PathBuf,
    token: String,
    pin: AuthPin,
}

/// Tokens (module, label) that refused a PIN in this process: not tried again, by any
/// key, since every wrong try counts towards locking the token.
fn pin_refused() -> &'static Mutex<HashSet<(PathBuf, String)>> {
    static REFUSED: OnceLock<Mutex<HashSet<(PathBuf, String)>>> = OnceLock::new();
    REFUSED.get_or_init(Default::default)
}

impl Place {
    pub(crate) fn new(config: &Pkcs11Config, pin: AuthPin) -> Self {
        Place {
            module: config.module.clone(),
            token: config.token.clone(),
            pin,
        }
    }

    fn which(&self) -> (PathBuf, String) {
        (self.module.clone(), self.token.clone())
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// A new session on the token, logged in as its user (read-write when keys are to
    /// be made).
    pub(crate) fn session(&self, read_write: bool) -> Result<Session, String> {
        let refused = || pin_refused().lock().unwrap_or_else(|p| p.into_inner());
        if refused().contains(&self.which()) {
            return Err(format!(
                "token '{}' refused the PIN earlier; not trying again until the PIN file is fixed and the server restarted",
                self.token
            ));
        }
        let ctx = module(&self.module)?;
        let slot = slot(&ctx, &self.token)?;
        let session = if read_write {
            ctx.open_rw_session(slot)
        } else {
            ctx.open_ro_session(slot)
        }
        .map_err(said)?;
        // The login belongs to the application, not the session: another key of the
        // same token may have logged in already.
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(Error::Pkcs11(rv @ (RvError::PinIncorrect | RvError::PinLocked), _)) => {
                refused().insert(self.which());
                Err(format!(
                    "token '{}' refused the PIN (C_Login: {rv:?})",
                    self.token
                ))
            }
            Err(e) => Err(said(e)),
        }
    }
}

/// The P-256 private key with CKA_ID `id` (its public key is in the reference file, so
/// a token that keeps no public key objects serves too).
pub(crate) fn find(session: &Session, id: &[u8]) -> Result<ObjectHandle, String> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Id(id.to_vec()),
        ])
        .map_err(said)?;
    let key = match found[..] {
        [handle] => handle,
        [] => return Err("no EC private key has this id".into()),
        _ => return Err(format!("{} EC private keys have this id", found.len())),
    };
    p256(session, key)?;
    Ok(key)
}

/// Refuses a key whose curve is not P-256.
fn p256(session: &Session, key: ObjectHandle) -> Result<(), String> {
    let params = session
        .get_attributes(key, &[AttributeType::EcParams])
        .map_err(said)?;
    if !matches!(&params[..], [Attribute::EcParams(p)] if p[..] == der::P256_PARAMS[..]) {
        return Err("the key is not on curve P-256 (the one lintas signs with)".into());
    }
    Ok(())
}

/// The uncompressed point of a public key object.
fn point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, String> {
    p256(session, public)?;
    let attributes = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(said)?;
    match &attributes[..] {
        [Attribute::EcPoint(p)] => der::point_from_attribute(p),
        _ => Err("the token gave no public key point".into()),
    }
}

/// Makes a P-256 key pair inside the token: the private key never leaves it
/// (sensitive, not extractable). Returns the private key and its public point; on an
/// error nothing is left in the token.
pub(crate) fn generate(
    session: &Session,
    id: &[u8],
    label: &str,
) -> Result<(ObjectHandle, Vec<u8>), String> {
    let common = [
        Attribute::Token(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let public = [
        &common[..],
        &[
            Attribute::Verify(true),
            Attribute::EcParams(der::P256_PARAMS.to_vec()),
        ],
    ]
    .concat();
    let private = [
        &common[..],
        &[
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ],
    ]
    .concat();
    let (public, private) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(said)?;
    match point(session, public) {
        Ok(point) => Ok((private, point)),
        Err(e) => {
            destroy(session, private);
            destroy(session, public);
            Err(e)
        }
    }
}

/// Removes an object made here that is not to be kept (best effort: what is left is
/// an unused key in the token).
pub(crate) fn destroy(session: &Session, object: ObjectHandle) {
    if let Err(e) = session.destroy_object(object) {
        tracing::warn!("could not remove an unused key from the token: {}", said(e));
    }
}

/// Signs a SHA-256 digest with CKM_ECDSA; the token's r || s.
pub(crate) fn sign(session: &Session, key: ObjectHandle, digest: &[u8]) -> Result<Vec<u8>, Error> {
    session.sign(&Mechanism::Ecdsa, key, digest)
}

/// Whether a failed call means the session is gone (token removed, module restarted)
/// rather than that the request was wrong.
pub(crate) fn session_lost(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::GeneralError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid,
            _
        )
    )
}
