//! Message bodies, kept apart from the records: optional (`store_bodies`) and purged
//! after `body_retention_days`. Records hold only each body's SHA-256 and length, so
//! purging a body never breaks a signature or a proof; an exported body is checked
//! against its record's hash.
//!
//! Bodies live in the server's state database: tree `bodies` by record index, and tree
//! `body-days` with the first record index stored on each day (Unix days), so that
//! purging removes one range of indexes. They are flushed with the next checkpoint
//! (about every second), not per call: a body lost in a crash loses no evidence the
//! records do not hold.

use crate::SsError;

const DAY_MS: i64 = 86_400_000;

/// Stored bodies and their retention.
pub struct Bodies {
    db: sled::Db,
    bodies: sled::Tree,
    days: sled::Tree,
    /// Days kept; `None` when bodies are not stored.
    retention_days: Option<u32>,
}

fn state(e: sled::Error) -> SsError {
    SsError::State(format!("message bodies: {e}"))
}

impl Bodies {
    pub fn open(db: &sled::Db, retention_days: Option<u32>) -> Result<Self, SsError> {
        Ok(Bodies {
            db: db.clone(),
            bodies: db.open_tree("bodies").map_err(state)?,
            days: db.open_tree("body-days").map_err(state)?,
            retention_days,
        })
    }

    /// Keeps the body of record `index`, written at `time_ms`.
    pub fn put(&self, index: u64, time_ms: i64, body: &[u8]) -> Result<(), SsError> {
        if self.retention_days.is_none() {
            return Ok(());
        }
        let day = (time_ms.div_euclid(DAY_MS) as u32).to_be_bytes();
        // The first index of the day: kept if the day is new, untouched otherwise.
        let _ = self
            .days
            .compare_and_swap(day, None as Option<&[u8]>, Some(&index.to_be_bytes()))
            .map_err(state)?;
        self.bodies
            .insert(index.to_be_bytes(), body)
            .map_err(state)?;
        Ok(())
    }

    pub fn get(&self, index: u64) -> Result<Option<Vec<u8>>, SsError> {
        Ok(self
            .bodies
            .get(index.to_be_bytes())
            .map_err(state)?
            .map(|v| v.to_vec()))
    }

    /// Makes what was stored durable (blocking).
    pub fn flush(&self) -> Result<(), SsError> {
        self.db.flush().map(|_| ()).map_err(state)
    }

    /// Removes the bodies of every day older than the retention period; returns how many
    /// were removed.
    pub fn purge(&self, now_ms: i64) -> Result<u64, SsError> {
        let Some(keep) = self.retention_days else {
            return Ok(0);
        };
        let first_kept_day = (now_ms.div_euclid(DAY_MS) - i64::from(keep)).max(0) as u32;
        // Every index below the first one stored on a kept day goes (all of them when
        // no kept day has bodies yet).
        let first_kept = self
            .days
            .range(first_kept_day.to_be_bytes()..)
            .next()
            .transpose()
            .map_err(state)?;
        let below = match first_kept {
            Some((_, i)) => u64::from_be_bytes(i.as_ref().try_into().unwrap_or([0; 8])),
            None => u64::MAX,
        };
        self.remove_below(below, first_kept_day)
    }

    fn remove_below(&self, index: u64, first_kept_day: u32) -> Result<u64, SsError> {
        let mut removed = 0;
        for key in self.bodies.range(..index.to_be_bytes()).keys() {
            self.bodies.remove(key.map_err(state)?).map_err(state)?;
            removed += 1;
        }
        for key in self.days.range(..first_kept_day.to_be_bytes()).keys() {
            self.days.remove(key.map_err(state)?).map_err(state)?;
        }
        self.flush()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_older_than_the_retention_are_purged_and_newer_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = lintas_log::open_sled(dir.path()).unwrap();
        let bodies = Bodies::open(&db, Some(30)).unwrap();
        let day = |d: i64| d * DAY_MS + 5_000;
        bodies.put(0, day(100), b"old").unwrap();
        bodies.put(1, day(100), b"old too").unwrap();
        bodies.put(2, day(125), b"recent").unwrap();
        bodies.put(3, day(131), b"today").unwrap();
        assert_eq!(bodies.purge(day(131)).unwrap(), 2);
        assert_eq!(bodies.get(0).unwrap(), None);
        assert_eq!(bodies.get(2).unwrap().as_deref(), Some(&b"recent"[..]));
        // Much later, everything goes.
        assert_eq!(bodies.purge(day(400)).unwrap(), 2);
        assert_eq!(bodies.get(3).unwrap(), None);
        // Not stored at all when retention is off.
        let off = Bodies::open(&db, None).unwrap();
        off.put(9, day(400), b"x").unwrap();
        assert_eq!(off.get(9).unwrap(), None);
    }
}
