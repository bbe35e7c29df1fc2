//! Private keys that sign, wherever they are held: a key file ([`KeyPair`]) or a
//! hardware token (the `lintas-pkcs11` crate). Signing code takes a [`Signer`] and never
//! learns which.

use std::sync::Arc;

use crate::keys::KeyPair;

/// A key that makes ECDSA P-256 / SHA-256 signatures (ASN.1 DER) and knows its public
/// key: what [`rcgen::SigningKey`] asks, plus where the key is held.
pub trait Signer: rcgen::SigningKey + Send + Sync + 'static {
    /// Where the private key is held, for logs and errors (never the key itself).
    fn held_in(&self) -> String;

    /// Signs `message` (ECDSA P-256 / SHA-256, DER); an error says why, where rcgen's
    /// error type cannot.
    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, crate::CertError> {
        self.sign(message)
            .map_err(|e| crate::CertError::Signing(e.to_string()))
    }

    /// Whether signing may wait on a device (a token): then it runs where a wait holds
    /// up no asynchronous task.
    fn blocking(&self) -> bool {
        false
    }

    /// The public key: for P-256, the uncompressed point (65 bytes).
    fn public_key_raw(&self) -> &[u8] {
        self.der_bytes()
    }
}

impl Signer for KeyPair {
    fn held_in(&self) -> String {
        "a key file".into()
    }
}

/// Whether the certificate `cert` (DER) is for `key`'s public key.
pub fn holds(cert: &[u8], key: &dyn Signer) -> Result<bool, crate::CertError> {
    Ok(crate::CertInfo::parse(cert)?.public_key == key.public_key_raw())
}

/// A signing key shared by every task that signs with it.
pub type SharedSigner = Arc<dyn Signer>;

/// A [`Signer`] borrowed where rcgen wants a sized key (certificate requests and
/// certificates issued for a public key).
pub struct ByRef<'a>(pub &'a dyn Signer);

impl rcgen::PublicKeyData for ByRef<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl rcgen::SigningKey for ByRef<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}
