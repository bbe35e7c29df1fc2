//! Talking to a token: the module loaded once per process, a session logged in as the
//! token's user, and keys found by their CKA_ID or made inside the token.

use std::collections::HashMap;
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

impl Place {
    pub(crate) fn new(config: &Pkcs11Config, pin: AuthPin) -> Self {
        Place {
            module: config.module.clone(),
            token: config.token.clone(),
            pin,
        }
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// A new session on the token, logged in as its user (read-write when keys are to
    /// be made).
    pub(crate) fn session(&self, read_write: bool) -> Result<Session, String> {
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
            Err(Error::Pkcs11(RvError::PinIncorrect, _)) => Err(format!(
                "token '{}' refused the PIN (C_Login: PinIncorrect)",
                self.token
            )),
            Err(e) => Err(said(e)),
        }
    }
}

/// The private key with CKA_ID `id` and the point of its public key.
pub(crate) fn find(session: &Session, id: &[u8]) -> Result<(ObjectHandle, Vec<u8>), String> {
    let one = |class: ObjectClass, what: &str| {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::KeyType(KeyType::EC),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(said)?;
        match found[..] {
            [handle] => Ok(handle),
            [] => Err(format!("no EC {what} has this id")),
            _ => Err(format!("{} EC {what}s have this id", found.len())),
        }
    };
    let private = one(ObjectClass::PRIVATE_KEY, "private key")?;
    let public = one(ObjectClass::PUBLIC_KEY, "public key")?;
    Ok((private, point(session, public)?))
}

fn point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, String> {
    let attributes = session
        .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(said)?;
    let (mut params, mut point) = (None, None);
    for a in attributes {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    if params.as_deref() != Some(&der::P256_PARAMS[..]) {
        return Err("the key is not on curve P-256 (the one lintas signs with)".into());
    }
    der::point_from_attribute(&point.ok_or("the token gave no public key point")?)
}

/// Makes a P-256 key pair inside the token: the private key never leaves it
/// (sensitive, not extractable). Returns the private key and its public point.
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
    Ok((private, point(session, public)?))
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
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid,
            _
        )
    )
}
