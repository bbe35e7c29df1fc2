//! The registry's health components and metrics, in one place: the store (a failed write
//! stops every change until a restart), the published configuration (it must not expire
//! unseen), the registry's own certificates; and what it holds and serves.

use std::sync::Arc;
use std::time::Duration;

use lintas_ops::metrics::Labels;
use lintas_ops::prometheus_client::metrics::MetricType;
use lintas_ops::prometheus_client::metrics::counter::Counter;
use lintas_ops::prometheus_client::metrics::family::Family;
use lintas_ops::prometheus_client::registry::Unit;
use lintas_ops::{Condition, Health, Metrics, Ops};

use crate::Paths;
use crate::registry::Registry;

/// Builds the registry's health and metrics.
pub(crate) fn install(
    registry: &Arc<Registry>,
    paths: &Paths,
    warn_cert_expiry: Duration,
) -> Result<Ops, crate::RegistryServeError> {
    let health = Health::new();
    let metrics = Metrics::new("registry");

    let r = registry.clone();
    health.probe("store", move || {
        if r.is_poisoned() {
            Condition::NotReady(if r.recovers_by_reloading() {
                "a write to the registry database failed; changes are refused until it answers again".into()
            } else {
                "a write to the registry database failed; changes are refused until the registry is restarted".into()
            })
        } else {
            Condition::Ready
        }
    });
    let r = registry.clone();
    health.probe("configuration", move || {
        published_condition(lintas_globalconf::expiry_of(&r.latest_conf()), r.unix_now())
    });
    let certs = [
        ("TLS", crate::read_cert(&paths.tls_cert())?),
        (
            "configuration signing",
            crate::read_cert(&paths.conf_cert())?,
        ),
        ("time-stamping", crate::read_cert(&paths.tsa_cert())?),
        ("CA", crate::read_cert(&paths.ca_cert())?),
    ];
    let certs = Arc::new(certs);
    let r = registry.clone();
    let held = certs.clone();
    health.probe("certificates", move || {
        let now = r.clock_now();
        held.iter()
            .map(|(what, der)| {
                lintas_ops::health::cert_condition(what, der, Ok(()), now, warn_cert_expiry)
            })
            .fold(Condition::Ready, lintas_ops::health::worst)
    });
    metrics.health(health.clone());

    let r = registry.clone();
    metrics.sampled(
        "registry_members",
        "Members registered",
        None,
        MetricType::Gauge,
        move || vec![(Vec::new(), r.counts().members as f64)],
    );
    let r = registry.clone();
    metrics.sampled(
        "registry_servers",
        "Security servers registered",
        None,
        MetricType::Gauge,
        move || vec![(Vec::new(), r.counts().servers as f64)],
    );
    let r = registry.clone();
    metrics.sampled(
        "registry_pending_registrations",
        "Registration requests waiting for an administrator",
        None,
        MetricType::Gauge,
        move || vec![(Vec::new(), r.counts().pending_registrations as f64)],
    );
    let r = registry.clone();
    metrics.sampled(
        "globalconf_serial",
        "Serial of the newest published global configuration (its generation)",
        None,
        MetricType::Gauge,
        move || vec![(Vec::new(), r.counts().conf_serial as f64)],
    );
    let r = registry.clone();
    metrics.sampled(
        "globalconf_expiry",
        "Seconds until the newest published global configuration expires",
        Some(Unit::Seconds),
        MetricType::Gauge,
        move || match lintas_globalconf::expiry_of(&r.latest_conf()) {
            Some(at) => vec![(Vec::new(), (at - r.unix_now()) as f64)],
            None => Vec::new(),
        },
    );
    let r = registry.clone();
    metrics.sampled(
        "certificate_expiry",
        "Seconds until each of the registry's own certificates expires",
        Some(Unit::Seconds),
        MetricType::Gauge,
        move || {
            let now = r.clock_now();
            certs
                .iter()
                .filter_map(|(what, der)| {
                    let labels: Labels = vec![("certificate", (*what).to_owned())];
                    Some((labels, lintas_ops::health::seconds_left(der, now)?))
                })
                .collect()
        },
    );
    Ok(Ops {
        health,
        metrics: metrics.clone(),
    })
}

/// The published configuration: not ready once it has expired (re-signing failed).
fn published_condition(expires_at: Option<i64>, now: i64) -> Condition {
    match expires_at {
        None => Condition::NotReady("no signed global configuration is published".into()),
        Some(at) if at <= now => Condition::NotReady(format!(
            "the published global configuration expired {} s ago; re-signing is failing",
            now - at
        )),
        Some(_) => Condition::Ready,
    }
}

/// Counters of the plain HTTP port.
#[derive(Clone)]
pub(crate) struct HttpMetrics {
    /// Configuration requests by answer (`full`, `gzip`, `not_modified`).
    pub conf_fetches: Family<Labels, Counter>,
    pub conf_bytes: Counter,
    pub tsa_requests: Family<Labels, Counter>,
}

impl HttpMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = HttpMetrics {
            conf_fetches: Family::default(),
            conf_bytes: Counter::default(),
            tsa_requests: Family::default(),
        };
        metrics.register(
            "globalconf_fetches",
            "Requests for the signed global configuration, by answer (full, gzip, not_modified)",
            None,
            m.conf_fetches.clone(),
        );
        metrics.register(
            "globalconf_served",
            "Body bytes sent in answers to configuration requests",
            Some(Unit::Bytes),
            m.conf_bytes.clone(),
        );
        metrics.register(
            "tsa_requests",
            "Time-stamp requests, by result (answered, failed)",
            None,
            m.tsa_requests.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_publication_is_not_ready() {
        let cases = [
            (None, 100, "not_ready"),
            (Some(50), 100, "not_ready"),
            (Some(100), 100, "not_ready"),
            (Some(101), 100, "ready"),
        ];
        for (at, now, state) in cases {
            assert_eq!(
                published_condition(at, now).state(),
                state,
                "{at:?} at {now}"
            );
        }
    }
}
