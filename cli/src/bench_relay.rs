//! The benchmark's own processes besides the security servers: the echo application,
//! and the relay hops of the ceiling measurement. A relay hop passes each unary call
//! on as it is, through the same gRPC stack, codec, listeners and TLS configuration as
//! the security servers, and does nothing else: no checks, signatures or records. Two
//! of them in a row, with mutual TLS between them, are what the bus would cost if
//! signing and logging were free.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use lintas_certs::ca::Validity;
use lintas_certs::{Ca, Profile, Role, TrustStore, keys};
use lintas_transport::{Admission, Limits, RawCodec};
use tokio::net::TcpListener;
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Serves the echo application on `addr` until killed: the gRPC echo service, and on
/// another port of the same host a REST backend whose `POST /echo` answers the body it
/// was sent. Prints both addresses first, on one line.
pub async fn serve_echo(addr: &str) -> Result<()> {
    let grpc = TcpListener::bind(addr).await?;
    let host = grpc.local_addr()?.ip();
    let rest = TcpListener::bind((host, 0)).await?;
    let mut out = std::io::stdout();
    writeln!(out, "{} {}", grpc.local_addr()?, rest.local_addr()?).context("standard output")?;
    out.flush().context("standard output")?;
    let router = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: Bytes| async move { body }),
    );
    let admission = Admission::new("rest", Limits::default());
    let rest = lintas_transport::serve_http(rest, admission, router, std::future::pending());
    let grpc = lintas_examples::echo_server::serve(grpc, std::future::pending());
    let (_, grpc) = tokio::join!(rest, grpc);
    grpc?;
    Ok(())
}

/// Which side of the mutual TLS link between the two hops a relay is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// Takes plaintext calls (as a consumer endpoint in development mode) and passes
    /// them on over mutual TLS.
    First,
    /// Takes calls over mutual TLS (as a provider endpoint) and passes them on in
    /// plaintext to the application.
    Second,
}

/// Serves a relay hop on `addr` passing calls on to `upstream`, with the certificates
/// in `tls_dir` ([`make_certs`]), until killed; prints its address first.
pub async fn serve_relay(addr: &str, upstream: &str, tls_dir: &Path, side: Side) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let limits = Limits::default();
    let admission = Admission::new("relay", limits);
    let read = |name: &str| lintas_certs::files::read_cert(&tls_dir.join(name));
    let trust = TrustStore::new([read("ca.crt.pem")?.as_slice()])?;
    let upstream = match side {
        Side::First => {
            let cert = read("first.crt.pem")?;
            let key = keys::read(&tls_dir.join("first.key.pem"))?;
            let tls = lintas_transport::client_config(&trust, Role::Server, Some((&cert, &key)))?;
            lintas_transport::channel(upstream, tls)?
        }
        Side::Second => tonic::transport::Endpoint::from_shared(upstream.to_owned())?
            .tcp_nodelay(true)
            .connect_lazy(),
    };
    let routes =
        tonic::service::Routes::from(axum::Router::new().fallback_service(Relay(upstream)));
    announce(&listener)?;
    match side {
        Side::First => {
            lintas_transport::grpc_server(&limits)
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    lintas_transport::incoming_plain(listener, admission),
                    std::future::pending::<()>(),
                )
                .await?
        }
        Side::Second => {
            let cert = read("second.crt.pem")?;
            let key = keys::read(&tls_dir.join("second.key.pem"))?;
            let tls = lintas_transport::server_config(
                &cert,
                &key,
                &trust,
                lintas_transport::ClientAuth::Required,
            )?;
            lintas_transport::peer_grpc_server(&limits)
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    lintas_transport::incoming(listener, tls, admission),
                    std::future::pending::<()>(),
                )
                .await?
        }
    }
    Ok(())
}

/// Writes a throw-away CA and the two hops' TLS certificates (for 127.0.0.1) into `dir`.
pub fn make_certs(dir: &Path) -> Result<()> {
    let now = std::time::SystemTime::now();
    let validity = || Validity::starting(now, std::time::Duration::from_secs(86_400));
    let ca = Ca::create(&"ID".parse()?, validity()?)?;
    let write = |name: &str, der: &[u8]| {
        lintas_certs::files::write_new(
            &dir.join(name),
            lintas_certs::pem::cert_to_pem(der).as_bytes(),
            0o644,
        )
    };
    write("ca.crt.pem", ca.cert_der())?;
    for (name, server) in [
        ("first", "ID/GOV/RELAY/FIRST"),
        ("second", "ID/GOV/RELAY/SECOND"),
    ] {
        let key = keys::generate()?;
        keys::write(&dir.join(format!("{name}.key.pem")), &key)?;
        let profile = Profile::Server {
            id: server.parse()?,
            hosts: vec!["127.0.0.1".into()],
        };
        write(
            &format!("{name}.crt.pem"),
            &ca.issue_for_key(&key, &profile, validity()?)?,
        )?;
    }
    Ok(())
}

/// Prints the listener's address, the line the benchmark waits for.
fn announce(listener: &TcpListener) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "{}", listener.local_addr()?).context("standard output")?;
    out.flush().context("standard output")
}

/// Takes every gRPC call and passes it on unary.
#[derive(Clone)]
struct Relay(Channel);

impl tonic::codegen::Service<http::Request<axum::body::Body>> for Relay {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let forward = Forward {
            upstream: self.0.clone(),
            path: Arc::new(req.uri().path().to_owned()),
        };
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(forward, req).await) })
    }
}

struct Forward {
    upstream: Channel,
    path: Arc<String>,
}

impl tonic::server::UnaryService<Bytes> for Forward {
    type Response = Bytes;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, tonic::Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let mut grpc = tonic::client::Grpc::new(self.upstream.clone());
        let path = self.path.clone();
        Box::pin(async move {
            let path = PathAndQuery::try_from(path.as_str())
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            grpc.unary(request, path, RawCodec).await
        })
    }
}
