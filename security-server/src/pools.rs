//! Pooled gRPC channels: to peer security servers (mutual TLS, each pinned to the
//! certificate the configuration lists) and to provider applications.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lintas_certs::Role;

use lintas_globalconf::VerifiedConf;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::errors::{ErrorSource, error};
use crate::own::OwnKeys;

/// Most application channels kept; beyond it the pool starts over.
const MAX_APP_CHANNELS: usize = 256;

/// A pooled connection is for one address, the certificates pinned for it, the trust
/// of one configuration serial (revocations change trust), and this server's TLS
/// certificate (renewed ones are used for new connections from their switch on).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PeerKey {
    address: String,
    pins: Vec<[u8; 32]>,
    serial: u64,
    own_cert: [u8; 32],
}

/// Channels to peer security servers, one per address, pin and configuration serial.
#[derive(Default)]
pub struct PeerPool {
    peers: Mutex<HashMap<PeerKey, Channel>>,
}

impl PeerPool {
    /// A pooled mutual-TLS channel to a peer security server, pinned to the certificates
    /// the configuration lists for it.
    pub fn channel(
        &self,
        conf: &VerifiedConf,
        address: &str,
        pins: &[[u8; 32]],
        own: &OwnKeys,
    ) -> Result<Channel, Status> {
        let key = PeerKey {
            address: address.to_owned(),
            pins: pins.to_vec(),
            serial: conf.serial(),
            own_cert: own.tls_sha256,
        };
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(&key) {
            return Ok(c.clone());
        }
        let internal = |e: &dyn std::fmt::Display| {
            error(Code::Internal, ErrorSource::ConsumerServer, e.to_string())
        };
        let tls = lintas_transport::pinned_client_config(
            conf.trust_store(),
            Role::Server,
            pins,
            Some(own.tls_identity()),
        )
        .map_err(|e| internal(&e))?;
        let channel = lintas_transport::channel(&format!("https://{address}"), tls)
            .map_err(|e| internal(&e))?;
        // Connections for older serials, or made with a certificate this server no longer
        // uses, are dropped once a newer one is used (calls on them finish first).
        peers.retain(|k, _| k.serial >= key.serial && k.own_cert == key.own_cert);
        peers.insert(key, channel.clone());
        Ok(channel)
    }
}

/// Channels to provider applications, by endpoint and trusted certificates.
#[derive(Default)]
pub struct AppPool {
    apps: Mutex<HashMap<String, Channel>>,
}

impl AppPool {
    /// A pooled channel to a provider application (TLS when the endpoint is https).
    pub fn channel(&self, service: &crate::access::ServiceEntry) -> Result<Channel, Status> {
        let key = format!(
            "{} {}",
            service.endpoint,
            service
                .ca_pem
                .as_deref()
                .map(|p| lintas_certs::hex(&lintas_certs::sha256(p.as_bytes())))
                .unwrap_or_default()
        );
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = apps.get(&key) {
            return Ok(c.clone());
        }
        let bad = |e: &dyn std::fmt::Display| {
            error(
                Code::Internal,
                ErrorSource::ProviderServer,
                format!("service endpoint '{}': {e}", service.endpoint),
            )
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(service.endpoint.clone())
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(ca) = &service.ca_pem {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
        }
        let channel = endpoint.connect_lazy();
        if apps.len() >= MAX_APP_CHANNELS {
            apps.clear();
        }
        apps.insert(key, channel.clone());
        Ok(channel)
    }
}
