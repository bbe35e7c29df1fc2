//! One metrics registry per daemon, every name under `lintas_`. Daemons register their
//! counters and histograms once at start and record them at the edges of their work;
//! values that follow from state or time (a configuration's expiry, a log's size) are
//! sampled at each scrape ([`Metrics::sampled`]) instead of being kept up to date.
//!
//! Served as the Prometheus text format (0.0.4), or as OpenMetrics to a scraper that asks
//! for it.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::health::Health;

/// A label set as `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Buckets for latencies, in seconds: 100 µs to about 52 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 20)
}

/// Buckets for sizes, in bytes: 64 B to 64 MiB.
pub fn size_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(64.0, 4.0, 11)
}

/// Remembers up to a number of distinct label values; beyond it new ones are refused,
/// so values chosen by callers cannot grow a metric without bound.
pub struct LabelCap {
    max: usize,
    seen: Mutex<std::collections::HashSet<String>>,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        LabelCap {
            max,
            seen: Mutex::default(),
        }
    }

    /// Whether `value` may be a label: seen before, or room for it.
    pub fn admit(&self, value: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(value) {
            return true;
        }
        if seen.len() >= self.max {
            return false;
        }
        seen.insert(value.to_owned());
        true
    }
}

/// The metrics of one daemon.
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry for the daemon `daemon` (`security_server`, `registry`, `adapter`),
    /// holding `lintas_build_info` and `lintas_process_start_time_seconds`.
    pub fn new(daemon: &str) -> Arc<Self> {
        let metrics = Arc::new(Metrics {
            registry: Mutex::new(Registry::with_prefix("lintas")),
        });
        let labels: Labels = vec![
            ("daemon", daemon.to_owned()),
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ];
        metrics.sampled(
            "build_info",
            "The daemon and the lintas version it runs (always 1)",
            None,
            MetricType::Gauge,
            move || vec![(labels.clone(), 1.0)],
        );
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        metrics.sampled(
            "process_start_time",
            "When the daemon started, in seconds since the Unix epoch",
            Some(Unit::Seconds),
            MetricType::Gauge,
            move || vec![(Vec::new(), started)],
        );
        metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `metric` as `lintas_<name>` (counters get `_total`, a unit its suffix).
    pub fn register(&self, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric) {
        let mut registry = self.lock();
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, metric),
            None => registry.register(name, help, metric),
        }
    }

    pub fn collector(&self, collector: impl Collector) {
        self.lock().register_collector(Box::new(collector));
    }

    /// A gauge or counter whose series `sample` gives at each scrape.
    pub fn sampled(
        &self,
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        kind: MetricType,
        sample: impl Fn() -> Vec<(Labels, f64)> + Send + Sync + 'static,
    ) {
        self.collector(Sampled {
            name,
            help,
            unit,
            kind,
            sample: Box::new(sample),
        });
    }

    /// `lintas_ready` and `lintas_health_component{component,state}` from `health`,
    /// from one reading of it per scrape (probes can be costly: they check
    /// certificates).
    pub fn health(&self, health: Health) {
        self.collector(HealthCollector(health));
    }

    /// Connection metrics of each listener's admission layer.
    pub fn listeners(&self, listeners: Vec<Arc<lintas_transport::Admission>>) {
        let open = listeners.clone();
        self.sampled(
            "connections_open",
            "Connections open now, by listener",
            None,
            MetricType::Gauge,
            move || per_listener(&open, |s| s.open as f64),
        );
        let handshaking = listeners.clone();
        self.sampled(
            "connections_handshaking",
            "Connections still in their TLS handshake, by listener",
            None,
            MetricType::Gauge,
            move || per_listener(&handshaking, |s| s.handshaking as f64),
        );
        let accepted = listeners.clone();
        self.sampled(
            "connections_accepted",
            "Connections admitted, by listener",
            None,
            MetricType::Counter,
            move || per_listener(&accepted, |s| s.accepted as f64),
        );
        self.sampled(
            "connections_refused",
            "Connections refused or closed by a limit, by listener and reason",
            None,
            MetricType::Counter,
            move || {
                let mut series = Vec::new();
                for l in &listeners {
                    let stats = l.stats();
                    for (why, n) in lintas_transport::Refusal::ALL.iter().zip(stats.refused) {
                        series.push((
                            vec![
                                ("listener", l.name().to_owned()),
                                ("reason", why.as_str().to_owned()),
                            ],
                            n as f64,
                        ));
                    }
                }
                series
            },
        );
    }

    /// The Prometheus text format (version 0.0.4).
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector's error would be a bug.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.lock());
        out
    }

    /// OpenMetrics text.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock());
        out
    }
}

fn per_listener(
    listeners: &[Arc<lintas_transport::Admission>],
    value: impl Fn(&lintas_transport::admission::Stats) -> f64,
) -> Vec<(Labels, f64)> {
    listeners
        .iter()
        .map(|l| (vec![("listener", l.name().to_owned())], value(&l.stats())))
        .collect()
}

struct Sampled {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    sample: Box<dyn Fn() -> Vec<(Labels, f64)> + Send + Sync>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled").field("name", &self.name).finish()
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_series(
            &mut encoder,
            (self.name, self.help, self.unit.as_ref(), self.kind),
            (self.sample)(),
        )
    }
}

/// Encodes one family: `(name, help, unit, kind)` and its series.
fn encode_series(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, kind): (&str, &str, Option<&Unit>, MetricType),
    series: Vec<(Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in series {
        let labels: Vec<(Cow<'static, str>, String)> = labels
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .collect();
        let series = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => {
                prometheus_client::metrics::counter::ConstCounter::new(value.max(0.0))
                    .encode(series)?
            }
            _ => ConstGauge::new(value).encode(series)?,
        }
    }
    Ok(())
}

struct HealthCollector(Health);

impl std::fmt::Debug for HealthCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCollector").finish()
    }
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let report = self.0.report();
        encode_series(
            &mut encoder,
            (
                "ready",
                "1 when the daemon can serve (every component ready), 0 when not",
                None,
                MetricType::Gauge,
            ),
            vec![(Vec::new(), f64::from(u8::from(report.ready)))],
        )?;
        let components = report
            .components
            .into_iter()
            .map(|c| {
                let labels: Labels = vec![
                    ("component", c.name),
                    ("state", c.condition.state().to_owned()),
                ];
                (labels, 1.0)
            })
            .collect();
        encode_series(
            &mut encoder,
            (
                "health_component",
                "1 for each component's present state (ready, warning or not_ready)",
                None,
                MetricType::Gauge,
            ),
            components,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let metrics = Metrics::new("test");
        let calls = Family::<Vec<(&'static str, String)>, Counter>::default();
        metrics.register("calls", "Calls", None, calls.clone());
        calls
            .get_or_create(&vec![("side", "consumer".into())])
            .inc();
        let latency = Histogram::new(latency_buckets());
        metrics.register(
            "call_duration",
            "Call latency",
            Some(Unit::Seconds),
            latency.clone(),
        );
        latency.observe(0.002);
        metrics.listeners(vec![lintas_transport::Admission::new(
            "consumer",
            Default::default(),
        )]);
        let health = Health::new();
        health.component("log", crate::Condition::NotReady("disk full".into()));
        metrics.health(health);

        let text = metrics.text();
        for expected in [
            "# TYPE lintas_calls_total counter\n",
            "lintas_calls_total{side=\"consumer\"} 1\n",
            "# TYPE lintas_call_duration_seconds histogram\n",
            "lintas_call_duration_seconds_count 1\n",
            "lintas_build_info{daemon=\"test\",version=",
            "lintas_connections_open{listener=\"consumer\"} 0.0\n",
            "lintas_connections_refused_total{listener=\"consumer\",reason=\"idle_timeout\"} 0.0\n",
            "lintas_ready 0.0\n",
            "lintas_health_component{component=\"log\",state=\"not_ready\"} 1.0\n",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(metrics.openmetrics().ends_with("# EOF\n"));
    }
}
