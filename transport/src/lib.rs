//! Mutual TLS for every lintas gRPC endpoint: TLS 1.3 only, aws-lc-rs, ALPN `h2`.
//!
//! tonic's own TLS settings cannot pin the protocol version, so lintas terminates TLS
//! itself: [`incoming`] turns a bound listener into a stream of handshaken connections that
//! `tonic::transport::Server::serve_with_incoming_shutdown` accepts (peer certificates stay
//! reachable through `Request::peer_certs`), and [`channel`] builds a tonic `Channel` whose
//! connector performs the TLS handshake with our client configuration.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

pub mod admission;
mod http;
pub mod rate;
mod raw;
pub use admission::{Admission, Conn, Limits, Refusal};
pub use http::{grpc_server, peer_grpc_server, serve_http, serve_https};
pub use raw::RawCodec;

use hyper_util::rt::TokioIo;
use lintas_certs::{KeyPair, Role, TrustStore};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(String),
    #[error("endpoint URL '{url}': {why}")]
    BadUrl { url: String, why: String },
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Client certificates are requested; a client without one may still connect and the
    /// application decides per call (the registry: servers register before they have one).
    Optional,
    /// A client certificate chaining to the trust store is required.
    Required,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(trust: &TrustStore) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for ca in trust.ca_certs() {
        roots.add(CertificateDer::from(ca.to_vec()))?;
    }
    Ok(roots)
}

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// A TLS 1.3 server configuration presenting `cert` and verifying client certificates
/// against `clients`: a chain to one of them, valid now, with the TLS
/// client-authentication usage (so that a member's signing certificate, which chains to
/// the same CA, cannot complete a handshake).
pub fn server_config(
    cert: &[u8],
    key: &KeyPair,
    clients: &TrustStore,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TransportError> {
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(clients)?), provider());
    let builder = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    let webpki = builder
        .build()
        .map_err(|e| TransportError::Verifier(e.to_string()))?;
    tls13_server(cert, key, Arc::new(ClientAuthUsage(webpki)))
}

/// webpki's client verification, which accepts a certificate without an extended key
/// usage for any purpose, narrowed to certificates that name the TLS client
/// authentication usage.
#[derive(Debug)]
struct ClientAuthUsage(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for ClientAuthUsage {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        match lintas_certs::CertInfo::parse(end_entity.as_ref()) {
            Ok(info) if info.client_auth => Ok(verified),
            Ok(info) => Err(rustls::Error::General(format!(
                "client certificate of {} is not for TLS client authentication (no clientAuth extended key usage)",
                info.identity
            ))),
            Err(e) => Err(rustls::Error::General(format!(
                "client certificate refused: {e}"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// TLS 1.3 only, ALPN h2, presenting `cert`, checking clients with `verifier`.
fn tls13_server(
    cert: &[u8],
    key: &KeyPair,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, TransportError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert.to_vec())], key_der(key))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Verifies a server certificate as webpki does (chain, validity, host name) and then
/// requires the lintas role the client expects: a security server's certificate, which
/// names a host too, must never pass for the registry's.
#[derive(Debug)]
struct RoleVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    trust: TrustStore,
    role: Role,
    /// When not empty, the SHA-256 hashes of which the server's certificate must have one.
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let at = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        self.trust
            .verify(end_entity.as_ref(), self.role, at)
            .map_err(|e| rustls::Error::General(format!("peer certificate refused: {e}")))?;
        if !self.pins.is_empty()
            && !self
                .pins
                .contains(&lintas_certs::sha256(end_entity.as_ref()))
        {
            return Err(rustls::Error::General(
                "peer certificate refused: not the certificate the global configuration lists for this server".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Decides whether a client certificate (by SHA-256) may connect at all.
pub type ClientCertCheck = Arc<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

/// Accepts client certificates by their SHA-256 fingerprint instead of a chain: local
/// applications present certificates an operator registered (self-signed is fine, as
/// in X-Road). The TLS handshake still proves the client holds the certificate's key;
/// an unregistered certificate is refused in the handshake. Which subsystem a
/// certificate may act for is the application layer's decision.
struct RegisteredClientCerts {
    registered: ClientCertCheck,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for RegisteredClientCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegisteredClientCerts")
    }
}

impl rustls::server::danger::ClientCertVerifier for RegisteredClientCerts {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        if (self.registered)(&lintas_certs::sha256(end_entity.as_ref())) {
            Ok(rustls::server::danger::ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "client certificate is not registered on this security server".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS 1.3 server configuration presenting `cert` and requiring a client certificate
/// that `registered` accepts (see [`RegisteredClientCerts`]).
pub fn server_config_registered_clients(
    cert: &[u8],
    key: &KeyPair,
    registered: ClientCertCheck,
) -> Result<Arc<ServerConfig>, TransportError> {
    let verifier = RegisteredClientCerts {
        registered,
        algorithms: provider().signature_verification_algorithms,
    };
    tls13_server(cert, key, Arc::new(verifier))
}

/// A TLS 1.3 server configuration for browsers and HTTP clients (a management listener):
/// presenting `cert`, asking for no client certificate, speaking HTTP/1.1 (an answer
/// refusing a request before reading its body then closes the connection, where over
/// HTTP/2 the early stream reset trips some clients).
pub fn web_server_config(cert: &[u8], key: &KeyPair) -> Result<Arc<ServerConfig>, TransportError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.to_vec())], key_der(key))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration accepting only servers whose certificate chains to
/// `servers` and carries `role` (for example [`Role::Registry`]), optionally presenting a
/// client certificate.
pub fn client_config(
    servers: &TrustStore,
    role: Role,
    identity: Option<(&[u8], &KeyPair)>,
) -> Result<Arc<ClientConfig>, TransportError> {
    pinned_client_config(servers, role, &[], identity)
}

/// [`client_config`] that also requires the server's certificate to have one of the
/// SHA-256 hashes `pins` (security servers pin the certificates the global
/// configuration lists for the peer: its current one, and during a renewal the one
/// before).
pub fn pinned_client_config(
    servers: &TrustStore,
    role: Role,
    pins: &[[u8; 32]],
    identity: Option<(&[u8], &KeyPair)>,
) -> Result<Arc<ClientConfig>, TransportError> {
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(servers)?), provider())
        .build()
        .map_err(|e| TransportError::Verifier(e.to_string()))?;
    let verifier = RoleVerifier {
        webpki,
        trust: servers.clone(),
        role,
        pins: pins.to_vec(),
    };
    // "dangerous" is rustls' name for any custom verifier; this one only adds checks.
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![CertificateDer::from(cert.to_vec())], key_der(key))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One stop signal for a daemon's parts (endpoints, pollers): raised by the shutdown
/// future it was made with, or by any part that ends on its own (an error), so the
/// others stop too.
#[derive(Clone)]
pub struct Stop {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Stop {
    pub fn on(shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop = Stop {
            tx: Arc::new(tx),
            rx,
        };
        let raise = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            raise.raise();
        });
        stop
    }

    pub fn raise(&self) {
        let _ = self.tx.send(true);
    }

    /// Resolves once the signal is raised.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Runs `part`, then raises the signal: when one part ends, all do.
    pub async fn part<T>(&self, part: impl std::future::IntoFuture<Output = T>) -> T {
        let out = part.await;
        self.raise();
        out
    }
}

/// Where each new connection's TLS configuration comes from: a fixed one, or one that
/// follows changing trust (a security server's peers follow the global configuration).
pub trait ConfigSource: Send + 'static {
    fn config(&self) -> Arc<ServerConfig>;
}

impl ConfigSource for Arc<ServerConfig> {
    fn config(&self) -> Arc<ServerConfig> {
        self.clone()
    }
}

impl<F: Fn() -> Arc<ServerConfig> + Send + 'static> ConfigSource for F {
    fn config(&self) -> Arc<ServerConfig> {
        self()
    }
}

/// Handshaken TLS connections from `listener`, for `serve_with_incoming_shutdown`, each
/// admitted by `admission` first (see [`admission`]). Each connection uses the
/// configuration `source` gives at accept time. Handshakes run concurrently, each
/// bounded by the listener's `handshake_timeout`; accepting never waits for them.
/// Accepting stops when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    source: impl ConfigSource,
    admission: Arc<Admission>,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<Conn>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Some((tcp, peer)) = accept(&listener, &tx).await else {
                return;
            };
            let Ok(ticket) = admission.admit(peer, true) else {
                continue;
            };
            let acceptor = TlsAcceptor::from(source.config());
            let (tx, admission) = (tx.clone(), admission.clone());
            tokio::spawn(async move {
                let timeout = admission.limits().handshake_timeout();
                let handshake =
                    tokio::time::timeout(timeout, acceptor.accept(Conn::new(tcp, peer, ticket)))
                        .await;
                match handshake {
                    Ok(Ok(mut tls)) => {
                        tls.get_mut().0.ticket().handshake_done();
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        admission.refused(peer, Refusal::HandshakeFailed);
                    }
                    Err(_) => admission.refused(peer, Refusal::HandshakeTimeout),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Plaintext connections from `listener`, admitted by `admission`.
pub fn incoming_plain(
    listener: TcpListener,
    admission: Arc<Admission>,
) -> ReceiverStream<Result<Conn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Some((tcp, peer)) = accept(&listener, &tx).await else {
                return;
            };
            if let Ok(ticket) = admission.admit(peer, false)
                && tx.send(Ok(Conn::new(tcp, peer, ticket))).await.is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The next TCP connection, or `None` once nobody takes connections any more.
async fn accept<T>(
    listener: &TcpListener,
    tx: &tokio::sync::mpsc::Sender<T>,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = tx.closed() => return None,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// A lazily connecting gRPC channel to `url` (`https://host:port`) over our TLS client
/// configuration. Connection errors surface on the first call.
pub fn channel(url: &str, config: Arc<ClientConfig>) -> Result<Channel, TransportError> {
    channel_to_any(&[url], config)
}

/// How long one connection (TCP and TLS handshake) to one node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one URL of [`channel_to_any`] connects.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

fn target(url: &str) -> Result<Target, TransportError> {
    let bad = |why: &str| TransportError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https://"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| bad("host is not a valid name"))?;
    Ok(Target {
        host,
        port,
        server_name,
    })
}

/// A lazily connecting gRPC channel to whichever of `urls` (several nodes of one
/// service, `https://host:port`) answers first, in order: each new connection tries
/// them in turn, so when the node in use goes away the next call reconnects to another.
/// Connection errors (when none answers) surface on the call.
pub fn channel_to_any(urls: &[&str], config: Arc<ClientConfig>) -> Result<Channel, TransportError> {
    let targets = urls
        .iter()
        .map(|u| target(u))
        .collect::<Result<Vec<_>, _>>()?;
    let first = targets.first().ok_or_else(|| TransportError::BadUrl {
        url: String::new(),
        why: "no URL given".into(),
    })?;
    // The URI tonic sees is only a name: TLS and the choice of node happen in the
    // connector below.
    let endpoint = Endpoint::from_shared(format!("http://{}:{}", first.host, first.port))
        .map_err(|e| TransportError::BadUrl {
            url: urls[0].to_owned(),
            why: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT * targets.len() as u32)
        .tcp_nodelay(true)
        .initial_stream_window_size(http::PEER_STREAM_WINDOW)
        .initial_connection_window_size(http::PEER_CONNECTION_WINDOW);
    let connector = TlsConnector::from(config);
    let targets = Arc::new(targets);
    let connect = tower::service_fn(move |_: Uri| {
        let (connector, targets) = (connector.clone(), targets.clone());
        async move {
            let mut last = None;
            for t in targets.iter() {
                let attempt = async {
                    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
                    tcp.set_nodelay(true)?;
                    connector.connect(t.server_name.clone(), tcp).await
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                    Ok(Ok(tls)) => return Ok(TokioIo::new(tls)),
                    Ok(Err(e)) => last = Some(e),
                    Err(_) => {
                        last = Some(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("{}:{} did not answer", t.host, t.port),
                        ))
                    }
                }
            }
            Err(ConnectError(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to")
            })))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}

/// A connection (TCP or TLS handshake) to the peer could not be made: nothing of a
/// request was sent on it.
#[derive(Debug)]
pub struct ConnectError(pub std::io::Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connecting: {}", self.0)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `error` (or an error it was caused by) is a [`ConnectError`] of a channel
/// made by [`channel`]: the call failed before anything was sent.
pub fn connect_failed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<ConnectError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The leaf certificate the TLS peer presented, if any.
pub fn peer_cert<T>(request: &tonic::Request<T>) -> Option<Vec<u8>> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.to_vec()))
}
