//! Replay protection on the provider side: every message id used within the window.
//! Requests older than the clock skew are refused by the time check, so ids older than
//! twice the skew are forgotten. At start the set is rebuilt from the durable
//! `REQUEST_RECEIVED` records, so a crash does not reopen the window for requests
//! already delivered.

use std::collections::HashMap;
use std::sync::Mutex;

use lintas_log::RecordLog;

use crate::SsError;

#[derive(Default)]
struct Seen {
    ids: HashMap<String, i64>,
    last_prune_ms: i64,
}

pub struct ReplayWindow {
    seen: Mutex<Seen>,
    /// How long an id is remembered, in milliseconds (twice the clock skew).
    window_ms: i64,
}

impl ReplayWindow {
    /// The ids of requests this server accepted within `window_ms` before `now_ms`, from
    /// the record log (newest first until older than the window).
    pub fn rebuild(log: &RecordLog, now_ms: i64, window_ms: i64) -> Result<Self, SsError> {
        let mut seen = Seen {
            last_prune_ms: now_ms,
            ..Seen::default()
        };
        for index in (0..log.len()).rev() {
            let Some(r) = log.get(index)? else { continue };
            if r.time_unix_ms < now_ms.saturating_sub(window_ms) {
                break;
            }
            if r.kind == lintas_log::RecordKind::RequestReceived as i32 {
                seen.ids
                    .insert(format!("{}/{}", r.client, r.message_id), r.time_unix_ms);
            }
        }
        Ok(ReplayWindow {
            seen: Mutex::new(seen),
            window_ms,
        })
    }

    /// Marks `id` of `client` as used at `time_ms` (now is `now_ms`); false if it was
    /// used before.
    pub fn first_use(&self, client: &str, id: &str, time_ms: i64, now_ms: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what the time check already refuses, at most once a second.
        if now_ms - seen.last_prune_ms > 1000 {
            let oldest = now_ms - self.window_ms;
            seen.ids.retain(|_, t| *t >= oldest);
            seen.last_prune_ms = now_ms;
        }
        match seen.ids.entry(format!("{client}/{id}")) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(time_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lintas_log::RecordKind;

    #[tokio::test]
    async fn the_window_is_rebuilt_from_durable_records_and_forgets_old_ids() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        let now = 1_000_000_000;
        let record = |kind: RecordKind, id: &str, time: i64| lintas_log::Record {
            kind: kind as i32,
            client: "ID/GOV/A/B".into(),
            message_id: id.into(),
            time_unix_ms: time,
            ..Default::default()
        };
        for (kind, id, time) in [
            (RecordKind::RequestReceived, "old", now - 200_000),
            (RecordKind::RequestReceived, "recent", now - 1_000),
            (RecordKind::Rejection, "refused", now - 500),
        ] {
            log.append(record(kind, id, time)).await.unwrap();
        }
        let window = ReplayWindow::rebuild(&log, now, 120_000).unwrap();
        // (id, time, now, first use?)
        let cases = [
            ("recent", now - 1_000, now, false),
            ("old", now - 200_000, now, true),
            ("refused", now - 500, now, true),
            ("refused", now - 500, now, false),
            ("new", now, now, true),
            // Past the window the id is forgotten (the time check refuses such requests).
            ("new", now, now + 130_000, true),
        ];
        for (n, (id, time, at, first)) in cases.into_iter().enumerate() {
            assert_eq!(
                window.first_use("ID/GOV/A/B", id, time, at),
                first,
                "case {n}"
            );
        }
        assert!(
            window.first_use("ID/GOV/A/C", "recent", now, now),
            "per client"
        );
    }
}
