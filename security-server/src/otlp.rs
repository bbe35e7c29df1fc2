//! Optional export of one span per exchange to an OpenTelemetry collector, over OTLP/HTTP
//! with JSON (`POST {otlp_endpoint}/v1/traces`), when `otlp_endpoint` is set; nothing is
//! sent otherwise, and nothing else depends on a collector. Spans wait in a bounded
//! queue and go in batches; when the collector is slow or away they are dropped and
//! counted, never waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::SecureRandom;
use serde_json::{Value, json};

/// Spans waiting for export at most.
const QUEUE: usize = 4096;
/// Spans per request at most.
const BATCH: usize = 512;
/// How long a batch may wait for more spans.
const LINGER: Duration = Duration::from_secs(1);
/// How long the collector may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One exchange as a span.
pub struct Span<'a> {
    pub traceparent: &'a str,
    /// `consumer` (a CLIENT span) or `provider` (a SERVER span).
    pub side: &'a str,
    /// `/package.Service/Method`.
    pub method: &'a str,
    pub start_unix_nanos: u128,
    pub duration: Duration,
    pub code: &'a str,
    pub attributes: Vec<(&'static str, String)>,
}

pub struct Exporter {
    url: String,
    server: String,
    tx: tokio::sync::mpsc::Sender<Value>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Value>>>,
    exported: AtomicU64,
    dropped: AtomicU64,
}

impl Exporter {
    /// An exporter to the collector at `endpoint` (`http://host:port`), for `server`.
    pub fn new(endpoint: &str, server: &str) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        Exporter {
            url: format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            server: server.to_owned(),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Spans exported and spans dropped.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.exported.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Queues `span`; never waits.
    pub fn export(&self, span: Span<'_>) {
        let Some(value) = span_json(&span) else {
            return;
        };
        if self.tx.try_send(value).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends queued spans in batches until `stop`.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        tokio::pin!(stop);
        let mut last_warning: Option<std::time::Instant> = None;
        loop {
            let first = tokio::select! {
                got = rx.recv() => match got { Some(v) => v, None => return },
                _ = &mut stop => return,
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(v)) => batch.push(v),
                    _ => break,
                }
            }
            let n = batch.len() as u64;
            match self.post(batch).await {
                Ok(()) => {
                    self.exported.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    // Logged at most once a minute: a collector away is not news each second.
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_warning = Some(std::time::Instant::now());
                        tracing::warn!(error = %e, url = %self.url, "OTLP export failed; spans dropped");
                    }
                }
            }
        }
    }

    async fn post(&self, spans: Vec<Value>) -> Result<(), String> {
        use http_body_util::Full;
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [
                attribute("service.name", "lintas-security-server"),
                attribute("lintas.server", &self.server),
            ]},
            "scopeSpans": [{"scope": {"name": "lintas", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
        }]});
        let uri: hyper::Uri = self.url.parse().map_err(|e| format!("{e}"))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>();
        let request = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(TIMEOUT, client.request(request))
            .await
            .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        Ok(())
    }
}

fn attribute(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// The OTLP/JSON form of `span`: ids in hex, times as decimal strings; none when the
/// trace context is not valid.
fn span_json(span: &Span<'_>) -> Option<Value> {
    let trace_id = crate::trace::trace_id_of(span.traceparent)?;
    let parent = span.traceparent.get(36..52)?;
    let mut id = [0u8; 8];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut id).ok()?;
    let end = span.start_unix_nanos + span.duration.as_nanos();
    let (kind, name) = match span.side {
        "consumer" => (3, format!("lintas consumer {}", span.method)),
        _ => (2, format!("lintas provider {}", span.method)),
    };
    let mut attributes: Vec<Value> = span
        .attributes
        .iter()
        .map(|(k, v)| attribute(k, v))
        .collect();
    attributes.push(attribute("rpc.system", "grpc"));
    attributes.push(attribute("rpc.grpc.status_code_name", span.code));
    Some(json!({
        "traceId": trace_id,
        "spanId": lintas_certs::hex(&id),
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": span.start_unix_nanos.to_string(),
        "endTimeUnixNano": end.to_string(),
        "attributes": attributes,
        // 1: ok, 2: error (OTLP status codes).
        "status": {"code": if span.code == "Ok" { 1 } else { 2 }},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_children_of_the_callers_span() {
        let span = Span {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            side: "provider",
            method: "/a.v1.A/Get",
            start_unix_nanos: 1_000,
            duration: Duration::from_nanos(500),
            code: "NotFound",
            attributes: vec![("lintas.client", "ID/GOV/A/B".into())],
        };
        let v = span_json(&span).unwrap();
        assert_eq!(v["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(v["spanId"].as_str().unwrap().len(), 16);
        assert_eq!(v["kind"], 2);
        assert_eq!(v["endTimeUnixNano"], "1500");
        assert_eq!(v["status"]["code"], 2);
        assert_eq!(v["attributes"][0]["value"]["stringValue"], "ID/GOV/A/B");
        assert!(
            span_json(&Span {
                traceparent: "junk",
                ..span
            })
            .is_none()
        );
    }
}
