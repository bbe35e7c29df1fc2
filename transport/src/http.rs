//! HTTP serving through the admission layer: the limits every gRPC server gets, and a
//! plain HTTP server (HTTP/1.1 and HTTP/2) for axum routers with header and request
//! deadlines.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::admission::{Admission, Conn, Limits};

/// Streams a peer may open and reset before they are served; more closes the
/// connection (protection against rapid resets).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset for a peer's protocol errors before it closes the
/// connection.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// A tonic server builder with the HTTP/2 limits of `limits`. The server sends no
/// keepalive pings of its own: every answered ping would count as activity, and a
/// connection without a byte either way for the idle timeout is to be closed.
pub fn grpc_server(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
}

/// HTTP/2 flow-control windows between security servers: a stream may have this many
/// bytes in flight before the receiver makes room (room for a whole body chunk and its
/// signed header, so a chunk crosses in one round trip), and a connection twice that.
/// Only registered security servers reach the provider port (mutual TLS), so the
/// memory a connection can fill stays bounded by the connection window.
pub const PEER_STREAM_WINDOW: u32 = 2 << 20;
pub const PEER_CONNECTION_WINDOW: u32 = 4 << 20;

/// [`grpc_server`] for the provider port, with the larger windows between security
/// servers.
pub fn peer_grpc_server(limits: &Limits) -> tonic::transport::Server {
    grpc_server(limits)
        .initial_stream_window_size(Some(PEER_STREAM_WINDOW))
        .initial_connection_window_size(Some(PEER_CONNECTION_WINDOW))
}

/// Longest a plain HTTP request may take to send its headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over plain HTTP on `listener`, each connection admitted by
/// `admission`, until `shutdown` completes; connections then finish their requests.
/// Each request carries `axum::extract::ConnectInfo<SocketAddr>` of its peer.
/// Headers must arrive within [`HEADER_READ_TIMEOUT`] and a whole request (its body
/// included) be answered within the limits' `request_timeout_secs`, or it gets 408.
pub async fn serve_http(
    listener: TcpListener,
    admission: Arc<Admission>,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let limits = *admission.limits();
    let incoming = crate::incoming_plain(listener, admission);
    serve_router(incoming, |c: &Conn| c.peer(), &limits, router, shutdown).await;
}

/// [`serve_http`] over TLS with `tls` (handshakes bounded as on every listener).
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    admission: Arc<Admission>,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let limits = *admission.limits();
    let incoming = crate::incoming(listener, tls, admission);
    serve_router(
        incoming,
        |c: &tokio_rustls::server::TlsStream<Conn>| c.get_ref().0.peer(),
        &limits,
        router,
        shutdown,
    )
    .await;
}

async fn serve_router<C>(
    mut incoming: impl tokio_stream::Stream<Item = Result<C, std::io::Error>> + Unpin,
    peer_of: impl Fn(&C) -> std::net::SocketAddr,
    limits: &Limits,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let request_timeout = limits.request_timeout();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .keep_alive_interval(None);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let conn: C = tokio::select! {
            _ = &mut shutdown => break,
            next = tokio_stream::StreamExt::next(&mut incoming) => match next {
                Some(Ok(conn)) => conn,
                _ => break,
            },
        };
        let router = router.clone();
        let peer = peer_of(&conn);
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let router = router.clone();
                let mut req = req;
                // Handlers learn the caller's address with axum's ConnectInfo.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                async move {
                    let answer = tokio::time::timeout(
                        request_timeout,
                        tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new)),
                    )
                    .await;
                    Ok::<_, Infallible>(match answer {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => {
                            let mut r = axum::response::Response::new(axum::body::Body::from(
                                "request not completed in time\n",
                            ));
                            *r.status_mut() = axum::http::StatusCode::REQUEST_TIMEOUT;
                            r
                        }
                    })
                }
            });
        let connection = builder
            .serve_connection(TokioIo::new(conn), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
