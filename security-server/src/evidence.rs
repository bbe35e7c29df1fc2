//! Evidence: what an auditor needs besides the records, kept beside them, and the
//! export of self-contained bundles.
//!
//! Records name certificates by hash and headers name the configuration serial they
//! were signed under, so the server keeps, under `records/evidence/`, every signing
//! certificate it verified (`certs/<sha256>.der`) and every global configuration it used
//! (`confs/<serial>.conf`), each written once, durably, when first seen.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lintas_globalconf::VerifiedConf;
use lintas_log::RecordLog;
use lintas_proto::audit::v1 as audit;
use lintas_proto::exchange::v1 as ex;
use prost::Message;

use crate::SsError;

/// The format name written into bundles.
pub const FORMAT: &str = "lintas-evidence/v1";
/// Most exchanges one bundle holds.
pub const MAX_EXCHANGES: usize = 10_000;

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

    fn cert(&self, hash: &[u8]) -> Option<Vec<u8>> {
        std::fs::read(self.cert_path(hash)).ok()
    }

    /// The configuration of `serial`, or the newest kept before it.
    fn conf_at(&self, serial: u64) -> Option<Vec<u8>> {
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

/// Which exchanges to export (see `EvidenceQuery` in the admin protocol).
pub fn check_query(q: &lintas_proto::ss::v1::EvidenceQuery) -> Result<(), String> {
    if q.message_id.is_empty()
        && q.client.is_empty()
        && q.service_provider.is_empty()
        && q.from_unix_ms == 0
        && q.to_unix_ms == 0
    {
        return Err(
            "say which exchanges: a message id, a client, a provider or a time range".into(),
        );
    }
    if q.to_unix_ms != 0 && q.from_unix_ms > q.to_unix_ms {
        return Err("the time range ends before it starts".into());
    }
    Ok(())
}

fn matches(r: &lintas_log::Record, q: &lintas_proto::ss::v1::EvidenceQuery) -> bool {
    (q.message_id.is_empty() || r.message_id == q.message_id)
        && (q.client.is_empty() || r.client == q.client)
        && (q.service_provider.is_empty() || r.service_provider == q.service_provider)
        && (q.from_unix_ms == 0 || r.time_unix_ms >= q.from_unix_ms)
        && (q.to_unix_ms == 0 || r.time_unix_ms <= q.to_unix_ms)
}

/// Records (index, stored bytes) and the configuration serials they name.
pub type Selected = (Vec<(u64, Vec<u8>)>, BTreeSet<u64>);

/// The stored bytes of every record of every exchange that matches `q` (an exchange is
/// one client's message id), by index, and the configuration serials their request
/// headers name. Two passes over the log: which exchanges, then their records.
pub fn select(
    log: &RecordLog,
    q: &lintas_proto::ss::v1::EvidenceQuery,
    size: u64,
) -> Result<Selected, SsError> {
    let mut wanted = BTreeSet::new();
    for index in 0..size {
        let Some(r) = log.get(index)? else { continue };
        if !r.message_id.is_empty() && matches(&r, q) {
            wanted.insert((r.client, r.message_id));
            if wanted.len() > MAX_EXCHANGES {
                return Err(SsError::State(format!(
                    "more than {MAX_EXCHANGES} exchanges match; narrow the query"
                )));
            }
        }
    }
    let mut out = Vec::new();
    let mut serials = BTreeSet::new();
    for index in 0..size {
        let Some(bytes) = log.get_bytes(index)? else {
            continue;
        };
        let r = lintas_log::Record::decode(bytes.as_slice())
            .map_err(|e| SsError::State(format!("record {index} does not decode: {e}")))?;
        if !wanted.contains(&(r.client, r.message_id)) {
            continue;
        }
        if let Ok(h) = ex::RequestHeader::decode(r.header.as_slice())
            && h.conf_serial != 0
        {
            serials.insert(h.conf_serial);
        }
        out.push((index, bytes));
    }
    Ok((out, serials))
}

/// The format name written into archive manifests.
pub const ARCHIVE_FORMAT: &str = "lintas-archive/v1";

impl crate::daemon::SecurityServer {
    /// The records directory (segments, tree, checkpoints, evidence material).
    pub fn records_dir(&self) -> std::path::PathBuf {
        self.data_dir.join("records")
    }

    /// The manifest of the log's sealed segments: their files and hashes, the tree head
    /// over them, and a fresh checkpoint (cosigned if the witness answers) with the
    /// consistency proof from that head to it.
    pub async fn archive_manifest(&self) -> Result<audit::Archive, SsError> {
        self.checkpoint_now()?;
        if let Ok(Err(e)) =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.witness_now()).await
        {
            tracing::warn!(error = %e, "archiving with a checkpoint the witness has not cosigned");
        }
        let (checkpoint, stated) = self
            .checkpoints
            .latest_stated()
            .ok_or_else(|| SsError::State("the log has no records yet".into()))?;
        let cp_size = stated.size;
        let dir = self.records_dir();
        let sealed = tokio::task::spawn_blocking(move || -> Result<_, SsError> {
            let mut out = Vec::new();
            for (file, first, count) in
                lintas_log::file::sealed_segments(&dir).map_err(SsError::State)?
            {
                let bytes = std::fs::read(dir.join(&file))
                    .map_err(|e| SsError::State(format!("reading {file}: {e}")))?;
                out.push(audit::ArchivedSegment {
                    sha256: lintas_certs::sha256(&bytes).to_vec(),
                    file,
                    first,
                    count,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| SsError::State(e.to_string()))??;
        let size = sealed.last().map(|s| s.first + s.count).unwrap_or(0);
        if size == 0 {
            return Err(SsError::State(
                "no segment is sealed yet: the log still fits in its first segment".into(),
            ));
        }
        if size > cp_size {
            return Err(SsError::State(
                "the checkpoint does not cover the sealed segments".into(),
            ));
        }
        let root = self.log.root_at(size)?;
        let proof = self.log.consistency_proof(size, cp_size)?;
        let global_confs = match self.conf.current() {
            Ok(c) => vec![c.blob.clone()],
            Err(_) => Vec::new(),
        };
        Ok(audit::Archive {
            format: ARCHIVE_FORMAT.into(),
            origin: self.id.to_string(),
            segments: sealed,
            size,
            root: root.to_vec(),
            checkpoint: Some(checkpoint),
            consistency_proof: proof.iter().map(|h| h.to_vec()).collect(),
            global_confs,
        })
    }

    /// An evidence bundle of the exchanges matching `q`: their records with inclusion
    /// proofs in a fresh checkpoint (cosigned if the witness answers), the
    /// configurations in force and the certificates the records name.
    pub async fn export(
        &self,
        q: &lintas_proto::ss::v1::EvidenceQuery,
    ) -> Result<audit::EvidenceBundle, SsError> {
        check_query(q).map_err(SsError::State)?;
        self.checkpoint_now()?;
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.witness_now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "exporting with a checkpoint the witness has not cosigned")
            }
            Err(_) => tracing::warn!(
                "the witness did not answer; exporting with an uncosigned checkpoint"
            ),
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.timestamp_now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "exporting without a time-stamp of the newest checkpoint")
            }
            Err(_) => tracing::warn!(
                "the TSA did not answer; exporting without a time-stamp of the newest checkpoint"
            ),
        }
        let (checkpoint, stated) = self
            .checkpoints
            .latest_stated()
            .ok_or_else(|| SsError::State("the log has no records yet".into()))?;
        let size = stated.size;
        let log = self.log.clone();
        let query = q.clone();
        let (records, serials) = tokio::task::spawn_blocking(move || select(&log, &query, size))
            .await
            .map_err(|e| SsError::State(e.to_string()))??;
        if records.is_empty() {
            return Err(SsError::State("no recorded exchange matches".into()));
        }
        let mut entries = Vec::with_capacity(records.len());
        let mut cert_hashes = BTreeSet::new();
        // Time-stamped checkpoints bounding each record: the one it names and the first
        // after it, by token hash.
        let mut stamps: std::collections::BTreeMap<
            Vec<u8>,
            lintas_proto::log::v1::TimestampedCheckpoint,
        > = std::collections::BTreeMap::new();
        for (index, bytes) in records {
            let proof = self.log.inclusion_proof(index, size)?;
            let r = lintas_log::Record::decode(bytes.as_slice())
                .map_err(|e| SsError::State(format!("record {index} does not decode: {e}")))?;
            if !r.signer_cert_sha256.is_empty() {
                cert_hashes.insert(r.signer_cert_sha256.clone());
            }
            let named = if r.timestamp_sha256.is_empty() {
                None
            } else {
                self.timestamps.by_token(&r.timestamp_sha256)?
            };
            for t in named
                .into_iter()
                .chain(self.timestamps.first_covering(index)?)
            {
                stamps.insert(lintas_certs::sha256(&t.token).to_vec(), t);
            }
            // A body lost or overwritten in a crash (bodies are flushed about every
            // second) is left out rather than exported against the wrong record.
            let body = if q.with_bodies {
                self.bodies
                    .get(index)?
                    .filter(|b| {
                        b.len() as u64 == r.body_len
                            && lintas_certs::sha256(b)[..] == r.body_sha256[..]
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            entries.push(audit::Entry {
                record: bytes,
                inclusion_proof: proof.iter().map(|h| h.to_vec()).collect(),
                body,
            });
        }
        let mut global_confs = Vec::new();
        let current = match self.conf.current() {
            Ok(c) => {
                self.material.remember_conf(&c)?;
                Some(c.serial())
            }
            Err(_) => None,
        };
        for serial in serials.into_iter().chain(current) {
            if let Some(blob) = self.material.conf_at(serial)
                && !global_confs.contains(&blob)
            {
                global_confs.push(blob);
            }
        }
        let certificates = cert_hashes
            .iter()
            .filter_map(|h| self.material.cert(h))
            .collect();
        let mut timestamps = Vec::new();
        for (_, t) in stamps {
            let stamped_size = t
                .checkpoint
                .as_ref()
                .and_then(|c| {
                    lintas_log::checkpoint::Checkpoint::decode(c.checkpoint.as_slice()).ok()
                })
                .map(|c| c.size)
                .unwrap_or(0);
            if stamped_size > size {
                continue;
            }
            let proof = self.log.consistency_proof(stamped_size, size)?;
            timestamps.push(audit::Timestamp {
                stamped: Some(t),
                consistency_proof: proof.iter().map(|h| h.to_vec()).collect(),
            });
        }
        Ok(audit::EvidenceBundle {
            timestamps,
            format: FORMAT.into(),
            origin: self.id.to_string(),
            entries,
            checkpoint: Some(checkpoint),
            global_confs,
            certificates,
            exported_unix_ms: crate::daemon::now_ms(&*self.clock),
        })
    }
}
