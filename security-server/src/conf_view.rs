//! The global configuration as the exchange sees it: the one in force (kept as evidence
//! the first time an exchange is checked under it), and a fetch out of turn when a peer
//! or client admitted since the last poll shows up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lintas_globalconf::{ConfClient, VerifiedConf};
use tonic::{Code, Status};

use crate::errors::{ErrorSource, error};
use crate::material::Material;

/// Least time between out-of-turn configuration fetches, so unknown peers cannot make
/// this server hammer the registry.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

pub struct ConfView {
    client: ConfClient,
    material: Arc<Material>,
    /// When the configuration was last fetched out of turn; held across the fetch so
    /// concurrent callers wait for it instead of failing.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl ConfView {
    pub fn new(client: ConfClient, material: Arc<Material>) -> Self {
        ConfView {
            client,
            material,
            last_refresh: tokio::sync::Mutex::new(None),
        }
    }

    /// The configuration client (polling, status, tools).
    pub fn client(&self) -> &ConfClient {
        &self.client
    }

    /// The current global configuration, or the error callers see.
    pub fn current(&self, side: ErrorSource) -> Result<Arc<VerifiedConf>, Status> {
        let conf = self.client.current().map_err(|e| {
            crate::errors::with_reason(
                error(Code::Unavailable, side, e.to_string()),
                "OutdatedGlobalConf",
            )
        })?;
        // Evidence: the configuration every exchange was checked under.
        self.material.remember_conf(&conf).map_err(|e| {
            error(
                Code::Unavailable,
                side,
                format!("the security server could not keep the configuration as evidence: {e}"),
            )
        })?;
        Ok(conf)
    }

    /// The configuration after an out-of-turn fetch (at most every few seconds), so a
    /// service or grant published since the last poll shows at once rather than a poll
    /// interval later.
    pub async fn freshest(&self, side: ErrorSource) -> Result<Arc<VerifiedConf>, Status> {
        self.refresh_now().await;
        self.current(side)
    }

    /// Fetches the global configuration out of turn, at most once per
    /// [`MIN_REFRESH_INTERVAL`]: a peer or client admitted since the last poll would
    /// otherwise be refused until the next one. True when a newer serial than the caller
    /// saw is now held (fetched by this call or by one it waited for).
    pub async fn refresh_now(&self) -> bool {
        self.refresh_since(self.client.held_serial()).await
    }

    /// [`ConfView::refresh_now`] for a caller that decided with configuration `seen`:
    /// true at once when a newer one is held already (another caller fetched it
    /// meanwhile, perhaps just before the wait between fetches would refuse this one).
    pub async fn refresh_since(&self, seen: Option<u64>) -> bool {
        let before = seen;
        if self.client.held_serial() != before {
            return true;
        }
        let mut last = self.last_refresh.lock().await;
        if self.client.held_serial() != before {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match self.client.fetch().await {
            Ok(c) => Some(c.serial()) != before,
            Err(e) => {
                tracing::warn!(error = %e, "out-of-turn configuration fetch failed");
                false
            }
        }
    }
}
