//! The configuration client a security server runs.
//!
//! It holds the newest verified document, persists it to a cache file, and refuses:
//! a document whose signature or signer fails ([`crate::verify`]), an expired one, one with
//! a lower serial than the one held (rollback), and a different document with the same
//! serial (equivocation). While the registry is unreachable it keeps serving the cached
//! document until that expires, then fails closed with [`ConfError::Expired`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::{Anchor, Clock, ConfError, VerifiedConf};

/// Name of the cache file inside the cache directory.
pub const CACHE_FILE: &str = "globalconf.bin";

/// Downloads, verifies and caches the global configuration.
pub struct ConfClient {
    anchor: Anchor,
    cache_path: PathBuf,
    urls: Vec<String>,
    clock: Arc<dyn Clock>,
    current: RwLock<Option<Arc<VerifiedConf>>>,
    timeout: Duration,
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
        let client = ConfClient {
            urls: anchor.globalconf_urls.clone(),
            anchor,
            cache_path,
            clock,
            current: RwLock::new(None),
            timeout: Duration::from_secs(10),
        };
        match std::fs::read(&client.cache_path) {
            Ok(blob) => {
                let conf = crate::verify_ignoring_expiry(&blob, &client.anchor, client.clock.now()).map_err(|e| {
                    ConfError::Cache {
                        path: client.cache_path.display().to_string(),
                        detail: format!(
                            "{e}; remove the file to start over (rollback protection restarts from the next fetch)"
                        ),
                    }
                })?;
                *client.write_slot() = Some(Arc::new(conf));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfError::Cache {
                    path: client.cache_path.display().to_string(),
                    detail: e.to_string(),
                });
            }
        }
        Ok(client)
    }

    /// Fetches from these URLs instead of the anchor's (a mirror or cache).
    pub fn with_urls(mut self, urls: Vec<String>) -> Self {
        self.urls = urls;
        self
    }

    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    fn write_slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<VerifiedConf>>> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The document held now, if it is still valid.
    pub fn current(&self) -> Result<Arc<VerifiedConf>, ConfError> {
        let conf = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ConfError::NotLoaded)?;
        conf.check_fresh(self.clock.now())?;
        Ok(conf)
    }

    /// Highest serial held, fresh or not.
    pub fn held_serial(&self) -> Option<u64> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.serial())
    }

    /// Verifies `blob` and, if it is newer than the held document, makes it current and
    /// writes it to the cache (durably, before it is used). Returns the current document.
    pub fn accept(&self, blob: &[u8]) -> Result<Arc<VerifiedConf>, ConfError> {
        let conf = crate::verify(blob, &self.anchor, self.clock.now())?;
        let mut slot = self.write_slot();
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
        self.write_cache(&conf.blob)?;
        let conf = Arc::new(conf);
        *slot = Some(conf.clone());
        tracing::info!(serial = conf.serial(), "global configuration updated");
        Ok(conf)
    }

    fn write_cache(&self, blob: &[u8]) -> Result<(), ConfError> {
        let err = |e: std::io::Error| ConfError::Cache {
            path: self.cache_path.display().to_string(),
            detail: e.to_string(),
        };
        let tmp = self.cache_path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(blob).and_then(|()| f.sync_all()).map_err(err)?;
        }
        std::fs::rename(&tmp, &self.cache_path).map_err(err)?;
        if let Some(dir) = self.cache_path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }

    /// Fetches from each URL in turn until one yields a document that is accepted.
    pub async fn fetch(&self) -> Result<Arc<VerifiedConf>, ConfError> {
        let mut last = ConfError::NotLoaded;
        for url in &self.urls {
            match crate::fetch::get(url, self.timeout).await {
                Ok(blob) => match self.accept(&blob) {
                    Ok(conf) => return Ok(conf),
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "global configuration refused");
                        last = e;
                    }
                },
                Err(e) => {
                    tracing::warn!(%url, error = %e, "global configuration not fetched");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Polls every `interval` until `shutdown` turns true. Failures are logged; the held
    /// document stays in use until it expires.
    pub async fn poll(&self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.fetch().await {
                match self.current() {
                    Ok(c) => {
                        tracing::warn!(error = %e, serial = c.serial(), "keeping the held global configuration")
                    }
                    Err(held) => {
                        tracing::error!(error = %e, held = %held, "no usable global configuration")
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
