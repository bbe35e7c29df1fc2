//! Parsing certificates into typed facts, and validating them against the instance CAs.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::EndEntityCert;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{CertError, Identity, Role};

/// What lintas needs to know about a certificate, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub identity: Identity,
    /// Serial number bytes as in the certificate.
    pub serial: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Uncompressed EC point of the subject key (what [`crate::sig::verify`] takes).
    pub public_key: Vec<u8>,
    pub is_ca: bool,
    pub digital_signature: bool,
    pub non_repudiation: bool,
    pub server_auth: bool,
    pub client_auth: bool,
    pub time_stamping: bool,
    /// Whether the certificate has an extended key usage extension at all.
    pub has_eku: bool,
    pub eku_critical: bool,
}

fn unix(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

impl CertInfo {
    /// Parses a DER certificate and its lintas identity. Does not check trust.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let bad = |e: &dyn std::fmt::Display| CertError::BadCertificate(e.to_string());
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| bad(&e))?;
        if !rest.is_empty() {
            return Err(bad(&"trailing bytes after the certificate"));
        }
        let mut identity = None;
        if let Some(san) = cert.subject_alternative_name().map_err(|e| bad(&e))? {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && uri.starts_with(crate::URI_SCHEME)
                {
                    if identity.is_some() {
                        return Err(bad(&"more than one lintas identity"));
                    }
                    identity = Some(Identity::from_uri(uri)?);
                }
            }
        }
        let identity = identity.ok_or(CertError::NoIdentity)?;
        let ku = cert.key_usage().map_err(|e| bad(&e))?;
        let eku = cert.extended_key_usage().map_err(|e| bad(&e))?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| bad(&e))?
            .is_some_and(|bc| bc.value.ca);
        let validity = cert.validity();
        Ok(CertInfo {
            der: der.to_vec(),
            identity,
            serial: cert.raw_serial().to_vec(),
            not_before: unix(validity.not_before.timestamp()),
            not_after: unix(validity.not_after.timestamp()),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            is_ca,
            digital_signature: ku.as_ref().is_some_and(|k| k.value.digital_signature()),
            non_repudiation: ku.as_ref().is_some_and(|k| k.value.non_repudiation()),
            server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
            client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
            time_stamping: eku.as_ref().is_some_and(|e| e.value.time_stamping),
            has_eku: eku.is_some(),
            eku_critical: eku.as_ref().is_some_and(|e| e.critical),
        })
    }

    /// The DNS names and IP addresses the certificate names (a TLS certificate's hosts),
    /// in its order.
    pub fn hosts(&self) -> Vec<String> {
        let Ok((_, cert)) = X509Certificate::from_der(&self.der) else {
            return Vec::new();
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    pub fn serial_hex(&self) -> String {
        crate::hex(&self.serial)
    }

    pub fn sha256(&self) -> [u8; 32] {
        crate::sha256(&self.der)
    }

    /// Seconds since the Unix epoch at which the certificate expires.
    pub fn not_after_unix(&self) -> i64 {
        crate::unix_secs(self.not_after)
    }
}

/// Checks that `der` is one well-formed X.509 certificate (of any issuer, with or without
/// a lintas identity) and returns its validity window.
pub fn certificate_validity(der: &[u8]) -> Result<(SystemTime, SystemTime), CertError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::BadCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::BadCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    let v = cert.validity();
    Ok((
        unix(v.not_before.timestamp()),
        unix(v.not_after.timestamp()),
    ))
}

/// The certification authorities an instance trusts, plus the serials it has revoked.
/// Every component checks peers and signers through this one type.
#[derive(Debug, Clone)]
pub struct TrustStore {
    cas: Vec<CertInfo>,
    anchors: Vec<TrustAnchor<'static>>,
    revoked: HashSet<Vec<u8>>,
}

impl TrustStore {
    /// Trusts the given DER CA certificates. Each must be a lintas CA certificate.
    pub fn new<'a>(cas: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, CertError> {
        let mut infos = Vec::new();
        let mut anchors = Vec::new();
        for der in cas {
            let info = CertInfo::parse(der)?;
            if info.identity.role() != Role::Ca || !info.is_ca {
                return Err(CertError::WrongRole {
                    expected: Role::Ca,
                    found: info.identity.role(),
                });
            }
            let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(der))
                .map_err(|e| CertError::BadCertificate(format!("{e:?}")))?
                .to_owned();
            anchors.push(anchor);
            infos.push(info);
        }
        if anchors.is_empty() {
            return Err(CertError::Untrusted(
                "no certification authority configured".into(),
            ));
        }
        Ok(TrustStore {
            cas: infos,
            anchors,
            revoked: HashSet::new(),
        })
    }

    /// Adds serial numbers (as in the certificate) that must be refused.
    pub fn with_revoked(mut self, serials: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.revoked.extend(serials);
        self
    }

    pub fn ca_certs(&self) -> impl Iterator<Item = &[u8]> {
        self.cas.iter().map(|c| c.der.as_slice())
    }

    /// Checks that `der` chains to a trusted CA at `now`, is not revoked, and is a
    /// certificate for `role` with that role's key usages. Returns what it says.
    pub fn verify(&self, der: &[u8], role: Role, now: SystemTime) -> Result<CertInfo, CertError> {
        let info = CertInfo::parse(der)?;
        let found = info.identity.role();
        if found != role {
            return Err(CertError::WrongRole {
                expected: role,
                found,
            });
        }
        if self.revoked.contains(&info.serial) {
            return Err(CertError::Revoked {
                serial: info.serial_hex(),
            });
        }
        if role == Role::Ca {
            if !self.cas.iter().any(|c| c.der == der) {
                return Err(CertError::Untrusted("not one of the trusted CAs".into()));
            }
            if now < info.not_before || now >= info.not_after {
                return Err(CertError::Untrusted(
                    "CA certificate is outside its validity period".into(),
                ));
            }
            return Ok(info);
        }
        let cert_der = CertificateDer::from(der);
        let ee = EndEntityCert::try_from(&cert_der)
            .map_err(|e| CertError::BadCertificate(format!("{e:?}")))?;
        let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        // Extended key usage is checked below, per role, from the parsed certificate.
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &[],
            time,
            AnyEku,
            None,
            None,
        )
        .map_err(|e| CertError::Untrusted(describe_webpki(&e)))?;
        check_usages(&info, role)?;
        Ok(info)
    }
}

/// Chain building leaves extended key usage to [`check_usages`].
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// The key usage profile each role must have, exactly as [`crate::Profile`] issues it.
fn check_usages(info: &CertInfo, role: Role) -> Result<(), CertError> {
    let lacks = |what: &str| Err(CertError::Untrusted(format!("{role} certificate {what}")));
    if !info.digital_signature {
        return lacks("lacks digitalSignature key usage");
    }
    match role {
        Role::Server if !(info.server_auth && info.client_auth) => {
            lacks("needs serverAuth and clientAuth extended key usage")
        }
        Role::Registry if !info.server_auth => lacks("needs serverAuth extended key usage"),
        Role::Admin if !info.client_auth || info.server_auth => {
            lacks("needs clientAuth (and not serverAuth) extended key usage")
        }
        Role::Member | Role::GlobalConf if info.has_eku => {
            lacks("must not carry an extended key usage")
        }
        Role::Member | Role::GlobalConf if !info.non_repudiation => {
            lacks("lacks nonRepudiation key usage")
        }
        Role::Tsa
            if !(info.time_stamping && info.eku_critical)
                || info.server_auth
                || info.client_auth =>
        {
            lacks("needs a critical extended key usage of timeStamping only")
        }
        _ => Ok(()),
    }
}

fn describe_webpki(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => "certificate has expired".into(),
        E::CertNotValidYet { .. } => "certificate is not valid yet".into(),
        E::UnknownIssuer => "issued by a CA this instance does not trust".into(),
        E::InvalidSignatureForPublicKey => {
            "not signed by a CA this instance trusts (issuer signature does not verify)".into()
        }
        E::RequiredEkuNotFoundContext(_) => {
            "certificate lacks the required extended key usage".into()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CsrKey, Validity, make_csr};
    use crate::{Ca, Profile, keys};

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    fn ca(instance: &str) -> Ca {
        Ca::create(
            &instance.parse().unwrap(),
            Validity::starting(SystemTime::now(), 10 * YEAR).unwrap(),
        )
        .unwrap()
    }

    fn issue(ca: &Ca, profile: Profile) -> Vec<u8> {
        let key = keys::generate().unwrap();
        let csr = make_csr(&key, "x").unwrap();
        let k = CsrKey::from_der(&csr).unwrap();
        ca.issue(
            &k,
            &profile,
            Validity::starting(SystemTime::now(), YEAR).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn issued_certificates_verify_with_their_role() {
        let ca = ca("ID");
        let store = TrustStore::new([ca.cert_der()]).unwrap();
        let now = SystemTime::now();
        let server = issue(
            &ca,
            Profile::Server {
                id: "ID/GOV/KEMENDAGRI/SS1".parse().unwrap(),
                hosts: vec!["127.0.0.1".into(), "ss1.example".into()],
            },
        );
        let info = store.verify(&server, Role::Server, now).unwrap();
        assert_eq!(
            info.identity,
            Identity::Server("ID/GOV/KEMENDAGRI/SS1".parse().unwrap())
        );
        assert!(info.server_auth && info.client_auth && !info.non_repudiation);
        assert_eq!(info.hosts(), ["127.0.0.1", "ss1.example"]);

        let member = issue(&ca, Profile::Member("ID/GOV/KEMENDAGRI".parse().unwrap()));
        let info = store.verify(&member, Role::Member, now).unwrap();
        assert!(info.non_repudiation);
        assert!(info.hosts().is_empty());
        assert!(matches!(
            store.verify(&member, Role::Server, now),
            Err(CertError::WrongRole { .. })
        ));

        let tsa = issue(
            &ca,
            Profile::Tsa {
                instance: "ID".parse().unwrap(),
                name: "tsa1".parse().unwrap(),
            },
        );
        let info = store.verify(&tsa, Role::Tsa, now).unwrap();
        assert!(info.time_stamping && info.eku_critical);

        let admin = issue(
            &ca,
            Profile::Admin {
                instance: "ID".parse().unwrap(),
                name: "alice".parse().unwrap(),
            },
        );
        store.verify(&admin, Role::Admin, now).unwrap();
        store.verify(ca.cert_der(), Role::Ca, now).unwrap();
    }

    #[test]
    fn foreign_expired_and_revoked_are_refused() {
        let ours = ca("ID");
        let theirs = ca("ID");
        let store = TrustStore::new([ours.cert_der()]).unwrap();
        let profile = Profile::Member("ID/GOV/X".parse().unwrap());
        let foreign = issue(&theirs, profile.clone());
        let err = store
            .verify(&foreign, Role::Member, SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("trust"), "{err}");

        let cert = issue(&ours, profile);
        let later = SystemTime::now() + 2 * YEAR;
        let err = store.verify(&cert, Role::Member, later).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");

        let serial = CertInfo::parse(&cert).unwrap().serial;
        let store = store.with_revoked([serial]);
        assert!(matches!(
            store.verify(&cert, Role::Member, SystemTime::now()),
            Err(CertError::Revoked { .. })
        ));
    }

    #[test]
    fn malformed_csrs_are_refused() {
        assert!(CsrKey::from_der(b"").is_err());
        let err = CsrKey::from_der(b"not a csr").err().unwrap();
        assert!(err.to_string().contains("not a DER PKCS#10"), "{err}");
        let err = CsrKey::from_der(&vec![0x30; 20_000]).err().unwrap();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn csr_with_a_bad_signature_gives_no_proof_of_possession() {
        let key = keys::generate().unwrap();
        let mut csr = make_csr(&key, "x").unwrap();
        // The last bytes are the value of the ECDSA signature's s integer: the request
        // still parses, only its signature is wrong.
        let n = csr.len();
        csr[n - 3] ^= 0x01;
        let err = CsrKey::from_der(&csr).err().unwrap();
        assert!(err.to_string().contains("proof of possession"), "{err}");
    }

    /// A certificate with `uri` as identity and the given usages, signed by `ca`.
    fn crafted(
        ca: &Ca,
        uri: &str,
        ku: Vec<rcgen::KeyUsagePurpose>,
        eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
    ) -> Vec<u8> {
        let key = keys::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        p.key_usages = ku;
        p.extended_key_usages = eku;
        p.not_before = time::OffsetDateTime::now_utc() - Duration::from_secs(60);
        p.not_after = time::OffsetDateTime::now_utc() + YEAR;
        p.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    }

    #[test]
    fn certificates_with_the_wrong_usages_are_refused() {
        use rcgen::ExtendedKeyUsagePurpose as E;
        use rcgen::KeyUsagePurpose as K;
        let ca = ca("ID");
        let store = TrustStore::new([ca.cert_der()]).unwrap();
        let now = SystemTime::now();
        let signing = vec![K::DigitalSignature, K::ContentCommitment];
        let cases = [
            // A signing certificate that claims TLS use.
            (
                "lintas:member:ID/GOV/X",
                signing.clone(),
                vec![E::ServerAuth],
                Role::Member,
            ),
            (
                "lintas:member:ID/GOV/X",
                signing.clone(),
                vec![E::ClientAuth],
                Role::Member,
            ),
            // A signing certificate without nonRepudiation.
            (
                "lintas:member:ID/GOV/X",
                vec![K::DigitalSignature],
                vec![],
                Role::Member,
            ),
            // An admin certificate without any extended key usage, or a server one.
            (
                "lintas:admin:ID/eve",
                vec![K::DigitalSignature],
                vec![],
                Role::Admin,
            ),
            (
                "lintas:admin:ID/eve",
                vec![K::DigitalSignature],
                vec![E::ClientAuth, E::ServerAuth],
                Role::Admin,
            ),
            // A server certificate usable only as a client.
            (
                "lintas:server:ID/GOV/X/SS1",
                vec![K::DigitalSignature],
                vec![E::ClientAuth],
                Role::Server,
            ),
            // A registry certificate without serverAuth.
            (
                "lintas:registry:ID",
                vec![K::DigitalSignature],
                vec![],
                Role::Registry,
            ),
            // A TSA whose timeStamping usage is not critical (rcgen's default).
            (
                "lintas:tsa:ID/t",
                signing.clone(),
                vec![E::TimeStamping],
                Role::Tsa,
            ),
            // No digitalSignature at all.
            (
                "lintas:registry:ID",
                vec![K::KeyEncipherment],
                vec![E::ServerAuth],
                Role::Registry,
            ),
        ];
        for (uri, ku, eku, role) in cases {
            let der = crafted(&ca, uri, ku, eku.clone());
            let err = store.verify(&der, role, now).unwrap_err();
            assert!(
                matches!(err, CertError::Untrusted(_)),
                "{uri} {eku:?}: {err}"
            );
        }
        // The same shapes with the right usages pass, so the refusals above are about usage.
        let ok = crafted(&ca, "lintas:member:ID/GOV/X", signing, vec![]);
        store.verify(&ok, Role::Member, now).unwrap();
    }

    #[test]
    fn an_expired_ca_is_not_valid() {
        let instance = "ID".parse().unwrap();
        let long_ago = SystemTime::now() - 3 * YEAR;
        let old = Ca::create(&instance, Validity::starting(long_ago, YEAR).unwrap()).unwrap();
        let store = TrustStore::new([old.cert_der()]).unwrap();
        let err = store
            .verify(old.cert_der(), Role::Ca, SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("validity"), "{err}");
        store
            .verify(old.cert_der(), Role::Ca, long_ago + YEAR / 2)
            .unwrap();
    }

    #[test]
    fn ca_refuses_other_instance_and_loads_back() {
        let ca = ca("ID");
        let key = keys::generate().unwrap();
        let err = ca
            .issue_for_key(
                &key,
                &Profile::Member("XX/GOV/A".parse().unwrap()),
                Validity::starting(SystemTime::now(), YEAR).unwrap(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("not of instance"), "{err}");
        let pem = ca.key().serialize_pem();
        let loaded = Ca::load(ca.cert_der().to_vec(), keys::from_pem(&pem).unwrap()).unwrap();
        let cert = issue(&loaded, Profile::Member("ID/GOV/A".parse().unwrap()));
        TrustStore::new([ca.cert_der()])
            .unwrap()
            .verify(&cert, Role::Member, SystemTime::now())
            .unwrap();
        // A key that does not match the certificate is refused.
        assert!(Ca::load(ca.cert_der().to_vec(), keys::generate().unwrap()).is_err());
    }
}
