//! What a security server signs and an auditor checks, in one small crate that both
//! depend on, so that the offline verifier (`lintas-audit`) builds without the server:
//! the signature domains, batch signatures over header Merkle roots ([`batch`]), the
//! hash chains of stream messages ([`chain`]), the check of an RFC 3161 token against
//! the global configuration ([`verify_token`]), and the names of the evidence formats.
#![forbid(unsafe_code)]

pub mod batch;
pub mod chain;

use lintas_globalconf::VerifiedConf;

/// Signature domain of request headers.
pub const REQUEST_DOMAIN: &str = "lintas/request/v1";
/// Signature domain of response headers.
pub const RESPONSE_DOMAIN: &str = "lintas/response/v1";
/// Signature domain of stream message headers.
pub const MESSAGE_DOMAIN: &str = chain::MESSAGE_DOMAIN;

/// The format name written into evidence bundles.
pub const FORMAT: &str = "lintas-evidence/v1";
/// The format name written into archive manifests.
pub const ARCHIVE_FORMAT: &str = "lintas-archive/v1";

/// Whether `body` is the one a header's hash and length describe.
pub fn body_matches(sha256: &[u8], len: u64, body: &[u8]) -> bool {
    len == body.len() as u64 && sha256 == lintas_certs::sha256(body)
}

/// Verifies a token over `digest`: its TSA certificate must be one `conf` lists (the
/// signed configuration is what vouches for it, the registry's own or another), carry
/// the critical timeStamping extended key usage, and be valid at the stamped time.
/// Returns the stamped time.
pub fn verify_token(token: &[u8], digest: &[u8; 32], conf: &VerifiedConf) -> Result<i64, String> {
    // A token need not carry its TSA's certificate: the configuration lists it.
    let listed: Vec<Vec<u8>> = conf
        .conf
        .timestamping_authorities
        .iter()
        .map(|t| t.cert.clone())
        .collect();
    lintas_timestamp::verify(token, digest, &listed, |cert, time| {
        if !conf
            .conf
            .timestamping_authorities
            .iter()
            .any(|t| t.cert == cert)
        {
            return Err("the TSA is not one the global configuration lists".into());
        }
        lintas_timestamp::check_tsa_cert(cert, Some(time))
    })
    .map(|s| s.time)
    .map_err(|e| e.to_string())
}
