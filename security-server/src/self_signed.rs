//! The certificates of the listeners a security server presents to its own users (the
//! consumer endpoint to local applications, the management listener to browsers): outside
//! the instance PKI, self-signed at first start, replaceable by the operator.

use std::time::Duration;

use lintas_certs::KeyPair;

use crate::SsError;

/// Loads a local listener's certificate and key (the consumer endpoint's, the management
/// listener's), making a self-signed pair for `names` at first start.
pub(crate) fn local_identity(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
    names: &[String],
    label: &str,
) -> Result<(Vec<u8>, KeyPair), SsError> {
    if !cert_path.exists() {
        let validity = lintas_certs::ca::Validity::starting(
            std::time::SystemTime::now(),
            Duration::from_secs(5 * 365 * 86400),
        )?;
        let (key, cert) = lintas_certs::ca::self_signed(names, label, validity)?;
        // Key first, certificate last and both replaced atomically: a crash in between
        // leaves no certificate, so the next start makes a new pair.
        lintas_certs::files::write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        lintas_certs::files::write_atomic(
            cert_path,
            lintas_certs::pem::cert_to_pem(&cert).as_bytes(),
            0o644,
        )?;
    }
    Ok((
        lintas_certs::files::read_cert(cert_path)?,
        lintas_certs::keys::read(key_path)?,
    ))
}
