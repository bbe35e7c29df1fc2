//! The instance certification authority.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use lintas_identifiers::{Code, MemberId, ServerId};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;

use crate::keys::KeyPair;
use crate::{CertError, Identity};

/// Largest CSR accepted; a P-256 request is about 250 bytes.
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// What to put in an issued certificate besides the public key. The CA decides every
/// field from this; nothing from the CSR except its key is copied.
#[derive(Debug, Clone)]
pub enum Profile {
    /// A security server's TLS authentication certificate; `hosts` are the DNS names or IP
    /// addresses peers use to reach it.
    Server { id: ServerId, hosts: Vec<String> },
    /// A member signing certificate: nonRepudiation.
    Member(MemberId),
    /// The registry's TLS server certificate.
    Registry { instance: Code, hosts: Vec<String> },
    /// The global configuration signing certificate.
    GlobalConf { instance: Code },
    /// A timestamping authority: critical timeStamping extended key usage (RFC 3161 §2.3).
    Tsa { instance: Code, name: Code },
    /// A registry administrator's TLS client certificate.
    Admin { instance: Code, name: Code },
}

impl Profile {
    pub fn identity(&self) -> Identity {
        match self {
            Profile::Server { id, .. } => Identity::Server(id.clone()),
            Profile::Member(m) => Identity::Member(m.clone()),
            Profile::Registry { instance, .. } => Identity::Registry {
                instance: instance.clone(),
            },
            Profile::GlobalConf { instance } => Identity::GlobalConf {
                instance: instance.clone(),
            },
            Profile::Tsa { instance, name } => Identity::Tsa {
                instance: instance.clone(),
                name: name.clone(),
            },
            Profile::Admin { instance, name } => Identity::Admin {
                instance: instance.clone(),
                name: name.clone(),
            },
        }
    }

    fn params(&self, validity: Validity) -> Result<CertificateParams, CertError> {
        let identity = self.identity();
        let mut p = CertificateParams::default();
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        p.serial_number = Some(random_serial()?);
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(
            DnType::CommonName,
            identity.to_uri().trim_start_matches("lintas:"),
        );
        p.distinguished_name
            .push(DnType::OrganizationName, identity.instance().as_str());
        p.use_authority_key_identifier_extension = true;
        p.is_ca = IsCa::ExplicitNoCa;
        p.subject_alt_names.push(SanType::URI(
            identity
                .to_uri()
                .try_into()
                .map_err(|e: rcgen::Error| CertError::Issue(e.to_string()))?,
        ));
        let hosts = |p: &mut CertificateParams, hosts: &[String]| -> Result<(), CertError> {
            for h in hosts {
                let san = match h.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => {
                        SanType::DnsName(h.clone().try_into().map_err(|e: rcgen::Error| {
                            CertError::Issue(format!("host name '{h}': {e}"))
                        })?)
                    }
                };
                p.subject_alt_names.push(san);
            }
            Ok(())
        };
        match self {
            Profile::Server { hosts: h, .. } => {
                hosts(&mut p, h)?;
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
            Profile::Registry { hosts: h, .. } => {
                hosts(&mut p, h)?;
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Profile::Member(_) => {
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ];
            }
            Profile::GlobalConf { .. } => {
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ];
            }
            Profile::Tsa { .. } => {
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ];
                // rcgen writes extended key usage as non-critical; RFC 3161 requires it
                // critical, so it is written by hand: SEQUENCE { id-kp-timeStamping }.
                let mut eku = CustomExtension::from_oid_content(
                    &[2, 5, 29, 37],
                    vec![
                        0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
                    ],
                );
                eku.set_criticality(true);
                p.custom_extensions.push(eku);
            }
            Profile::Admin { .. } => {
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        Ok(p)
    }
}

/// Validity window of a certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From `now` (backdated a minute for clock skew) for `lifetime`.
    pub fn starting(now: SystemTime, lifetime: Duration) -> Result<Self, CertError> {
        let now = OffsetDateTime::from(now);
        let out_of_range = || CertError::Issue(format!("validity of {lifetime:?} is out of range"));
        Ok(Validity {
            not_before: now
                .checked_sub(time::Duration::seconds(60))
                .ok_or_else(out_of_range)?,
            not_after: time::Duration::try_from(lifetime)
                .ok()
                .and_then(|l| now.checked_add(l))
                .filter(|t| t.year() <= 9999)
                .ok_or_else(out_of_range)?,
        })
    }
}

fn random_serial() -> Result<SerialNumber, CertError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Issue("random number generator failed".into()))?;
    // Positive and without a leading zero octet, as RFC 5280 §4.1.2.2 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The public key of a verified CSR: its signature proves the requester holds the key.
pub struct CsrKey(rcgen::PublicKey);

impl CsrKey {
    /// Parses a PKCS#10 request and checks its self-signature (proof of possession).
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        if der.len() > MAX_CSR_LEN {
            return Err(CertError::BadCsr(format!(
                "{} bytes; at most {MAX_CSR_LEN} are accepted",
                der.len()
            )));
        }
        if der.is_empty() {
            return Err(CertError::BadCsr("empty".into()));
        }
        let params =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
                .map_err(|e| {
                    CertError::BadCsr(match e {
                        rcgen::Error::InvalidCertificationRequestSignature => {
                            "its signature does not verify (no proof of possession of the key)"
                                .into()
                        }
                        rcgen::Error::CouldNotParseCertificationRequest => {
                            "not a DER PKCS#10 certificate signing request".into()
                        }
                        other => other.to_string(),
                    })
                })?;
        if params.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CertError::BadCsr(
                "only ECDSA P-256 keys are accepted".into(),
            ));
        }
        Ok(CsrKey(params.public_key))
    }

    /// SHA-256 of the SubjectPublicKeyInfo, in hex: what an operator compares out of band.
    pub fn fingerprint(&self) -> String {
        crate::keys::fingerprint(&self.0)
    }

    /// The public key as an uncompressed P-256 point, as [`crate::sig::verify`] takes it.
    pub fn public_key_raw(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.0.der_bytes().to_vec()
    }
}

/// A certificate signing request for `key` (subject is informational only: the CA sets
/// every field itself).
pub fn make_csr(key: &dyn crate::Signer, common_name: &str) -> Result<Vec<u8>, CertError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.serialize_request(&crate::signer::ByRef(key))
        .map(|csr| csr.der().to_vec())
        .map_err(|e| CertError::Issue(e.to_string()))
}

/// A new key and a self-signed TLS certificate for `names` (DNS names or IP addresses),
/// usable as server and client certificate. Outside the instance PKI: for a security
/// server's local endpoint and for local applications, which are trusted by their
/// registered fingerprint, not by a chain.
pub fn self_signed(
    names: &[String],
    common_name: &str,
    validity: Validity,
) -> Result<(KeyPair, Vec<u8>), CertError> {
    let key = crate::keys::generate()?;
    let mut p = CertificateParams::default();
    p.not_before = validity.not_before;
    p.not_after = validity.not_after;
    p.serial_number = Some(random_serial()?);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    for n in names {
        p.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| CertError::Issue(format!("name '{n}': {e}")))?,
            ),
        });
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p
        .self_signed(&key)
        .map_err(|e| CertError::Issue(e.to_string()))?;
    Ok((key, cert.der().to_vec()))
}

/// The instance certification authority: its certificate and signing key.
pub struct Ca {
    cert_der: Vec<u8>,
    pub(crate) issuer: Issuer<'static, KeyPair>,
    instance: Code,
}

impl Ca {
    /// Creates a new self-signed CA for `instance`.
    pub fn create(instance: &Code, validity: Validity) -> Result<Self, CertError> {
        let key = crate::keys::generate()?;
        let mut p = CertificateParams::default();
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        p.serial_number = Some(random_serial()?);
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, format!("lintas {instance} root CA"));
        p.distinguished_name
            .push(DnType::OrganizationName, instance.as_str());
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let identity = Identity::Ca {
            instance: instance.clone(),
        };
        p.subject_alt_names.push(SanType::URI(
            identity
                .to_uri()
                .try_into()
                .map_err(|e: rcgen::Error| CertError::Issue(e.to_string()))?,
        ));
        let cert = p
            .self_signed(&key)
            .map_err(|e| CertError::Issue(e.to_string()))?;
        Ok(Ca {
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(p, key),
            instance: instance.clone(),
        })
    }

    /// Loads a CA from its certificate and key.
    pub fn load(cert_der: Vec<u8>, key: KeyPair) -> Result<Self, CertError> {
        let info = crate::verify::CertInfo::parse(&cert_der)?;
        let Identity::Ca { instance } = info.identity else {
            return Err(CertError::WrongRole {
                expected: crate::Role::Ca,
                found: info.identity.role(),
            });
        };
        if info.public_key != key.public_key_raw() {
            return Err(CertError::BadKey(
                "the CA key does not match the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), key)
            .map_err(|e| CertError::BadCertificate(e.to_string()))?;
        Ok(Ca {
            cert_der,
            issuer,
            instance,
        })
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn key(&self) -> &KeyPair {
        self.issuer.key()
    }

    pub fn instance(&self) -> &Code {
        &self.instance
    }

    /// Issues a certificate for the key of a verified CSR.
    pub fn issue(
        &self,
        key: &CsrKey,
        profile: &Profile,
        validity: Validity,
    ) -> Result<Vec<u8>, CertError> {
        self.sign(&key.0, profile, validity)
    }

    /// Issues a certificate for a key held by the same process (the registry's own keys at
    /// `init`); everything else goes through [`Ca::issue`].
    pub fn issue_for_key(
        &self,
        key: &dyn crate::Signer,
        profile: &Profile,
        validity: Validity,
    ) -> Result<Vec<u8>, CertError> {
        self.sign(&crate::signer::ByRef(key), profile, validity)
    }

    fn sign(
        &self,
        public_key: &impl PublicKeyData,
        profile: &Profile,
        validity: Validity,
    ) -> Result<Vec<u8>, CertError> {
        if profile.identity().instance() != &self.instance {
            return Err(CertError::Issue(format!(
                "identity {} is not of instance {}",
                profile.identity(),
                self.instance
            )));
        }
        let params = profile.params(validity)?;
        params
            .signed_by(public_key, &self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| CertError::Issue(e.to_string()))
    }
}
