//! Operational monitoring (as X-Road's op-monitoring): one record per exchange, never a
//! body, kept beside the message log in `opmon/` with retention by age and size, and
//! queried by time range and filters, page by page.
//!
//! Records are handed over without waiting ([`OpMon::record`]); one writer task appends
//! them to a file per hour (`HOUR.opmon`, hours since the Unix epoch), each record
//! length-delimited. This is monitoring, not evidence: records still in memory at a
//! crash are lost, and a record cut short by one is dropped at the next start. When the
//! writer falls behind by [`QUEUE`] records, new ones are dropped and counted.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lintas_proto::opmon::v1::{OpPage, OpQuery, OpRecord};
use prost::Message;

use crate::SsError;

/// The built-in service through which a member's own monitoring subsystem reads a
/// server's records over the bus (when granted).
pub const SERVICE: &str = "lintas.opmon.v1.OperationalData";

/// Records waiting for the writer at most.
pub const QUEUE: usize = 65_536;
/// Records a page holds at most.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;
/// Largest record accepted when reading (records are a few hundred bytes).
const MAX_RECORD: usize = 64 * 1024;
/// Bytes one query reads at most before it answers with what it found and a cursor:
/// a selective filter over many hours costs pages, not one unbounded scan.
const MAX_SCAN: u64 = 64 * 1024 * 1024;

/// How long records are kept (`opmon_retention_days`, `opmon_max_mib`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub days: u32,
    pub max_bytes: u64,
}

pub struct OpMon {
    dir: PathBuf,
    retention: Retention,
    tx: tokio::sync::mpsc::Sender<OpRecord>,
    rx: Mutex<Option<tokio::sync::mpsc::Receiver<OpRecord>>>,
    dropped: AtomicU64,
    /// Records handed to the writer.
    handed: AtomicU64,
    written: AtomicU64,
    /// Woken after each batch is written.
    wrote: tokio::sync::Notify,
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> SsError + '_ {
    move |e| SsError::Io {
        what: what.display().to_string(),
        source: e,
    }
}

impl OpMon {
    pub fn open(dir: &Path, retention: Retention) -> Result<Self, SsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        Ok(OpMon {
            dir: dir.to_owned(),
            retention,
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
            handed: AtomicU64::new(0),
            written: AtomicU64::new(0),
            wrote: tokio::sync::Notify::new(),
        })
    }

    /// Hands a record to the writer; never waits.
    pub fn record(&self, rec: OpRecord) {
        match self.tx.try_send(rec) {
            Ok(()) => self.handed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Waits (at most a second) until every record handed over so far is written, so
    /// that a query sees every exchange that ended before it.
    pub async fn settle(&self) {
        let handed = self.handed.load(Ordering::Relaxed);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.written(handed)).await;
    }

    /// Records dropped because the writer fell behind, and records written.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.dropped.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// Returns once at least `records` have been written since the start.
    pub async fn written(&self, records: u64) {
        loop {
            let wrote = self.wrote.notified();
            if self.written.load(Ordering::Relaxed) >= records {
                return;
            }
            wrote.await;
        }
    }

    /// Writes records as they come until `stop`, then what is left; `now_secs` is the
    /// server's clock. Run once per server.
    pub async fn write(
        &self,
        now_secs: impl Fn() -> i64,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        if let Err(e) = self.repair_newest() {
            tracing::error!(error = %e, "operational monitoring: repairing the newest file failed");
        }
        let mut swept_hour = None;
        tokio::pin!(stop);
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                got = rx.recv() => match got {
                    Some(r) => batch.push(r),
                    None => return,
                },
                _ = &mut stop => {
                    rx.close();
                    while let Ok(r) = rx.try_recv() {
                        batch.push(r);
                    }
                    if let Err(e) = self.append(now_secs(), &batch) {
                        tracing::error!(error = %e, "operational monitoring: records not written");
                    }
                    return;
                }
            }
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let now = now_secs();
            if let Err(e) = self.append(now, &batch) {
                tracing::error!(error = %e, records = batch.len(), "operational monitoring: records not written");
            }
            let hour = now.div_euclid(3600);
            if swept_hour != Some(hour) {
                swept_hour = Some(hour);
                if let Err(e) = self.sweep(hour) {
                    tracing::error!(error = %e, "operational monitoring: retention sweep failed");
                }
            }
        }
    }

    fn file(&self, hour: i64) -> PathBuf {
        self.dir.join(format!("{hour:010}.opmon"))
    }

    fn append(&self, now_secs: i64, batch: &[OpRecord]) -> Result<(), SsError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.file(now_secs.div_euclid(3600));
        let mut bytes = Vec::new();
        for r in batch {
            r.encode_length_delimited(&mut bytes)
                .map_err(|e| SsError::State(e.to_string()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let before = f.metadata().map_err(io(&path))?.len();
        if let Err(e) = f.write_all(&bytes) {
            // A write cut short would hide every later record of the hour: cut it back.
            let _ = f.set_len(before);
            return Err(io(&path)(e));
        }
        self.written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.wrote.notify_waiters();
        Ok(())
    }

    /// Files, oldest first: (hour, path, size).
    fn files(&self) -> Result<Vec<(i64, PathBuf, u64)>, SsError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some(hour) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".opmon"))
                .and_then(|h| h.parse::<i64>().ok())
            else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((hour, entry.path(), size));
        }
        out.sort();
        Ok(out)
    }

    /// Drops files older than the retention, then the oldest while over the size limit
    /// (never the current hour's).
    fn sweep(&self, hour: i64) -> Result<(), SsError> {
        let oldest = hour - i64::from(self.retention.days) * 24;
        let mut files = self.files()?;
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        files.retain(|(h, path, size)| {
            let drop = *h < oldest || (total > self.retention.max_bytes && *h < hour);
            if drop && std::fs::remove_file(path).is_ok() {
                total -= size;
                return false;
            }
            true
        });
        Ok(())
    }

    /// Cuts the newest file back to its last whole record (a crash can leave half of one).
    fn repair_newest(&self) -> Result<(), SsError> {
        let Some((_, path, size)) = self.files()?.pop() else {
            return Ok(());
        };
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(io(&path))?);
        let mut good = 0u64;
        while let Some((_, len)) = next_record(&mut reader) {
            good += len;
        }
        if good < size {
            tracing::warn!(file = %path.display(), cut = size - good, "operational monitoring: a record cut short was dropped");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(good).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The records matching `q`, from its cursor on.
    pub fn query(&self, q: &OpQuery) -> Result<OpPage, SsError> {
        let limit = match q.limit as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let (mut from_hour, mut offset) = parse_cursor(&q.cursor)?;
        // A record is filed by when it was written, at most an hour or two after its
        // exchange started (the longest application timeout is an hour).
        if q.from_unix_ms > 0 {
            let first = q.from_unix_ms.div_euclid(3_600_000);
            if first > from_hour {
                (from_hour, offset) = (first, 0);
            }
        }
        let last_hour = match q.to_unix_ms {
            0 => i64::MAX,
            to => to.div_euclid(3_600_000) + 2,
        };
        let mut records = Vec::new();
        let mut scanned = 0u64;
        for (hour, path, _) in self.files()? {
            if hour < from_hour || hour > last_hour {
                continue;
            }
            let mut f = std::fs::File::open(&path).map_err(io(&path))?;
            let mut at = if hour == from_hour { offset } else { 0 };
            f.seek(std::io::SeekFrom::Start(at)).map_err(io(&path))?;
            let mut reader = std::io::BufReader::new(f);
            while let Some((r, len)) = next_record(&mut reader) {
                at += len;
                scanned += len;
                if matches(q, &r) {
                    records.push(r);
                }
                if records.len() == limit || scanned >= MAX_SCAN {
                    return Ok(OpPage {
                        records,
                        next_cursor: format!("{hour}:{at}"),
                    });
                }
            }
        }
        Ok(OpPage {
            records,
            next_cursor: String::new(),
        })
    }
}

/// The next whole record from `reader` and the bytes it took; none at the end or at a
/// record that is cut short or does not decode.
fn next_record(reader: &mut impl Read) -> Option<(OpRecord, u64)> {
    let mut len = 0u64;
    let mut header = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        reader.read_exact(&mut byte).ok()?;
        header += 1;
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let len = usize::try_from(len).ok().filter(|l| *l <= MAX_RECORD)?;
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes).ok()?;
    let record = OpRecord::decode(bytes.as_slice()).ok()?;
    Some((record, header + len as u64))
}

fn parse_cursor(cursor: &str) -> Result<(i64, u64), SsError> {
    if cursor.is_empty() {
        return Ok((i64::MIN, 0));
    }
    cursor
        .split_once(':')
        .and_then(|(h, o)| Some((h.parse().ok()?, o.parse().ok()?)))
        .ok_or_else(|| {
            SsError::InvalidInput(format!("cursor '{cursor}' is not one this server gave"))
        })
}

/// Whether `r` is within the query's time range and filters.
fn matches(q: &OpQuery, r: &OpRecord) -> bool {
    (q.from_unix_ms == 0 || r.time_unix_ms >= q.from_unix_ms)
        && (q.to_unix_ms == 0 || r.time_unix_ms < q.to_unix_ms)
        && (q.client.is_empty() || r.client == q.client)
        && (q.service.is_empty() || r.service == q.service)
}

/// How an end user's id appears in a record: keyed with this server's monitoring key
/// (HMAC-SHA-256, so that nobody without the key can test guesses of a structured id
/// against it), or as given when the operator chose so (`key` none).
pub fn user_id(user_id: &str, key: Option<&[u8; 32]>) -> String {
    match (user_id.is_empty(), key) {
        (true, _) => String::new(),
        (false, None) => user_id.to_owned(),
        (false, Some(key)) => {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
            let tag = aws_lc_rs::hmac::sign(&key, user_id.as_bytes());
            format!("hmac:{}", lintas_certs::hex(tag.as_ref()))
        }
    }
}

/// This server's key for end users' ids in monitoring records (`opmon.key` in the data
/// directory, 0600), made at first start.
pub fn user_id_key(path: &Path) -> Result<[u8; 32], SsError> {
    match std::fs::read(path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|_| SsError::State(format!("{} is not a 32-byte key", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use aws_lc_rs::rand::SecureRandom;
            let mut key = [0u8; 32];
            aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| SsError::State("no randomness for the monitoring key".into()))?;
            lintas_certs::files::write_atomic(path, &key, 0o600)?;
            Ok(key)
        }
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: i64, client: &str, service: &str) -> OpRecord {
        OpRecord {
            time_unix_ms: ms,
            client: client.into(),
            service: service.into(),
            side: "provider".into(),
            ..Default::default()
        }
    }

    #[test]
    fn queries_filter_and_page_and_a_torn_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let opmon = OpMon::open(
            dir.path(),
            Retention {
                days: 7,
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
        let hour = 490_000i64;
        let at = |h: i64, m: i64| (hour + h) * 3_600_000 + m * 60_000;
        let batch: Vec<OpRecord> = (0..30)
            .map(|n| rec(at(0, n), if n % 3 == 0 { "A" } else { "B" }, "s.v1.S"))
            .collect();
        opmon.append(hour * 3600 + 60, &batch[..10]).unwrap();
        opmon.append(hour * 3600 + 70, &batch[10..20]).unwrap();
        opmon.append((hour + 1) * 3600 + 60, &batch[20..]).unwrap();

        // (query, records on the first page, whether a next page is named)
        let q = |from: i64, to: i64, client: &str, limit: u32| OpQuery {
            from_unix_ms: from,
            to_unix_ms: to,
            client: client.into(),
            limit,
            ..Default::default()
        };
        let cases = [
            (q(0, 0, "", 0), 30, false),
            (q(0, 0, "A", 0), 10, false),
            (q(at(0, 10), at(0, 20), "", 0), 10, false),
            (q(0, 0, "", 12), 12, true),
            (q(at(0, 25), 0, "B", 0), 4, false),
        ];
        for (n, (query, count, more)) in cases.into_iter().enumerate() {
            let page = opmon.query(&query).unwrap();
            assert_eq!(page.records.len(), count, "case {n}");
            assert_eq!(!page.next_cursor.is_empty(), more, "case {n}");
        }
        // Pages follow one another without gaps or repeats.
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = opmon
                .query(&OpQuery {
                    cursor: cursor.clone(),
                    limit: 7,
                    ..Default::default()
                })
                .unwrap();
            seen.extend(page.records.iter().map(|r| r.time_unix_ms));
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        assert_eq!(
            seen,
            batch.iter().map(|r| r.time_unix_ms).collect::<Vec<_>>()
        );
        assert!(opmon.query(&q(0, 0, "", 0)).is_ok());
        assert!(
            opmon
                .query(&OpQuery {
                    cursor: "junk".into(),
                    ..Default::default()
                })
                .is_err()
        );

        // A crash cut the newest file mid-record: the whole records stay.
        let newest = opmon.file(hour + 1);
        let len = std::fs::metadata(&newest).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap();
        f.set_len(len - 3).unwrap();
        opmon.repair_newest().unwrap();
        assert_eq!(opmon.query(&q(0, 0, "", 0)).unwrap().records.len(), 29);

        // Retention: by age, then by size.
        opmon.sweep(hour + 1 + 7 * 24).unwrap();
        assert_eq!(opmon.query(&q(0, 0, "", 0)).unwrap().records.len(), 9);
        let small = OpMon::open(
            dir.path(),
            Retention {
                days: 7,
                max_bytes: 1,
            },
        )
        .unwrap();
        small.append((hour + 2) * 3600, &batch[..1]).unwrap();
        small.sweep(hour + 2).unwrap();
        assert_eq!(small.query(&q(0, 0, "", 0)).unwrap().records.len(), 1);
    }

    #[test]
    fn user_ids_are_keyed_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opmon.key");
        let key = user_id_key(&path).unwrap();
        assert_eq!(user_id_key(&path).unwrap(), key, "made once, then read");
        let other = [7u8; 32];
        assert_eq!(user_id("", Some(&key)), "");
        assert_eq!(user_id("ID1234", None), "ID1234");
        let keyed = user_id("ID1234", Some(&key));
        assert!(keyed.starts_with("hmac:") && keyed.len() == 69, "{keyed}");
        assert_eq!(
            keyed,
            user_id("ID1234", Some(&key)),
            "the same id, the same tag"
        );
        assert_ne!(
            keyed,
            user_id("ID1234", Some(&other)),
            "another key, another tag"
        );
        std::fs::write(&path, b"short").unwrap();
        assert!(user_id_key(&path).is_err());
    }
}
