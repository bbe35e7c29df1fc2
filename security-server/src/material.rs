//! Certificates and configurations kept as evidence beside the records.
//!
//! Records name certificates by hash and headers name the configuration serial they
//! were signed under, so the server keeps, under `records/evidence/`, every signing
//! certificate it verified (`certs/<sha256>.der`) and every global configuration it used
//! (`confs/<serial>.conf`), each written once, durably, when first seen.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lintas_globalconf::VerifiedConf;

use crate::SsError;

/// Certificates and configurations kept for evidence.
pub struct Material {
    dir: PathBuf,
    certs: Mutex<HashSet<[u8; 32]>>,
    confs: Mutex<BTreeSet<u64>>,
    writing: Mutex<()>,
}

use crate::state_error_at as io;

impl Material {
    pub fn open(dir: &Path) -> Result<Self, SsError> {
        let mut certs = HashSet::new();
        let mut confs = BTreeSet::new();
        for sub in ["certs", "confs"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| io("creating", &d, e))?;
            for entry in std::fs::read_dir(&d).map_err(|e| io("reading", &d, e))? {
                let name = entry.map_err(|e| io("reading", &d, e))?.file_name();
                let name = name.to_string_lossy();
                if let Some(hex) = name.strip_suffix(".der")
                    && let Some(hash) = lintas_certs::unhex(hex).and_then(|h| h.try_into().ok())
                {
                    certs.insert(hash);
                } else if let Some(serial) = name.strip_suffix(".conf")
                    && let Ok(serial) = serial.parse()
                {
                    confs.insert(serial);
                }
            }
        }
        Ok(Material {
            dir: dir.to_owned(),
            certs: Mutex::new(certs),
            confs: Mutex::new(confs),
            writing: Mutex::new(()),
        })
    }

    fn cert_path(&self, hash: &[u8]) -> PathBuf {
        self.dir
            .join("certs")
            .join(format!("{}.der", lintas_certs::hex(hash)))
    }

    fn conf_path(&self, serial: u64) -> PathBuf {
        self.dir.join("confs").join(format!("{serial:020}.conf"))
    }

    /// Keeps a certificate that was verified.
    pub fn remember_cert(&self, der: &[u8]) -> Result<(), SsError> {
        let hash = lintas_certs::sha256(der);
        let set = || self.certs.lock().unwrap_or_else(|p| p.into_inner());
        self.keep(
            || set().contains(&hash),
            || {
                set().insert(hash);
            },
            &self.cert_path(&hash),
            der,
        )
    }

    /// Keeps a configuration that was used.
    pub fn remember_conf(&self, conf: &VerifiedConf) -> Result<(), SsError> {
        let serial = conf.serial();
        let set = || self.confs.lock().unwrap_or_else(|p| p.into_inner());
        self.keep(
            || set().contains(&serial),
            || {
                set().insert(serial);
            },
            &self.conf_path(serial),
            &conf.blob,
        )
    }

    /// Writes `data` to `path` once: the first caller writes (durably), later ones find
    /// it `known`. Calls run concurrently, so writing is one at a time.
    fn keep(
        &self,
        known: impl Fn() -> bool,
        add: impl FnOnce(),
        path: &Path,
        data: &[u8],
    ) -> Result<(), SsError> {
        if known() {
            return Ok(());
        }
        let _one_writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if !known() {
            lintas_certs::files::write_atomic(path, data, 0o644)?;
            add();
        }
        Ok(())
    }

    pub fn cert(&self, hash: &[u8]) -> Option<Vec<u8>> {
        std::fs::read(self.cert_path(hash)).ok()
    }

    /// The configuration of `serial`, or the newest kept before it.
    pub fn conf_at(&self, serial: u64) -> Option<Vec<u8>> {
        let at = self
            .confs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range(..=serial)
            .next_back()
            .copied()?;
        std::fs::read(self.conf_path(at)).ok()
    }
}
