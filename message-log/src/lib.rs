//! The security server's record log: what it signed and what it verified, stored before
//! any caller is answered.
//!
//! Appends are group-committed: callers hand their encoded [`Record`] to one writer
//! thread, which takes everything waiting, writes it as one batch, makes it durable with
//! one flush, and only then answers each caller with its record's index. Under load one
//! flush serves many calls; an idle append costs one flush. Records go to append-only,
//! preallocated segment files ([`file`]): one write and one `fdatasync` per batch.
//!
//! If a write fails, the log refuses every later append: what reached the disk is
//! unknown, and a record that cannot be stored means the call must fail.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};

use lintas_merkle::Hash;

pub mod checkpoint;
pub mod file;
#[cfg(feature = "sled")]
mod sled_db;
pub mod tree;
#[cfg(feature = "sled")]
pub use sled_db::{LOCK_WAIT, open_sled, sled_in_use};

pub use file::FileBackend;
pub use lintas_proto::log::v1::{Record, RecordKind};
use prost::Message;
use tokio::sync::oneshot;
use tree::{TreeFiles, TreeOpener};

/// Most records written in one batch.
pub const MAX_BATCH: usize = 1024;
/// Most records waiting for the writer; beyond it appends fail at once (the disk cannot
/// keep up, and callers must not pile up without bound).
pub const MAX_QUEUED: usize = 65_536;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("record log storage failed: {0}")]
    Storage(String),
    #[error("record log is unusable after an earlier storage failure: {0}")]
    Failed(String),
    #[error("record log is closed")]
    Closed,
    #[error("record log is overloaded: {MAX_QUEUED} records are waiting to be written")]
    Overloaded,
    #[error("stored record {index} is damaged: {detail}")]
    Damaged { index: u64, detail: String },
    #[error("the log holds {len} records; {size} were asked for")]
    Beyond { size: u64, len: u64 },
}

/// Where batches go. The writer thread calls `write_batch`; readers call `get` at the
/// same time, so implementations synchronise internally.
pub trait Backend: Send + Sync + 'static {
    /// Writes `records` at consecutive indexes from `first`; returns once durable.
    /// `leaves` are their leaf hashes, computed once by the writer for the tree too.
    fn write_batch(&self, first: u64, records: &[Vec<u8>], leaves: &[Hash]) -> Result<(), String>;
    /// Number of records stored, which is the index the next record gets.
    fn next_index(&self) -> Result<u64, String>;
    fn get(&self, index: u64) -> Result<Option<Vec<u8>>, String>;
}

/// Opens `path` for reading and writing, creating it empty if it does not exist and
/// never truncating it: how every append-only file of the log and its neighbours opens.
pub fn open_append_only(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

struct Job {
    record: Vec<u8>,
    done: oneshot::Sender<Result<u64, LogError>>,
}

/// A handle to the log; cheap to clone. The writer thread stops when every handle is
/// gone, after writing everything already handed to it; [`RecordLog::close`] waits for
/// that.
#[derive(Clone)]
pub struct RecordLog {
    tx: mpsc::SyncSender<Job>,
    shared: Arc<Shared>,
}

struct Shared {
    /// The index the next submitted record gets; held while handing it to the writer,
    /// so records reach the writer in index order.
    next: std::sync::Mutex<u64>,
    /// Records durably stored.
    len: AtomicU64,
    /// The Merkle tree over the durable records.
    tree: RwLock<TreeFiles>,
    /// Durable writes (batches) made.
    flushes: AtomicU64,
    failed: AtomicBool,
    backend: Arc<dyn Backend>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RecordLog {
    /// Opens the log in `dir`: records in append-only segment files (see [`file`]),
    /// the Merkle tree over them in `dir/tree` (see [`tree`]). Every record is read and
    /// checked against its hash, and the stored tree against the records.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        Self::open_with_segments_of(dir, file::SEGMENT_BYTES)
    }

    /// [`RecordLog::open`] with segments of `segment_bytes` (new segments only).
    pub fn open_with_segments_of(dir: &Path, segment_bytes: u64) -> Result<Self, LogError> {
        Self::open_after(dir, segment_bytes, 0)
    }

    /// [`RecordLog::open_with_segments_of`] for a log whose first `durable` records a
    /// signed checkpoint covers: damage among them is refused as damage to stored data,
    /// never cut off as a crash's unfinished write (see [`FileBackend::open_after`]).
    pub fn open_after(dir: &Path, segment_bytes: u64, durable: u64) -> Result<Self, LogError> {
        let mut opener = TreeOpener::new(&dir.join("tree")).map_err(LogError::Storage)?;
        let backend =
            FileBackend::open_after(dir, segment_bytes, durable, &mut |leaf| opener.leaf(leaf))
                .map_err(LogError::Storage)?;
        Self::start(backend, opener)
    }

    /// A log over any backend, its tree in `tree_dir`.
    pub fn with_backend(backend: impl Backend, tree_dir: &Path) -> Result<Self, LogError> {
        let mut opener = TreeOpener::new(tree_dir).map_err(LogError::Storage)?;
        for i in 0..backend.next_index().map_err(LogError::Storage)? {
            let record = backend
                .get(i)
                .map_err(LogError::Storage)?
                .ok_or_else(|| LogError::Storage(format!("record {i} is missing")))?;
            opener
                .leaf(lintas_merkle::leaf_hash(&record))
                .map_err(LogError::Storage)?;
        }
        Self::start(backend, opener)
    }

    fn start(backend: impl Backend, opener: TreeOpener) -> Result<Self, LogError> {
        let len = backend.next_index().map_err(LogError::Storage)?;
        let (tree, repaired) = opener.finish().map_err(LogError::Storage)?;
        if tree.size() != len {
            return Err(LogError::Storage(format!(
                "the log holds {len} records but its tree {}",
                tree.size()
            )));
        }
        if repaired > 0 {
            tracing::warn!(
                records = repaired,
                "record log: tree nodes were missing or wrong and were rebuilt from the records"
            );
        }
        let backend: Arc<dyn Backend> = Arc::new(backend);
        let (tx, rx) = mpsc::sync_channel::<Job>(MAX_QUEUED);
        let writer_backend = backend.clone();
        let shared = Arc::new(Shared {
            next: std::sync::Mutex::new(len),
            len: AtomicU64::new(len),
            tree: RwLock::new(tree),
            flushes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            backend,
            writer: std::sync::Mutex::new(None),
        });
        let writer_shared = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("lintas-log-writer".into())
            .spawn(move || writer(&*writer_backend, rx, &writer_shared, len))
            .map_err(|e| LogError::Storage(format!("starting the writer thread: {e}")))?;
        *shared.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(RecordLog { tx, shared })
    }

    /// Appends `record` and returns its index once it is durable.
    pub async fn append(&self, record: Record) -> Result<u64, LogError> {
        self.submit(record)?.await
    }

    /// Gives `record` its index and hands it to the writer now; the returned future
    /// resolves with the index once the record is durable. Records become durable in
    /// the order they are submitted.
    pub fn submit(
        &self,
        mut record: Record,
    ) -> Result<impl std::future::Future<Output = Result<u64, LogError>> + use<>, LogError> {
        let (done, wait) = oneshot::channel();
        let mut next = self.shared.next.lock().unwrap_or_else(|p| p.into_inner());
        record.index = *next;
        self.tx
            .try_send(Job {
                record: record.encode_to_vec(),
                done,
            })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => LogError::Overloaded,
                mpsc::TrySendError::Disconnected(_) => LogError::Closed,
            })?;
        *next += 1;
        drop(next);
        Ok(async move { wait.await.map_err(|_| LogError::Closed)? })
    }

    /// The size of the tree over the durable records and its head, taken together.
    pub fn head(&self) -> (u64, Hash) {
        let tree = self.shared.tree.read().unwrap_or_else(|p| p.into_inner());
        (tree.size(), tree.root())
    }

    /// The head of the tree at an earlier `size`.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        let tree = self.shared.tree.read().unwrap_or_else(|p| p.into_inner());
        if size > tree.size() {
            return Err(LogError::Beyond {
                size,
                len: tree.size(),
            });
        }
        lintas_merkle::root_at(&*tree, size).map_err(LogError::Storage)
    }

    /// The inclusion proof of record `index` in the tree at `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        let tree = self.shared.tree.read().unwrap_or_else(|p| p.into_inner());
        if size > tree.size() || index >= size {
            return Err(LogError::Beyond {
                size: size.max(index + 1),
                len: tree.size(),
            });
        }
        lintas_merkle::inclusion_proof_at(&*tree, index, size)
            .map_err(LogError::Storage)?
            .ok_or(LogError::Beyond {
                size,
                len: tree.size(),
            })
    }

    /// The consistency proof between the tree at `first` and at `second` records.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, LogError> {
        let tree = self.shared.tree.read().unwrap_or_else(|p| p.into_inner());
        if second > tree.size() || first > second {
            return Err(LogError::Beyond {
                size: second.max(first),
                len: tree.size(),
            });
        }
        lintas_merkle::consistency_proof_at(&*tree, first, second)
            .map_err(LogError::Storage)?
            .ok_or(LogError::Beyond {
                size: first,
                len: second,
            })
    }

    /// Number of durable records.
    pub fn len(&self) -> u64 {
        self.shared.len.load(Ordering::SeqCst)
    }

    /// Durable writes made since the log was opened; each stored one batch of records.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an earlier write failed (the log then refuses appends).
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// The record at `index` exactly as stored (its bytes are its leaf entry).
    pub fn get_bytes(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.shared.backend.get(index).map_err(LogError::Storage)
    }

    /// The record at `index`, decoded.
    pub fn get(&self, index: u64) -> Result<Option<Record>, LogError> {
        match self.shared.backend.get(index).map_err(LogError::Storage)? {
            None => Ok(None),
            Some(bytes) => {
                Record::decode(bytes.as_slice())
                    .map(Some)
                    .map_err(|e| LogError::Damaged {
                        index,
                        detail: e.to_string(),
                    })
            }
        }
    }

    /// Drops this handle; if it was the last one, waits (blocking) until the writer has
    /// stored everything handed to it and released the storage.
    pub fn close(self) {
        let RecordLog { tx, shared } = self;
        drop(tx);
        if let Ok(shared) = Arc::try_unwrap(shared) {
            let handle = shared
                .writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            drop(shared.backend);
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }
}

/// The writer thread. It holds the shared state weakly so that dropping the last handle
/// can reclaim it; it ends when every sender is gone.
fn writer(
    backend: &dyn Backend,
    rx: mpsc::Receiver<Job>,
    shared: &std::sync::Weak<Shared>,
    mut next: u64,
) {
    let mut failure: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Some(f) = &failure {
            for j in jobs {
                let _ = j.done.send(Err(LogError::Failed(f.clone())));
            }
            continue;
        }
        let first_index = next;
        let records: Vec<Vec<u8>> = jobs
            .iter_mut()
            .map(|j| std::mem::take(&mut j.record))
            .collect();
        let leaves: Vec<Hash> = records
            .iter()
            .map(|r| lintas_merkle::leaf_hash(r))
            .collect();
        match backend.write_batch(first_index, &records, &leaves) {
            Ok(()) => {
                next = first_index + jobs.len() as u64;
                if let Some(s) = shared.upgrade() {
                    let mut tree = s.tree.write().unwrap_or_else(|p| p.into_inner());
                    // The nodes follow from the records and are repaired on opening; a
                    // failure here leaves proofs unavailable, not records lost.
                    if let Err(e) = tree.append(&leaves) {
                        tracing::error!(error = %e, "record log: writing the tree failed");
                    }
                    drop(tree);
                    s.len.store(next, Ordering::SeqCst);
                    s.flushes.fetch_add(1, Ordering::SeqCst);
                }
                for (i, j) in jobs.into_iter().enumerate() {
                    let _ = j.done.send(Ok(first_index + i as u64));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "record log write failed; refusing further appends");
                if let Some(s) = shared.upgrade() {
                    s.failed.store(true, Ordering::SeqCst);
                }
                for j in jobs {
                    let _ = j.done.send(Err(LogError::Storage(e.clone())));
                }
                failure = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    fn record(id: &str) -> Record {
        Record {
            kind: RecordKind::RequestSent as i32,
            message_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_distinct_durable_indexes_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("m{i}");
                (log.append(record(&id)).await.unwrap(), id)
            }));
        }
        let mut seen = BTreeMap::new();
        for t in tasks {
            let (index, id) = t.await.unwrap();
            assert!(
                seen.insert(index, id).is_none(),
                "index {index} given twice"
            );
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (0..200).collect::<Vec<_>>()
        );
        for (index, id) in &seen {
            assert_eq!(&log.get(*index).unwrap().unwrap().message_id, id);
        }
        log.close();
        let log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 200);
        assert_eq!(log.append(record("next")).await.unwrap(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_a_merkle_tree_over_its_exact_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.head(), (0, lintas_merkle::empty_root()));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(record(&format!("m{i}"))).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let early = log.head();
        assert_eq!(early.0, 50);
        for i in 50..77 {
            log.append(record(&format!("m{i}"))).await.unwrap();
        }
        // Each stored record carries its own index, and its exact bytes are the leaves.
        let leaves: Vec<Hash> = (0..77)
            .map(|i| {
                let r = log.get(i).unwrap().unwrap();
                assert_eq!(r.index, i);
                lintas_merkle::leaf_hash(&r.encode_to_vec())
            })
            .collect();
        let (size, root) = log.head();
        assert_eq!((size, root), (77, lintas_merkle::root(&leaves)));
        assert_eq!(log.root_at(50).unwrap(), early.1);
        let proof = log.inclusion_proof(33, 77).unwrap();
        lintas_merkle::verify_inclusion(&leaves[33], 33, 77, &proof, &root).unwrap();
        let proof = log.consistency_proof(50, 77).unwrap();
        lintas_merkle::verify_consistency(50, 77, &early.1, &root, &proof).unwrap();
        assert!(matches!(
            log.inclusion_proof(77, 77),
            Err(LogError::Beyond { .. })
        ));
        assert!(matches!(log.root_at(78), Err(LogError::Beyond { .. })));
        log.close();
        // Reopened, the tree is checked against the records and is the same.
        let log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.head(), (77, root));
        assert_eq!(log.append(record("next")).await.unwrap(), 77);
        assert_eq!(log.get(77).unwrap().unwrap().index, 77);
    }

    /// A backend that fails when told to, counting batches.
    struct Flaky {
        fail: Arc<AtomicBool>,
        stored: Arc<Mutex<Vec<Vec<u8>>>>,
        batches: Arc<AtomicU64>,
    }

    impl Backend for Flaky {
        fn write_batch(&self, first: u64, records: &[Vec<u8>], _: &[Hash]) -> Result<(), String> {
            if self.fail.load(Ordering::SeqCst) {
                return Err("disk on fire".into());
            }
            let mut s = self.stored.lock().unwrap();
            assert_eq!(s.len() as u64, first);
            s.extend_from_slice(records);
            self.batches.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn next_index(&self) -> Result<u64, String> {
            Ok(self.stored.lock().unwrap().len() as u64)
        }
        fn get(&self, index: u64) -> Result<Option<Vec<u8>>, String> {
            Ok(self.stored.lock().unwrap().get(index as usize).cloned())
        }
    }

    #[tokio::test]
    async fn a_failed_write_fails_its_callers_and_every_later_append() {
        let fail = Arc::new(AtomicBool::new(false));
        let stored = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(AtomicU64::new(0));
        let tree = tempfile::tempdir().unwrap();
        let log = RecordLog::with_backend(
            Flaky {
                fail: fail.clone(),
                stored: stored.clone(),
                batches: batches.clone(),
            },
            tree.path(),
        )
        .unwrap();
        assert_eq!(log.append(record("a")).await.unwrap(), 0);
        fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            log.append(record("b")).await,
            Err(LogError::Storage(_))
        ));
        fail.store(false, Ordering::SeqCst);
        assert!(matches!(
            log.append(record("c")).await,
            Err(LogError::Failed(_))
        ));
        assert!(log.failed());
        assert_eq!(log.len(), 1);
        assert_eq!(stored.lock().unwrap().len(), 1);
    }

    /// A backend whose first batch waits until the test lets it go.
    struct Gated {
        entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
        release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        stored: Mutex<Vec<Vec<u8>>>,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Backend for Gated {
        fn write_batch(&self, first: u64, records: &[Vec<u8>], _: &[Hash]) -> Result<(), String> {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
                let release = self.release.lock().unwrap().take().unwrap();
                release.recv().unwrap();
            }
            let mut s = self.stored.lock().unwrap();
            assert_eq!(s.len() as u64, first);
            s.extend_from_slice(records);
            self.batches.lock().unwrap().push(records.len());
            Ok(())
        }
        fn next_index(&self) -> Result<u64, String> {
            Ok(self.stored.lock().unwrap().len() as u64)
        }
        fn get(&self, index: u64) -> Result<Option<Vec<u8>>, String> {
            Ok(self.stored.lock().unwrap().get(index as usize).cloned())
        }
    }

    #[tokio::test]
    async fn records_waiting_during_a_write_share_the_next_one() {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let tree = tempfile::tempdir().unwrap();
        let log = RecordLog::with_backend(
            Gated {
                entered: Mutex::new(Some(entered_tx)),
                release: Mutex::new(Some(release_rx)),
                stored: Mutex::new(Vec::new()),
                batches: batches.clone(),
            },
            tree.path(),
        )
        .unwrap();
        let first = log.submit(record("first")).unwrap();
        // The writer is inside the first write; everything submitted now waits.
        entered.recv().unwrap();
        let rest: Vec<_> = (0..100)
            .map(|i| log.submit(record(&i.to_string())).unwrap())
            .collect();
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), 0);
        for (i, r) in rest.into_iter().enumerate() {
            assert_eq!(r.await.unwrap(), i as u64 + 1);
        }
        // One write (one flush) for the first record, one for the hundred that waited.
        assert_eq!(*batches.lock().unwrap(), [1, 100]);
    }
}
