//! The security server's background tasks, each a loop of its own that reports its own
//! health component and ends when the server stops: the configuration poller, the
//! service reporter, the checkpointer (with the witness and the body keeper) and the
//! time-stamper. A task that finds something fatal (the log forked from what the witness
//! holds) returns it, and the server stops.

use std::sync::Arc;
use std::time::Duration;

use lintas_globalconf::ConfClient;
use lintas_ops::Handle;
use lintas_transport::Stop;

use crate::SsError;
use crate::errors::now_ms;
use crate::evidence::Evidence;
use crate::reporter::ServiceReporter;

/// How soon a failed service report is retried.
const REPORT_RETRY: Duration = Duration::from_secs(30);
/// How long one call to the registry (a report, a witness round) may take.
pub(crate) const REGISTRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Message bodies past their retention are purged this often.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A finding that stops the server.
#[derive(Debug)]
pub struct Fatal(pub String);

/// `work` within [`REGISTRY_TIMEOUT`], or `None` once the server stops or time runs
/// out: a registry or TSA that stops answering can neither freeze a task nor hold up
/// shutdown.
async fn bounded<T>(stop: &Stop, work: impl std::future::Future<Output = T>) -> Bounded<T> {
    tokio::select! {
        out = tokio::time::timeout(REGISTRY_TIMEOUT, work) => match out {
            Ok(v) => Bounded::Done(v),
            Err(_) => Bounded::TimedOut,
        },
        _ = stop.stopped() => Bounded::Stopped,
    }
}

enum Bounded<T> {
    Done(T),
    TimedOut,
    Stopped,
}

/// Fetches the global configuration every poll interval. Health follows from the held
/// document (the `configuration` probe), so a failed fetch is only logged here.
pub async fn poll_configuration(conf: ConfClient, every: Duration, stop: Stop) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.stopped() => return,
        }
        let fetched = match bounded(&stop, conf.fetch()).await {
            Bounded::Done(r) => r.map(|_| ()).map_err(|e| e.to_string()),
            Bounded::TimedOut => Err("the registry did not answer".into()),
            Bounded::Stopped => return,
        };
        if let Err(e) = fetched {
            match conf.current() {
                Ok(c) => {
                    tracing::warn!(error = %e, serial = c.serial(), "keeping the held global configuration")
                }
                Err(held) => {
                    tracing::error!(error = %e, held = %held, "no usable global configuration")
                }
            }
        }
    }
}

/// Reports the provided services to the registry at start and after every change,
/// retrying until accepted; `health` warns while the catalogue is out of date.
pub async fn report_services(reporter: Arc<ServiceReporter>, health: Handle, stop: Stop) {
    let mut pending = true;
    loop {
        if pending {
            match bounded(&stop, reporter.report()).await {
                Bounded::Done(Ok(serial)) => {
                    pending = false;
                    health.ready();
                    tracing::info!(serial, "services reported to the registry");
                }
                Bounded::Done(Err(e)) => health.warn(format!(
                    "the registry's catalogue is out of date: reporting services failed ({e}); retrying"
                )),
                Bounded::TimedOut => health.warn(
                    "the registry's catalogue is out of date: the registry did not answer the service report; retrying",
                ),
                Bounded::Stopped => return,
            }
        }
        let retry = if pending {
            REPORT_RETRY
        } else {
            Duration::from_secs(86400)
        };
        tokio::select! {
            _ = reporter.changed() => pending = true,
            _ = tokio::time::sleep(retry) => {}
            _ = stop.stopped() => return,
        }
    }
}

/// Signs a checkpoint about every interval while the log grows, keeps message bodies
/// durable and purges old ones, and hands the newest checkpoint to the witness every
/// witness interval; `witness` shows how that goes. `in_step` says whether the log was
/// already checked against the witness. A log that forked from what the witness holds
/// is fatal.
pub async fn checkpoint(
    evidence: Arc<Evidence>,
    every: Duration,
    witness_every: Duration,
    witness: Handle,
    mut in_step: bool,
    stop: Stop,
) -> Result<(), Fatal> {
    let mut last_witness: Option<std::time::Instant> = None;
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.stopped() => return Ok(()),
        }
        // On the blocking pool: it writes the checkpoints file, and the log key may be
        // a token's.
        let signing = evidence.clone();
        match tokio::task::spawn_blocking(move || signing.checkpoint_now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "signing a log checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "signing a log checkpoint failed"),
        }
        let purge = last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY);
        if purge {
            last_purge = Some(std::time::Instant::now());
        }
        keep_bodies(&evidence, purge).await;
        if last_witness.is_some_and(|t| t.elapsed() < witness_every) {
            continue;
        }
        last_witness = Some(std::time::Instant::now());
        if !in_step {
            match evidence.sync_with_witness().await {
                Ok(_) => in_step = true,
                Err(SsError::State(e)) => {
                    tracing::error!(error = %e, "FATAL: the log does not match what the witness holds; stopping");
                    witness.not_ready(format!(
                        "the log does not match what the witness holds: {e}"
                    ));
                    return Err(Fatal(e));
                }
                Err(e) => {
                    witness.warn(format!("cannot check the log against the witness: {e}"));
                    continue;
                }
            }
        }
        match tokio::time::timeout(REGISTRY_TIMEOUT, evidence.witness_now()).await {
            Ok(Ok(size)) => {
                witness.ready();
                tracing::debug!(size, "log checkpoint witnessed");
            }
            Ok(Err(e)) => {
                // The witness may hold another checkpoint than this server believes.
                in_step = false;
                witness.warn(format!(
                    "the witness did not cosign the newest checkpoint: {e}"
                ));
            }
            Err(_) => witness.warn("the witness did not answer"),
        }
    }
}

/// Bodies kept since the last tick become durable; old ones go when `purge`.
async fn keep_bodies(evidence: &Arc<Evidence>, purge: bool) {
    let s = evidence.clone();
    let kept = tokio::task::spawn_blocking(move || {
        s.bodies.flush()?;
        if purge {
            let removed = s.bodies.purge(now_ms(&*s.clock))?;
            if removed > 0 {
                tracing::info!(removed, "message bodies past their retention purged");
            }
        }
        Ok::<_, SsError>(())
    })
    .await;
    if let Ok(Err(e)) = kept {
        tracing::error!(error = %e, "keeping or purging message bodies failed");
    }
}

/// Removes idempotency keys past their window and acknowledged events past their
/// retention, at start and every hour.
pub async fn purge_state(
    idempotency: Arc<crate::idempotency::Idempotency>,
    events: Arc<crate::events::Events>,
    event_retention: Duration,
    clock: Arc<dyn lintas_globalconf::Clock>,
    stop: Stop,
) {
    loop {
        let (idem, events) = (idempotency.clone(), events.clone());
        let now = now_ms(&*clock);
        let purged = tokio::task::spawn_blocking(move || {
            (idem.purge(now), events.purge(now, event_retention))
        })
        .await;
        match purged {
            Ok((keys, events)) => {
                match keys {
                    Ok(0) => {}
                    Ok(removed) => {
                        tracing::info!(removed, "idempotency keys past their window purged")
                    }
                    Err(e) => tracing::error!(error = %e, "purging idempotency keys failed"),
                }
                match events {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(
                        removed,
                        "events every subscriber acknowledged, past their retention, purged"
                    ),
                    Err(e) => tracing::error!(error = %e, "purging events failed"),
                }
            }
            Err(e) => tracing::error!(error = %e, "purging idempotency keys and events failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.stopped() => return,
        }
    }
}

/// Time-stamps the newest checkpoint every interval. A failure raises an alarm in the
/// log at once and counts towards failing closed (the `timestamping` probe).
pub async fn timestamp(evidence: Arc<Evidence>, every: Duration, stop: Stop) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.stopped() => return,
        }
        let stamped = match bounded(&stop, evidence.timestamp_now()).await {
            Bounded::Done(r) => r.map(|_| ()).map_err(|e| e.to_string()),
            Bounded::TimedOut => Err("the time-stamping authority did not answer".into()),
            Bounded::Stopped => return,
        };
        if let Err(e) = stamped {
            evidence.timestamps.failed();
            let age = evidence
                .timestamps
                .age(lintas_certs::unix_secs(evidence.clock.now()));
            tracing::error!(
                error = %e,
                seconds_without_timestamp = age,
                fail_closed_after = evidence.timestamp_fail_closed,
                "ALARM: time-stamping the log failed"
            );
        }
    }
}

/// How often the certificates' expiry is looked at.
const RENEW_CHECK: Duration = Duration::from_secs(3600);

/// Asks for certificates for new keys once the TLS or signing certificate expires
/// within `before_days` (0: never), switches to them when peers have had time to learn
/// them (see `switch`), and says in the `renewal` health component where that stands.
pub async fn renew_certificates(
    renewer: crate::renewal::Renewer,
    switch: std::sync::Arc<crate::switch::Switch>,
    before_days: u64,
    health: Handle,
    clock: std::sync::Arc<dyn lintas_globalconf::Clock>,
    stop: Stop,
) {
    loop {
        let now = lintas_certs::unix_secs(clock.now());
        let paths = &renewer.paths;
        let mut wake = RENEW_CHECK;
        if crate::renewal::ready(paths) {
            wake = switch_when_due(&switch, &health, now).await;
        } else {
            match crate::renewal::expiry(paths) {
                Ok(not_after) => {
                    let until = lintas_globalconf::iso8601(not_after);
                    if !crate::renewal::due(not_after, now, before_days) {
                        health.ready();
                    } else {
                        match bounded(&stop, renewer.renew()).await {
                            Bounded::Done(Ok(r)) if r.state == "approved" => {
                                tracing::info!(request = %r.request_id, by = %r.decided_by, "certificates renewed");
                                // The registry published the configuration that lists
                                // them as it approved.
                                if let Bounded::Stopped = bounded(&stop, switch.conf.fetch()).await {
                                    return;
                                }
                                wake = switch_when_due(&switch, &health, now).await;
                            }
                            Bounded::Done(Ok(r)) => health.warn(format!(
                                "the certificates expire at {until}: renewal {} waits for a registry administrator",
                                r.request_id
                            )),
                            Bounded::Done(Err(e)) => health.warn(format!(
                                "the certificates expire at {until}: renewing failed ({e}); retrying"
                            )),
                            Bounded::TimedOut => health.warn(format!(
                                "the certificates expire at {until}: the registry did not answer the renewal; retrying"
                            )),
                            Bounded::Stopped => return,
                        }
                    }
                }
                Err(e) => health.warn(format!("reading this server's certificates: {e}")),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            _ = stop.stopped() => return,
        }
    }
}

/// How often renewed certificates waiting for the configuration to list them are looked
/// at again.
const LISTING_CHECK: Duration = Duration::from_secs(30);

/// Switches to renewed certificates that wait, if it is time (on the blocking pool: it
/// reads files and may log in to a token); says where that stands in `health`; how long
/// until the next look.
async fn switch_when_due(
    switch: &std::sync::Arc<crate::switch::Switch>,
    health: &Handle,
    now: i64,
) -> Duration {
    use crate::switch::Switched;
    let switch = switch.clone();
    let ran = tokio::task::spawn_blocking(move || switch.run(now, false))
        .await
        .unwrap_or_else(|e| Err(SsError::Serve(format!("switching: {e}"))));
    match ran {
        Ok(Switched::Done | Switched::Nothing) => {
            health.ready();
            RENEW_CHECK
        }
        Ok(Switched::Later { at: Some(at) }) => {
            health.warn(format!(
                "renewed certificates are ready: they are switched to at {}, once peers have learnt them",
                lintas_globalconf::iso8601(at)
            ));
            Duration::from_secs(u64::try_from(at - now).unwrap_or(0).clamp(1, 3600))
        }
        Ok(Switched::Later { at: None }) => {
            health.warn(
                "renewed certificates are ready: they are switched to once the global configuration lists them",
            );
            LISTING_CHECK
        }
        Err(e) => {
            tracing::error!(error = %e, "renewed certificates could not be switched in");
            health.warn(format!(
                "renewed certificates are ready but could not be switched in ({e}); retrying, or they take effect when the server restarts"
            ));
            LISTING_CHECK
        }
    }
}
