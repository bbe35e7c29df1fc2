//! Message bodies, kept apart from the records: optional and purged after
//! `body_retention_days`. Records hold only each body's SHA-256 and length, so purging a
//! body never breaks a signature or a proof; an exported body is checked against its
//! record's hash.
//!
//! Bodies are appended to one file per day (`records/bodies/<unix day>.dat`); a fixed
//! 16-byte entry per record index in `records/bodies/index` says where a record's body
//! is (day, offset, length; all zero: none). Purging deletes whole day files. Writes are
//! not flushed per call but with the next checkpoint tick (about every second): a body
//! lost in a crash loses nothing the records prove, and the hot path stays at two
//! positioned writes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::SsError;

const DAY_MS: i64 = 86_400_000;
const ENTRY: u64 = 16;

/// Stored bodies and their retention.
pub struct Bodies {
    dir: PathBuf,
    index: File,
    /// Days kept; `None` when bodies are not stored.
    retention_days: Option<u32>,
    writer: Mutex<Option<DayFile>>,
}

struct DayFile {
    day: u32,
    file: File,
    end: u64,
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> SsError {
    crate::state_error_at(&format!("message bodies: {what}"), path, e)
}

impl Bodies {
    pub fn open(dir: &Path, retention_days: Option<u32>) -> Result<Self, SsError> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let path = dir.join("index");
        let index = lintas_log::open_append_only(&path).map_err(|e| io("opening", &path, e))?;
        Ok(Bodies {
            dir: dir.to_owned(),
            index,
            retention_days,
            writer: Mutex::new(None),
        })
    }

    fn day_path(&self, day: u32) -> PathBuf {
        self.dir.join(format!("{day}.dat"))
    }

    /// Whether bodies are kept at all.
    pub fn kept(&self) -> bool {
        self.retention_days.is_some()
    }

    /// Keeps the body of record `index`, written at `time_ms`.
    pub fn put(&self, index: u64, time_ms: i64, body: &[u8]) -> Result<(), SsError> {
        if self.retention_days.is_none() || body.is_empty() {
            return Ok(());
        }
        let day = u32::try_from(time_ms.div_euclid(DAY_MS))
            .unwrap_or(0)
            .max(1);
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.as_ref().is_none_or(|d| d.day != day) {
            let path = self.day_path(day);
            let file = lintas_log::open_append_only(&path).map_err(|e| io("opening", &path, e))?;
            let end = file.metadata().map_err(|e| io("reading", &path, e))?.len();
            if let Some(old) = w.take() {
                let _ = old.file.sync_data();
            }
            *w = Some(DayFile { day, file, end });
        }
        let Some(d) = w.as_mut() else {
            return Ok(());
        };
        d.file
            .write_all_at(body, d.end)
            .map_err(|e| io("writing", &self.day_path(day), e))?;
        let mut entry = [0u8; ENTRY as usize];
        entry[..4].copy_from_slice(&day.to_be_bytes());
        entry[4..12].copy_from_slice(&d.end.to_be_bytes());
        entry[12..].copy_from_slice(&(body.len() as u32).to_be_bytes());
        d.end += body.len() as u64;
        self.index
            .write_all_at(&entry, index * ENTRY)
            .map_err(|e| io("writing", &self.dir.join("index"), e))
    }

    /// The body of record `index`, if one is kept.
    pub fn get(&self, index: u64) -> Result<Option<Vec<u8>>, SsError> {
        let mut entry = [0u8; ENTRY as usize];
        match self.index.read_exact_at(&mut entry, index * ENTRY) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io("reading", &self.dir.join("index"), e)),
        }
        let day = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        if day == 0 {
            return Ok(None);
        }
        let offset = u64::from_be_bytes(entry[4..12].try_into().unwrap_or([0; 8]));
        let len = u32::from_be_bytes([entry[12], entry[13], entry[14], entry[15]]) as usize;
        let path = self.day_path(day);
        let file = match File::open(&path) {
            Ok(f) => f,
            // Purged.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("opening", &path, e)),
        };
        let mut body = vec![0u8; len];
        file.read_exact_at(&mut body, offset)
            .map_err(|e| io("reading", &path, e))?;
        Ok(Some(body))
    }

    /// Makes what was stored durable (blocking).
    pub fn flush(&self) -> Result<(), SsError> {
        if let Some(d) = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            d.file
                .sync_data()
                .map_err(|e| io("syncing", &self.day_path(d.day), e))?;
        }
        self.index
            .sync_data()
            .map_err(|e| io("syncing", &self.dir.join("index"), e))
    }

    /// Deletes the bodies of every day older than the retention period; returns how
    /// many days' files were removed.
    pub fn purge(&self, now_ms: i64) -> Result<u64, SsError> {
        let Some(keep) = self.retention_days else {
            return Ok(0);
        };
        let first_kept = now_ms.div_euclid(DAY_MS) - i64::from(keep);
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io("reading", &self.dir, e))? {
            let name = entry.map_err(|e| io("reading", &self.dir, e))?.file_name();
            let Some(day) = name
                .to_string_lossy()
                .strip_suffix(".dat")
                .and_then(|d| d.parse::<i64>().ok())
            else {
                continue;
            };
            if day < first_kept {
                let path = self.day_path(day as u32);
                let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
                if w.as_ref().is_some_and(|d| i64::from(d.day) == day) {
                    *w = None;
                }
                std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_older_than_the_retention_are_purged_and_newer_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open(dir.path(), Some(30)).unwrap();
        let day = |d: i64| d * DAY_MS + 5_000;
        bodies.put(0, day(100), b"old").unwrap();
        bodies.put(1, day(100), b"old too").unwrap();
        bodies.put(2, day(125), b"recent").unwrap();
        bodies.put(4, day(131), b"today").unwrap();
        assert_eq!(bodies.get(1).unwrap().as_deref(), Some(&b"old too"[..]));
        assert_eq!(bodies.get(3).unwrap(), None, "record 3 has no body");
        assert_eq!(bodies.get(99).unwrap(), None);
        bodies.flush().unwrap();
        assert_eq!(bodies.purge(day(131)).unwrap(), 1);
        assert_eq!(bodies.get(0).unwrap(), None);
        assert_eq!(bodies.get(2).unwrap().as_deref(), Some(&b"recent"[..]));
        // Reopened, what is kept is still there.
        drop(bodies);
        let bodies = Bodies::open(dir.path(), Some(30)).unwrap();
        assert_eq!(bodies.get(4).unwrap().as_deref(), Some(&b"today"[..]));
        bodies.put(5, day(131), b"more").unwrap();
        assert_eq!(bodies.get(4).unwrap().as_deref(), Some(&b"today"[..]));
        assert_eq!(bodies.get(5).unwrap().as_deref(), Some(&b"more"[..]));
        // Much later, everything goes.
        assert_eq!(bodies.purge(day(400)).unwrap(), 2);
        assert_eq!(bodies.get(5).unwrap(), None);
        // Not stored at all when retention is off.
        let off = Bodies::open(&dir.path().join("off"), None).unwrap();
        off.put(9, day(400), b"x").unwrap();
        assert_eq!(off.get(9).unwrap(), None);
    }
}
