//! Private keys: generated here, written owner-only, and refused when others can read them.

use std::path::Path;

pub use rcgen::KeyPair;

use crate::CertError;

/// A new ECDSA P-256 key pair (the one algorithm lintas issues and verifies).
pub fn generate() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CertError::BadKey(e.to_string()))
}

/// Writes `key` as PKCS#8 PEM with mode 0600, refusing to replace an existing file.
pub fn write(path: &Path, key: &KeyPair) -> Result<(), CertError> {
    crate::files::write_new(path, key.serialize_pem().as_bytes(), 0o600)
}

/// SHA-256 of the key's SubjectPublicKeyInfo, hex: what operators compare out of band.
pub fn fingerprint(key: &(impl rcgen::PublicKeyData + ?Sized)) -> String {
    crate::hex(&crate::sha256(&key.subject_public_key_info()))
}

/// Reads a PKCS#8 PEM private key written by [`write`] (or by `openssl genpkey`).
pub fn read(path: &Path) -> Result<KeyPair, CertError> {
    from_pem(&crate::files::read_private(path)?)
}

pub fn from_pem(pem: &str) -> Result<KeyPair, CertError> {
    let key = KeyPair::from_pem(pem).map_err(|e| CertError::BadKey(e.to_string()))?;
    if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
        return Err(CertError::BadKey(
            "only ECDSA P-256 keys are supported".into(),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keys_are_written_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = generate().unwrap();
        write(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path).unwrap().public_key_raw(), key.public_key_raw());
        assert!(matches!(
            write(&path, &key),
            Err(CertError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write(&path, &generate().unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read(&path).unwrap_err();
        assert!(matches!(err, CertError::KeyPermissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn garbage_key_is_refused() {
        assert!(matches!(
            from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(CertError::BadKey(_))
        ));
    }
}
