//! The operations listener: `/metrics`, `/healthz` (the process answers) and `/readyz`
//! (it can serve; 503 with the reasons when not), over plain HTTP through the admission
//! layer. It belongs on loopback or a management network, never on a public port.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::{Health, Metrics};

/// What the operations listener serves.
#[derive(Clone, Debug)]
pub struct Ops {
    pub health: Health,
    pub metrics: Arc<Metrics>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `ops` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    admission: Arc<lintas_transport::Admission>,
    ops: Ops,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operations listener: /metrics, /healthz, /readyz");
    }
    lintas_transport::serve_http(listener, admission, router(ops), shutdown).await;
}

fn router(ops: Ops) -> axum::Router {
    let metrics = ops.metrics.clone();
    let health = ops.health;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                async move {
                    let wants_openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    if wants_openmetrics {
                        ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.openmetrics())
                    } else {
                        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], metrics.text())
                    }
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "alive\n" }))
        .route(
            "/readyz",
            axum::routing::get(move |headers: HeaderMap, uri: axum::http::Uri| {
                let health = health.clone();
                async move { readyz(&health, &headers, &uri) }
            }),
        )
}

/// 200 when ready, 503 when not; plain words, or JSON when asked for (`?format=json` or
/// `Accept: application/json`).
fn readyz(health: &Health, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
    let report = health.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let json = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"))
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
    if json {
        let body = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.to_string(),
        )
            .into_response()
    }
}
