//! The history of the published configuration: one record for every signed generation
//! (its serial, when it was signed and until when it holds, who caused it and why, and
//! the SHA-256 of the signed document, which an operator compares with what a security
//! server fetched). Written in the same batch as the generation itself, so the history
//! has no gaps from the first generation this registry version signed.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationRec {
    pub serial: u64,
    pub generated_at: i64,
    pub expires_at: i64,
    pub actor: String,
    pub action: String,
    /// SHA-256 of the signed document (hex).
    pub sha256: String,
    pub bytes: u64,
}

impl GenerationRec {
    /// The record of `blob`, the signed document of `conf`.
    pub(super) fn of(conf: &gc::GlobalConf, blob: &[u8], actor: &str, action: &str) -> Self {
        GenerationRec {
            serial: conf.serial,
            generated_at: conf.generated_at,
            expires_at: conf.expires_at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            sha256: lintas_certs::hex(&lintas_certs::sha256(blob)),
            bytes: blob.len() as u64,
        }
    }

    /// The paging key: newest first.
    fn key(&self) -> String {
        format!("{:016x}", u64::MAX - self.serial)
    }
}

impl Registry {
    /// One page of the published generations, newest first.
    pub fn generations_page(
        &self,
        token: &str,
        size: usize,
    ) -> Result<(Vec<GenerationRec>, String)> {
        let held = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let items = held.iter().map(|g| (g.key(), g));
        lintas_proto::paging::page(items, token, size).map_err(|e| invalid("page_token", e))
    }

    /// Keeps `g` once it is durable.
    pub(super) fn remember_generation(&self, g: GenerationRec) {
        let mut held = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|h| h.serial != g.serial);
        held.push(g);
    }
}
