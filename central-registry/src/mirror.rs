//! A configuration mirror (X-Road's configuration proxy): a host in a region that
//! fetches the signed global configuration from the registry, verifies it against the
//! trust anchor exactly as a security server does (signature, signer, expiry, no
//! rollback, no equivocation), keeps it on disk, and serves it to the region's servers
//! with the same `ETag`, `304` and gzip as the registry. Servers verify what they fetch
//! themselves, so they need not trust the mirror: it can only serve what the registry
//! signed, or nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use lintas_globalconf::publish::PublishedCache;
use lintas_globalconf::{Anchor, Clock, ConfClient};
use lintas_ops::{Condition, Health, Metrics, Ops};
use tokio::net::TcpListener;

use crate::RegistryServeError;
use crate::ops::HttpMetrics;

/// What a mirror needs.
pub struct MirrorOptions {
    pub anchor: Anchor,
    /// Where the verified copy is kept across restarts.
    pub dir: PathBuf,
    /// Where to fetch from (empty: the anchor's configuration URLs).
    pub upstream: Vec<String>,
    /// How often to fetch.
    pub poll: Duration,
    pub limits: lintas_transport::Limits,
}

/// The listeners a mirror serves on, already bound.
pub struct MirrorListeners {
    /// `/globalconf` and `/healthz` for the region's servers (plain HTTP).
    pub http: TcpListener,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub ops: TcpListener,
}

/// Serves the mirror until `shutdown` completes.
pub async fn serve_mirror(
    opts: MirrorOptions,
    clock: Arc<dyn Clock>,
    listeners: MirrorListeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RegistryServeError> {
    std::fs::create_dir_all(&opts.dir).map_err(|source| RegistryServeError::Io {
        what: opts.dir.display().to_string(),
        source,
    })?;
    // An anchor a configuration announced (a rotation of the registry's keys) is kept
    // beside the cache and used from then on, if it is the given one's successor.
    let adopted = opts.dir.join("anchor.toml");
    let anchor = match Anchor::load(&adopted) {
        Ok(a) if a.instance == opts.anchor.instance && a.version >= opts.anchor.version => a,
        _ => opts.anchor.clone(),
    };
    let mut client = ConfClient::open(anchor, &opts.dir, clock.clone())?.adopting_anchors(adopted);
    if !opts.upstream.is_empty() {
        client = client.with_urls(opts.upstream.clone());
    }
    let ops = Ops {
        health: Health::new(),
        metrics: Metrics::new("mirror"),
    };
    // Ready while it holds a valid document (an expired one is not served).
    let held = client.clone();
    ops.health
        .probe("configuration", move || match held.current() {
            Ok(_) => Condition::Ready,
            Err(e) => Condition::NotReady(e.to_string()),
        });
    let sampled = client.clone();
    ops.metrics.sampled(
        "globalconf_serial",
        "Serial of the verified global configuration the mirror serves (0: none)",
        None,
        lintas_ops::prometheus_client::metrics::MetricType::Gauge,
        move || vec![(Vec::new(), sampled.held_serial().unwrap_or(0) as f64)],
    );
    ops.metrics.health(ops.health.clone());
    let http_metrics = HttpMetrics::register(&ops.metrics);
    let stop = lintas_transport::Stop::on(shutdown);

    let served = Arc::new(PublishedCache::default());
    let serving = client.clone();
    let public_health = ops.health.clone();
    let app = axum::Router::new()
        .route(
            "/globalconf",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let held = serving.current();
                let (served, metrics) = (served.clone(), http_metrics.clone());
                async move {
                    let conf = match held {
                        Ok(c) => c,
                        Err(e) => {
                            return (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                format!("the mirror holds no valid configuration: {e}\n"),
                            )
                                .into_response();
                        }
                    };
                    let published = served.get(Arc::new(conf.blob.clone()));
                    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
                    let answer = published.answer(
                        header(axum::http::header::IF_NONE_MATCH),
                        header(axum::http::header::ACCEPT_ENCODING),
                    );
                    crate::published::response(&published, answer, &metrics)
                }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(move || {
                let ready = public_health.report().ready;
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ok\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    let http_admission = lintas_transport::Admission::new("mirror", opts.limits);
    let ops_admission = lintas_transport::Admission::new("ops", opts.limits);
    ops.metrics
        .listeners(vec![http_admission.clone(), ops_admission.clone()]);
    if let Ok(addr) = listeners.http.local_addr() {
        tracing::info!(%addr, "configuration mirror: /globalconf");
    }

    let poll_stop = stop.clone();
    let poller = async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), client.fetch()).await {
                Ok(Ok(c)) => tracing::debug!(serial = c.serial(), "configuration fetched"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "configuration not fetched; serving the held one while it is valid")
                }
                Err(_) => tracing::warn!(
                    "the registry did not answer; serving the held configuration while it is valid"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(opts.poll) => {}
                _ = poll_stop.stopped() => return,
            }
        }
    };
    tokio::join!(
        stop.part(lintas_transport::serve_http(
            listeners.http,
            http_admission,
            app,
            stop.stopped()
        )),
        stop.part(lintas_ops::serve(
            listeners.ops,
            ops_admission,
            ops,
            stop.stopped()
        )),
        poller,
    );
    tracing::info!("configuration mirror stopped");
    Ok(())
}
