//! Domain-separated signatures over exact bytes.
//!
//! Every signature in lintas covers `domain || 0x00 || message`, where `domain` names the
//! kind of message (for example `lintas/globalconf/v1`). A signature made for one kind can
//! never be replayed as another, and no re-encoding ever happens before verification.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

use crate::CertError;
use crate::signer::Signer;

/// `domain || 0x00 || message`. A domain containing NUL could make two different
/// (domain, message) pairs frame to the same bytes, so it is refused.
fn framed(domain: &str, message: &[u8]) -> Result<Vec<u8>, CertError> {
    if domain.as_bytes().contains(&0) {
        return Err(CertError::Signing("signature domain contains NUL".into()));
    }
    let mut data = Vec::with_capacity(domain.len() + 1 + message.len());
    data.extend_from_slice(domain.as_bytes());
    data.push(0);
    data.extend_from_slice(message);
    Ok(data)
}

/// ECDSA P-256 / SHA-256 signature (ASN.1 DER) over `domain || 0x00 || message`.
pub fn sign(key: &dyn Signer, domain: &str, message: &[u8]) -> Result<Vec<u8>, CertError> {
    key.sign_message(&framed(domain, message)?)
}

/// Verifies a [`sign`] signature with an uncompressed P-256 public key point (as
/// [`crate::CertInfo::public_key`] gives it).
pub fn verify(
    public_key: &[u8],
    domain: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), CertError> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&framed(domain, message)?, signature)
        .map_err(|_| CertError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let key = crate::keys::generate().unwrap();
        let pk = key.public_key_raw().to_vec();
        let s = sign(&key, "a", b"msg").unwrap();
        verify(&pk, "a", b"msg", &s).unwrap();
        assert!(verify(&pk, "b", b"msg", &s).is_err(), "other domain");
        assert!(verify(&pk, "a", b"msh", &s).is_err(), "other message");
        // A NUL in the domain would make ("a\0", "b") and ("a", "\0b") frame alike.
        assert!(sign(&key, "a\0", b"b").is_err());
        assert!(verify(&pk, "a\0", b"b", &s).is_err());
        let other = crate::keys::generate().unwrap();
        assert!(verify(other.public_key_raw(), "a", b"msg", &s).is_err());
        assert!(verify(&pk, "a", b"msg", b"garbage").is_err());
    }
}
