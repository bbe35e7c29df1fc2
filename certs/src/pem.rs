//! PEM encoding of certificates and requests, and reading them back.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::CertError;

fn encode(label: &str, der: &[u8]) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new(label, der), config)
}

pub fn cert_to_pem(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}

pub fn csr_to_pem(der: &[u8]) -> String {
    encode("CERTIFICATE REQUEST", der)
}

/// All certificates in a PEM text, in order. `what` names the source in errors.
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            what: what.to_owned(),
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The one certificate in a PEM text.
pub fn cert_from_pem(pem: &str, what: &str) -> Result<Vec<u8>, CertError> {
    let mut certs = certs_from_pem(pem, what)?;
    if certs.len() != 1 {
        return Err(CertError::Pem {
            what: what.to_owned(),
            detail: format!("expected one certificate, found {}", certs.len()),
        });
    }
    Ok(certs.remove(0))
}

/// A CSR given as PEM or DER (detected by content).
pub fn csr_from_pem_or_der(data: &[u8], what: &str) -> Result<Vec<u8>, CertError> {
    if data.starts_with(b"-----BEGIN") {
        CertificateSigningRequestDer::from_pem_slice(data)
            .map(|c| c.as_ref().to_vec())
            .map_err(|e| CertError::Pem {
                what: what.to_owned(),
                detail: e.to_string(),
            })
    } else {
        Ok(data.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_errors() {
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let pem = cert_to_pem(&der);
        assert_eq!(cert_from_pem(&pem, "test").unwrap(), der);
        let two = format!("{pem}{pem}");
        assert_eq!(certs_from_pem(&two, "t").unwrap().len(), 2);
        assert!(cert_from_pem(&two, "t").is_err());
        let err = cert_from_pem("hello", "anchor.toml").unwrap_err();
        assert!(err.to_string().contains("anchor.toml"), "{err}");
    }
}
