//! How each exchange ended, recorded once at each endpoint's edge: the metrics
//! (exchanges by outcome, latency of the whole and of its parts, bytes) and the
//! operational monitoring record. The exchange code notes the time its parts take in a
//! [`Progress`] as it goes; the edge hands everything to [`finished`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lintas_ops::Metrics;
use lintas_ops::metrics::Labels;
use lintas_ops::prometheus_client::metrics::counter::Counter;
use lintas_ops::prometheus_client::metrics::family::Family;
use lintas_ops::prometheus_client::metrics::histogram::Histogram;
use lintas_ops::prometheus_client::registry::Unit;

use crate::opmon::OpMon;
use crate::otlp::Exporter;

/// The parts of an exchange whose time is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a header's (batch) signature.
    Signing,
    /// Waiting for records to be durable.
    Durable,
    /// The provider's server, from sending the request to its answer (consumer side).
    Peer,
    /// The application (provider side).
    App,
}

impl Stage {
    const ALL: [Stage; 4] = [Stage::Signing, Stage::Durable, Stage::Peer, Stage::App];

    fn as_str(self) -> &'static str {
        match self {
            Stage::Signing => "signing",
            Stage::Durable => "durable_write",
            Stage::Peer => "peer",
            Stage::App => "application",
        }
    }
}

#[derive(Debug, Default)]
struct Measured {
    took: [Duration; 4],
    seen: [bool; 4],
    peer: String,
    /// The provider's checks accepted the request, so what its header says is true.
    verified: bool,
}

/// What the exchange code learns as it goes: the time each part took and the peer.
#[derive(Debug, Default)]
pub struct Progress {
    inner: Mutex<Measured>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Measured> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `took` to `stage`.
    pub fn add(&self, stage: Stage, took: Duration) {
        let mut m = self.lock();
        m.took[stage as usize] += took;
        m.seen[stage as usize] = true;
    }

    /// Times `work` as `stage`.
    pub async fn time<T>(&self, stage: Stage, work: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = work.await;
        self.add(stage, started.elapsed());
        out
    }

    /// The request passed the provider's checks.
    pub fn verified(&self) {
        self.lock().verified = true;
    }

    pub fn set_peer(&self, peer: &str) {
        self.lock().peer = peer.to_owned();
    }

    /// Each measured stage's time.
    pub fn stages(&self) -> Vec<(Stage, Duration)> {
        let m = self.lock();
        Stage::ALL
            .iter()
            .filter(|s| m.seen[**s as usize])
            .map(|s| (*s, m.took[*s as usize]))
            .collect()
    }

    fn get(&self, stage: Stage) -> Duration {
        self.lock().took[stage as usize]
    }

    fn peer(&self) -> String {
        self.lock().peer.clone()
    }
}

/// Everything known about an exchange once it has ended at this server.
pub struct Finished<'a> {
    pub exchanged: Exchanged<'a>,
    pub started_unix_ms: i64,
    pub message_id: &'a str,
    pub traceparent: &'a str,
    pub user_id: &'a str,
    pub progress: &'a Progress,
}

/// Where ended exchanges go: the metrics, the monitoring records and, when a collector
/// is configured, spans.
pub struct Outcomes {
    /// This server's id, as records and spans name it.
    pub server: String,
    pub exchanges: ExchangeMetrics,
    pub opmon: Arc<OpMon>,
    /// The key end users' ids are kept under in monitoring records (none: as given).
    pub user_key: Option<[u8; 32]>,
    pub otlp: Option<Arc<Exporter>>,
}

impl Outcomes {
    /// Records an ended exchange in the metrics and the operational monitoring. On the
    /// provider side a request the checks refused is labelled `unverified` in the
    /// metrics (anyone with a peer certificate can claim anything), and its monitoring
    /// record keeps the claimed values marked as claims.
    pub fn finished(&self, f: Finished<'_>) {
        finished(self, f)
    }
}

fn finished(s: &Outcomes, mut f: Finished<'_>) {
    let unverified = f.exchanged.side == "provider" && !f.progress.lock().verified;
    let e = &f.exchanged;
    let (service, method) = split_method(e.method);
    let trace_id = crate::trace::trace_id_of(f.traceparent).unwrap_or_default();
    if let Some(exporter) = &s.otlp {
        exporter.export(crate::otlp::Span {
            traceparent: f.traceparent,
            side: e.side,
            method: e.method,
            start_unix_nanos: u128::try_from(f.started_unix_ms).unwrap_or(0) * 1_000_000,
            duration: e.elapsed,
            code: &e.code,
            attributes: vec![
                ("lintas.server", s.server.clone()),
                ("lintas.client", e.client.to_owned()),
                ("lintas.provider", e.provider.to_owned()),
                ("lintas.message_id", f.message_id.to_owned()),
                ("lintas.peer_server", f.progress.peer()),
                ("lintas.error_source", e.source.to_owned()),
                ("rpc.service", service.to_owned()),
                ("rpc.method", method.to_owned()),
            ],
        });
    }
    s.opmon.record(lintas_proto::opmon::v1::OpRecord {
        time_unix_ms: f.started_unix_ms,
        side: e.side.into(),
        server: s.server.clone(),
        message_id: f.message_id.into(),
        client: e.client.into(),
        provider: e.provider.into(),
        service: service.into(),
        method: method.into(),
        peer_server: f.progress.peer(),
        trace_id: trace_id.into(),
        user_id: crate::opmon::user_id(f.user_id, s.user_key.as_ref()),
        request_bytes: (if e.side == "consumer" {
            e.bytes_out
        } else {
            e.bytes_in
        }) as u64,
        response_bytes: (if e.side == "consumer" {
            e.bytes_in
        } else {
            e.bytes_out
        }) as u64,
        code: e.code.clone(),
        error_source: e.source.into(),
        total_us: micros(e.elapsed),
        signing_us: micros(f.progress.get(Stage::Signing)),
        durable_us: micros(f.progress.get(Stage::Durable)),
        peer_us: micros(f.progress.get(Stage::Peer)),
        app_us: micros(f.progress.get(Stage::App)),
        unverified,
    });
    if unverified {
        for label in [
            &mut f.exchanged.client,
            &mut f.exchanged.provider,
            &mut f.exchanged.method,
        ] {
            *label = "unverified";
        }
    }
    s.exchanges.record(f.exchanged, f.progress);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `(service, method)` of `/package.Service/Method`.
fn split_method(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

/// Distinct (side, client, provider, service, method) series the exchange metrics label;
/// beyond it new ones are counted under `other`, so callers cannot grow them unbounded.
const MAX_EXCHANGE_SERIES: usize = 4096;

/// What one exchange came to, for the metrics.
pub struct Exchanged<'a> {
    /// `consumer` or `provider`.
    pub side: &'static str,
    pub client: &'a str,
    pub provider: &'a str,
    /// `/package.Service/Method`.
    pub method: &'a str,
    /// `Ok`, or the gRPC code's name.
    pub code: String,
    /// Who produced an error (`consumer-server`, `provider-server`, `provider-app`);
    /// empty when the call was answered.
    pub source: &'a str,
    pub elapsed: Duration,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

/// Exchanges by side, client, provider, service, method and outcome, with their
/// latency and bytes: recorded once per exchange at each endpoint's edge.
#[derive(Clone)]
pub struct ExchangeMetrics {
    exchanges: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    stages: Family<Labels, Histogram>,
    bytes: Family<Labels, Counter>,
    /// Attempts that did not reach the provider's application and were tried again on
    /// another server, by the gRPC code the failed attempt ended with.
    retries: Family<Labels, Counter>,
    /// Calls refused for being over a quota, by client, provider and service.
    quota_refusals: Family<Labels, Counter>,
    series: Arc<lintas_ops::metrics::LabelCap>,
}

impl Default for ExchangeMetrics {
    fn default() -> Self {
        ExchangeMetrics {
            exchanges: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(lintas_ops::metrics::latency_buckets())
            }),
            stages: Family::new_with_constructor(|| {
                Histogram::new(lintas_ops::metrics::latency_buckets())
            }),
            bytes: Family::default(),
            retries: Family::default(),
            quota_refusals: Family::default(),
            series: Arc::new(lintas_ops::metrics::LabelCap::new(MAX_EXCHANGE_SERIES)),
        }
    }
}

impl ExchangeMetrics {
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "exchange_stage_duration",
            "Time the parts of exchanges took, by side and stage (signing, durable_write, peer, application)",
            Some(Unit::Seconds),
            self.stages.clone(),
        );
        metrics.register(
            "exchanges",
            "Exchanges, by side, client, provider, service, method, gRPC code and error source",
            None,
            self.exchanges.clone(),
        );
        metrics.register(
            "exchange_duration",
            "Time from receiving a call to answering it, by side, service and method",
            Some(Unit::Seconds),
            self.duration.clone(),
        );
        metrics.register(
            "exchange_message",
            "Message bytes received (in) and sent (out), by side and service",
            Some(Unit::Bytes),
            self.bytes.clone(),
        );
        metrics.register(
            "exchange_retries",
            "Attempts that did not reach the provider's application and were retried on another of its servers, by the failed attempt's gRPC code",
            None,
            self.retries.clone(),
        );
        metrics.register(
            "quota_refusals",
            "Calls this provider server refused for being over a quota, by client, provider and service",
            None,
            self.quota_refusals.clone(),
        );
    }

    /// Counts a call refused for being over a quota.
    pub fn quota_refused(
        &self,
        client: &lintas_identifiers::ClientId,
        provider: &lintas_identifiers::SubsystemId,
        method: &lintas_identifiers::MethodPath,
    ) {
        let key = format!("quota {client} {provider} {}", method.service);
        let labels = if self.series.admit(&key) {
            [
                client.to_string(),
                provider.to_string(),
                method.service.to_string(),
            ]
        } else {
            ["other".into(), "other".into(), "other".into()]
        };
        let [client, provider, service] = labels;
        self.quota_refusals
            .get_or_create(&vec![
                ("client", client),
                ("provider", provider),
                ("service", service),
            ])
            .inc();
    }

    /// Counts an attempt that ended with `code` before reaching the application and is
    /// tried again on another server.
    pub fn retried(&self, code: tonic::Code) {
        self.retries
            .get_or_create(&vec![("code", format!("{code:?}"))])
            .inc();
    }

    pub fn record(&self, e: Exchanged<'_>, progress: &Progress) {
        for (stage, took) in progress.stages() {
            self.stages
                .get_or_create(&vec![
                    ("side", e.side.to_owned()),
                    ("stage", stage.as_str().to_owned()),
                ])
                .observe(took.as_secs_f64());
        }
        let (service, method) = split_method(e.method);
        let key = format!("{} {} {} {}", e.side, e.client, e.provider, e.method);
        let (client, provider, service, method) = if self.series.admit(&key) {
            (e.client, e.provider, service, method)
        } else {
            ("other", "other", "other", "other")
        };
        let side = ("side", e.side.to_owned());
        self.exchanges
            .get_or_create(&vec![
                side.clone(),
                ("client", client.to_owned()),
                ("provider", provider.to_owned()),
                ("service", service.to_owned()),
                ("method", method.to_owned()),
                ("code", e.code),
                ("source", e.source.to_owned()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![
                side.clone(),
                ("service", service.to_owned()),
                ("method", method.to_owned()),
            ])
            .observe(e.elapsed.as_secs_f64());
        for (direction, n) in [("in", e.bytes_in), ("out", e.bytes_out)] {
            self.bytes
                .get_or_create(&vec![
                    side.clone(),
                    ("service", service.to_owned()),
                    ("direction", direction.to_owned()),
                ])
                .inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_are_labelled_within_a_bound() {
        let metrics = Metrics::new("test");
        let exchanges = ExchangeMetrics::default();
        let progress = Progress::default();
        progress.add(Stage::Signing, Duration::from_micros(300));
        exchanges.register(&metrics);
        let record = |method: &str, code: &str| {
            exchanges.record(
                Exchanged {
                    side: "consumer",
                    client: "ID/GOV/A/B",
                    provider: "ID/GOV/C/D",
                    method,
                    code: code.into(),
                    source: if code == "Ok" { "" } else { "provider-app" },
                    elapsed: Duration::from_millis(3),
                    bytes_in: 10,
                    bytes_out: 20,
                },
                &progress,
            )
        };
        record("/a.v1.A/Get", "Ok");
        record("/a.v1.A/Get", "NotFound");
        for n in 0..MAX_EXCHANGE_SERIES {
            record(&format!("/a.v1.A/M{n}"), "Ok");
        }
        let text = metrics.text();
        for expected in [
            "lintas_exchanges_total{side=\"consumer\",client=\"ID/GOV/A/B\",provider=\"ID/GOV/C/D\",service=\"a.v1.A\",method=\"Get\",code=\"Ok\",source=\"\"} 1\n",
            "code=\"NotFound\",source=\"provider-app\"} 1\n",
            "lintas_exchange_message_bytes_total{side=\"consumer\",service=\"a.v1.A\",direction=\"out\"}",
            "lintas_exchange_stage_duration_seconds_count{side=\"consumer\",stage=\"signing\"}",
            "lintas_exchanges_total{side=\"consumer\",client=\"other\",provider=\"other\",service=\"other\",method=\"other\",code=\"Ok\",source=\"\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected} missing");
        }
    }
}
