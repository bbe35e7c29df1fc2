//! This server's own identity: its id, the subsystems it hosts, its certificates and
//! keys, and the batch signer over its member signing key. Every part that signs, names
//! this server or speaks TLS as it takes this, and nothing else of the server.
//!
//! The keys and certificates change when a renewal switches in ([`Own::switch`]). Each
//! use takes one snapshot ([`Own::keys`]) and keeps it for what belongs together: a
//! header is signed with the key of the certificate it names, and a connection is made
//! with one certificate and its key. Exchanges and connections begun before a switch
//! finish on the keys they took.

use std::sync::{Arc, RwLock};

use lintas_certs::KeyPair;
use lintas_identifiers::{ClientId, ServerId, SubsystemId};

use crate::batch::BatchSigner;

pub struct Own {
    pub id: ServerId,
    /// The subsystems hosted here (`clients` in the configuration).
    pub clients: Vec<SubsystemId>,
    keys: RwLock<Arc<OwnKeys>>,
}

/// The keys and certificates in use.
pub struct OwnKeys {
    /// Signs headers with the member signing key, in batches under load.
    pub signer: BatchSigner,
    pub sign_cert: Vec<u8>,
    pub tls_cert: Vec<u8>,
    pub tls_key: KeyPair,
    /// SHA-256 of `tls_cert`.
    pub tls_sha256: [u8; 32],
}

impl OwnKeys {
    pub fn new(
        signer: BatchSigner,
        sign_cert: Vec<u8>,
        tls_cert: Vec<u8>,
        tls_key: KeyPair,
    ) -> Self {
        OwnKeys {
            signer,
            sign_cert,
            tls_sha256: lintas_certs::sha256(&tls_cert),
            tls_cert,
            tls_key,
        }
    }

    /// This server's TLS identity, as the transport takes it.
    pub fn tls_identity(&self) -> (&[u8], &KeyPair) {
        (&self.tls_cert, &self.tls_key)
    }
}

impl Own {
    pub fn new(id: ServerId, clients: Vec<SubsystemId>, keys: OwnKeys) -> Self {
        Own {
            id,
            clients,
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// The keys and certificates in use now.
    pub fn keys(&self) -> Arc<OwnKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Uses `keys` from now on (a renewal switching in).
    pub fn switch(&self, keys: OwnKeys) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

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
        self.keys().signer.stats()
    }
}
