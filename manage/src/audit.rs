//! The admin audit log: who changed what, when, from where, and how it ended. One JSON
//! line per entry, appended and flushed to disk before the change is answered. Each line
//! names the SHA-256 of the line before it, so an entry changed, removed or inserted
//! afterwards breaks the chain and [`verify`] says where.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// Unix milliseconds, and the same as RFC 3339 (UTC).
    pub at_unix_ms: i64,
    pub at: String,
    /// `user:NAME`, `api-key:ID (NAME)`, `socket:uid N`, or the name a login tried.
    pub actor: String,
    /// `api`, `console` or `socket`.
    pub via: String,
    /// The caller's address, or `local` for the admin socket.
    pub from: String,
    /// What was done, e.g. `service.add`, `grant.add`, `login`.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// `ok`, or `refused: …` / `failed: …` with the reason.
    pub outcome: String,
    /// SHA-256 of the previous line, hex (64 zeros for the first).
    pub prev: String,
}

/// What a caller says about an action; the log adds the sequence, time and chain.
#[derive(Debug, Clone, Default)]
pub struct Action {
    pub actor: String,
    pub via: String,
    pub from: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("admin audit log {path}: {why}")]
    Io { path: String, why: String },
    #[error("admin audit log {path}, line {line}: {why}")]
    Damaged {
        path: String,
        line: u64,
        why: String,
    },
}

struct Tail {
    file: std::fs::File,
    seq: u64,
    prev: [u8; 32],
}

/// The audit log of one daemon.
pub struct AuditLog {
    path: PathBuf,
    tail: Mutex<Tail>,
}

const GENESIS: [u8; 32] = [0; 32];

/// Checks a whole log: every line parses, sequence numbers run 1, 2, 3 …, and each names
/// the hash of the one before. Returns the entries. `shown` names the log in errors.
pub fn verify(bytes: &[u8], shown: &str) -> Result<Vec<AuditEntry>, AuditError> {
    let mut entries = Vec::new();
    let mut prev = GENESIS;
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let n = i as u64 + 1;
        let damaged = |why: String| AuditError::Damaged {
            path: shown.to_owned(),
            line: n,
            why,
        };
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(damaged("the last line is unfinished".into()));
        };
        let entry: AuditEntry =
            serde_json::from_slice(text).map_err(|e| damaged(format!("not an entry: {e}")))?;
        if entry.seq != n {
            return Err(damaged(format!("entry {} where {n} belongs", entry.seq)));
        }
        if entry.prev != lintas_certs::hex(&prev) {
            return Err(damaged(
                "does not name the hash of the line before: an entry was changed, removed or inserted"
                    .into(),
            ));
        }
        prev = lintas_certs::sha256(text);
        entries.push(entry);
    }
    Ok(entries)
}

pub fn rfc3339(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl AuditLog {
    /// Opens (or creates) the log at `path` and checks its chain. An unfinished last line
    /// (a crash while appending) is cut off with a warning; any other damage is refused.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| AuditError::Io {
            path: shown.clone(),
            why: e.to_string(),
        };
        let mut bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            tracing::warn!(
                path = %shown,
                cut = bytes.len() - keep,
                "the admin audit log's last entry was not finished (a crash while appending); cutting it off"
            );
            bytes.truncate(keep);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io)?;
            f.set_len(keep as u64).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        let entries = verify(&bytes, &shown)?;
        let prev = bytes
            .strip_suffix(b"\n")
            .map(|b| {
                let last = b.iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
                lintas_certs::sha256(&b[last..])
            })
            .unwrap_or(GENESIS);
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?
        };
        Ok(AuditLog {
            path: path.to_owned(),
            tail: Mutex::new(Tail {
                file,
                seq: entries.len() as u64,
                prev,
            }),
        })
    }

    /// Appends `action`, on disk before this returns.
    pub fn record(&self, action: Action) -> Result<AuditEntry, AuditError> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let entry = AuditEntry {
            seq: tail.seq + 1,
            at_unix_ms,
            at: rfc3339(at_unix_ms),
            actor: one_line(&action.actor),
            via: one_line(&action.via),
            from: one_line(&action.from),
            action: one_line(&action.action),
            target: one_line(&action.target),
            outcome: one_line(&action.outcome),
            prev: lintas_certs::hex(&tail.prev),
        };
        let text = serde_json::to_vec(&entry).map_err(|e| self.io(e))?;
        let mut line = text.clone();
        line.push(b'\n');
        tail.file.write_all(&line).map_err(|e| self.io(e))?;
        tail.file.sync_data().map_err(|e| self.io(e))?;
        tail.seq = entry.seq;
        tail.prev = lintas_certs::sha256(&text);
        Ok(entry)
    }

    fn io(&self, e: impl std::fmt::Display) -> AuditError {
        AuditError::Io {
            path: self.path.display().to_string(),
            why: e.to_string(),
        }
    }

    /// The whole log as it is on disk (JSON lines), for export.
    pub fn export(&self) -> Result<Vec<u8>, AuditError> {
        let _tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::read(&self.path).map_err(|e| self.io(e))
    }

    /// Entries newest first, at most `limit`, only those older than `before` (a sequence
    /// number; 0 for the newest) and whose text contains `filter`.
    pub fn page(
        &self,
        before: u64,
        limit: usize,
        filter: &str,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        let bytes = self.export()?;
        let entries = verify(&bytes, &self.path.display().to_string())?;
        Ok(entries
            .into_iter()
            .rev()
            .filter(|e| before == 0 || e.seq < before)
            .filter(|e| {
                filter.is_empty()
                    || [&e.actor, &e.action, &e.target, &e.outcome, &e.from]
                        .iter()
                        .any(|t| t.contains(filter))
            })
            .take(limit)
            .collect())
    }
}

/// Keeps an entry's fields on one line of bounded length.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(2000)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(what: &str) -> Action {
        Action {
            actor: "user:admin".into(),
            via: "api".into(),
            from: "127.0.0.1:5000".into(),
            action: what.into(),
            target: "INST/GOV/1/SYS".into(),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn entries_chain_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(action("service.add")).unwrap();
        log.record(Action {
            target: "two\nlines".into(),
            ..action("grant.add")
        })
        .unwrap();
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        let third = log.record(action("grant.remove")).unwrap();
        assert_eq!(third.seq, 3);
        let all = verify(&log.export().unwrap(), "log").unwrap();
        assert_eq!(
            all.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["service.add", "grant.add", "grant.remove"]
        );
        assert_eq!(all[1].target, "two lines");
        assert!(all[0].at.ends_with('Z'), "{}", all[0].at);
        let page = log.page(3, 10, "grant").unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, 2);
        assert_eq!(log.page(0, 2, "").unwrap()[0].seq, 3);
    }

    #[test]
    fn tampering_is_found_and_a_torn_tail_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for what in ["a", "b", "c"] {
            log.record(action(what)).unwrap();
        }
        drop(log);
        let good = std::fs::read(&path).unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cases: Vec<(String, &str)> = vec![
            (text.replace("\"b\"", "\"x\""), "line 3"),
            (format!("{}\n{}\n", lines[0], lines[2]), "line 2"),
            (
                format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[1], lines[2]),
                "line 3",
            ),
            (text.replacen("user:admin", "user:other", 1), "line 2"),
            (format!("{}\nnot json\n", lines[0]), "line 2"),
        ];
        for (bytes, line) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let e = AuditLog::open(&path).err().expect(line).to_string();
            assert!(e.contains(line) && e.contains("audit.jsonl"), "{line}: {e}");
        }
        // A crash while appending leaves an unfinished line: it is cut off.
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"seq\":4,");
        std::fs::write(&path, &torn).unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert_eq!(log.record(action("d")).unwrap().seq, 4);
        assert_eq!(verify(&log.export().unwrap(), "log").unwrap().len(), 4);
    }
}
