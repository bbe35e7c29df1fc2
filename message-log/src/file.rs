//! The record store: append-only segment files.
//!
//! A segment is named after the index of its first record (`00000000000000000042.seg`)
//! and is preallocated, so a batch costs one write and one `fdatasync` that does not
//! have to change the file's size. Each record is framed as
//!
//! ```text
//! u32 big-endian length | 32-byte SHA-256(0x00 || record) | record
//! ```
//!
//! The hash is the record's RFC 9162 leaf hash: the frame checks itself and the Merkle
//! tree over the log needs no second pass. The preallocated rest of a segment is zeros;
//! a zero length marks the end.
//!
//! Records are acknowledged only after the flush that made them durable. A crash during
//! a write can therefore leave a damaged tail only after the last acknowledged record:
//! on opening, the log ends at the first frame that does not check, and everything after
//! it is zeroed so that no stale bytes can ever read as records.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::Backend;

/// A record's RFC 9162 leaf hash.
pub type Leaf = lintas_merkle::Hash;

/// Bytes preallocated per segment; a new segment starts when a batch would not fit.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest record accepted (headers are capped far below this).
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
const FRAME_HEAD: usize = 4 + 32;
const LOCK_FILE: &str = "lock";

/// Whether a process holds the record log in `dir` open now (its lock is taken). A
/// log that does not exist is not in use.
pub fn in_use(dir: &Path) -> bool {
    let Ok(lock) = OpenOptions::new().write(true).open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(lock.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Append-only segment files in one directory, which this process holds locked.
pub struct FileBackend {
    dir: PathBuf,
    /// Bytes preallocated per segment ([`SEGMENT_BYTES`] but in tests).
    segment_bytes: u64,
    state: Mutex<State>,
    /// Held for the backend's lifetime: a second process is refused.
    _lock: File,
}

struct State {
    /// First index of every segment, ascending; the last is the one written.
    segments: Vec<u64>,
    active: File,
    /// Byte offset of each record of the active segment, and where the next goes.
    offsets: Vec<u64>,
    end: u64,
    capacity: u64,
    /// The most recently read sealed segment's offsets and file, to read around in it
    /// cheaply.
    cached: Option<(u64, Vec<u64>, std::sync::Arc<File>)>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// What a scan of a segment found.
struct Scan {
    offsets: Vec<u64>,
    /// The leaf hash of each record, checked against the record.
    leaves: Vec<lintas_merkle::Hash>,
    end: u64,
    /// Why the scan stopped before a zero length, if it did.
    damage: Option<String>,
}

/// Reads the frames of `file` from the start: their offsets, where they end, and
/// whether the end was clean.
/// Where a scan reads frames from: a segment file, or its bytes already in memory.
trait ReadAt {
    fn frame_bytes(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn frame_bytes(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn frame_bytes(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn scan<R: ReadAt + ?Sized>(file: &R, len: u64) -> Result<Scan, std::io::Error> {
    let mut offsets = Vec::new();
    let mut leaves = Vec::new();
    let mut pos = 0u64;
    let mut head = [0u8; FRAME_HEAD];
    let mut record = Vec::new();
    loop {
        if pos + FRAME_HEAD as u64 > len {
            return Ok(Scan {
                offsets,
                leaves,
                end: pos,
                damage: None,
            });
        }
        file.frame_bytes(&mut head, pos)?;
        let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if n == 0 {
            return Ok(Scan {
                offsets,
                leaves,
                end: pos,
                damage: None,
            });
        }
        let damaged = |why: String| Scan {
            offsets: offsets.clone(),
            leaves: leaves.clone(),
            end: pos,
            damage: Some(why),
        };
        if n > MAX_RECORD_BYTES || pos + (FRAME_HEAD + n) as u64 > len {
            return Ok(damaged(format!(
                "its frame claims {n} bytes, past the segment's end"
            )));
        }
        record.resize(n, 0);
        file.frame_bytes(&mut record, pos + FRAME_HEAD as u64)?;
        let leaf = lintas_merkle::leaf_hash(&record);
        if leaf[..] != head[4..] {
            return Ok(damaged("it does not match its hash".into()));
        }
        offsets.push(pos);
        leaves.push(leaf);
        pos += (FRAME_HEAD + n) as u64;
    }
}

/// Creates a preallocated segment and makes its existence durable.
fn create_segment(dir: &Path, first: u64, capacity: u64) -> Result<File, String> {
    let path = segment_path(dir, first);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io("creating", &path, e))?;
    file.set_len(capacity)
        .map_err(|e| io("preallocating", &path, e))?;
    file.sync_all().map_err(|e| io("syncing", &path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))?;
    Ok(file)
}

impl FileBackend {
    /// Opens (creating if needed) the log in `dir`, reading and checking every record:
    /// `on_leaf` gets each one's leaf hash, in order. A damaged tail left by a crash
    /// during a write is cut off and zeroed; damage anywhere else is refused.
    pub fn open(
        dir: &Path,
        on_leaf: &mut dyn FnMut(Leaf) -> Result<(), String>,
    ) -> Result<Self, String> {
        Self::open_with_segments_of(dir, SEGMENT_BYTES, on_leaf)
    }

    /// [`FileBackend::open`] with new segments of `segment_bytes`.
    pub fn open_with_segments_of(
        dir: &Path,
        segment_bytes: u64,
        on_leaf: &mut dyn FnMut(Leaf) -> Result<(), String>,
    ) -> Result<Self, String> {
        Self::open_after(dir, segment_bytes, 0, on_leaf)
    }

    /// [`FileBackend::open_with_segments_of`], knowing that the first `durable` records
    /// were made durable before the log was last closed (a signed checkpoint covers
    /// them). A crash can only tear the write that was not yet durable, so damage to
    /// one of those records is damage to stored data: it is refused, naming the
    /// segment, the byte and the record, and nothing is changed. Damage after them, in
    /// the last segment, is the unfinished write of a crash: it is cut off (and kept
    /// beside the segment), with a warning.
    pub fn open_after(
        dir: &Path,
        segment_bytes: u64,
        durable: u64,
        on_leaf: &mut dyn FnMut(Leaf) -> Result<(), String>,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("opening", &lock_path, e))?;
        lock.try_lock().map_err(|e| {
            format!(
                "the record log in {} is in use ({e}); is another lintas process using this directory?",
                dir.display()
            )
        })?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("reading", dir, e))? {
            let entry = entry.map_err(|e| io("reading", dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name.strip_suffix(".seg") {
                let first = first
                    .parse::<u64>()
                    .map_err(|_| format!("unexpected file {name} in {}", dir.display()))?;
                segments.push(first);
            }
        }
        segments.sort_unstable();
        let Some(&last) = segments.last() else {
            let active = create_segment(dir, 0, segment_bytes)?;
            return Ok(FileBackend {
                dir: dir.to_owned(),
                segment_bytes,
                state: Mutex::new(State {
                    segments: vec![0],
                    active,
                    offsets: Vec::new(),
                    end: 0,
                    capacity: segment_bytes,
                    cached: None,
                }),
                _lock: lock,
            });
        };
        // Every sealed segment must hold exactly the records up to the next one's first.
        for pair in segments.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            let p = segment_path(dir, first);
            let f = File::open(&p).map_err(|e| io("opening", &p, e))?;
            let len = f.metadata().map_err(|e| io("reading", &p, e))?.len();
            let s = scan(&f, len).map_err(|e| io("reading", &p, e))?;
            if let Some(why) = &s.damage {
                return Err(stored_damage(&p, &s, first, why, "a sealed segment"));
            }
            if first + s.offsets.len() as u64 != next {
                return Err(format!(
                    "record log segment {} holds {} records but the next segment starts at {next}",
                    p.display(),
                    s.offsets.len()
                ));
            }
            for leaf in s.leaves {
                on_leaf(leaf)?;
            }
        }
        let path = segment_path(dir, last);
        let active = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("opening", &path, e))?;
        let capacity = active
            .metadata()
            .map_err(|e| io("reading", &path, e))?
            .len();
        let found = scan(&active, capacity).map_err(|e| io("reading", &path, e))?;
        if let Some(why) = &found.damage {
            let index = last + found.offsets.len() as u64;
            if index < durable {
                let whose = format!("record {index} of {durable} a checkpoint covers");
                return Err(stored_damage(&path, &found, last, why, &whose));
            }
            tracing::warn!(segment = %path.display(), at_byte = found.end, record = index,
                damage = %why,
                "record log: cutting off the unfinished write of a crash (after the last checkpoint)");
        }
        set_aside_after(&active, &path, found.end, capacity)?;
        for leaf in &found.leaves {
            on_leaf(*leaf)?;
        }
        Ok(FileBackend {
            dir: dir.to_owned(),
            segment_bytes,
            state: Mutex::new(State {
                segments,
                active,
                offsets: found.offsets,
                end: found.end,
                capacity,
                cached: None,
            }),
            _lock: lock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What to tell the operator about damage found where a crash cannot have left it:
/// where it is, what it is not, and how to recover.
fn stored_damage(path: &Path, scan: &Scan, first: u64, why: &str, whose: &str) -> String {
    let index = first + scan.offsets.len() as u64;
    format!(
        "record log segment {} is damaged at byte {} (record {index}, in {whose}): {why}. \
         That record was durable before the last stop, so this is damage to stored data \
         (a disk or file-system fault, or a changed file), not an unfinished write of a \
         crash; nothing was changed. To recover, restore the data directory from a backup \
         taken after the damage's record was written, or restore this segment from one; \
         the other side of every exchange is in the peer server's log \
         (lintas audit export there)",
        path.display(),
        scan.end,
    )
}

/// Whatever is not zero after `end` (the bytes of a write cut short, or damage) is
/// copied, durably, to `<segment>.damaged-<end>` beside the segment, then overwritten
/// with zeros, so that nothing is lost and no stale frame can come back.
fn set_aside_after(file: &File, path: &Path, end: u64, capacity: u64) -> Result<(), String> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    // Where the non-zero bytes stop.
    let (mut pos, mut stop) = (end, end);
    while pos < capacity {
        let n = CHUNK.min(capacity - pos) as usize;
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(|e| io("reading", path, e))?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            stop = pos + last as u64 + 1;
        }
        pos += n as u64;
    }
    if stop == end {
        return Ok(());
    }
    let mut kept = vec![0u8; (stop - end) as usize];
    file.read_exact_at(&mut kept, end)
        .map_err(|e| io("reading", path, e))?;
    let aside = path.with_extension(format!("seg.damaged-{end}"));
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&aside)
        .map_err(|e| io("creating", &aside, e))?;
    f.write_all_at(&kept, 0)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("writing", &aside, e))?;
    tracing::warn!(segment = %path.display(), at = end, bytes = kept.len(), kept = %aside.display(),
        "record log: bytes after the last whole record were set aside (an unfinished write, or damage)");
    kept.fill(0);
    file.write_all_at(&kept, end)
        .and_then(|()| file.sync_data())
        .map_err(|e| io("repairing", path, e))
}

impl Backend for FileBackend {
    fn write_batch(
        &self,
        first: u64,
        records: &[Vec<u8>],
        leaves: &[lintas_merkle::Hash],
    ) -> Result<(), String> {
        if leaves.len() != records.len() {
            return Err("a leaf hash for each record is needed".into());
        }
        let mut st = self.lock();
        let next = st.segments.last().copied().unwrap_or(0) + st.offsets.len() as u64;
        if next != first {
            return Err(format!(
                "record log out of step: next index is {next}, asked to write {first}"
            ));
        }
        let mut frames = Vec::with_capacity(records.iter().map(|r| FRAME_HEAD + r.len()).sum());
        let mut offsets = Vec::with_capacity(records.len());
        for (r, leaf) in records.iter().zip(leaves) {
            if r.is_empty() || r.len() > MAX_RECORD_BYTES {
                return Err(format!(
                    "a record of {} bytes cannot be stored (1 to {MAX_RECORD_BYTES})",
                    r.len()
                ));
            }
            offsets.push(frames.len() as u64);
            frames.extend_from_slice(&(r.len() as u32).to_be_bytes());
            frames.extend_from_slice(leaf);
            frames.extend_from_slice(r);
        }
        let need = frames.len() as u64;
        if st.end + need > st.capacity && st.offsets.is_empty() {
            // The active segment holds nothing yet (or was left empty by a crash while
            // being created): it grows instead.
            let capacity = self.segment_bytes.max(need + FRAME_HEAD as u64);
            let path = segment_path(&self.dir, *st.segments.last().unwrap_or(&0));
            st.active
                .set_len(capacity)
                .and_then(|()| st.active.sync_all())
                .map_err(|e| io("preallocating", &path, e))?;
            st.capacity = capacity;
        }
        if st.end + need > st.capacity {
            // A new segment, sized for this batch if it is larger than usual; a zero
            // length after the last frame ends the old one.
            let capacity = self.segment_bytes.max(need + FRAME_HEAD as u64);
            let active = create_segment(&self.dir, first, capacity)?;
            st.segments.push(first);
            st.active = active;
            st.offsets.clear();
            st.end = 0;
            st.capacity = capacity;
        }
        let path = segment_path(&self.dir, *st.segments.last().unwrap_or(&0));
        st.active
            .write_all_at(&frames, st.end)
            .map_err(|e| io("writing", &path, e))?;
        st.active.sync_data().map_err(|e| io("syncing", &path, e))?;
        let base = st.end;
        st.offsets.extend(offsets.into_iter().map(|o| base + o));
        st.end += need;
        Ok(())
    }

    fn next_index(&self) -> Result<u64, String> {
        let st = self.lock();
        Ok(st.segments.last().copied().unwrap_or(0) + st.offsets.len() as u64)
    }

    fn get(&self, index: u64) -> Result<Option<Vec<u8>>, String> {
        // Where the record is, found under the lock; the reading happens after it.
        let (first, found) = {
            let st = self.lock();
            let seg = match st.segments.binary_search(&index) {
                Ok(i) => i,
                Err(0) => return Ok(None),
                Err(i) => i - 1,
            };
            let first = st.segments[seg];
            let at = (index - first) as usize;
            let found = if seg + 1 == st.segments.len() {
                let path = segment_path(&self.dir, first);
                let file = st.active.try_clone().map_err(|e| io("opening", &path, e))?;
                Some((st.offsets.get(at).copied(), std::sync::Arc::new(file)))
            } else {
                st.cached
                    .as_ref()
                    .filter(|c| c.0 == first)
                    .map(|(_, offsets, file)| (offsets.get(at).copied(), file.clone()))
            };
            (first, found)
        };
        let path = segment_path(&self.dir, first);
        let (offset, file) = match found {
            Some((Some(offset), file)) => (offset, file),
            Some((None, _)) => return Ok(None),
            None => {
                // A sealed segment read for the first time: its frames are found
                // without holding the lock, so the writer is not kept waiting.
                let f = File::open(&path).map_err(|e| io("opening", &path, e))?;
                let len = f.metadata().map_err(|e| io("reading", &path, e))?.len();
                let offsets = scan(&f, len).map_err(|e| io("reading", &path, e))?.offsets;
                let file = std::sync::Arc::new(f);
                let offset = offsets.get((index - first) as usize).copied();
                self.lock().cached = Some((first, offsets, file.clone()));
                match offset {
                    Some(o) => (o, file),
                    None => return Ok(None),
                }
            }
        };
        let mut head = [0u8; FRAME_HEAD];
        file.read_exact_at(&mut head, offset)
            .map_err(|e| io("reading", &path, e))?;
        let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if n == 0 || n > MAX_RECORD_BYTES {
            return Err(format!(
                "record {index} in {} has a bad frame",
                path.display()
            ));
        }
        let mut record = vec![0u8; n];
        file.read_exact_at(&mut record, offset + FRAME_HEAD as u64)
            .map_err(|e| io("reading", &path, e))?;
        if lintas_merkle::leaf_hash(&record)[..] != head[4..] {
            return Err(format!(
                "record {index} in {} does not match its hash",
                path.display()
            ));
        }
        Ok(Some(record))
    }
}

/// The sealed segments of the log in `dir` (every one but the one being written), as
/// (file name, first index, number of records), in order.
pub fn sealed_segments(dir: &Path) -> Result<Vec<(String, u64, u64)>, String> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("reading", dir, e))? {
        let name = entry.map_err(|e| io("reading", dir, e))?.file_name();
        if let Some(first) = name.to_string_lossy().strip_suffix(".seg")
            && let Ok(first) = first.parse::<u64>()
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts
        .windows(2)
        .map(|w| (format!("{:020}.seg", w[0]), w[0], w[1] - w[0]))
        .collect())
}

/// The leaf hashes of every record of a sealed segment, given its bytes, each checked
/// against its record; any damage is an error.
pub fn segment_leaves(bytes: &[u8]) -> Result<Vec<lintas_merkle::Hash>, String> {
    let s = scan(bytes, bytes.len() as u64).map_err(|e| format!("reading the segment: {e}"))?;
    match s.damage {
        Some(why) => Err(format!("the segment is damaged: {why}")),
        None => Ok(s.leaves),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a batch the way the log's writer does, with the records' leaf hashes.
    fn write(log: &FileBackend, first: u64, records: &[Vec<u8>]) -> Result<(), String> {
        let leaves: Vec<_> = records
            .iter()
            .map(|r| lintas_merkle::leaf_hash(r))
            .collect();
        log.write_batch(first, records, &leaves)
    }

    fn rec(i: u64) -> Vec<u8> {
        format!("record number {i}").into_bytes()
    }

    #[test]
    fn records_survive_reopening_and_read_back_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        assert_eq!(log.next_index().unwrap(), 0);
        write(&log, 0, &[rec(0), rec(1)]).unwrap();
        write(&log, 2, &[rec(2)]).unwrap();
        assert_eq!(log.get(1).unwrap(), Some(rec(1)));
        assert!(
            write(&log, 5, &[rec(5)])
                .unwrap_err()
                .contains("out of step")
        );
        assert!(write(&log, 3, &[Vec::new()]).is_err());
        drop(log);
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        assert_eq!(log.next_index().unwrap(), 3);
        for i in 0..3 {
            assert_eq!(log.get(i).unwrap(), Some(rec(i)));
        }
        assert_eq!(log.get(3).unwrap(), None);
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!in_use(dir.path()), "no log yet");
        let held = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        assert!(in_use(dir.path()));
        let err = FileBackend::open(dir.path(), &mut |_| Ok(()))
            .err()
            .unwrap();
        assert!(err.contains("another lintas process"), "{err}");
        drop(held);
        assert!(!in_use(dir.path()));
    }

    #[test]
    fn an_unfinished_write_is_cut_off_and_cannot_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        write(&log, 0, &[rec(0), rec(1), rec(2)]).unwrap();
        drop(log);
        // A crash lost the page of record 1 but kept record 2's.
        let seg = segment_path(dir.path(), 0);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let second = (FRAME_HEAD + rec(0).len()) as u64;
        f.write_all_at(&[0u8; 8], second).unwrap();
        drop(f);
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        assert_eq!(log.next_index().unwrap(), 1);
        // What followed the cut was kept aside, not destroyed.
        let aside = std::fs::read(seg.with_extension(format!("seg.damaged-{second}"))).unwrap();
        assert!(aside.ends_with(&rec(2)));
        // A record of the same size as the lost one must not resurrect record 2.
        write(&log, 1, &[rec(7)]).unwrap();
        drop(log);
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        assert_eq!(log.next_index().unwrap(), 2);
        assert_eq!(log.get(1).unwrap(), Some(rec(7)));
        assert_eq!(log.get(2).unwrap(), None);
    }

    #[test]
    fn damage_to_checkpointed_records_is_refused_and_a_tail_after_them_is_cut() {
        // (record damaged, records a checkpoint covers, records kept or the refusal)
        let cases: [(u64, u64, Result<u64, &str>); 6] = [
            // No checkpoint: any damage in the last segment is a crash's tail.
            (1, 0, Ok(1)),
            (3, 0, Ok(3)),
            // After the checkpointed records: a tail, cut.
            (2, 2, Ok(2)),
            (3, 2, Ok(3)),
            // Among them: refused, with the byte and the record.
            (1, 2, Err("record 1, in record 1 of 2 a checkpoint covers")),
            (0, 4, Err("record 0, in record 0 of 4 a checkpoint covers")),
        ];
        for (damaged, durable, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
            write(&log, 0, &[rec(0), rec(1), rec(2), rec(3)]).unwrap();
            drop(log);
            let seg = segment_path(dir.path(), 0);
            let at: u64 = (0..damaged)
                .map(|i| (FRAME_HEAD + rec(i).len()) as u64)
                .sum();
            // One byte of the record's text flipped.
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(b"R", at + FRAME_HEAD as u64).unwrap();
            drop(f);
            let before = std::fs::read(&seg).unwrap();
            match (
                FileBackend::open_after(dir.path(), SEGMENT_BYTES, durable, &mut |_| Ok(())),
                want,
            ) {
                (Ok(log), Ok(kept)) => assert_eq!(log.next_index().unwrap(), kept),
                (Err(e), Err(says)) => {
                    assert!(e.contains(says), "{e}");
                    assert!(e.contains(&format!("is damaged at byte {at}")), "{e}");
                    assert!(e.contains("not an unfinished write"), "{e}");
                    assert!(e.contains("restore"), "{e}");
                    // Nothing was changed.
                    assert_eq!(std::fs::read(&seg).unwrap(), before);
                }
                (got, want) => panic!(
                    "damage at {damaged}, {durable} durable: got {:?}, want {want:?}",
                    got.map(|l| l.next_index().unwrap())
                ),
            }
        }
    }

    #[test]
    fn an_empty_segment_left_by_a_crash_grows_instead_of_blocking_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        write(&log, 0, &[rec(0)]).unwrap();
        drop(log);
        // A crash after creating the next segment, before preallocating it.
        File::create(segment_path(dir.path(), 1)).unwrap();
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        assert_eq!(log.next_index().unwrap(), 1);
        write(&log, 1, &[rec(1)]).unwrap();
        drop(log);
        let log = FileBackend::open(dir.path(), &mut |_| Ok(())).unwrap();
        assert_eq!(log.next_index().unwrap(), 2);
        assert_eq!(log.get(0).unwrap(), Some(rec(0)));
        assert_eq!(log.get(1).unwrap(), Some(rec(1)));
    }

    #[test]
    fn a_changed_byte_in_a_sealed_segment_is_refused_and_reading_checks_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileBackend::open_with_segments_of(dir.path(), 4096, &mut |_| Ok(())).unwrap();
        write(&log, 0, &[rec(0)]).unwrap();
        // A batch larger than what is left starts a new segment, as large as it needs.
        let big = vec![7u8; 3000];
        write(&log, 1, &[big.clone(), big.clone()]).unwrap();
        write(&log, 3, &[rec(3)]).unwrap();
        assert_eq!(log.get(0).unwrap(), Some(rec(0)));
        assert_eq!(log.get(2).unwrap(), Some(big));
        assert_eq!(log.get(3).unwrap(), Some(rec(3)));
        drop(log);
        let log = FileBackend::open_with_segments_of(dir.path(), 4096, &mut |_| Ok(())).unwrap();
        assert_eq!(log.next_index().unwrap(), 4);
        assert_eq!(log.get(0).unwrap(), Some(rec(0)));
        drop(log);
        let seg = segment_path(dir.path(), 0);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        f.write_all_at(b"X", FRAME_HEAD as u64 + 2).unwrap();
        drop(f);
        let err = FileBackend::open(dir.path(), &mut |_| Ok(()))
            .err()
            .unwrap();
        assert!(
            err.contains("is damaged") && err.contains("does not match its hash"),
            "{err}"
        );
    }
}
