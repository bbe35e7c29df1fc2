//! RFC 3161 time-stamp tokens, with SHA-256 and ECDSA P-256: a request for a digest, a
//! TSA that answers it (the registry runs one), and verification of a token.
//!
//! Tokens are standard CMS `SignedData` over a `TSTInfo`, with the signed attributes
//! content type, message digest and ESS `signingCertificateV2` (RFC 5816), so that
//! third-party tools such as `openssl ts -verify` accept them. Signing and verifying use
//! the one crypto provider (aws-lc-rs); the RustCrypto crates only encode and decode.
#![forbid(unsafe_code)]

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo,
};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5911::{ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use der::asn1::{GeneralizedTime, Int, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Sequence};
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

pub use x509_tsp::TimeStampToken;

/// id-ct-TSTInfo.
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// id-aa-signingCertificateV2 (RFC 5035).
const ID_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
/// The policy OID a TSA names in its tokens when its operator has not set one: the
/// documentation arc of RFC 5612 (`1.3.6.1.4.1.32473`). An instance in production sets
/// an OID under its own arc (the registry's `tsa_policy`).
pub const DEFAULT_POLICY: &str = "1.3.6.1.4.1.32473.3161.1";
/// Whether `policy` is a dotted object identifier a TSA can name.
pub fn check_policy(policy: &str) -> Result<(), String> {
    policy
        .parse::<ObjectIdentifier>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Largest request or token handled.
pub const MAX_BYTES: usize = 64 * 1024;
/// The HTTP media types of RFC 3161 section 3.4.
pub const QUERY_MEDIA_TYPE: &str = "application/timestamp-query";
pub const REPLY_MEDIA_TYPE: &str = "application/timestamp-reply";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TspError {
    #[error("malformed time-stamp {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("time-stamp request refused: {0}")]
    Refused(String),
    #[error("time-stamp token does not verify: {0}")]
    Invalid(String),
}

fn malformed(what: &'static str) -> impl Fn(der::Error) -> TspError {
    move |e| TspError::Malformed {
        what,
        detail: e.to_string(),
    }
}

fn sha256_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: None,
    }
}

/// A DER `TimeStampReq` for a SHA-256 `digest`, asking for the TSA's certificate.
pub fn request(digest: &[u8; 32], nonce: Option<u64>) -> Result<Vec<u8>, TspError> {
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: sha256_alg(),
            hashed_message: OctetString::new(digest.to_vec()).map_err(malformed("request"))?,
        },
        req_policy: None,
        nonce: nonce
            .map(|n| Int::new(&minimal(n)))
            .transpose()
            .map_err(malformed("request"))?,
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(malformed("request"))
}

/// The big-endian bytes of a positive integer as DER wants them: no leading zero
/// bytes, but one if the first bit is set.
fn minimal(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut out = bytes[start..].to_vec();
    if out[0] & 0x80 != 0 {
        out.insert(0, 0);
    }
    out
}

/// ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT sha256, certHash OCTET STRING, ... }
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    cert_hash: OctetString,
}

/// SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, ... }
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, der::Error> {
    let mut values = SetOfVec::new();
    values.insert(value)?;
    Ok(Attribute { oid, values })
}

use lintas_certs::sha256;

/// Checks that `der` is a certificate a TSA may sign tokens with: the critical
/// timeStamping extended key usage (RFC 3161 section 2.3), an ECDSA P-256 or RSA key,
/// and, when `at` (Unix seconds) is given, validity at that time. Any issuer: who vouches
/// for a TSA is decided by whoever lists its certificate.
pub fn check_tsa_cert(der: &[u8], at: Option<i64>) -> Result<(), String> {
    let cert =
        x509_cert::Certificate::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let eku = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_CE_EXT_KEY_USAGE)
        .ok_or("the certificate lacks the critical timeStamping extended key usage")?;
    let purposes = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
        .map_err(|e| format!("its extended key usage is malformed: {e}"))?;
    if !eku.critical || !purposes.0.contains(&ID_KP_TIME_STAMPING) {
        return Err("the certificate lacks the critical timeStamping extended key usage".into());
    }
    let alg = tbs.subject_public_key_info.algorithm.oid;
    if alg != ID_EC_PUBLIC_KEY && alg != RSA_ENCRYPTION {
        return Err("only ECDSA P-256 and RSA keys are supported".into());
    }
    if let Some(at) = at {
        let secs = |t: x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
        if at < secs(tbs.validity.not_before) || at >= secs(tbs.validity.not_after) {
            return Err("the certificate was not valid at the stamped time".into());
        }
    }
    Ok(())
}

/// A time-stamping authority: its key and certificate (which must carry the critical
/// timeStamping extended key usage).
pub struct Tsa {
    key: lintas_certs::SharedSigner,
    cert_der: Vec<u8>,
    cert: x509_cert::Certificate,
    policy: ObjectIdentifier,
}

impl Tsa {
    /// A TSA issuing under `policy` (a dotted OID).
    pub fn new(
        key: lintas_certs::SharedSigner,
        cert_der: Vec<u8>,
        policy: &str,
    ) -> Result<Self, TspError> {
        let cert =
            x509_cert::Certificate::from_der(&cert_der).map_err(malformed("TSA certificate"))?;
        let policy = policy.parse().map_err(|e| TspError::Malformed {
            what: "policy OID",
            detail: format!("'{policy}': {e}"),
        })?;
        Ok(Tsa {
            key,
            cert_der,
            cert,
            policy,
        })
    }

    /// Answers a DER `TimeStampReq` with a DER `TimeStampResp`, stamping `now` (Unix
    /// seconds). A request it cannot honour gets a rejection response, not an error.
    pub fn respond(&self, request_der: &[u8], now: i64) -> Vec<u8> {
        match self.token(request_der, now) {
            Ok(token) => response(x509_tsp::TimeStampResp {
                status: cmpv2::status::PkiStatusInfo {
                    status: cmpv2::status::PkiStatus::Accepted,
                    status_string: None,
                    fail_info: None,
                },
                time_stamp_token: Some(token),
            }),
            Err(_) => response(x509_tsp::TimeStampResp {
                status: cmpv2::status::PkiStatusInfo {
                    status: cmpv2::status::PkiStatus::Rejection,
                    status_string: None,
                    fail_info: Some(cmpv2::status::PkiFailureInfoValues::BadRequest.into()),
                },
                time_stamp_token: None,
            }),
        }
    }

    fn token(&self, request_der: &[u8], now: i64) -> Result<ContentInfo, TspError> {
        if request_der.len() > MAX_BYTES {
            return Err(TspError::Refused(format!(
                "{} bytes (at most {MAX_BYTES})",
                request_der.len()
            )));
        }
        let req = TimeStampReq::from_der(request_der).map_err(malformed("request"))?;
        if req.message_imprint.hash_algorithm.oid != ID_SHA256
            || req.message_imprint.hashed_message.as_bytes().len() != 32
        {
            return Err(TspError::Refused("only SHA-256 digests are stamped".into()));
        }
        if req.extensions.is_some() {
            return Err(TspError::Refused("no extensions are supported".into()));
        }
        if req.req_policy.is_some_and(|p| p != self.policy) {
            return Err(TspError::Refused("unknown policy".into()));
        }
        let serial = random_serial()?;
        let gen_time = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ))
        .map_err(malformed("time"))?;
        let tst = TstInfo {
            version: TspVersion::V1,
            policy: self.policy,
            message_imprint: MessageImprint {
                hash_algorithm: sha256_alg(),
                hashed_message: req.message_imprint.hashed_message.clone(),
            },
            serial_number: serial,
            gen_time,
            accuracy: Some(x509_tsp::Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce: req.nonce.clone(),
            tsa: None,
            extensions: None,
        };
        let tst_der = tst.to_der().map_err(malformed("TSTInfo"))?;
        self.sign(&tst_der, req.cert_req)
    }

    fn sign(&self, tst_der: &[u8], with_cert: bool) -> Result<ContentInfo, TspError> {
        let enc = |e: der::Error| TspError::Malformed {
            what: "token",
            detail: e.to_string(),
        };
        let mut attrs = SetOfVec::new();
        attrs
            .insert(
                attribute(
                    ID_CONTENT_TYPE,
                    Any::encode_from(&ID_CT_TST_INFO).map_err(enc)?,
                )
                .map_err(enc)?,
            )
            .map_err(enc)?;
        attrs
            .insert(
                attribute(
                    ID_MESSAGE_DIGEST,
                    Any::encode_from(&OctetString::new(sha256(tst_der).to_vec()).map_err(enc)?)
                        .map_err(enc)?,
                )
                .map_err(enc)?,
            )
            .map_err(enc)?;
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                cert_hash: OctetString::new(sha256(&self.cert_der).to_vec()).map_err(enc)?,
            }],
        };
        attrs
            .insert(
                attribute(
                    ID_SIGNING_CERTIFICATE_V2,
                    Any::encode_from(&ess).map_err(enc)?,
                )
                .map_err(enc)?,
            )
            .map_err(enc)?;
        // The signature covers the DER of the attributes as a SET OF (RFC 5652 5.4).
        let signed = attrs.to_der().map_err(enc)?;
        let signature = self
            .key
            .sign_message(&signed)
            .map_err(|e| TspError::Refused(format!("signing: {e}")))?;
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: self.cert.tbs_certificate.issuer.clone(),
                serial_number: self.cert.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: sha256_alg(),
            signed_attrs: Some(attrs),
            signature_algorithm: if self.key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
                AlgorithmIdentifierOwned {
                    oid: SHA256_WITH_RSA,
                    parameters: Some(Any::null()),
                }
            } else {
                AlgorithmIdentifierOwned {
                    oid: ECDSA_WITH_SHA256,
                    parameters: None,
                }
            },
            signature: OctetString::new(signature).map_err(enc)?,
            unsigned_attrs: None,
        };
        let mut digests = SetOfVec::new();
        digests.insert(sha256_alg()).map_err(enc)?;
        let mut signer_infos = SetOfVec::new();
        signer_infos.insert(signer).map_err(enc)?;
        let certificates = if with_cert {
            let mut set = SetOfVec::new();
            set.insert(CertificateChoices::Certificate(self.cert.clone()))
                .map_err(enc)?;
            Some(CertificateSet(set))
        } else {
            None
        };
        let sd = SignedData {
            version: CmsVersion::V3,
            digest_algorithms: digests,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_CT_TST_INFO,
                econtent: Some(
                    Any::encode_from(&OctetString::new(tst_der.to_vec()).map_err(enc)?)
                        .map_err(enc)?,
                ),
            },
            certificates,
            crls: None,
            signer_infos: cms::signed_data::SignerInfos(signer_infos),
        };
        Ok(ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&sd).map_err(enc)?,
        })
    }
}

fn response(resp: TimeStampResp<'_>) -> Vec<u8> {
    resp.to_der().unwrap_or_default()
}

fn random_serial() -> Result<Int, TspError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TspError::Refused("random number generator failed".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Int::new(&bytes).map_err(malformed("serial"))
}

/// The token of a DER `TimeStampResp`, or why there is none.
pub fn token_from_response(response_der: &[u8]) -> Result<Vec<u8>, TspError> {
    if response_der.len() > MAX_BYTES {
        return Err(TspError::Invalid(format!(
            "response of {} bytes (at most {MAX_BYTES})",
            response_der.len()
        )));
    }
    let resp = TimeStampResp::from_der(response_der).map_err(malformed("response"))?;
    match resp.status.status {
        cmpv2::status::PkiStatus::Accepted | cmpv2::status::PkiStatus::GrantedWithMods => {}
        other => return Err(TspError::Refused(format!("the TSA answered {other:?}"))),
    }
    resp.time_stamp_token
        .ok_or_else(|| TspError::Invalid("granted without a token".into()))?
        .to_der()
        .map_err(malformed("token"))
}

/// What a token states, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The time the TSA stamped, Unix seconds.
    pub time: i64,
    /// The TSA's signing certificate (DER).
    pub tsa_cert: Vec<u8>,
    pub serial_hex: String,
}

/// Verifies a DER token over SHA-256 `digest`: it is a `SignedData` over a `TSTInfo`
/// whose message imprint is `digest`, with one signer whose certificate (carried in the
/// token or given in `extra_certs`) `accept` approves at the stamped time, whose
/// signature over the signed attributes verifies, and whose attributes bind the
/// `TSTInfo` and the certificate.
pub fn verify(
    token_der: &[u8],
    digest: &[u8; 32],
    extra_certs: &[Vec<u8>],
    accept: impl Fn(&[u8], i64) -> Result<(), String>,
) -> Result<Stamped, TspError> {
    let bad = |s: String| TspError::Invalid(s);
    if token_der.len() > MAX_BYTES {
        return Err(bad(format!(
            "{} bytes (at most {MAX_BYTES})",
            token_der.len()
        )));
    }
    let ci = ContentInfo::from_der(token_der).map_err(malformed("token"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(bad("not a CMS SignedData".into()));
    }
    let sd: SignedData = ci.content.decode_as().map_err(malformed("SignedData"))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(bad("the signed content is not a TSTInfo".into()));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("no TSTInfo".into()))?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(malformed("TSTInfo"))?
        .as_bytes()
        .to_vec();
    let tst = TstInfo::from_der(&tst_der).map_err(malformed("TSTInfo"))?;
    if tst.message_imprint.hash_algorithm.oid != ID_SHA256
        || tst.message_imprint.hashed_message.as_bytes() != digest
    {
        return Err(bad("it stamps another digest".into()));
    }
    let time = i64::try_from(tst.gen_time.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    let [signer] = sd.signer_infos.0.as_slice() else {
        return Err(bad("it must have exactly one signer".into()));
    };
    // Nothing outside the signature may ride along: what is not signed is one fixed
    // form, or the certificate the signature names (checked below).
    if sd.version != CmsVersion::V3 || signer.version != CmsVersion::V1 {
        return Err(bad(
            "its SignedData or SignerInfo version is not the one RFC 3161 tokens have".into(),
        ));
    }
    if sd.crls.is_some() || signer.unsigned_attrs.is_some() {
        return Err(bad(
            "it carries revocation lists or unsigned attributes".into()
        ));
    }
    if sd.digest_algorithms.len() != 1 || sd.digest_algorithms.get(0) != Some(&signer.digest_alg) {
        return Err(bad(
            "its digest algorithms are not exactly the signer's".into()
        ));
    }
    let SignerIdentifier::IssuerAndSerialNumber(sid) = &signer.sid else {
        return Err(bad("the signer is not named by issuer and serial".into()));
    };
    if signer.digest_alg.oid != ID_SHA256 {
        return Err(bad(
            "only SHA-256 is accepted as the digest algorithm".into()
        ));
    }
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes".into()))?;
    let single = |oid: ObjectIdentifier| -> Result<&Any, TspError> {
        let found: Vec<&Attribute> = attrs.iter().filter(|a| a.oid == oid).collect();
        match found.as_slice() {
            [a] if a.values.len() == 1 => a
                .values
                .iter()
                .next()
                .ok_or_else(|| bad(format!("attribute {oid} has no value"))),
            _ => Err(bad(format!(
                "attribute {oid} must appear once with one value"
            ))),
        }
    };
    // The signed ESS attribute names the signer's certificate by hash: that, not the
    // unsigned certificate list, decides which certificate is the signer's.
    let ess: SigningCertificateV2 = single(ID_SIGNING_CERTIFICATE_V2)?
        .decode_as()
        .map_err(malformed("signing certificate"))?;
    let named = ess
        .certs
        .first()
        .map(|c| c.cert_hash.as_bytes().to_vec())
        .ok_or_else(|| bad("the signing certificate attribute names no certificate".into()))?;
    let mut candidates: Vec<Vec<u8>> = extra_certs.to_vec();
    if let Some(set) = &sd.certificates {
        for c in set.0.iter() {
            if let CertificateChoices::Certificate(c) = c {
                candidates.push(c.to_der().map_err(malformed("certificate"))?);
            }
        }
    }
    let cert_der = candidates
        .into_iter()
        .find(|der| sha256(der)[..] == named[..])
        .ok_or_else(|| bad("the certificate the signature names is not available".into()))?;
    let cert = x509_cert::Certificate::from_der(&cert_der).map_err(malformed("certificate"))?;
    if let Some(set) = &sd.certificates {
        let carried: Vec<Vec<u8>> = set
            .0
            .iter()
            .map(|c| c.to_der().map_err(malformed("certificate")))
            .collect::<Result<_, _>>()?;
        if carried != [cert_der.clone()] {
            return Err(bad(
                "it carries certificates other than the one its signature names".into(),
            ));
        }
    }
    if cert.tbs_certificate.issuer != sid.issuer
        || cert.tbs_certificate.serial_number != sid.serial_number
    {
        return Err(bad("the signer identifier names another certificate".into()));
    }
    accept(&cert_der, time).map_err(bad)?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let public_key = spki.subject_public_key.raw_bytes();
    let algorithm: &dyn aws_lc_rs::signature::VerificationAlgorithm =
        match (spki.algorithm.oid, signer.signature_algorithm.oid) {
            (ID_EC_PUBLIC_KEY, ECDSA_WITH_SHA256)
                if signer.signature_algorithm.parameters.is_none() =>
            {
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1
            }
            (RSA_ENCRYPTION, SHA256_WITH_RSA | RSA_ENCRYPTION) => {
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256
            }
            _ => {
                return Err(bad(
                    "only ECDSA P-256 and RSA (PKCS #1 v1.5) signatures with SHA-256 are accepted"
                        .into(),
                ));
            }
        };
    let content_type: ObjectIdentifier = single(ID_CONTENT_TYPE)?
        .decode_as()
        .map_err(malformed("content type"))?;
    if content_type != ID_CT_TST_INFO {
        return Err(bad("the content type attribute is not TSTInfo".into()));
    }
    let md: OctetString = single(ID_MESSAGE_DIGEST)?
        .decode_as()
        .map_err(malformed("message digest"))?;
    if md.as_bytes() != sha256(&tst_der) {
        return Err(bad(
            "the message digest attribute does not match the TSTInfo".into(),
        ));
    }
    let signed = attrs.to_der().map_err(malformed("signed attributes"))?;
    aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, public_key)
        .verify(&signed, signer.signature.as_bytes())
        .map_err(|_| bad("the TSA's signature does not verify".into()))?;
    Ok(Stamped {
        time,
        tsa_cert: cert_der,
        serial_hex: lintas_certs::hex(tst.serial_number.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lintas_certs::ca::{Ca, Validity};
    use lintas_certs::{Profile, Role, TrustStore};

    struct Setup {
        ca: Ca,
        tsa: Tsa,
        tsa_cert: Vec<u8>,
        trust: TrustStore,
    }

    fn setup() -> Setup {
        let now = std::time::SystemTime::now();
        let validity = Validity::starting(now, std::time::Duration::from_secs(86400)).unwrap();
        let instance = "ID".parse().unwrap();
        let ca = Ca::create(&instance, validity).unwrap();
        let key = lintas_certs::keys::generate().unwrap();
        let tsa_cert = ca
            .issue_for_key(
                &key,
                &Profile::Tsa {
                    instance,
                    name: "tsa".parse().unwrap(),
                },
                validity,
            )
            .unwrap();
        let trust = TrustStore::new([ca.cert_der()]).unwrap();
        Setup {
            tsa: Tsa::new(std::sync::Arc::new(key), tsa_cert.clone(), DEFAULT_POLICY).unwrap(),
            ca,
            tsa_cert,
            trust,
        }
    }

    fn accept(trust: &TrustStore) -> impl Fn(&[u8], i64) -> Result<(), String> + '_ {
        move |der, time| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(time as u64);
            trust
                .verify(der, Role::Tsa, at)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    /// Another authority's TSA: an RSA key, a certificate with no lintas identity,
    /// issued by nobody lintas knows (here: itself).
    #[test]
    fn tokens_of_an_rsa_tsa_outside_the_instance_verify() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "Balai Sertifikasi Elektronik TSA",
        );
        let mut eku = rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            vec![
                0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
            ],
        );
        eku.set_criticality(true);
        params.custom_extensions.push(eku);
        let cert = params.self_signed(&key).unwrap().der().to_vec();
        check_tsa_cert(&cert, Some(now())).unwrap();
        let tsa = Tsa::new(std::sync::Arc::new(key), cert.clone(), DEFAULT_POLICY).unwrap();
        let digest = sha256(b"checkpoint");
        let token =
            token_from_response(&tsa.respond(&request(&digest, None).unwrap(), now())).unwrap();
        let stamped = verify(&token, &digest, &[], |der, t| check_tsa_cert(der, Some(t))).unwrap();
        assert_eq!(stamped.tsa_cert, cert);
        let mut damaged = token.clone();
        let n = damaged.len();
        damaged[n - 10] ^= 1;
        assert!(
            verify(&damaged, &digest, &[], |der, t| check_tsa_cert(
                der,
                Some(t)
            ))
            .is_err()
        );
        // A certificate without the timeStamping purpose cannot be a TSA's.
        let plain_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let plain = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&plain_key)
            .unwrap();
        assert!(
            check_tsa_cert(plain.der(), None)
                .unwrap_err()
                .contains("timeStamping")
        );
    }

    fn now() -> i64 {
        lintas_certs::unix_secs(std::time::SystemTime::now())
    }

    #[test]
    fn a_token_verifies_for_its_digest_only() {
        let s = setup();
        let digest = sha256(b"checkpoint bytes");
        let token = token_from_response(&s.tsa.respond(&request(&digest, Some(7)).unwrap(), now()))
            .unwrap();
        let stamped = verify(&token, &digest, &[], accept(&s.trust)).unwrap();
        assert!((stamped.time - now()).abs() <= 2);
        assert_eq!(stamped.tsa_cert, s.tsa_cert);

        let other = sha256(b"other bytes");
        assert!(
            verify(&token, &other, &[], accept(&s.trust))
                .unwrap_err()
                .to_string()
                .contains("another digest")
        );
        // A changed byte anywhere breaks it.
        for i in [token.len() / 3, token.len() / 2, token.len() - 3] {
            let mut t = token.clone();
            t[i] ^= 0x01;
            assert!(
                verify(&t, &digest, &[], accept(&s.trust)).is_err(),
                "byte {i}"
            );
        }
        // A TSA of another instance is not trusted.
        let foreign = setup();
        assert!(verify(&token, &digest, &[], accept(&foreign.trust)).is_err());
        // Garbage and refusals are answered, not panicked on.
        let refused = s.tsa.respond(b"\x30\x03junk", now());
        assert!(matches!(
            token_from_response(&refused),
            Err(TspError::Refused(_))
        ));
        assert!(token_from_response(b"junk").is_err());
        assert!(verify(b"junk", &digest, &[], accept(&s.trust)).is_err());
    }

    #[test]
    fn a_token_carrying_anything_unsigned_beyond_its_signer_certificate_is_refused() {
        let s = setup();
        let digest = sha256(b"checkpoint bytes");
        let token =
            token_from_response(&s.tsa.respond(&request(&digest, None).unwrap(), now())).unwrap();
        verify(&token, &digest, &[], accept(&s.trust)).unwrap();
        // The token as it is, with `change` made to its SignedData.
        let altered = |change: &dyn Fn(&mut SignedData)| {
            let ci = ContentInfo::from_der(&token).unwrap();
            let mut sd: SignedData = ci.content.decode_as().unwrap();
            change(&mut sd);
            ContentInfo {
                content_type: ci.content_type,
                content: Any::encode_from(&sd).unwrap(),
            }
            .to_der()
            .unwrap()
        };
        let ca = x509_cert::Certificate::from_der(s.ca.cert_der()).unwrap();
        type Change = Box<dyn Fn(&mut SignedData)>;
        let cases: [(&str, Change, &str); 4] = [
            (
                "another certificate",
                Box::new(move |sd| {
                    let set = sd.certificates.as_mut().unwrap();
                    set.0
                        .insert(CertificateChoices::Certificate(ca.clone()))
                        .unwrap();
                }),
                "certificates other than",
            ),
            (
                "unsigned attributes",
                Box::new(|sd| {
                    let mut signers = sd.signer_infos.0.clone().into_vec();
                    signers[0].unsigned_attrs = signers[0].signed_attrs.clone();
                    sd.signer_infos =
                        cms::signed_data::SignerInfos(SetOfVec::try_from(signers).unwrap());
                }),
                "unsigned attributes",
            ),
            (
                "another digest algorithm",
                Box::new(|sd| {
                    sd.digest_algorithms
                        .insert(AlgorithmIdentifierOwned {
                            oid: ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3"),
                            parameters: None,
                        })
                        .unwrap();
                }),
                "digest algorithms",
            ),
            (
                "another version",
                Box::new(|sd| sd.version = CmsVersion::V4),
                "version",
            ),
        ];
        for (what, change, says) in cases {
            let err = verify(&altered(&*change), &digest, &[], accept(&s.trust))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{what}: {err}");
        }
        // Unchanged, the same round trip still verifies.
        verify(&altered(&|_| {}), &digest, &[], accept(&s.trust)).unwrap();
    }

    /// Third-party tools accept the tokens: `openssl ts -verify` checks the CMS
    /// signature, the ESS signing certificate, the chain and the imprint.
    #[test]
    fn openssl_verifies_the_tokens() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let data = b"a lintas log checkpoint";
        let response = s.tsa.respond(&request(&sha256(data), None).unwrap(), now());
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let resp = write("resp.tsr", &response);
        let data_file = write("data.bin", data);
        let ca = write(
            "ca.pem",
            lintas_certs::pem::cert_to_pem(s.ca.cert_der()).as_bytes(),
        );
        let tsa = write(
            "tsa.pem",
            lintas_certs::pem::cert_to_pem(&s.tsa_cert).as_bytes(),
        );
        let run = |data: &std::path::Path| {
            std::process::Command::new("openssl")
                .args(["ts", "-verify", "-in"])
                .arg(&resp)
                .arg("-data")
                .arg(data)
                .arg("-CAfile")
                .arg(&ca)
                .arg("-untrusted")
                .arg(&tsa)
                .output()
                .expect("openssl is installed (.ci/run installs it)")
        };
        let out = run(&data_file);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Verification: OK"));
        let wrong = write("wrong.bin", b"other data");
        assert!(!run(&wrong).status.success());
    }
}
