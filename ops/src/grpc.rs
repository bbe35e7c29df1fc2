//! Request metrics for a gRPC server as a tower layer: requests by service, method and
//! status code, and their latency. Only the services the daemon names become labels
//! (anything else is `unknown`), and at most [`MAX_METHODS`] distinct methods are
//! labelled, so a client cannot grow the series without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::Metrics;
use crate::metrics::{LabelCap, Labels, latency_buckets};

/// Distinct (service, method) pairs labelled; more are counted as `other`.
pub const MAX_METHODS: usize = 512;

struct Inner {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    services: Vec<String>,
    methods: LabelCap,
}

/// Counts every request of the server it wraps.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    inner: Arc<Inner>,
}

impl GrpcMetricsLayer {
    /// Registers `lintas_grpc_requests_total` and `lintas_grpc_request_duration_seconds`
    /// on `metrics`; `services` are the full names served.
    pub fn new(metrics: &Metrics, services: &[&str]) -> Self {
        let requests = Family::<Labels, Counter>::default();
        let duration =
            Family::<Labels, Histogram>::new_with_constructor(new_latency_histogram as fn() -> _);
        metrics.register(
            "grpc_requests",
            "gRPC requests served, by service, method and status code",
            None,
            requests.clone(),
        );
        metrics.register(
            "grpc_request_duration",
            "Time to answer a gRPC request (its headers), by service and method",
            Some(Unit::Seconds),
            duration.clone(),
        );
        GrpcMetricsLayer {
            inner: Arc::new(Inner {
                requests,
                duration,
                services: services.iter().map(|s| (*s).to_owned()).collect(),
                methods: LabelCap::new(MAX_METHODS),
            }),
        }
    }
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, service: S) -> Self::Service {
        GrpcMetricsService {
            service,
            inner: self.inner.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    service: S,
    inner: Arc<Inner>,
}

/// `(service, method)` labels of a request path `/package.Service/Method`.
fn labels_of(inner: &Inner, path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !inner.services.iter().any(|s| s == service) {
        return ("unknown".into(), "unknown".into());
    }
    if inner.methods.admit(&format!("{service}/{method}")) {
        (service.to_owned(), method.to_owned())
    } else {
        (service.to_owned(), "other".into())
    }
}

/// The gRPC status name of a response: its `grpc-status` header (a trailers-only
/// answer, which is how errors are sent) or OK (the status then comes in trailers).
fn code_of(headers: &http::HeaderMap) -> String {
    match headers.get("grpc-status") {
        Some(v) => format!("{:?}", tonic::Code::from_bytes(v.as_bytes())),
        None => "Ok".into(),
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = labels_of(&self.inner, request.uri().path());
        let inner = self.inner.clone();
        let started = Instant::now();
        let answer = self.service.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(r) => code_of(r.headers()),
                Err(_) => "TransportError".into(),
            };
            inner
                .duration
                .get_or_create(&vec![
                    ("service", service.clone()),
                    ("method", method.clone()),
                ])
                .observe(started.elapsed().as_secs_f64());
            inner
                .requests
                .get_or_create(&vec![
                    ("service", service),
                    ("method", method),
                    ("code", code),
                ])
                .inc();
            answer
        })
    }
}

/// Keeps the gRPC health service in step with `health`: `""` and each of `services`
/// are SERVING while the daemon is ready and NOT_SERVING while not, changed only when
/// readiness changes. Returns when `stop` completes.
pub async fn follow_health(
    health: crate::Health,
    reporter: tonic_health::server::HealthReporter,
    services: Vec<&'static str>,
    stop: impl Future<Output = ()>,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(None::<bool>);
    let forward = async {
        while rx.changed().await.is_ok() {
            let Some(ready) = *rx.borrow_and_update() else {
                continue;
            };
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            for name in &services {
                reporter.set_service_status(*name, status).await;
            }
        }
    };
    let watch = health.watch(std::time::Duration::from_secs(1), stop, |report| {
        tx.send_if_modified(|held| {
            let changed = *held != Some(report.ready);
            *held = Some(report.ready);
            changed
        });
    });
    tokio::select! {
        () = watch => {}
        () = forward => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_services_and_a_bounded_number_of_methods_become_labels() {
        let metrics = Metrics::new("test");
        let layer = GrpcMetricsLayer::new(&metrics, &["a.v1.A"]);
        let cases = [
            ("/a.v1.A/Get", ("a.v1.A", "Get")),
            ("/b.v1.B/Get", ("unknown", "unknown")),
            ("/", ("unknown", "unknown")),
            ("garbage", ("unknown", "unknown")),
        ];
        for (path, (service, method)) in cases {
            assert_eq!(
                labels_of(&layer.inner, path),
                (service.to_owned(), method.to_owned()),
                "{path}"
            );
        }
        for n in 0..MAX_METHODS * 2 {
            labels_of(&layer.inner, &format!("/a.v1.A/M{n}"));
        }
        assert_eq!(labels_of(&layer.inner, "/a.v1.A/New").1, "other");
        assert_eq!(labels_of(&layer.inner, "/a.v1.A/Get").1, "Get");
    }

    #[test]
    fn codes_come_from_trailers_only_answers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), "Ok");
        headers.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(code_of(&headers), "PermissionDenied");
    }
}
