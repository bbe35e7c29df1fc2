//! The log's evidence as a whole: checkpoints signed and cosigned by the witness,
//! time-stamps over them, the log's status, and the export of self-contained bundles
//! and archive manifests an auditor verifies offline.

use std::collections::BTreeSet;
use std::sync::Arc;

use lintas_globalconf::{Clock, ConfClient};
use lintas_identifiers::ServerId;
use lintas_log::RecordLog;
use lintas_proto::audit::v1 as audit;
use prost::Message;

use crate::SsError;
use crate::bodies::Bodies;
use crate::checkpoints::Checkpoints;
use crate::errors::now_ms;
use crate::material::Material;
use crate::registry_link::RegistryLink;
use crate::timestamps::Timestamps;

/// The log and what proves it, with the parts that keep the proof current.
pub struct Evidence {
    pub(crate) id: ServerId,
    pub(crate) log: RecordLog,
    /// The records directory (segments, tree, checkpoints, evidence material).
    pub(crate) records_dir: std::path::PathBuf,
    pub(crate) checkpoints: Arc<Checkpoints>,
    pub(crate) timestamps: Arc<Timestamps>,
    pub(crate) bodies: Arc<Bodies>,
    pub(crate) material: Arc<Material>,
    pub(crate) conf: ConfClient,
    pub(crate) registry: RegistryLink,
    pub(crate) clock: Arc<dyn Clock>,
    /// The configuration's name of the TSA to use.
    pub(crate) timestamping_authority: String,
    pub(crate) timestamp_fail_closed: u64,
}

pub use lintas_wire::{ARCHIVE_FORMAT, FORMAT};
/// Most exchanges one bundle holds.
pub const MAX_EXCHANGES: usize = 10_000;

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

impl Evidence {
    /// Signs a checkpoint of the log if it grew since the last one.
    pub fn checkpoint_now(
        &self,
    ) -> Result<Option<lintas_log::checkpoint::SignedCheckpoint>, SsError> {
        self.checkpoints
            .checkpoint_now(&self.log, now_ms(&*self.clock))
    }

    /// Has the newest checkpoint time-stamped if it is newer than the last one stamped;
    /// returns the stamped time, or `None` when there was nothing new.
    pub async fn timestamp_now(&self) -> Result<Option<i64>, SsError> {
        let Some((latest, stated)) = self.checkpoints.latest_stated() else {
            return Ok(None);
        };
        if stated.size <= self.timestamps.latest_size() {
            // Nothing new: every record up to the newest checkpoint is covered.
            self.timestamps.recount(&self.log)?;
            return Ok(None);
        }
        let conf = self.conf.current()?;
        let stamped = self
            .timestamps
            .stamp(latest, stated.size, &conf, &self.timestamping_authority)
            .await?;
        self.timestamps
            .succeeded(lintas_certs::unix_secs(self.clock.now()));
        self.timestamps.recount(&self.log)?;
        Ok(Some(stamped))
    }

    /// Learns the checkpoint the witness holds and checks the log against it.
    pub async fn sync_with_witness(&self) -> Result<u64, SsError> {
        self.checkpoints
            .sync_with_witness(&self.log, &mut self.registry.registration()?)
            .await
    }

    /// Hands the newest checkpoint to the witness; returns the size now witnessed.
    pub async fn witness_now(&self) -> Result<u64, SsError> {
        self.checkpoints
            .witness(
                &self.log,
                &self.conf.anchor(),
                &mut self.registry.registration()?,
            )
            .await
    }

    /// The log's state, for `lintas ss log-status`.
    pub fn log_status(&self) -> lintas_proto::ss::v1::LogStatusReply {
        let now = lintas_certs::unix_secs(self.clock.now());
        let (checkpoint_size, checkpoint_unix_ms) = self
            .checkpoints
            .latest_stated()
            .map(|(_, c)| (c.size, c.time_unix_ms))
            .unwrap_or_default();
        lintas_proto::ss::v1::LogStatusReply {
            records: self.log.len(),
            checkpoint_size,
            checkpoint_unix_ms,
            witnessed_size: self.checkpoints.witnessed_size(),
            timestamped_size: self.timestamps.latest_size(),
            seconds_without_timestamp: self.timestamps.age(now),
            timestamp_failures: self.timestamps.failures(),
            failing_closed: self.timestamps.age(now) > self.timestamp_fail_closed as i64,
            timestamp_fail_closed_secs: self.timestamp_fail_closed as i64,
        }
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
        let dir = self.records_dir.clone();
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

    /// A fresh checkpoint to prove records against (cosigned if the witness answers,
    /// time-stamped if the TSA does), and the log size it covers.
    async fn export_checkpoint(
        &self,
    ) -> Result<(lintas_log::checkpoint::SignedCheckpoint, u64), SsError> {
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
        Ok((checkpoint, stated.size))
    }

    /// One evidence bundle of the exchanges matching `q`: their records with inclusion
    /// proofs in a fresh checkpoint, the configurations in force and the certificates
    /// the records name. More than [`MAX_EXCHANGES`] are refused: `export_bundles`
    /// streams any number.
    pub async fn export(
        self: &Arc<Self>,
        q: &lintas_proto::ss::v1::EvidenceQuery,
    ) -> Result<audit::EvidenceBundle, SsError> {
        let mut bundles = self.export_bundles(q, MAX_EXCHANGES).await?;
        let first = bundles
            .recv()
            .await
            .ok_or_else(|| SsError::State("no recorded exchange matches".into()))??;
        if bundles.recv().await.is_some() {
            return Err(SsError::State(format!(
                "more than {MAX_EXCHANGES} exchanges match: export them with `lintas audit export`, which writes them in several bundles"
            )));
        }
        Ok(first)
    }

    /// The exchanges matching `q` in bundles of at most `per_bundle` exchanges, all
    /// proven against one fresh checkpoint, made one at a time while the log is read
    /// once: memory holds a bundle or two whatever the number of exchanges. No exchange
    /// is split between bundles. An empty selection is an error.
    pub async fn export_bundles(
        self: &Arc<Self>,
        q: &lintas_proto::ss::v1::EvidenceQuery,
        per_bundle: usize,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<audit::EvidenceBundle, SsError>>, SsError> {
        check_query(q).map_err(SsError::State)?;
        let (checkpoint, size) = self.export_checkpoint().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (evidence, query) = (self.clone(), q.clone());
        tokio::task::spawn_blocking(move || {
            let send = |b| tx.blocking_send(b).is_ok();
            let mut selection = crate::selection::Selection::new(&query, per_bundle);
            let mut any = false;
            for index in 0..size {
                let read = evidence
                    .log
                    .get_bytes(index)
                    .map(|b| b.map(|bytes| (lintas_log::Record::decode(bytes.as_slice()), bytes)));
                let (record, bytes) = match read {
                    Ok(Some((Ok(r), bytes))) => (r, bytes),
                    Ok(None) => continue,
                    Ok(Some((Err(e), _))) => {
                        send(Err(SsError::State(format!(
                            "record {index} does not decode: {e}"
                        ))));
                        return;
                    }
                    Err(e) => {
                        send(Err(e.into()));
                        return;
                    }
                };
                if let Some(chunk) = selection.push(index, record, bytes) {
                    any = true;
                    if !send(evidence.bundle(chunk, &checkpoint, size, query.with_bodies)) {
                        return;
                    }
                }
            }
            match selection.finish() {
                Some(chunk) => {
                    send(evidence.bundle(chunk, &checkpoint, size, query.with_bodies));
                }
                None if !any => {
                    send(Err(SsError::State("no recorded exchange matches".into())));
                }
                None => {}
            }
        });
        Ok(rx)
    }

    /// A bundle of `chunk`'s records, proven against `checkpoint` (of `size` records).
    fn bundle(
        &self,
        chunk: crate::selection::Chunk,
        checkpoint: &lintas_log::checkpoint::SignedCheckpoint,
        size: u64,
        with_bodies: bool,
    ) -> Result<audit::EvidenceBundle, SsError> {
        let crate::selection::Chunk {
            records, serials, ..
        } = chunk;
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
            let body = if with_bodies {
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
            checkpoint: Some(checkpoint.clone()),
            global_confs,
            certificates,
            // Signed by nobody, so not stated (a verifier refuses it).
            exported_unix_ms: 0,
        })
    }
}
