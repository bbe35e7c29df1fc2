//! Health and readiness: a daemon is a set of named components, each ready, ready with a
//! warning, or not ready with a reason. The daemon is ready when no component is not
//! ready. A component is either set by the task that owns it ([`Handle`]) or probed each
//! time the state is read ([`Health::probe`]), for conditions that change with time alone
//! (a configuration or a certificate expiring).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The state of one component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Condition {
    Ready,
    /// Serving, but something needs attention before it stops serving.
    Warning(String),
    /// Cannot serve, and why.
    NotReady(String),
}

impl Condition {
    pub fn is_ready(&self) -> bool {
        !matches!(self, Condition::NotReady(_))
    }

    /// The metric and JSON name of the state.
    pub fn state(&self) -> &'static str {
        match self {
            Condition::Ready => "ready",
            Condition::Warning(_) => "warning",
            Condition::NotReady(_) => "not_ready",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Condition::Ready => None,
            Condition::Warning(r) | Condition::NotReady(r) => Some(r),
        }
    }
}

/// The worse of two conditions (the first when equal).
pub fn worst(a: Condition, b: Condition) -> Condition {
    let rank = |c: &Condition| match c {
        Condition::Ready => 0,
        Condition::Warning(_) => 1,
        Condition::NotReady(_) => 2,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

/// A daemon's own certificate (`what`, DER) at `now`: not ready when it does not parse,
/// is not trusted (`trusted` says why: revoked, no longer chaining to an approved CA) or
/// has expired; a warning within `warn` of its expiry.
pub fn cert_condition(
    what: &str,
    der: &[u8],
    trusted: Result<(), String>,
    now: SystemTime,
    warn: Duration,
) -> Condition {
    let not_after = match lintas_certs::verify::certificate_validity(der) {
        Ok((_, not_after)) => not_after,
        Err(e) => return Condition::NotReady(format!("{what} certificate: {e}")),
    };
    if let Err(e) = trusted {
        return Condition::NotReady(format!("{what} certificate: {e}"));
    }
    match not_after.duration_since(now) {
        Ok(left) if left < warn => Condition::Warning(format!(
            "{what} certificate expires in {} days (at Unix time {}); renew it",
            left.as_secs() / 86400,
            lintas_certs::unix_secs(not_after),
        )),
        Ok(_) => Condition::Ready,
        Err(_) => Condition::NotReady(format!("{what} certificate has expired")),
    }
}

/// Seconds until the certificate `der` expires at `now` (negative once it has).
pub fn seconds_left(der: &[u8], now: SystemTime) -> Option<f64> {
    let (_, not_after) = lintas_certs::verify::certificate_validity(der).ok()?;
    Some(match not_after.duration_since(now) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

type Probe = Arc<dyn Fn() -> Condition + Send + Sync>;

enum Source {
    Set(Condition),
    Probe(Probe),
}

struct Inner {
    components: Mutex<Vec<(String, Source)>>,
    /// Bumped whenever a handle changes its component.
    changed: tokio::sync::watch::Sender<u64>,
}

/// The health of one daemon. Cheap to clone; every clone is the same state.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.report().ready)
            .finish()
    }
}

impl Health {
    pub fn new() -> Self {
        Health {
            inner: Arc::new(Inner {
                components: Mutex::new(Vec::new()),
                changed: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Source)>> {
        self.inner
            .components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A component its owner sets, starting as `initial`.
    pub fn component(&self, name: &str, initial: Condition) -> Handle {
        let mut components = self.lock();
        let index = components.len();
        components.push((name.to_owned(), Source::Set(initial)));
        drop(components);
        self.inner.changed.send_modify(|n| *n += 1);
        Handle {
            health: self.clone(),
            index,
        }
    }

    /// A component whose condition `probe` computes each time the health is read (outside
    /// the health's lock). It must be quick: readiness checks and scrapes call it.
    pub fn probe(&self, name: &str, probe: impl Fn() -> Condition + Send + Sync + 'static) {
        self.lock()
            .push((name.to_owned(), Source::Probe(Arc::new(probe))));
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Every component's condition now.
    pub fn report(&self) -> Report {
        let components: Vec<(String, Source)> = {
            // Probes run outside the lock: they may take locks of their own.
            let held = self.lock();
            held.iter()
                .map(|(name, source)| {
                    let source = match source {
                        Source::Set(c) => Source::Set(c.clone()),
                        Source::Probe(p) => Source::Probe(p.clone()),
                    };
                    (name.clone(), source)
                })
                .collect()
        };
        let components: Vec<ComponentReport> = components
            .into_iter()
            .map(|(name, source)| ComponentReport {
                name,
                condition: match source {
                    Source::Set(c) => c,
                    Source::Probe(p) => p(),
                },
            })
            .collect();
        Report {
            ready: components.iter().all(|c| c.condition.is_ready()),
            components,
        }
    }

    /// Calls `on_change` with each new report whose components' states differ from the
    /// last one (and once at the start), checking when a component is set and every
    /// `every` (for probes); logs every component whose state changes. Reasons that
    /// only count on (seconds left, seconds waited) are not changes. Returns when `stop`
    /// completes.
    pub async fn watch(
        &self,
        every: Duration,
        stop: impl std::future::Future<Output = ()>,
        mut on_change: impl FnMut(&Report),
    ) {
        let mut changed = self.inner.changed.subscribe();
        let mut last: Option<Report> = None;
        tokio::pin!(stop);
        loop {
            let report = self.report();
            if last.as_ref().map(Report::states) != Some(report.states()) {
                log_changes(last.as_ref(), &report);
                on_change(&report);
                last = Some(report);
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = changed.changed() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

fn log_changes(before: Option<&Report>, now: &Report) {
    for c in &now.components {
        let was = before.and_then(|b| b.components.iter().find(|p| p.name == c.name));
        if was.map(|w| w.condition.state()) == Some(c.condition.state()) {
            continue;
        }
        match &c.condition {
            Condition::NotReady(reason) => {
                tracing::error!(component = %c.name, %reason, "not ready")
            }
            Condition::Warning(reason) => tracing::warn!(component = %c.name, %reason, "warning"),
            Condition::Ready if was.is_some() => tracing::info!(component = %c.name, "ready"),
            Condition::Ready => {}
        }
    }
}

/// Sets one component.
#[derive(Clone)]
pub struct Handle {
    health: Health,
    index: usize,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("index", &self.index)
            .finish()
    }
}

impl Handle {
    pub fn set(&self, condition: Condition) {
        let mut components = self.health.lock();
        let Some((_, Source::Set(current))) = components.get_mut(self.index) else {
            return;
        };
        if *current == condition {
            return;
        }
        *current = condition;
        drop(components);
        self.health.inner.changed.send_modify(|n| *n += 1);
    }

    pub fn ready(&self) {
        self.set(Condition::Ready);
    }

    pub fn warn(&self, reason: impl Into<String>) {
        self.set(Condition::Warning(reason.into()));
    }

    pub fn not_ready(&self, reason: impl Into<String>) {
        self.set(Condition::NotReady(reason.into()));
    }
}

/// One component in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentReport {
    pub name: String,
    #[serde(flatten)]
    pub condition: Condition,
}

/// The daemon's health at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub ready: bool,
    pub components: Vec<ComponentReport>,
}

impl Report {
    /// Each component's name and state, without the reasons.
    pub fn states(&self) -> Vec<(&str, &'static str)> {
        self.components
            .iter()
            .map(|c| (c.name.as_str(), c.condition.state()))
            .collect()
    }

    /// "component: reason" for each component that is not ready.
    pub fn reasons(&self) -> Vec<String> {
        self.with(|c| matches!(c, Condition::NotReady(_)))
    }

    /// "component: reason" for each component with a warning.
    pub fn warnings(&self) -> Vec<String> {
        self.with(|c| matches!(c, Condition::Warning(_)))
    }

    fn with(&self, which: impl Fn(&Condition) -> bool) -> Vec<String> {
        self.components
            .iter()
            .filter(|c| which(&c.condition))
            .map(|c| format!("{}: {}", c.name, c.condition.reason().unwrap_or_default()))
            .collect()
    }
}

impl std::fmt::Display for Report {
    /// Plain words: the verdict, then each component that is not simply ready.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", if self.ready { "ready" } else { "NOT READY" })?;
        for c in &self.components {
            match &c.condition {
                Condition::Ready => writeln!(f, "  {:<14} ok", c.name)?,
                Condition::Warning(r) => writeln!(f, "  {:<14} warning: {r}", c.name)?,
                Condition::NotReady(r) => writeln!(f, "  {:<14} NOT READY: {r}", c.name)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn the_daemon_is_ready_when_no_component_is_not_ready() {
        let health = Health::new();
        let log = health.component("log", Condition::Ready);
        let flag = Arc::new(AtomicBool::new(false));
        let expired = flag.clone();
        health.probe("configuration", move || {
            if expired.load(Ordering::Relaxed) {
                Condition::NotReady("expired".into())
            } else {
                Condition::Ready
            }
        });
        // (log's condition, configuration expired, ready, reasons, warnings)
        type Case = (
            Condition,
            bool,
            bool,
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: [Case; 4] = [
            (Condition::Ready, false, true, &[], &[]),
            (
                Condition::Warning("slow".into()),
                false,
                true,
                &[],
                &["log: slow"],
            ),
            (
                Condition::NotReady("disk".into()),
                false,
                false,
                &["log: disk"],
                &[],
            ),
            (
                Condition::Ready,
                true,
                false,
                &["configuration: expired"],
                &[],
            ),
        ];
        for (n, (condition, conf_expired, ready, reasons, warnings)) in
            cases.into_iter().enumerate()
        {
            log.set(condition);
            flag.store(conf_expired, Ordering::Relaxed);
            let report = health.report();
            assert_eq!(report.ready, ready, "case {n}");
            assert_eq!(report.reasons(), reasons, "case {n}");
            assert_eq!(report.warnings(), warnings, "case {n}");
        }
        let json = serde_json::to_value(health.report()).unwrap();
        assert_eq!(json["components"][1]["state"], "not_ready");
        assert_eq!(json["components"][1]["reason"], "expired");
        assert!(health.report().to_string().contains("NOT READY: expired"));
    }

    #[test]
    fn own_certificates_are_checked_for_expiry_and_trust() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let (_, cert) = lintas_certs::ca::self_signed(
            &["localhost".into()],
            "test",
            lintas_certs::ca::Validity::starting(now - day, 40 * day).unwrap(),
        )
        .unwrap();
        // (trusted, days from now, warn days, expected state)
        let cases: [(bool, u32, u32, &str); 5] = [
            (true, 0, 30, "ready"),
            (true, 10, 30, "warning"),
            (true, 0, 40, "warning"),
            (true, 40, 30, "not_ready"),
            (false, 0, 30, "not_ready"),
        ];
        for (trusted, later, warn_days, state) in cases {
            let check = if trusted {
                Ok(())
            } else {
                Err("revoked".into())
            };
            let got = cert_condition("TLS", &cert, check, now + later * day, warn_days * day);
            assert_eq!(
                got.state(),
                state,
                "{later} days later, warn {warn_days}: {got:?}"
            );
        }
        assert_eq!(
            cert_condition("TLS", b"junk", Ok(()), now, day).state(),
            "not_ready"
        );
        let left = seconds_left(&cert, now).unwrap();
        assert!((38.9 * 86400.0..39.1 * 86400.0).contains(&left), "{left}");
    }

    #[test]
    fn the_worse_condition_wins() {
        let w = || Condition::Warning("w".into());
        let n = || Condition::NotReady("n".into());
        assert_eq!(worst(Condition::Ready, w()), w());
        assert_eq!(worst(n(), w()), n());
        assert_eq!(worst(w(), Condition::Ready), w());
    }

    #[tokio::test]
    async fn watchers_see_each_change_once() {
        let health = Health::new();
        let part = health.component("part", Condition::NotReady("starting".into()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watched = health.clone();
        let task = tokio::spawn(async move {
            watched
                .watch(
                    Duration::from_secs(3600),
                    async {
                        let _ = stop_rx.await;
                    },
                    |r| {
                        let _ = tx.send(r.ready);
                    },
                )
                .await
        });
        assert_eq!(rx.recv().await, Some(false));
        part.ready();
        assert_eq!(rx.recv().await, Some(true));
        part.ready();
        part.not_ready("gone");
        assert_eq!(rx.recv().await, Some(false));
        // Only the reason changes (a count, say): no new report.
        part.not_ready("gone for 2 s");
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        assert!(rx.try_recv().is_err(), "no report without a change");
    }
}
