//! Who may call the consumer endpoint (gRPC, discovery and the REST entry alike): a local
//! application on loopback (development), or one presenting a TLS client certificate
//! registered for the client it calls as: a subsystem hosted on this server, or the
//! member that owns it (a member-level client).

use std::net::SocketAddr;
use std::sync::Arc;

use lintas_certs::KeyPair;
use lintas_identifiers::ClientId;
use tonic::codegen::http;
use tonic::{Code, Status};

use crate::access::Access;
use crate::errors::{ErrorSource, error};
use crate::own::Own;

/// How the consumer endpoint knows which subsystem is calling.
pub enum LocalAuth {
    /// Plaintext on loopback; the caller's `lintas-client` is believed (development).
    DevPlaintextLoopback,
    /// TLS 1.3 with a client certificate registered for the calling subsystem; the
    /// endpoint presents its own certificate.
    Tls { cert: Vec<u8>, key: KeyPair },
}

/// Authenticates local applications.
pub struct LocalApps {
    pub auth: LocalAuth,
    /// The client certificates registered for hosted subsystems.
    pub access: Arc<Access>,
    pub own: Arc<Own>,
}

fn refused(code: Code, message: impl Into<String>) -> Status {
    error(code, ErrorSource::ConsumerServer, message)
}

/// The caller's address and the SHA-256 of its TLS client certificate (when the
/// endpoint speaks TLS).
pub fn caller(ext: &http::Extensions) -> (Option<SocketAddr>, Option<[u8; 32]>) {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let tls = ext.get::<TlsConnectInfo<TcpConnectInfo>>();
    let remote = ext
        .get::<TcpConnectInfo>()
        .or_else(|| tls.map(|t| t.get_ref()))
        .and_then(|i| i.remote_addr());
    let peer_cert = tls
        .and_then(|t| t.peer_certs())
        .and_then(|c| c.first().map(|c| lintas_certs::sha256(c.as_ref())));
    (remote, peer_cert)
}

impl LocalApps {
    /// Checks that the caller is a local application: on loopback (development), or
    /// presenting a registered TLS client certificate. Returns the subsystem that
    /// certificate is registered for.
    pub fn authenticate_connection(
        &self,
        remote: Option<SocketAddr>,
        peer_cert: Option<[u8; 32]>,
    ) -> Result<Option<ClientId>, Status> {
        match &self.auth {
            LocalAuth::DevPlaintextLoopback => {
                if !remote.is_some_and(|r| r.ip().is_loopback()) {
                    return Err(refused(
                        Code::PermissionDenied,
                        "only local applications on loopback may call this endpoint",
                    ));
                }
                Ok(None)
            }
            LocalAuth::Tls { .. } => {
                let hash = peer_cert.ok_or_else(|| {
                    refused(
                        Code::Unauthenticated,
                        "a TLS client certificate is required",
                    )
                })?;
                self.access.client_for_cert(&hash).map(Some).ok_or_else(|| {
                    refused(
                        Code::Unauthenticated,
                        "client certificate is not registered on this security server",
                    )
                })
            }
        }
    }

    /// Establishes which subsystem is calling: the one its TLS client certificate is
    /// registered for, or (development) the one it names on loopback.
    pub fn authenticate(
        &self,
        claimed: &ClientId,
        remote: Option<SocketAddr>,
        peer_cert: Option<[u8; 32]>,
    ) -> Result<(), Status> {
        if let Some(registered) = self.authenticate_connection(remote, peer_cert)?
            && &registered != claimed
        {
            return Err(crate::errors::with_reason(
                refused(
                    Code::PermissionDenied,
                    format!(
                        "this client certificate is registered for {registered}, not for {claimed}"
                    ),
                ),
                "SslAuthenticationFailed",
            ));
        }
        if !self.own.serves(claimed) {
            return Err(crate::errors::with_reason(
                refused(
                    Code::PermissionDenied,
                    format!(
                        "client {claimed} is not hosted on security server {}",
                        self.own.id
                    ),
                ),
                "UnknownMember",
            ));
        }
        Ok(())
    }
}
