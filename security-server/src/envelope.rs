//! What both sides of an exchange do with signed envelopes: verify a signer and its
//! signature, sign a response, check a body against its header, and build records.

use lintas_certs::Identity;
use lintas_globalconf::VerifiedConf;
use lintas_identifiers::MemberId;
use lintas_log::{Record, RecordKind};
use lintas_proto::exchange::v1 as ex;
use prost::Message;
use tonic::Code;

use std::sync::Arc;

use lintas_globalconf::Clock;

use crate::batch::VerifiedRoots;
use crate::material::Material;
use crate::signers::SignerCache;

pub use lintas_wire::{REQUEST_DOMAIN, RESPONSE_DOMAIN};
/// Largest signed header accepted (real ones are a few hundred bytes).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Room for header, signature and certificate around a maximal body.
pub const ENVELOPE_MARGIN: usize = 64 * 1024;

/// A message id is 1 to 128 printable ASCII characters.
pub fn check_message_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces");
    }
    Ok(())
}

pub use lintas_wire::body_matches;

/// Why a signed envelope did not verify.
#[derive(Debug)]
pub struct Unverified {
    pub reason: String,
    /// Only the listing failed: a newer configuration may list the certificate (a
    /// renewal), so it is worth fetching one before refusing.
    pub not_listed: bool,
}

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

fn unverified(reason: String) -> Unverified {
    Unverified {
        reason,
        not_listed: false,
    }
}

/// Verifies the signed envelopes of peers: their signing certificates (each verified
/// once per configuration serial and kept as evidence) and batch signatures (each root
/// verified once).
pub struct Verifier {
    signers: SignerCache,
    roots: VerifiedRoots,
    material: Arc<Material>,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    pub fn new(material: Arc<Material>, clock: Arc<dyn Clock>) -> Self {
        Verifier {
            signers: SignerCache::default(),
            roots: VerifiedRoots::default(),
            material,
            clock,
        }
    }

    /// Checks that `signature` over `header` in `domain` was made with `signer_cert`,
    /// that the certificate is a valid, unrevoked signing certificate of `member` from
    /// an approved CA, and that the configuration lists it among `listed` (the signing
    /// certificates of the peer security server).
    #[allow(clippy::too_many_arguments)]
    pub fn verify_signed(
        &self,
        conf: &VerifiedConf,
        member: &MemberId,
        listed: &[Vec<u8>],
        signer_cert: &[u8],
        domain: &str,
        header: &[u8],
        signature: Option<&ex::BatchSignature>,
    ) -> Result<(), Unverified> {
        let signer = self
            .signers
            .verify(conf, signer_cert, self.clock.now(), &self.material)
            .map_err(|e| unverified(format!("signing certificate refused: {e}")))?;
        if signer.identity != Identity::Member(member.clone()) {
            return Err(unverified(format!(
                "signed by {}, not by {member}",
                signer.identity
            )));
        }
        let signature = signature.ok_or_else(|| unverified("the header is not signed".into()))?;
        self.roots
            .verify(&signer.public_key, domain, header, signature)
            .map_err(unverified)?;
        if !listed.iter().any(|c| c == signer_cert) {
            return Err(Unverified {
                reason: "the signing certificate is not one the global configuration lists for the peer server"
                    .into(),
                not_listed: true,
            });
        }
        Ok(())
    }
}

/// Signs a response header on its own (a batch of one); returns its bytes and the
/// signature. The provider server signs through its batch signer instead.
pub fn sign_response(
    header: &ex::ResponseHeader,
    key: &dyn lintas_certs::Signer,
) -> Result<(Vec<u8>, ex::BatchSignature), String> {
    let bytes = header.encode_to_vec();
    let signature = crate::batch::sign_one(key, RESPONSE_DOMAIN, &bytes)?;
    Ok((bytes, signature))
}

/// The fields every record of one exchange shares.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub message_id: String,
    pub client: String,
    pub service_provider: String,
    pub method: String,
    pub peer_server: String,
    pub peer_cert_sha256: Vec<u8>,
    /// The exchange's W3C trace id (32 hex digits), empty when it has none.
    pub trace_id: String,
}

impl Context {
    /// A record of `kind` about signed bytes of this exchange.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        kind: RecordKind,
        time_unix_ms: i64,
        header: &[u8],
        signature: Option<&ex::BatchSignature>,
        signer_cert: &[u8],
        body_sha256: &[u8],
        body_len: u64,
        code: Code,
        detail: &str,
    ) -> Record {
        Record {
            kind: kind as i32,
            time_unix_ms,
            message_id: self.message_id.clone(),
            client: self.client.clone(),
            service_provider: self.service_provider.clone(),
            method: self.method.clone(),
            peer_server: self.peer_server.clone(),
            header: header.to_vec(),
            signature: signature.cloned(),
            signer_cert_sha256: if signer_cert.is_empty() {
                Vec::new()
            } else {
                lintas_certs::sha256(signer_cert).to_vec()
            },
            body_sha256: body_sha256.to_vec(),
            body_len,
            status_code: code as i32,
            detail: detail.to_owned(),
            trace_id: self.trace_id.clone(),
            peer_cert_sha256: self.peer_cert_sha256.clone(),
            // The log gives each record its index, the server the time-stamp it follows.
            index: 0,
            timestamp_sha256: Vec::new(),
        }
    }
}
