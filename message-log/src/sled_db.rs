//! The embedded sled databases of the daemons, opened one way (a feature of this crate,
//! so that readers of logs, such as the offline verifier, build without sled).

use std::path::Path;

/// Opens a sled database the way every lintas component does: without sled's
/// background flusher (each write path flushes explicitly), and waiting up to
/// [`LOCK_WAIT`] for the file lock. sled's IO threads may hold the last handle of a
/// database that was just closed in this process for a moment; a database another
/// running process holds still fails, after the wait, with a clear message.
pub fn open_sled(dir: &Path) -> Result<sled::Db, String> {
    open_sled_waiting(dir, LOCK_WAIT)
}

/// Whether a process holds the sled database in `dir` open now (sled locks its `db`
/// file). A database that does not exist is not in use.
pub fn sled_in_use(dir: &Path) -> bool {
    let Ok(db) = std::fs::OpenOptions::new().write(true).open(dir.join("db")) else {
        return false;
    };
    matches!(db.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

fn open_sled_waiting(dir: &Path, wait: std::time::Duration) -> Result<sled::Db, String> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an Other-kind I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < wait =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(format!(
                    "opening {}: {e} (is another lintas process using this directory?)",
                    dir.display()
                ));
            }
        }
    }
}

/// How long [`open_sled`] waits for a database's file lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_held_elsewhere_is_refused_clearly_and_free_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_sled(dir.path()).unwrap();
        let err = open_sled_waiting(dir.path(), std::time::Duration::from_millis(50)).unwrap_err();
        assert!(err.contains("another lintas process"), "{err}");
        drop(held);
        // Released: opening succeeds, waiting for sled's threads if they still hold it.
        open_sled(dir.path()).unwrap();
    }
}
