//! The security server's health components and state metrics, in one place: what makes
//! the server not ready (or worth a warning), and the values sampled at each scrape. The
//! decisions are plain functions over what they read, tested with tables; the daemon
//! wires them to its parts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lintas_globalconf::{ConfError, VerifiedConf};
use lintas_ops::Condition;
use lintas_ops::metrics::Labels;
use lintas_ops::prometheus_client::metrics::MetricType;
use lintas_ops::prometheus_client::registry::Unit;

use crate::evidence::Evidence;
use crate::maintenance::Maintenance;
use crate::outcome::Outcomes;
use crate::own::Own;

/// When warnings are raised ahead of a failure (`[ops]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Warnings {
    pub cert_expiry: Duration,
    pub conf_expiry: Duration,
}

/// The global configuration: not ready when none is usable, a warning when the held one
/// expires within `warn` (fetching has been failing).
pub fn conf_condition(
    conf: Result<&VerifiedConf, &ConfError>,
    now: SystemTime,
    warn: Duration,
) -> Condition {
    let conf = match conf {
        Ok(c) => c,
        Err(e) => return Condition::NotReady(e.to_string()),
    };
    let left = conf.conf.expires_at - lintas_certs::unix_secs(now);
    if left <= 0 {
        return Condition::NotReady(format!(
            "global configuration serial {} has expired",
            conf.serial()
        ));
    }
    if (left as u64) < warn.as_secs() {
        return Condition::Warning(format!(
            "global configuration serial {} expires in {left} s and no newer one could be fetched",
            conf.serial()
        ));
    }
    Condition::Ready
}

/// Trusted time: not ready once the oldest uncovered record has waited past the fail-closed
/// limit (calls are refused), a warning while attempts fail.
pub fn timestamp_condition(age: i64, failures: u64, fail_closed: u64) -> Condition {
    if age > fail_closed as i64 {
        Condition::NotReady(format!(
            "no trusted time-stamp for {age} s (timestamp_fail_closed_secs is {fail_closed}): calls are refused"
        ))
    } else if failures > 0 {
        Condition::Warning(format!(
            "{failures} time-stamping attempt(s) failed in a row; the oldest uncovered record has waited {age} s of {fail_closed}"
        ))
    } else {
        Condition::Ready
    }
}

/// The parts health and the state metrics read.
pub struct Watched {
    pub own: Arc<Own>,
    pub evidence: Arc<Evidence>,
    pub maintenance: Arc<Maintenance>,
    pub outcomes: Arc<Outcomes>,
    pub events: Arc<crate::events::Events>,
    pub warnings: Warnings,
}

/// Registers the server's probes on `ops.health` and its state metrics on
/// `ops.metrics`. They hold the parts weakly: the parts own health components, and a
/// stopped server is dropped.
pub fn install(server: &Arc<Watched>, ops: &lintas_ops::Ops) {
    probe(server, ops, "configuration", |s| {
        let now = s.evidence.clock.now();
        match s.evidence.conf.current() {
            Ok(c) => conf_condition(Ok(&c), now, s.warnings.conf_expiry),
            Err(e) => conf_condition(Err(&e), now, s.warnings.conf_expiry),
        }
    });
    probe(server, ops, "log", |s| {
        if s.evidence.log.failed() {
            Condition::NotReady(
                "a write to the record log failed; calls are refused until the server is restarted"
                    .into(),
            )
        } else {
            Condition::Ready
        }
    });
    probe(server, ops, "timestamping", |s| {
        let now = lintas_certs::unix_secs(s.evidence.clock.now());
        timestamp_condition(
            s.evidence.timestamps.age(now),
            s.evidence.timestamps.failures(),
            s.evidence.timestamp_fail_closed,
        )
    });
    probe(server, ops, "certificates", |s| {
        let now = s.evidence.clock.now();
        let conf = s.evidence.conf.current().ok();
        let check = |der: &[u8], role| match &conf {
            Some(c) => c
                .trust_store()
                .verify(der, role, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            // Without a configuration there is nothing to check against; the
            // configuration component says so.
            None => Ok(()),
        };
        let warn = s.warnings.cert_expiry;
        let keys = s.own.keys();
        let sign = lintas_ops::health::cert_condition(
            "signing",
            &keys.sign_cert,
            check(&keys.sign_cert, lintas_certs::Role::Member),
            now,
            warn,
        );
        let tls = lintas_ops::health::cert_condition(
            "TLS",
            &keys.tls_cert,
            check(&keys.tls_cert, lintas_certs::Role::Server),
            now,
            warn,
        );
        lintas_ops::health::worst(sign, tls)
    });

    use MetricType::{Counter as C, Gauge as G};
    sampled(
        server,
        ops,
        "globalconf_serial",
        "Serial of the global configuration held (0: none)",
        None,
        G,
        |s| single(s.evidence.conf.held_serial().unwrap_or(0) as f64),
    );
    sampled(
        server,
        ops,
        "globalconf_expiry",
        "Seconds until the held global configuration expires (negative: expired)",
        Some(Unit::Seconds),
        G,
        |s| match s.evidence.conf.current() {
            Ok(c) => {
                single((c.conf.expires_at - lintas_certs::unix_secs(s.evidence.clock.now())) as f64)
            }
            Err(_) => Vec::new(),
        },
    );
    sampled(
        server,
        ops,
        "certificate_expiry",
        "Seconds until each of the server's own certificates expires",
        Some(Unit::Seconds),
        G,
        |s| {
            let now = s.evidence.clock.now();
            let keys = s.own.keys();
            [("signing", &keys.sign_cert), ("tls", &keys.tls_cert)]
                .into_iter()
                .filter_map(|(which, der)| {
                    let labels: Labels = vec![("certificate", which.to_owned())];
                    Some((labels, lintas_ops::health::seconds_left(der, now)?))
                })
                .collect()
        },
    );
    sampled(
        server,
        ops,
        "event_backlog",
        "Events published and not yet delivered to a subscriber, by publisher, topic and subscriber",
        None,
        G,
        |s| event_samples(s, |x| x.backlog as f64),
    );
    sampled(
        server,
        ops,
        "event_dead_letters",
        "Events given up on for a subscriber (in the dead-letter store), by publisher, topic and subscriber",
        None,
        G,
        |s| event_samples(s, |x| x.dead_letters as f64),
    );
    sampled(
        server,
        ops,
        "log_records",
        "Records in the message log",
        None,
        G,
        |s| single(s.evidence.log.len() as f64),
    );
    sampled(
        server,
        ops,
        "log_flushes",
        "Batches the message log has written and synced",
        None,
        C,
        |s| single(s.evidence.log.flushes() as f64),
    );
    sampled(
        server,
        ops,
        "log_unsealed_records",
        "Records not yet covered by a signed checkpoint",
        None,
        G,
        |s| {
            let covered = s
                .evidence
                .checkpoints
                .latest_stated()
                .map(|(_, c)| c.size)
                .unwrap_or(0);
            single(s.evidence.log.len().saturating_sub(covered) as f64)
        },
    );
    sampled(
        server,
        ops,
        "checkpoint_age",
        "Seconds since the newest signed checkpoint",
        Some(Unit::Seconds),
        G,
        |s| match s.evidence.checkpoints.latest_stated() {
            Some((_, c)) => {
                single((crate::errors::now_ms(&*s.evidence.clock) - c.time_unix_ms) as f64 / 1000.0)
            }
            None => Vec::new(),
        },
    );
    sampled(
        server,
        ops,
        "timestamp_wait",
        "Seconds the oldest record without a trusted time-stamp has waited (0: all covered)",
        Some(Unit::Seconds),
        G,
        |s| {
            single(
                s.evidence
                    .timestamps
                    .age(lintas_certs::unix_secs(s.evidence.clock.now())) as f64,
            )
        },
    );
    sampled(
        server,
        ops,
        "timestamp_age",
        "Seconds since a trusted time-stamp was last had (absent until the first since the start)",
        Some(Unit::Seconds),
        G,
        |s| match s.evidence.timestamps.last_success() {
            Some(t) => single((lintas_certs::unix_secs(s.evidence.clock.now()) - t) as f64),
            None => Vec::new(),
        },
    );
    sampled(
        server,
        ops,
        "timestamp_failures",
        "Time-stamping attempts failed since a token was last had",
        None,
        G,
        |s| single(s.evidence.timestamps.failures() as f64),
    );
    sampled(
        server,
        ops,
        "witnessed_size",
        "Log size of the newest checkpoint the registry has cosigned",
        None,
        G,
        |s| single(s.evidence.checkpoints.witnessed_size() as f64),
    );
    sampled(
        server,
        ops,
        "batch_signatures",
        "Batch signatures made (one ECDSA signature over many headers)",
        None,
        C,
        |s| single(s.own.signing_stats().0 as f64),
    );
    sampled(
        server,
        ops,
        "signed_headers",
        "Request and response headers signed",
        None,
        C,
        |s| single(s.own.signing_stats().1 as f64),
    );
    sampled(
        server,
        ops,
        "maintenance",
        "1 while the server is in maintenance",
        None,
        G,
        |s| single(f64::from(u8::from(s.maintenance.reason().is_some()))),
    );
    sampled(
        server,
        ops,
        "opmon_records",
        "Operational monitoring records written",
        None,
        C,
        |s| single(s.outcomes.opmon.stats().1 as f64),
    );
    sampled(
        server,
        ops,
        "opmon_dropped",
        "Operational monitoring records dropped because the writer fell behind",
        None,
        C,
        |s| single(s.outcomes.opmon.stats().0 as f64),
    );
    sampled(
        server,
        ops,
        "otlp_spans_exported",
        "Spans sent to the OTLP collector (when one is configured)",
        None,
        C,
        |s| single(s.outcomes.otlp.as_ref().map(|o| o.stats().0).unwrap_or(0) as f64),
    );
    sampled(
        server,
        ops,
        "otlp_spans_dropped",
        "Spans dropped: the queue was full or the collector did not take them",
        None,
        C,
        |s| single(s.outcomes.otlp.as_ref().map(|o| o.stats().1).unwrap_or(0) as f64),
    );
    ops.metrics.health(ops.health.clone());
    server.outcomes.exchanges.register(&ops.metrics);
}

/// One sample per subscription of this server's publishers.
fn event_samples(
    s: &Watched,
    value: impl Fn(&crate::events::SubStatus) -> f64,
) -> Vec<(Labels, f64)> {
    s.events
        .status()
        .unwrap_or_default()
        .iter()
        .map(|x| {
            let labels: Labels = vec![
                ("publisher", x.key.publisher.clone()),
                ("topic", x.key.topic.clone()),
                ("subscriber", x.key.subscriber.clone()),
            ];
            (labels, value(x))
        })
        .collect()
}

fn single(v: f64) -> Vec<(Labels, f64)> {
    vec![(Vec::new(), v)]
}

/// A component computed from the server each time health is read.
fn probe(server: &Arc<Watched>, ops: &lintas_ops::Ops, name: &str, f: fn(&Watched) -> Condition) {
    let weak = Arc::downgrade(server);
    ops.health.probe(name, move || match weak.upgrade() {
        Some(s) => f(&s),
        None => Condition::NotReady("the security server has stopped".into()),
    });
}

/// A metric sampled from the server at each scrape.
fn sampled(
    server: &Arc<Watched>,
    ops: &lintas_ops::Ops,
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    f: fn(&Watched) -> Vec<(Labels, f64)>,
) {
    let weak = Arc::downgrade(server);
    ops.metrics.sampled(name, help, unit, kind, move || {
        weak.upgrade().map(|s| f(&s)).unwrap_or_default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamping_warns_then_fails_closed() {
        // (age, failures, fail_closed, expected state)
        let cases = [
            (0, 0, 3600, "ready"),
            (30, 0, 3600, "ready"),
            (30, 2, 3600, "warning"),
            (3600, 5, 3600, "warning"),
            (3601, 5, 3600, "not_ready"),
            (3601, 0, 3600, "not_ready"),
        ];
        for (age, failures, limit, state) in cases {
            assert_eq!(
                timestamp_condition(age, failures, limit).state(),
                state,
                "age {age}, failures {failures}"
            );
        }
    }
}
