//! This server's own identity: its id, the subsystems it hosts, its certificates and
//! keys, and the batch signer over its member signing key. Every part that signs, names
//! this server or speaks TLS as it takes this, and nothing else of the server.

use lintas_certs::KeyPair;
use lintas_identifiers::{ClientId, ServerId, SubsystemId};

use crate::batch::BatchSigner;

pub struct Own {
    pub id: ServerId,
    /// The subsystems hosted here (`clients` in the configuration).
    pub clients: Vec<SubsystemId>,
    /// Signs headers with the member signing key, in batches under load.
    pub signer: BatchSigner,
    pub sign_cert: Vec<u8>,
    pub tls_cert: Vec<u8>,
    pub tls_key: KeyPair,
}

impl Own {
    /// Whether `client` is hosted on this server.
    pub fn hosts(&self, client: &SubsystemId) -> bool {
        self.clients.contains(client)
    }

    /// Whether `client` may call through this server: a hosted subsystem, or the member
    /// that owns the server (a member-level client, as X-Road has them).
    pub fn serves(&self, client: &ClientId) -> bool {
        match client {
            ClientId::Member(m) => *m == self.id.owner,
            ClientId::Subsystem(s) => self.hosts(s),
        }
    }

    /// Batch signatures made and the headers they covered, since the start.
    pub fn signing_stats(&self) -> (u64, u64) {
        self.signer.stats()
    }
}
