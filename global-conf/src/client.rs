//! The configuration client a security server runs.
//!
//! It holds the newest verified document, persists it to a cache file, and refuses:
//! a document whose signature or signer fails ([`crate::verify`]), an expired one, one with
//! a lower serial than the one held (rollback), and a different document with the same
//! serial (equivocation). While the registry is unreachable it keeps serving the cached
//! document until that expires, then fails closed with [`ConfError::Expired`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Anchor, Clock, ConfError, VerifiedConf};

/// Name of the cache file inside the cache directory.
pub const CACHE_FILE: &str = "globalconf.bin";

/// Downloads, verifies and caches the global configuration. Cheap to clone: clones
/// share the held document.
#[derive(Clone)]
pub struct ConfClient {
    inner: Arc<Inner>,
    urls: Vec<String>,
    /// Until when each URL that failed is tried after the others (shared by clones).
    failed_until: Arc<Mutex<Vec<Option<std::time::Instant>>>>,
    timeout: Duration,
}

/// How long a URL that failed is tried only after the others.
const SET_ASIDE: Duration = Duration::from_secs(60);

struct Inner {
    /// The anchor in force: replaced when a configuration announces another.
    anchor: std::sync::RwLock<Arc<Anchor>>,
    /// Where an announced anchor is written (None: adopted in memory only).
    anchor_path: Option<PathBuf>,
    cache_path: PathBuf,
    clock: Arc<dyn Clock>,
    /// The held document. Also serialises `accept`, so two fetches cannot interleave
    /// their serial checks and cache writes.
    current: Mutex<Option<Arc<VerifiedConf>>>,
}

impl ConfClient {
    /// Opens the client, loading and re-verifying the cached document if there is one.
    /// A cached document that fails verification for any reason other than expiry is an
    /// error: the cache is the server's memory of the newest serial (rollback protection),
    /// so an expired one is kept for its serial while [`ConfClient::current`] refuses it.
    pub fn open(
        anchor: Anchor,
        cache_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfError> {
        let cache_path = cache_dir.join(CACHE_FILE);
        let cache_err = |detail: String| ConfError::Cache {
            path: cache_path.display().to_string(),
            detail,
        };
        let held = match std::fs::read(&cache_path) {
            Ok(blob) => {
                let conf = crate::verify_ignoring_expiry(&blob, &anchor, clock.now()).map_err(
                    |e| {
                        cache_err(format!(
                            "{e}; remove the file to start over (rollback protection restarts from the next fetch)"
                        ))
                    },
                )?;
                Some(Arc::new(conf))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(cache_err(e.to_string())),
        };
        Ok(ConfClient {
            failed_until: Arc::new(Mutex::new(vec![None; anchor.globalconf_urls.len()])),
            urls: anchor.globalconf_urls.clone(),
            inner: Arc::new(Inner {
                anchor: std::sync::RwLock::new(Arc::new(anchor)),
                anchor_path: None,
                cache_path,
                clock,
                current: Mutex::new(held),
            }),
            timeout: Duration::from_secs(10),
        })
    }

    /// Writes an anchor that a configuration announces to `path` (the anchor file the
    /// client was opened with) as it is adopted. Call before cloning the client.
    pub fn adopting_anchors(mut self, path: PathBuf) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.anchor_path = Some(path);
        }
        self
    }

    /// Fetches from these URLs instead of the anchor's (a mirror or cache).
    pub fn with_urls(mut self, urls: Vec<String>) -> Self {
        self.failed_until = Arc::new(Mutex::new(vec![None; urls.len()]));
        self.urls = urls;
        self
    }

    /// The URLs in the order to try them: as configured, those that failed lately last.
    fn in_order(&self) -> Vec<(usize, &str)> {
        let now = std::time::Instant::now();
        let failed = self
            .failed_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let aside = |i: usize| failed.get(i).copied().flatten().is_some_and(|t| t > now);
        let mut order: Vec<(usize, &str)> =
            self.urls.iter().map(String::as_str).enumerate().collect();
        order.sort_by_key(|(i, _)| aside(*i));
        order
    }

    fn note(&self, index: usize, ok: bool) {
        let mut failed = self.failed_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = failed.get_mut(index) {
            *slot = (!ok).then(|| std::time::Instant::now() + SET_ASIDE);
        }
    }

    /// The anchor in force.
    pub fn anchor(&self) -> Arc<Anchor> {
        self.inner
            .anchor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn held(&self) -> Option<Arc<VerifiedConf>> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The document held now, if it is still valid.
    pub fn current(&self) -> Result<Arc<VerifiedConf>, ConfError> {
        let conf = self.held().ok_or(ConfError::NotLoaded)?;
        conf.check_fresh(self.inner.clock.now())?;
        Ok(conf)
    }

    /// Highest serial held, fresh or not.
    pub fn held_serial(&self) -> Option<u64> {
        self.held().map(|c| c.serial())
    }

    /// Verifies `blob` and, if it is newer than the held document, writes it to the cache
    /// durably and then makes it current. Blocking (file I/O); [`ConfClient::fetch`] runs
    /// it on the blocking pool.
    pub fn accept(&self, blob: &[u8]) -> Result<Arc<VerifiedConf>, ConfError> {
        let inner = &self.inner;
        let conf = crate::verify(blob, &self.anchor(), inner.clock.now())?;
        let mut slot = inner.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = slot.as_ref() {
            if conf.serial() < held.serial() {
                return Err(ConfError::Rollback {
                    held: held.serial(),
                    offered: conf.serial(),
                });
            }
            if conf.serial() == held.serial() {
                if conf.blob != held.blob {
                    return Err(ConfError::Equivocation {
                        serial: conf.serial(),
                    });
                }
                return Ok(held.clone());
            }
        }
        lintas_certs::files::write_atomic(&inner.cache_path, &conf.blob, 0o644).map_err(|e| {
            ConfError::Cache {
                path: inner.cache_path.display().to_string(),
                detail: e.to_string(),
            }
        })?;
        let conf = Arc::new(conf);
        *slot = Some(conf.clone());
        tracing::info!(serial = conf.serial(), "global configuration updated");
        self.adopt_announced(&conf);
        Ok(conf)
    }

    /// Adopts the anchor `conf` announces, if it is another than the one in force and
    /// passes [`crate::anchor::announced`]; written to the anchor file first.
    fn adopt_announced(&self, conf: &VerifiedConf) {
        let text = &conf.conf.anchor;
        let held = self.anchor();
        if text.is_empty() || *text == held.text {
            return;
        }
        let now = self.inner.clock.now();
        let signature = &conf.conf.anchor_signature;
        let adopted =
            crate::anchor::announced(text, signature, &held, conf, now).and_then(|anchor| {
                if let Some(path) = &self.inner.anchor_path {
                    lintas_certs::files::write_atomic(path, text.as_bytes(), 0o644)
                        .map_err(|e| e.to_string())?;
                }
                Ok(anchor)
            });
        match adopted {
            Ok(anchor) => {
                tracing::info!(
                    serial = conf.serial(),
                    fingerprint = %anchor.fingerprint,
                    "trust anchor updated as the global configuration announced"
                );
                *self.inner.anchor.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(anchor);
            }
            Err(why) => tracing::warn!(
                serial = conf.serial(),
                "the anchor this configuration announces is not adopted: {why}"
            ),
        }
    }

    /// Fetches from each URL in turn until one yields a document that is accepted. A URL
    /// that failed is tried after the others for a minute, so a dead or bad mirror or
    /// registry node does not cost every poll an attempt.
    pub async fn fetch(&self) -> Result<Arc<VerifiedConf>, ConfError> {
        let mut last = ConfError::NotLoaded;
        for (index, url) in self.in_order() {
            let held = self.held();
            let etag = held.as_ref().map(|c| c.etag());
            let accepted = match crate::fetch::get(url, etag, self.timeout).await {
                // Nothing newer: the held document stays (it was verified when taken),
                // as long as it has not expired.
                Ok(crate::fetch::Fetched::NotModified) => match held {
                    Some(held) => held.check_fresh(self.inner.clock.now()).map(|()| held),
                    None => Err(ConfError::NotLoaded),
                },
                Ok(crate::fetch::Fetched::Document(blob)) => {
                    let client = self.clone();
                    tokio::task::spawn_blocking(move || client.accept(&blob))
                        .await
                        .unwrap_or_else(|e| {
                            Err(ConfError::Cache {
                                path: self.inner.cache_path.display().to_string(),
                                detail: format!("verification task failed: {e}"),
                            })
                        })
                }
                Err(e) => Err(e),
            };
            // A place that failed (unreachable, or serving what is refused: a stale or
            // tampered mirror) is tried after the others for a while.
            self.note(index, accepted.is_ok());
            match accepted {
                Ok(conf) => return Ok(conf),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "global configuration not taken");
                    last = e;
                }
            }
        }
        Err(last)
    }
}
