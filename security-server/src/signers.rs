//! Member signing certificates already verified, per configuration serial: the same
//! certificate signs every message of its member, so the chain is checked once per
//! serial (a new serial may revoke it) and the validity dates at every use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lintas_certs::{CertInfo, Role};
use lintas_globalconf::VerifiedConf;

use crate::material::Material;

/// Most signing certificates remembered as verified (one or two per peer member).
const MAX_CACHED_SIGNERS: usize = 10_000;

/// A signing certificate checked under configuration `.0`.
type VerifiedSigner = (u64, Arc<CertInfo>);

#[derive(Default)]
pub struct SignerCache {
    signers: Mutex<HashMap<[u8; 32], VerifiedSigner>>,
}

impl SignerCache {
    /// Verifies a member signing certificate against `conf` (chain to an approved CA,
    /// role, key usages, not revoked) at `now`. The same certificate signs every message
    /// of its member, so a result is remembered for the configuration serial it was
    /// checked under: a new serial (which may revoke it) checks again, and validity
    /// dates are checked every time.
    pub fn verify(
        &self,
        conf: &VerifiedConf,
        der: &[u8],
        now: std::time::SystemTime,
        material: &Material,
    ) -> Result<Arc<CertInfo>, lintas_certs::CertError> {
        let hash = lintas_certs::sha256(der);
        let cached = self
            .signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .filter(|(serial, _)| *serial == conf.serial())
            .map(|(_, info)| info.clone());
        if let Some(info) = cached
            && info.not_before <= now
            && now < info.not_after
        {
            return Ok(info);
        }
        let info = Arc::new(conf.trust_store().verify(der, Role::Member, now)?);
        // Evidence: records name signing certificates by hash.
        if let Err(e) = material.remember_cert(der) {
            return Err(lintas_certs::CertError::Signing(format!(
                "keeping the signing certificate as evidence: {e}"
            )));
        }
        let mut signers = self.signers.lock().unwrap_or_else(|p| p.into_inner());
        if signers.len() >= MAX_CACHED_SIGNERS {
            signers.clear();
        }
        signers.insert(hash, (conf.serial(), info.clone()));
        Ok(info)
    }
}
