//! Trusted time for the log: the newest checkpoint is time-stamped by an RFC 3161 TSA
//! that the global configuration lists, every `timestamp_interval_secs`. Tokens are
//! kept in an append-only file beside the records (`records/timestamps`), and every
//! later record names the newest token it was written after. If no token could be had
//! for `timestamp_fail_closed_secs`, the server refuses calls until one is had.

use std::path::Path;
use std::sync::{Mutex, RwLock};

use lintas_globalconf::VerifiedConf;
use lintas_log::RecordLog;
use lintas_log::checkpoint::{Checkpoint, SignedCheckpoint};
use lintas_proto::log::v1::TimestampedCheckpoint;
use prost::Message;

use crate::SsError;
use crate::entries::Entries;

const MAX_ENTRY_BYTES: usize = 128 * 1024;

/// One stored token, indexed.
#[derive(Debug, Clone)]
struct Stamp {
    size: u64,
    token_sha256: [u8; 32],
    offset: u64,
    len: usize,
}

/// The stored stamps in the order of growing sizes, and where each token is.
#[derive(Default)]
struct Stamps {
    list: Vec<Stamp>,
    by_token: std::collections::HashMap<[u8; 32], usize>,
}

impl Stamps {
    fn push(&mut self, s: Stamp) {
        self.by_token.insert(s.token_sha256, self.list.len());
        self.list.push(s);
    }
}

/// The time-stamped checkpoints of one log.
pub struct Timestamps {
    file: Mutex<Entries>,
    stamps: RwLock<Stamps>,
    /// When the oldest record no time-stamped checkpoint covers yet was written, Unix
    /// ms; 0 when every record is covered.
    uncovered_since: std::sync::atomic::AtomicI64,
    /// When a token was last had since the start (Unix seconds; 0: not yet).
    last_success: std::sync::atomic::AtomicI64,
    /// Failed attempts since then.
    failures: std::sync::atomic::AtomicU64,
}

impl Timestamps {
    /// Cuts the time-stamps of checkpoints beyond a log of `size` records from the file
    /// at `path` (a copy taken while the server ran); the number cut.
    pub fn cut_beyond(path: &Path, size: u64) -> Result<usize, SsError> {
        Entries::cut_from_first(path, MAX_ENTRY_BYTES, |bytes| {
            let entry = TimestampedCheckpoint::decode(bytes).map_err(crate::state_error)?;
            let stamped = entry
                .checkpoint
                .as_ref()
                .and_then(|c| Checkpoint::decode(c.checkpoint.as_slice()).ok())
                .map(|c| c.size)
                .unwrap_or(0);
            Ok(stamped <= size)
        })
    }

    pub fn open(path: &Path) -> Result<Self, SsError> {
        let mut stamps = Stamps::default();
        let file = Entries::open(path, MAX_ENTRY_BYTES, |offset, bytes| {
            let entry = TimestampedCheckpoint::decode(bytes).map_err(|e| {
                SsError::State(format!(
                    "{}: the entry at byte {offset} is damaged: {e}",
                    path.display()
                ))
            })?;
            let size = entry
                .checkpoint
                .as_ref()
                .and_then(|c| Checkpoint::decode(c.checkpoint.as_slice()).ok())
                .map(|c| c.size)
                .unwrap_or(0);
            stamps.push(Stamp {
                size,
                token_sha256: lintas_certs::sha256(&entry.token),
                offset,
                len: bytes.len(),
            });
            Ok(())
        })?;
        Ok(Timestamps {
            file: Mutex::new(file),
            stamps: RwLock::new(stamps),
            uncovered_since: std::sync::atomic::AtomicI64::new(0),
            last_success: std::sync::atomic::AtomicI64::new(0),
            failures: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Stamps> {
        self.stamps.read().unwrap_or_else(|p| p.into_inner())
    }

    /// SHA-256 of the newest token, which new records name.
    pub fn latest_sha256(&self) -> Option<[u8; 32]> {
        self.read().list.last().map(|s| s.token_sha256)
    }

    /// Size of the newest time-stamped checkpoint (0 for none).
    pub fn latest_size(&self) -> u64 {
        self.read().list.last().map(|s| s.size).unwrap_or(0)
    }

    /// A token was had at `now` (Unix seconds).
    pub fn succeeded(&self, now: i64) {
        self.last_success
            .store(now, std::sync::atomic::Ordering::SeqCst);
    }

    /// When a token was last had since the start (Unix seconds).
    pub fn last_success(&self) -> Option<i64> {
        match self.last_success.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            t => Some(t),
        }
    }

    /// Failed attempts since a token was last had.
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a failed attempt.
    pub fn failed(&self) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Seconds the oldest record without a time-stamp has waited for one (0: none).
    pub fn age(&self, now: i64) -> i64 {
        match self
            .uncovered_since
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            0 => 0,
            since => (now - since.div_euclid(1000)).max(0),
        }
    }

    /// A record was written at `time_ms`: if every earlier one was covered, it is now
    /// the oldest waiting for a time-stamp.
    pub fn note_record(&self, time_ms: i64) {
        let _ = self.uncovered_since.compare_exchange(
            0,
            time_ms.max(1),
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// After a time-stamp (or finding nothing new to stamp): the oldest record still
    /// uncovered is the one at the newest stamped size, if the log holds it.
    pub fn recount(&self, log: &RecordLog) -> Result<(), SsError> {
        let since = match log.get(self.latest_size())? {
            Some(r) => r.time_unix_ms.max(1),
            None => 0,
        };
        self.uncovered_since
            .store(since, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn load(&self, s: &Stamp) -> Result<TimestampedCheckpoint, SsError> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = file.read_at(s.offset, s.len)?;
        TimestampedCheckpoint::decode(bytes.as_slice()).map_err(|e| {
            SsError::State(format!(
                "{}: an entry does not decode: {e}",
                file.path().display()
            ))
        })
    }

    /// The stored entry whose token has SHA-256 `hash`.
    pub fn by_token(&self, hash: &[u8]) -> Result<Option<TimestampedCheckpoint>, SsError> {
        let found = {
            let stamps = self.read();
            <[u8; 32]>::try_from(hash)
                .ok()
                .and_then(|h| stamps.by_token.get(&h))
                .and_then(|i| stamps.list.get(*i))
                .cloned()
        };
        found.map(|s| self.load(&s)).transpose()
    }

    /// The first time-stamped checkpoint that covers record `index`.
    pub fn first_covering(&self, index: u64) -> Result<Option<TimestampedCheckpoint>, SsError> {
        // Stamps are kept in the order of growing sizes.
        let stamps = self.read();
        let found = stamps
            .list
            .get(stamps.list.partition_point(|s| s.size <= index))
            .cloned();
        drop(stamps);
        found.map(|s| self.load(&s)).transpose()
    }

    fn add(&self, entry: &TimestampedCheckpoint, size: u64) -> Result<(), SsError> {
        let bytes = entry.encode_to_vec();
        let offset = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(&bytes)?;
        self.stamps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Stamp {
                size,
                token_sha256: lintas_certs::sha256(&entry.token),
                offset,
                len: bytes.len(),
            });
        self.failures.store(0, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Has `checkpoint` time-stamped by the first TSA `conf` lists with a URL, checks
    /// the token, and keeps it. Returns the stamped time.
    pub async fn stamp(
        &self,
        checkpoint: SignedCheckpoint,
        size: u64,
        conf: &VerifiedConf,
        tsa_name: &str,
    ) -> Result<i64, SsError> {
        let tsa = conf
            .conf
            .timestamping_authorities
            .iter()
            .find(|t| t.name == tsa_name && !t.url.is_empty())
            .ok_or_else(|| {
                let listed: Vec<&str> = conf
                    .conf
                    .timestamping_authorities
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect();
                SsError::State(format!(
                    "the global configuration lists no time-stamping authority '{tsa_name}' with a URL (it lists: {})",
                    listed.join(", ")
                ))
            })?;
        let digest = lintas_certs::sha256(&checkpoint.checkpoint);
        let request =
            lintas_timestamp::request(&digest, None).map_err(|e| SsError::State(e.to_string()))?;
        // Its first place that answers with a good token (a TSA on several registry
        // nodes is listed at each).
        let mut failed = Vec::new();
        let mut stamped = None;
        for url in std::iter::once(&tsa.url).chain(&tsa.other_urls) {
            let answer = async {
                let response = post(url, request.clone()).await?;
                let refused = |e: String| SsError::State(format!("TSA {url}: {e}"));
                let token = lintas_timestamp::token_from_response(&response)
                    .map_err(|e| refused(e.to_string()))?;
                let time = verify_token(&token, &digest, conf).map_err(refused)?;
                Ok::<_, SsError>((token, time))
            };
            match answer.await {
                Ok(t) => {
                    stamped = Some(t);
                    break;
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        let (token, stamped) = stamped.ok_or_else(|| SsError::State(failed.join("; ")))?;
        self.add(
            &TimestampedCheckpoint {
                checkpoint: Some(checkpoint),
                token,
            },
            size,
        )?;
        Ok(stamped)
    }
}

pub use lintas_wire::verify_token;

/// POSTs an RFC 3161 request over plain HTTP (the token is signed; the transport needs
/// no protection of its own).
async fn post(url: &str, body: Vec<u8>) -> Result<Vec<u8>, SsError> {
    use http_body_util::{BodyExt, Full, Limited};
    let err = |e: String| SsError::State(format!("TSA {url}: {e}"));
    let uri: hyper::Uri = url.parse().map_err(|e| err(format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(err("only http:// TSA URLs are supported".into()));
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = hyper::Request::post(uri)
        .header(
            hyper::header::CONTENT_TYPE,
            lintas_timestamp::QUERY_MEDIA_TYPE,
        )
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| err(e.to_string()))?;
    let work = async {
        let resp = client
            .request(request)
            .await
            .map_err(|e| err(format!("request failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP status {}", resp.status())));
        }
        Limited::new(resp.into_body(), lintas_timestamp::MAX_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| err(format!("reading the answer: {e}")))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), work)
        .await
        .map_err(|_| err("no answer within 10 s".into()))?
}
