//! Which records an evidence export takes, in bundles, in one pass over the log and in
//! memory that does not grow with the log: an exchange (one client's message id, from
//! its request to its answer or failure) is exported when its first record matches the
//! query, with every record of it, and never split between bundles. A bundle takes new
//! exchanges until it holds its share, then only the records of those still open;
//! exchanges that start meanwhile wait for the next bundle. Only open exchanges are
//! remembered (those in flight when their records were written).

use std::collections::{BTreeSet, HashMap};

use lintas_log::{Record, RecordKind};
use lintas_proto::exchange::v1 as ex;
use lintas_proto::ss::v1::EvidenceQuery;
use prost::Message;

/// A bundle still waiting for an exchange's end is sent anyway once this many records
/// have passed since it filled (an exchange cut short by a crash never ends).
pub const MAX_WAIT_RECORDS: u64 = 100_000;
/// After an attempt failed, a bundle waits this many records for its retry, which stays
/// in the same bundle (so that the retry's link to it can be checked).
pub const RETRY_WAIT_RECORDS: u64 = 1_000;

/// The records (index, stored bytes) of one bundle and the configuration serials their
/// request headers name.
#[derive(Debug, Default)]
pub struct Chunk {
    pub records: Vec<(u64, Vec<u8>)>,
    pub serials: BTreeSet<u64>,
    /// Exchanges it holds.
    pub exchanges: usize,
}

impl Chunk {
    fn push(&mut self, index: u64, record: &Record, bytes: Vec<u8>) {
        if let Ok(h) = ex::RequestHeader::decode(record.header.as_slice())
            && h.conf_serial != 0
        {
            self.serials.insert(h.conf_serial);
        }
        self.records.push((index, bytes));
    }
}

/// Whether an exchange's first record matches `q`.
pub fn matches(r: &Record, q: &EvidenceQuery) -> bool {
    (q.message_id.is_empty() || r.message_id == q.message_id)
        && (q.client.is_empty() || r.client == q.client)
        && (q.service_provider.is_empty() || r.service_provider == q.service_provider)
        && (q.from_unix_ms == 0 || r.time_unix_ms >= q.from_unix_ms)
        && (q.to_unix_ms == 0 || r.time_unix_ms <= q.to_unix_ms)
}

/// Where an open exchange's records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goes {
    Skipped,
    Current,
    Next,
}

/// Builds bundles from the log's records, given in index order.
pub struct Selection<'q> {
    query: &'q EvidenceQuery,
    per_bundle: usize,
    current: Chunk,
    next: Chunk,
    /// Open exchanges by (client, message id), and where their records go.
    open: HashMap<(String, String), Goes>,
    /// The index at which the current bundle filled.
    filled_at: Option<u64>,
    /// Exchanges whose attempt failed lately, where they went and at which index: a
    /// retry follows them.
    failed: HashMap<(String, String), (Goes, u64)>,
}

impl<'q> Selection<'q> {
    pub fn new(query: &'q EvidenceQuery, per_bundle: usize) -> Self {
        Selection {
            query,
            per_bundle: per_bundle.max(1),
            current: Chunk::default(),
            next: Chunk::default(),
            open: HashMap::new(),
            filled_at: None,
            failed: HashMap::new(),
        }
    }

    /// Takes the record at `index`; returns a bundle when one is complete.
    pub fn push(&mut self, index: u64, record: Record, bytes: Vec<u8>) -> Option<Chunk> {
        if record.message_id.is_empty() {
            // System records belong to no exchange.
            return self.ready(index);
        }
        let kind = RecordKind::try_from(record.kind).unwrap_or(RecordKind::System);
        let key = (record.client.clone(), record.message_id.clone());
        let opens = matches!(kind, RecordKind::RequestSent | RecordKind::RequestReceived);
        let ends = matches!(
            kind,
            RecordKind::ResponseReceived
                | RecordKind::ResponseSent
                | RecordKind::Failed
                | RecordKind::Rejection
        );
        let retried = self.failed.remove(&key).map(|(g, _)| g);
        let goes = match self.open.get(&key).copied().or(retried) {
            // A retry stays with the attempt it repeats.
            Some(g) => g,
            None if !matches(&record, self.query) => Goes::Skipped,
            None if self.filled_at.is_none() => {
                self.current.exchanges += 1;
                if self.current.exchanges >= self.per_bundle {
                    self.filled_at = Some(index);
                }
                Goes::Current
            }
            None => {
                self.next.exchanges += 1;
                Goes::Next
            }
        };
        match goes {
            Goes::Current => self.current.push(index, &record, bytes),
            Goes::Next => self.next.push(index, &record, bytes),
            Goes::Skipped => {}
        }
        if ends {
            self.open.remove(&key);
            if kind == RecordKind::Failed && goes != Goes::Skipped {
                self.failed.insert(key, (goes, index));
            }
        } else if opens {
            self.open.insert(key, goes);
        }
        self.ready(index)
    }

    /// The current bundle, once it is full and none of its exchanges is open (or it has
    /// waited too long).
    fn ready(&mut self, index: u64) -> Option<Chunk> {
        let filled = self.filled_at?;
        self.failed
            .retain(|_, (_, at)| index.saturating_sub(*at) < RETRY_WAIT_RECORDS);
        let waiting = self.open.values().any(|g| *g == Goes::Current)
            || self.failed.values().any(|(g, _)| *g == Goes::Current);
        if waiting && index.saturating_sub(filled) < MAX_WAIT_RECORDS {
            return None;
        }
        let done = std::mem::take(&mut self.current);
        self.current = std::mem::take(&mut self.next);
        // Exchanges of the next bundle are now the current one's.
        let moved = |g: Goes| match g {
            Goes::Current => Goes::Skipped,
            Goes::Next => Goes::Current,
            Goes::Skipped => Goes::Skipped,
        };
        for g in self.open.values_mut() {
            *g = moved(*g);
        }
        for (g, _) in self.failed.values_mut() {
            *g = moved(*g);
        }
        self.filled_at = (self.current.exchanges >= self.per_bundle).then_some(index);
        Some(done)
    }

    /// The last bundle, if it holds anything.
    pub fn finish(self) -> Option<Chunk> {
        let mut last = self.current;
        last.records.extend(self.next.records);
        last.serials.extend(self.next.serials);
        last.exchanges += self.next.exchanges;
        last.records.sort_by_key(|(i, _)| *i);
        (!last.records.is_empty()).then_some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: RecordKind, client: &str, id: &str, time: i64) -> Record {
        Record {
            kind: kind as i32,
            client: client.into(),
            message_id: id.into(),
            time_unix_ms: time,
            ..Default::default()
        }
    }

    /// Runs a selection over `log` and returns each bundle's record indexes.
    fn bundles(log: &[Record], q: &EvidenceQuery, per: usize) -> Vec<Vec<u64>> {
        let mut s = Selection::new(q, per);
        let mut out = Vec::new();
        for (i, r) in log.iter().enumerate() {
            if let Some(c) = s.push(i as u64, r.clone(), Vec::new()) {
                out.push(c.records.iter().map(|(i, _)| *i).collect());
            }
        }
        if let Some(c) = s.finish() {
            out.push(c.records.iter().map(|(i, _)| *i).collect());
        }
        out
    }

    #[test]
    fn exchanges_are_never_split_and_bundles_hold_their_share() {
        use RecordKind::*;
        let any = EvidenceQuery::default();
        let a = |k, id: &str| rec(k, "C", id, 10);
        // (log, per bundle, expected bundles of indexes)
        let cases: Vec<(Vec<Record>, usize, Vec<Vec<u64>>)> = vec![
            // One exchange at a time.
            (
                vec![
                    a(RequestSent, "1"),
                    a(ResponseReceived, "1"),
                    a(RequestSent, "2"),
                    a(ResponseReceived, "2"),
                ],
                1,
                vec![vec![0, 1], vec![2, 3]],
            ),
            // Interleaved: exchange 2 starts while 1 (the first bundle's) is open; it
            // waits for the next bundle, whole.
            (
                vec![
                    a(RequestSent, "1"),
                    a(RequestSent, "2"),
                    a(ResponseReceived, "1"),
                    a(ResponseReceived, "2"),
                ],
                1,
                vec![vec![0, 2], vec![1, 3]],
            ),
            // A retry after a failure stays with its call while it is open.
            (
                vec![
                    a(RequestSent, "1"),
                    a(Failed, "1"),
                    a(RequestSent, "1"),
                    a(ResponseReceived, "1"),
                ],
                5,
                vec![vec![0, 1, 2, 3]],
            ),
            // A refusal alone is an exchange.
            (
                vec![a(Rejection, "9"), a(Rejection, "8")],
                1,
                vec![vec![0], vec![1]],
            ),
            // System records are in no bundle.
            (
                vec![rec(System, "", "", 0), a(RequestSent, "1")],
                10,
                vec![vec![1]],
            ),
        ];
        for (log, per, expected) in cases {
            assert_eq!(bundles(&log, &any, per), expected, "{log:?}");
        }
    }

    #[test]
    fn a_retry_stays_in_the_bundle_of_the_attempt_it_repeats() {
        use RecordKind::*;
        let any = EvidenceQuery::default();
        let a = |k, id: &str| rec(k, "C", id, 10);
        // One exchange per bundle; m's first attempt fails, its retry follows at once.
        let log = vec![
            a(RequestSent, "m"),
            a(Failed, "m"),
            a(RequestSent, "m"),
            a(ResponseReceived, "m"),
            a(RequestSent, "n"),
            a(ResponseReceived, "n"),
        ];
        assert_eq!(bundles(&log, &any, 1), vec![vec![0, 1, 2, 3], vec![4, 5]]);
        // A failure nobody retries holds its bundle back only so long.
        let mut log = vec![a(RequestSent, "m"), a(Failed, "m")];
        for i in 0..RETRY_WAIT_RECORDS + 1 {
            log.push(a(RequestSent, &format!("x{i}")));
        }
        let out = bundles(&log, &any, 1);
        // Sent once the wait passed (the others, never ended, go out at the finish).
        assert_eq!(out[0], vec![0, 1]);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn an_exchange_is_taken_when_its_first_record_matches() {
        use RecordKind::*;
        let window = EvidenceQuery {
            from_unix_ms: 100,
            to_unix_ms: 200,
            ..Default::default()
        };
        let log = vec![
            rec(RequestSent, "C", "early", 90),
            rec(ResponseReceived, "C", "early", 110),
            rec(RequestSent, "C", "in", 150),
            rec(ResponseReceived, "C", "in", 250),
            rec(RequestSent, "D", "other", 150),
        ];
        // The early exchange's answer falls in the window, but the exchange does not.
        assert_eq!(bundles(&log, &window, 10), vec![vec![2, 3, 4]]);
        let one_client = EvidenceQuery {
            client: "D".into(),
            ..Default::default()
        };
        assert_eq!(bundles(&log, &one_client, 10), vec![vec![4]]);
    }

    #[test]
    fn an_exchange_that_never_ends_holds_its_bundle_back_only_so_long() {
        use RecordKind::*;
        let any = EvidenceQuery::default();
        let mut s = Selection::new(&any, 1);
        assert!(
            s.push(0, rec(RequestReceived, "C", "crashed", 0), Vec::new())
                .is_none()
        );
        for i in 1..MAX_WAIT_RECORDS {
            assert!(s.push(i, rec(System, "", "", 0), Vec::new()).is_none());
        }
        let sent = s.push(MAX_WAIT_RECORDS, rec(System, "", "", 0), Vec::new());
        assert_eq!(sent.map(|c| c.records.len()), Some(1));
    }
}
