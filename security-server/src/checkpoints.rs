//! The server's log checkpoints: signed with its log key about every second while the
//! log grows, kept in an append-only file beside the records, checked against the log
//! when the server starts, and handed to the registry (the witness) to cosign.
//!
//! The file holds length-prefixed `SignedCheckpoint`s; a checkpoint once cosigned is
//! written again with its cosignature. The last entry is the newest state.

use std::path::Path;
use std::sync::Mutex;

use lintas_certs::SharedSigner;
use lintas_log::RecordLog;
use lintas_log::checkpoint::{self, Checkpoint, SignedCheckpoint, Verified};
use lintas_merkle::Hash;
use prost::Message;

use crate::SsError;
use crate::entries::Entries;

/// Largest stored entry (a checkpoint with a few cosignatures and certificates).
const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Signed checkpoints of one log.
pub struct Checkpoints {
    origin: String,
    key: SharedSigner,
    state: Mutex<State>,
}

struct State {
    file: Entries,
    /// The newest checkpoint, verified.
    latest: Option<(SignedCheckpoint, Verified)>,
    /// Size and head of the newest checkpoint the witness cosigned.
    witnessed: Option<(u64, Hash)>,
}

impl Checkpoints {
    /// Opens the checkpoints in `path` and checks the newest against `log`: a log
    /// shorter than it, or with another head at its size, lost or changed records, and
    /// the server refuses to start.
    pub fn open(
        path: &Path,
        origin: String,
        key: SharedSigner,
        log: &RecordLog,
    ) -> Result<Self, SsError> {
        let checkpoints = Self::read(path, origin, key)?;
        checkpoints.check(log)?;
        Ok(checkpoints)
    }

    /// How many records the newest checkpoint covers: records that were durable before
    /// the log was last closed (0 without a checkpoint).
    pub fn covered(&self) -> u64 {
        self.lock()
            .latest
            .as_ref()
            .map_or(0, |(_, v)| v.checkpoint.size)
    }

    /// Opens the checkpoints in `path`, verifying the newest ones with `key`, before
    /// the log is opened (which needs [`covered`](Self::covered)); [`check`](Self::check)
    /// then compares them with the log.
    pub fn read(path: &Path, origin: String, key: SharedSigner) -> Result<Self, SsError> {
        // Entries are decoded as they are read, and only the two that matter are kept
        // and verified (a year of checkpoints is millions of entries).
        let mut newest: Option<(u64, SignedCheckpoint)> = None;
        let mut newest_cosigned: Option<(u64, SignedCheckpoint)> = None;
        let file = Entries::open(path, MAX_ENTRY_BYTES, |at, bytes| {
            let damaged = |why: String| {
                SsError::State(format!(
                    "{}: the entry at byte {at} is damaged ({why}); the file needs an operator's attention",
                    path.display()
                ))
            };
            let signed = SignedCheckpoint::decode(bytes).map_err(|e| damaged(e.to_string()))?;
            let size = Checkpoint::decode(signed.checkpoint.as_slice())
                .map_err(|e| damaged(e.to_string()))?
                .size;
            // A later entry of the same size (the same checkpoint, cosigned) wins.
            let cosigned = !signed.cosignatures.is_empty();
            if cosigned && newest_cosigned.as_ref().is_none_or(|(s, _)| size >= *s) {
                newest_cosigned = Some((size, signed.clone()));
            }
            if newest.as_ref().is_none_or(|(s, _)| size >= *s) {
                newest = Some((size, signed));
            }
            Ok(())
        })?;
        let verify = |signed: &SignedCheckpoint| {
            checkpoint::verify(signed, key.public_key_raw()).map_err(|e| {
                SsError::State(format!(
                    "{}: a stored checkpoint does not verify with this server's log key: {e}",
                    path.display()
                ))
            })
        };
        let latest = match newest {
            Some((_, signed)) => {
                let v = verify(&signed)?;
                Some((signed, v))
            }
            None => None,
        };
        let witnessed = match newest_cosigned {
            Some((_, signed)) => {
                let v = verify(&signed)?;
                Some((v.checkpoint.size, v.root))
            }
            None => None,
        };
        Ok(Checkpoints {
            origin,
            key,
            state: Mutex::new(State {
                file,
                latest,
                witnessed,
            }),
        })
    }

    /// Cuts the checkpoints beyond a log of `size` records from the file at `path` (a
    /// copy taken while the server ran); the number cut.
    pub fn cut_beyond(path: &Path, size: u64) -> Result<usize, SsError> {
        Entries::cut_from_first(path, MAX_ENTRY_BYTES, |bytes| {
            let signed = SignedCheckpoint::decode(bytes).map_err(crate::state_error)?;
            let cp =
                Checkpoint::decode(signed.checkpoint.as_slice()).map_err(crate::state_error)?;
            Ok(cp.size <= size)
        })
    }

    /// Checks the newest checkpoint against `log`.
    pub fn check(&self, log: &RecordLog) -> Result<(), SsError> {
        let state = self.lock();
        if let Some((_, v)) = &state.latest {
            let size = v.checkpoint.size;
            if size > log.len() {
                return Err(SsError::State(format!(
                    "the record log holds {} records but its checkpoint of {} covers {size}: records were lost",
                    log.len(),
                    lintas_globalconf::iso8601(v.checkpoint.time_unix_ms / 1000)
                )));
            }
            let root = log.root_at(size)?;
            if root != v.root {
                return Err(SsError::State(format!(
                    "the record log does not match its checkpoint of {size} records: records were changed"
                )));
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest checkpoint.
    pub fn latest(&self) -> Option<SignedCheckpoint> {
        self.lock().latest.as_ref().map(|(s, _)| s.clone())
    }

    /// The newest checkpoint with what it states (size, head, time).
    pub fn latest_stated(&self) -> Option<(SignedCheckpoint, Checkpoint)> {
        self.lock()
            .latest
            .as_ref()
            .map(|(s, v)| (s.clone(), v.checkpoint.clone()))
    }

    /// Size of the newest checkpoint the witness cosigned (0 for none).
    pub fn witnessed_size(&self) -> u64 {
        self.lock().witnessed.map(|w| w.0).unwrap_or(0)
    }

    fn append(&self, state: &mut State, signed: &SignedCheckpoint) -> Result<(), SsError> {
        state.file.append(&signed.encode_to_vec()).map(|_| ())
    }

    /// Signs and stores a checkpoint of the log's head if the log grew since the last
    /// one; returns it.
    pub fn checkpoint_now(
        &self,
        log: &RecordLog,
        now_ms: i64,
    ) -> Result<Option<SignedCheckpoint>, SsError> {
        let mut state = self.lock();
        let (size, root) = log.head();
        if state
            .latest
            .as_ref()
            .is_some_and(|(_, v)| v.checkpoint.size >= size)
        {
            return Ok(None);
        }
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root: root.to_vec(),
            time_unix_ms: now_ms,
        };
        let signed = checkpoint::sign(&*self.key, &cp)?;
        self.append(&mut state, &signed)?;
        state.latest = Some((
            signed.clone(),
            Verified {
                checkpoint: cp,
                root,
            },
        ));
        Ok(Some(signed))
    }

    /// Learns which checkpoint the witness holds for this log and checks that the log
    /// contains it: a log that does not was cut back or rewritten after the witness
    /// saw it, which is refused.
    pub async fn sync_with_witness(
        &self,
        log: &RecordLog,
        registry: &mut lintas_proto::registry::v1::registration_client::RegistrationClient<
            tonic::transport::Channel,
        >,
    ) -> Result<u64, SsError> {
        let held = match registry
            .witnessed_checkpoint(lintas_proto::registry::v1::WitnessedCheckpointRequest {
                origin: self.origin.clone(),
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                self.lock().witnessed = None;
                return Ok(0);
            }
            Err(s) => return Err(s.into()),
        };
        let v = checkpoint::verify(&held, self.key.public_key_raw()).map_err(|e| {
            SsError::State(format!(
                "the checkpoint the witness holds for this log does not verify with this server's log key: {e}"
            ))
        })?;
        let size = v.checkpoint.size;
        if size > log.len() || log.root_at(size)? != v.root {
            return Err(SsError::State(format!(
                "the witness holds a checkpoint of {size} records that this log ({} records) does not contain: records were lost or changed after it was witnessed (restored from a backup older than that checkpoint, or damaged storage)",
                log.len()
            )));
        }
        self.lock().witnessed = Some((size, v.root));
        Ok(size)
    }

    /// Hands the newest checkpoint to the witness if it is newer than the last one the
    /// witness cosigned, with the consistency proof from that one; stores the
    /// cosignature. Returns the size now witnessed.
    pub async fn witness(
        &self,
        log: &RecordLog,
        anchor: &lintas_globalconf::Anchor,
        registry: &mut lintas_proto::registry::v1::registration_client::RegistrationClient<
            tonic::transport::Channel,
        >,
    ) -> Result<u64, SsError> {
        let (signed, v, old_size) = {
            let state = self.lock();
            let Some((signed, v)) = state.latest.clone() else {
                return Ok(0);
            };
            let old = state.witnessed.map(|w| w.0).unwrap_or(0);
            if v.checkpoint.size <= old {
                return Ok(old);
            }
            (signed, v, old)
        };
        let proof = log
            .consistency_proof(old_size, v.checkpoint.size)?
            .iter()
            .map(|h| h.to_vec())
            .collect();
        let cosignature = registry
            .add_checkpoint(lintas_proto::registry::v1::AddCheckpointRequest {
                checkpoint: Some(signed.clone()),
                old_size,
                consistency_proof: proof,
            })
            .await?
            .into_inner();
        checkpoint::verify_witness(
            &cosignature,
            anchor.trust_store(),
            &anchor.instance,
            &signed.checkpoint,
        )
        .map_err(|e| SsError::State(format!("the registry's cosignature: {e}")))?;
        let mut cosigned = signed;
        cosigned.cosignatures = vec![cosignature];
        let mut state = self.lock();
        self.append(&mut state, &cosigned)?;
        if state
            .latest
            .as_ref()
            .is_some_and(|(_, l)| l.checkpoint.size == v.checkpoint.size)
        {
            state.latest = Some((cosigned, v.clone()));
        }
        state.witnessed = Some((v.checkpoint.size, v.root));
        Ok(v.checkpoint.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lintas_log::{Record, RecordKind};

    fn record(id: &str) -> Record {
        Record {
            kind: RecordKind::RequestReceived as i32,
            message_id: id.into(),
            ..Default::default()
        }
    }

    async fn log_with(dir: &Path, n: usize) -> RecordLog {
        let log = RecordLog::open(dir).unwrap();
        for i in 0..n {
            log.append(record(&format!("m{i}"))).await.unwrap();
        }
        log
    }

    const ORIGIN: &str = "ID/GOV/KEMENDAGRI/SS1";

    fn open(dir: &Path, key: &str, log: &RecordLog) -> Result<Checkpoints, SsError> {
        Checkpoints::open(
            &dir.join("checkpoints"),
            ORIGIN.into(),
            std::sync::Arc::new(lintas_certs::keys::from_pem(key).unwrap()),
            log,
        )
    }

    #[tokio::test]
    async fn checkpoints_are_signed_as_the_log_grows_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = lintas_certs::keys::generate().unwrap().serialize_pem();
        let log = log_with(dir.path(), 5).await;
        let cps = open(dir.path(), &key, &log).unwrap();
        assert!(cps.latest().is_none());
        let first = cps.checkpoint_now(&log, 1000).unwrap().unwrap();
        assert!(
            cps.checkpoint_now(&log, 2000).unwrap().is_none(),
            "nothing new"
        );
        log.append(record("m5")).await.unwrap();
        let second = cps.checkpoint_now(&log, 3000).unwrap().unwrap();
        let pk = lintas_certs::keys::from_pem(&key).unwrap();
        let v = checkpoint::verify(&second, pk.public_key_raw()).unwrap();
        assert_eq!(
            (v.checkpoint.origin.as_str(), v.checkpoint.size, v.root),
            (ORIGIN, 6, log.head().1)
        );
        assert_ne!(first, second);
        drop(cps);
        let cps = open(dir.path(), &key, &log).unwrap();
        assert_eq!(cps.latest(), Some(second));
        // Another key did not sign these.
        let other = lintas_certs::keys::generate().unwrap().serialize_pem();
        let err = open(dir.path(), &other, &log).err().unwrap().to_string();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[tokio::test]
    async fn a_log_changed_or_cut_back_after_its_checkpoint_is_refused() {
        let key = lintas_certs::keys::generate().unwrap().serialize_pem();
        // A record rewritten, frame hash and all, while the server was stopped.
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), 4).await;
        open(dir.path(), &key, &log)
            .unwrap()
            .checkpoint_now(&log, 1000)
            .unwrap();
        log.close();
        let seg = dir.path().join("00000000000000000000.seg");
        let bytes = std::fs::read(&seg).unwrap();
        let n = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let mut forged = record("m0");
        forged.message_id = "mX".into();
        forged.index = 0;
        let forged = forged.encode_to_vec();
        assert_eq!(forged.len(), n, "same length, so the frames stay aligned");
        let mut changed = bytes.clone();
        changed[4..36].copy_from_slice(&lintas_merkle::leaf_hash(&forged));
        changed[36..36 + n].copy_from_slice(&forged);
        std::fs::write(&seg, &changed).unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        let err = open(dir.path(), &key, &log).err().unwrap().to_string();
        assert!(err.contains("records were changed"), "{err}");
        log.close();

        // Records cut off after the checkpoint that covered them.
        std::fs::write(&seg, &bytes).unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        open(dir.path(), &key, &log).unwrap();
        log.close();
        let mut cut = bytes.clone();
        let second = 36 + n;
        cut[second..].fill(0);
        std::fs::write(&seg, &cut).unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 1);
        let err = open(dir.path(), &key, &log).err().unwrap().to_string();
        assert!(err.contains("records were lost"), "{err}");
    }

    /// Opens the log the way the server does: the checkpoints first.
    fn open_as_the_server(dir: &Path, key: &str) -> Result<(Checkpoints, RecordLog), SsError> {
        let cps = Checkpoints::read(
            &dir.join("checkpoints"),
            ORIGIN.into(),
            std::sync::Arc::new(lintas_certs::keys::from_pem(key).unwrap()),
        )?;
        let log = RecordLog::open_after(dir, lintas_log::file::SEGMENT_BYTES, cps.covered())?;
        cps.check(&log)?;
        Ok((cps, log))
    }

    #[tokio::test]
    async fn damage_to_a_checkpointed_record_is_told_apart_from_a_crash_tail() {
        let key = lintas_certs::keys::generate().unwrap().serialize_pem();
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), 3).await;
        open(dir.path(), &key, &log)
            .unwrap()
            .checkpoint_now(&log, 1000)
            .unwrap();
        // Two more records after the checkpoint.
        log.append(record("m3")).await.unwrap();
        log.append(record("m4")).await.unwrap();
        log.close();
        let seg = dir.path().join("00000000000000000000.seg");
        let bytes = std::fs::read(&seg).unwrap();
        let frame = |i: usize| {
            let mut at = 0;
            for _ in 0..i {
                at += 36 + u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            }
            at
        };

        // A byte of record 1, which the checkpoint covers: refused, named, untouched.
        let mut damaged = bytes.clone();
        damaged[frame(1) + 40] ^= 0x01;
        std::fs::write(&seg, &damaged).unwrap();
        let err = open_as_the_server(dir.path(), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!(
                "{} is damaged at byte {}",
                seg.display(),
                frame(1)
            )),
            "{err}"
        );
        assert!(err.contains("record 1 of 3 a checkpoint covers"), "{err}");
        assert!(err.contains("not an unfinished write"), "{err}");
        assert!(!err.contains("records were lost"), "{err}");
        assert_eq!(std::fs::read(&seg).unwrap(), damaged);

        // The same byte of record 4, written after the checkpoint: the unfinished
        // write of a crash, cut off; the server opens with the records before it.
        let mut torn = bytes.clone();
        torn[frame(4) + 40] ^= 0x01;
        std::fs::write(&seg, &torn).unwrap();
        let (_, log) = open_as_the_server(dir.path(), &key).unwrap();
        assert_eq!(log.len(), 4);
    }
}
