//! Offline verification of evidence bundles (`lintas audit verify`).
//!
//! Trusting only the anchor the auditor supplies, [`verify`] checks a bundle exported
//! by one security server: the global configurations against the anchor; the log
//! checkpoint against the server's log key those configurations list, and the witness's
//! cosignature against the anchor; every record's inclusion proof in the checkpoint's
//! tree; every signed header against its signer's certificate, the certification
//! authorities the configuration approves and the member the header names; and the
//! binding of each response to its request. It says what is proven, what failed, and
//! what the bundle cannot establish. [`cross_check`] compares the two parties' bundles
//! of the same exchanges.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lintas_certs::{Identity, Role};
use lintas_globalconf::{Anchor, VerifiedConf, iso8601};
use lintas_identifiers::{ClientId, MemberId, ServerId, SubsystemId};
use lintas_log::checkpoint::{self, Cosigned};
use lintas_log::{Record, RecordKind};
use lintas_proto::audit::v1::EvidenceBundle;
use lintas_proto::exchange::v1 as ex;
use lintas_wire::MESSAGE_DOMAIN;
use lintas_wire::{REQUEST_DOMAIN, RESPONSE_DOMAIN};
use serde::Serialize;

pub use lintas_wire::FORMAT;

/// What the bundle's checkpoint establishes.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointFacts {
    pub size: u64,
    pub root: String,
    /// When the server signed it (its own clock).
    pub signed_at: String,
    /// The witness that cosigned it, and when (the witness's clock).
    pub witnessed_by: Option<String>,
    pub witnessed_at: Option<String>,
}

pub mod command;
mod exchange;
pub mod files;
mod retries;
pub mod streams;

use exchange::exchange;

/// A signed header that verified.
#[derive(Debug, Clone, Serialize)]
pub struct SignedFact {
    /// The member whose signing certificate signed it.
    pub signed_by: String,
    /// The time in the header (the signer's clock).
    pub signed_at: String,
    pub header_sha256: String,
    pub body_sha256: String,
    pub body_len: u64,
}

/// One exchange (a client's message id) as this log records it.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeFacts {
    pub message_id: String,
    pub client: String,
    pub provider: String,
    pub method: String,
    pub consumer_server: String,
    pub provider_server: String,
    /// The log's record indexes of this exchange.
    pub records: Vec<u64>,
    pub request: Option<SignedFact>,
    pub response: Option<SignedFact>,
    /// gRPC status code and message of the answer.
    pub status: Option<(i32, String)>,
    /// What the server recorded as the outcome when the exchange did not complete.
    pub outcome: Option<String>,
    /// Trusted time: the exchange's records were written after the first and no later
    /// than the second (RFC 3161 time-stamps of the log).
    pub recorded_after: Option<String>,
    pub recorded_before: Option<String>,
    /// 0 for a first attempt; n for the n-th retry of a call on another server.
    pub attempt: u32,
    /// For a retry: the SHA-256 (hex) of the previous attempt's signed request header.
    pub retry_of: Option<String>,
    /// The idempotency key the client sent the request under, as signed.
    pub idempotency_key: Option<String>,
    /// The answer repeats the one given to this message id under the same key, as the
    /// provider signed it.
    pub repeats: Option<String>,
    /// A REST call: its signed request line (`PUT /path?query`) and the names of the
    /// signed headers sent on to the backend.
    pub rest_request: Option<String>,
    pub rest_headers: Vec<String>,
    /// A REST call's HTTP status, as the provider signed it.
    pub http_status: Option<u32>,
    /// A streaming call: the messages this log holds in each direction.
    pub stream: Option<streams::StreamFacts>,
    /// A REST call whose body, either way, travelled in chunks: the chunks this log
    /// holds in each direction.
    pub chunks: Option<streams::StreamFacts>,
}

/// The result of verifying one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub origin: String,
    /// True when nothing failed.
    pub verified: bool,
    pub checkpoint: Option<CheckpointFacts>,
    pub exchanges: Vec<ExchangeFacts>,
    /// Statements that are proven, in plain words.
    pub proven: Vec<String>,
    /// Checks that failed; any makes the bundle unverified.
    pub failures: Vec<String>,
    /// What the bundle cannot establish.
    pub not_established: Vec<String>,
    /// Signed headers and signatures by the request header's SHA-256, for cross-checks.
    #[serde(skip)]
    signed: BTreeMap<[u8; 32], SignedPair>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct SignedPair {
    client: String,
    message_id: String,
    request: Option<(Vec<u8>, ex::BatchSignature)>,
    response: Option<(Vec<u8>, ex::BatchSignature)>,
}

/// The largest archived segment file read (segments are at most 1 GiB plus one batch).
const MAX_SEGMENT_BYTES: u64 = 2 << 30;

/// The most a signed header's time may differ from its record's.
const MAX_SIGNING_SKEW_MS: i64 = 3_600_000;

fn hex8(bytes: &[u8]) -> String {
    let h = lintas_certs::hex(bytes);
    h.get(..16).map(|s| format!("{s}…")).unwrap_or(h)
}

fn at_ms(ms: i64) -> String {
    iso8601(ms.div_euclid(1000))
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH
    }
}

fn status_name(code: i32) -> String {
    format!("{:?}", tonic_code(code))
}

fn tonic_code(code: i32) -> tonic::Code {
    tonic::Code::from_i32(code)
}

impl Report {
    fn new(origin: String) -> Self {
        Report {
            origin,
            verified: false,
            checkpoint: None,
            exchanges: Vec::new(),
            proven: Vec::new(),
            failures: Vec::new(),
            not_established: Vec::new(),
            signed: BTreeMap::new(),
        }
    }

    fn fail(&mut self, why: String) {
        self.failures.push(why);
    }
}

/// Verifies the encoded bundle `bytes` against `anchor`, offline: every byte must be
/// part of what is verified. The bundle, and every message inside it, must be in the
/// one encoding lintas writes ([`lintas_proto::decode_exact`]), so no unknown,
/// repeated or padded field can ride along unverified.
pub fn verify_bytes(bytes: &[u8], anchor: &Anchor) -> Report {
    match lintas_proto::decode_exact::<EvidenceBundle>(bytes) {
        Ok(bundle) => verify(&bundle, anchor),
        Err(e) => {
            let mut r = Report::new(String::new());
            r.fail(format!("the file is not an evidence bundle: {e}"));
            r
        }
    }
}

/// Verifies `bundle` against `anchor`, offline. (A bundle read from a file is verified
/// with [`verify_bytes`], which also refuses bytes outside what is verified.)
pub fn verify(bundle: &EvidenceBundle, anchor: &Anchor) -> Report {
    let mut r = Report::new(bundle.origin.clone());
    check(bundle, anchor, &mut r);
    r.verified = r.failures.is_empty();
    r
}

fn check(bundle: &EvidenceBundle, anchor: &Anchor, r: &mut Report) {
    if bundle.format != FORMAT {
        r.fail(format!(
            "not a lintas evidence bundle (format '{}', expected '{FORMAT}')",
            bundle.format
        ));
        return;
    }
    // The export time is the exporting server's word, signed by nobody: a bundle that
    // states one carries a byte nothing verifies.
    if bundle.exported_unix_ms != 0 {
        r.fail("the bundle states an export time, which nothing signs (refused: every part of a bundle must be verified)".into());
    }
    let origin: ServerId = match bundle.origin.parse() {
        Ok(o) => o,
        Err(e) => {
            return r.fail(format!(
                "the bundle's origin '{}' is not a server id: {e}",
                bundle.origin
            ));
        }
    };

    let Some(Anchored {
        confs,
        log_key,
        key_serial,
        cp,
        witnessed_by,
    }) = anchored(
        &origin,
        &bundle.global_confs,
        bundle.checkpoint.as_ref(),
        anchor,
        &mut r.failures,
    )
    else {
        return;
    };
    let size = cp.checkpoint.size;
    let mut facts = CheckpointFacts {
        size,
        root: lintas_certs::hex(&cp.root),
        signed_at: at_ms(cp.checkpoint.time_unix_ms),
        witnessed_by: None,
        witnessed_at: None,
    };
    if let Some(stated) = &witnessed_by {
        facts.witnessed_by = Some(format!("the registry of instance {}", stated.witness));
        facts.witnessed_at = Some(at_ms(stated.time_unix_ms));
    }
    let witnessed = facts.witnessed_at.as_ref().map(|t| {
        format!(
            " and witnessed by {} at {t}",
            facts.witnessed_by.clone().unwrap_or_default()
        )
    });
    if witnessed.is_none() {
        r.not_established.push(
            "no witness cosigned the checkpoint, so it is not established that the log showed everyone the same history".into(),
        );
    }
    r.checkpoint = Some(facts.clone());

    // Every entry is the record the checkpoint's tree holds at its index.
    let mut records: Vec<(u64, Record)> = Vec::new();
    let mut last: Option<u64> = None;
    let mut bodies = 0;
    for (i, e) in bundle.entries.iter().enumerate() {
        let n = i + 1;
        let rec = match lintas_proto::decode_exact::<Record>(&e.record) {
            Ok(rec) => rec,
            Err(err) => {
                r.fail(format!("entry {n} is not a record: {err}"));
                continue;
            }
        };
        let index = rec.index;
        if index >= size {
            r.fail(format!(
                "entry {n} claims record {index}, beyond the {size} records the checkpoint covers"
            ));
            continue;
        }
        if last.is_some_and(|l| l >= index) {
            r.fail(format!(
                "entry {n} (record {index}) is out of order: a bundle lists records in the log's order"
            ));
        }
        last = Some(index);
        let included = lintas_merkle::hashes_from(&e.inclusion_proof)
            .ok_or_else(|| "a proof hash is not 32 bytes".to_string())
            .and_then(|p| {
                lintas_merkle::verify_inclusion(
                    &lintas_merkle::leaf_hash(&e.record),
                    index,
                    size,
                    &p,
                    &cp.root,
                )
                .map_err(|e| e.to_string())
            });
        if let Err(why) = included {
            r.fail(format!(
                "entry {n} (record {index}) is not the record {origin}'s checkpointed log holds at that position ({why}): it was changed or does not belong to this log"
            ));
            continue;
        }
        if !e.body.is_empty()
            && (lintas_certs::sha256(&e.body)[..] != rec.body_sha256[..]
                || e.body.len() as u64 != rec.body_len)
        {
            r.fail(format!(
                "entry {n} (record {index}) carries a body that is not the one its record describes"
            ));
        } else if !e.body.is_empty() {
            bodies += 1;
        }
        records.push((index, rec));
    }
    if bodies > 0 {
        r.proven.push(format!(
            "{bodies} message bodies in the bundle are the ones their records describe (SHA-256 and length)."
        ));
    }
    if records.is_empty() {
        return r.fail("the bundle holds no record that verifies".into());
    }
    r.proven.push(format!(
        "{} records are entries of the log of {origin}: its checkpoint of {size} records (head {}), signed at {} with the log key that global configuration {key_serial} lists for it{}, includes each of them{}.",
        records.len(),
        hex8(&cp.root),
        facts.signed_at,
        witnessed.clone().unwrap_or_default(),
        facts
            .witnessed_at
            .as_ref()
            .map(|t| format!(", so they were recorded no later than {t}"))
            .unwrap_or_default()
    ));

    // Trusted time: each time-stamped checkpoint is the origin's, its token covers it
    // and comes from a TSA a configuration lists, and it is a prefix of the bundle's
    // checkpoint. A record is younger than the token it names and no younger than
    // the first time-stamped checkpoint that includes it.
    let mut stamps: Vec<(u64, i64, [u8; 32])> = Vec::new();
    for (i, t) in bundle.timestamps.iter().enumerate() {
        match stamp(t, &log_key, &origin, &confs, anchor, size, &cp.root) {
            Ok(s) => stamps.push(s),
            Err(e) => r.fail(format!("time-stamp {} of the bundle: {e}", i + 1)),
        }
    }
    // By token hash (the lower bound a record names), and by size with the earliest
    // time among all stamps at or beyond each position (the upper bound).
    let by_token: HashMap<[u8; 32], i64> = stamps.iter().map(|s| (s.2, s.1)).collect();
    stamps.sort_by_key(|s| s.0);
    let mut earliest_from = vec![i64::MAX; stamps.len() + 1];
    for (i, s) in stamps.iter().enumerate().rev() {
        earliest_from[i] = earliest_from[i + 1].min(s.1);
    }
    let mut bounds: HashMap<u64, (Option<i64>, Option<i64>)> = HashMap::new();
    for (index, rec) in &records {
        let after = if rec.timestamp_sha256.is_empty() {
            None
        } else {
            match <[u8; 32]>::try_from(rec.timestamp_sha256.as_slice())
                .ok()
                .and_then(|h| by_token.get(&h))
            {
                Some(t) => Some(*t),
                None => {
                    r.fail(format!(
                        "record {index} names a time-stamp the bundle does not hold"
                    ));
                    None
                }
            }
        };
        let first_covering = stamps.partition_point(|s| s.0 <= *index);
        let before = Some(earliest_from[first_covering]).filter(|t| *t != i64::MAX);
        // The TSA states seconds with one second of accuracy.
        let claimed = rec.time_unix_ms.div_euclid(1000);
        if after.is_some_and(|a| claimed < a - 1) || before.is_some_and(|b| claimed > b + 1) {
            r.fail(format!(
                "record {index} says it was written at {}, outside the window trusted time-stamps allow ({} to {}): it was backdated or postdated",
                at_ms(rec.time_unix_ms),
                after.map(iso8601).unwrap_or_else(|| "-".into()),
                before.map(iso8601).unwrap_or_else(|| "-".into())
            ));
        }
        bounds.insert(*index, (after, before));
    }

    // The exchanges, in the order the log first recorded them.
    let certs: HashMap<[u8; 32], &Vec<u8>> = bundle
        .certificates
        .iter()
        .map(|c| (lintas_certs::sha256(c), c))
        .collect();
    // Each certificate is one a record names (and is then checked with its header).
    let named: std::collections::HashSet<&[u8]> = records
        .iter()
        .map(|(_, rec)| rec.signer_cert_sha256.as_slice())
        .collect();
    if certs.len() != bundle.certificates.len() {
        r.fail("the bundle holds a certificate twice".into());
    }
    for (i, c) in bundle.certificates.iter().enumerate() {
        if !named.contains(&lintas_certs::sha256(c)[..]) {
            r.fail(format!(
                "certificate {} of the bundle is named by none of its records, so nothing verifies it",
                i + 1
            ));
        }
    }
    // An exchange is one signed request (by its header's hash): its record, the
    // responses bound to that hash, and the failure the consumer recorded for it.
    // Refusals stand alone: what they hold is what a peer claimed, never verified.
    let mut order: Vec<[u8; 32]> = Vec::new();
    let mut by_exchange: HashMap<[u8; 32], Vec<(u64, Record)>> = HashMap::new();
    let mut last_sent: HashMap<(String, String), [u8; 32]> = HashMap::new();
    for (index, rec) in records {
        if is(
            &rec,
            &[RecordKind::RequestSent, RecordKind::RequestReceived],
        ) {
            let key = lintas_certs::sha256(&rec.header);
            if by_exchange.contains_key(&key) {
                r.fail(format!(
                    "record {index} repeats a request header an earlier record of this log holds"
                ));
                continue;
            }
            if is(&rec, &[RecordKind::RequestSent]) {
                last_sent.insert((rec.client.clone(), rec.message_id.clone()), key);
            }
            order.push(key);
            by_exchange.insert(key, vec![(index, rec)]);
        } else if is(
            &rec,
            &[RecordKind::ResponseSent, RecordKind::ResponseReceived],
        ) {
            let key = lintas_proto::decode_exact::<ex::ResponseHeader>(&rec.header)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h.request_header_sha256.as_slice()).ok());
            match key.and_then(|k| by_exchange.get_mut(&k)) {
                Some(recs) => recs.push((index, rec)),
                None => r.fail(format!(
                    "record {index} is a response to a request this bundle does not hold"
                )),
            }
        } else if is(
            &rec,
            &[RecordKind::MessageSent, RecordKind::MessageReceived],
        ) {
            let key = lintas_proto::decode_exact::<ex::MessageHeader>(&rec.header)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h.request_header_sha256.as_slice()).ok());
            match key.and_then(|k| by_exchange.get_mut(&k)) {
                Some(recs) => recs.push((index, rec)),
                None => r.fail(format!(
                    "record {index} is a stream message of a request this bundle does not hold"
                )),
            }
        } else if is(&rec, &[RecordKind::Failed]) {
            match last_sent
                .get(&(rec.client.clone(), rec.message_id.clone()))
                .and_then(|k| by_exchange.get_mut(k))
            {
                Some(recs) => recs.push((index, rec)),
                None => r.fail(format!(
                    "record {index} records a failure of a request this bundle does not hold"
                )),
            }
        } else if is(&rec, &[RecordKind::Rejection]) {
            r.not_established.push(format!(
                "{origin} refused a request (record {index}) that claimed to be message {} of {}: {} {}; what a refused request claims is not verified",
                rec.message_id,
                rec.client,
                status_name(rec.status_code),
                rec.detail
            ));
        }
    }
    for key in order {
        let recs = by_exchange.remove(&key).unwrap_or_default();
        // Bounds that hold for every record of the exchange.
        let every = |lower: bool| {
            recs.iter()
                .map(|(i, _)| bounds.get(i).and_then(|b| if lower { b.0 } else { b.1 }))
                .collect::<Option<Vec<i64>>>()
        };
        let after = every(true).and_then(|v| v.into_iter().min());
        let before = every(false).and_then(|v| v.into_iter().max());
        exchange(&origin, &confs, &certs, key, recs, (after, before), r);
    }
    retries::check(r);
}

/// Checks one time-stamped checkpoint of the bundle; returns its size, the stamped time
/// and the token's SHA-256.
fn stamp(
    t: &lintas_proto::audit::v1::Timestamp,
    log_key: &[u8],
    origin: &ServerId,
    confs: &[VerifiedConf],
    anchor: &Anchor,
    size: u64,
    root: &lintas_merkle::Hash,
) -> Result<(u64, i64, [u8; 32]), String> {
    let stamped = t.stamped.as_ref().ok_or("it is empty")?;
    let signed = stamped
        .checkpoint
        .as_ref()
        .ok_or("it holds no checkpoint")?;
    let v = checkpoint::verify(signed, log_key)
        .map_err(|e| format!("its checkpoint is not {origin}'s: {e}"))?;
    // A cosignature anywhere is the witness's or the bundle is refused.
    for (i, c) in signed.cosignatures.iter().enumerate() {
        checkpoint::verify_witness(
            c,
            anchor.trust_store(),
            &anchor.instance,
            &signed.checkpoint,
        )
        .map_err(|e| format!("cosignature {} of its checkpoint: {e}", i + 1))?;
    }
    if v.checkpoint.origin != origin.to_string() {
        return Err(format!(
            "its checkpoint is of {}'s log",
            v.checkpoint.origin
        ));
    }
    let digest = lintas_certs::sha256(&signed.checkpoint);
    let mut why = String::from("no configuration");
    let time = confs
        .iter()
        .find_map(
            |c| match lintas_wire::verify_token(&stamped.token, &digest, c) {
                Ok(t) => Some(t),
                Err(e) => {
                    why = e;
                    None
                }
            },
        )
        .ok_or_else(|| format!("the token does not verify: {why}"))?;
    let proof = lintas_merkle::hashes_from(&t.consistency_proof)
        .ok_or_else(|| "a proof hash is not 32 bytes".to_string())?;
    lintas_merkle::verify_consistency(v.checkpoint.size, size, &v.root, root, &proof)
        .map_err(|e| format!("its checkpoint is not an earlier state of the bundle's log ({e})"))?;
    Ok((
        v.checkpoint.size,
        time,
        lintas_certs::sha256(&stamped.token),
    ))
}

/// What the anchor establishes about a log: the configurations that verify against it
/// (newest first), the log key the newest one listing the origin gives and that serial,
/// the checkpoint signed with that key, and what a witness stated about it.
struct Anchored {
    confs: Vec<VerifiedConf>,
    log_key: Vec<u8>,
    key_serial: u64,
    cp: checkpoint::Verified,
    witnessed_by: Option<Cosigned>,
}

/// Checks configurations, log key, checkpoint and cosignatures; pushes what fails onto
/// `failures` and returns `None` when nothing further can be checked.
fn anchored(
    origin: &ServerId,
    global_confs: &[Vec<u8>],
    signed: Option<&checkpoint::SignedCheckpoint>,
    anchor: &Anchor,
    failures: &mut Vec<String>,
) -> Option<Anchored> {
    let now = SystemTime::now();
    let mut confs: Vec<VerifiedConf> = Vec::new();
    for (i, blob) in global_confs.iter().enumerate() {
        match lintas_globalconf::verify_ignoring_expiry(blob, anchor, now) {
            Ok(c) if confs.iter().any(|k| k.serial() == c.serial()) => failures.push(format!(
                "global configuration {} repeats serial {} (a bundle holds each once)",
                i + 1,
                c.serial()
            )),
            Ok(c) => confs.push(c),
            Err(e) => failures.push(format!(
                "global configuration {} does not verify against the anchor: {e}",
                i + 1
            )),
        }
    }
    confs.sort_by_key(|c| std::cmp::Reverse(c.serial()));
    if confs.is_empty() {
        failures.push("no global configuration verifies against the anchor".into());
        return None;
    }
    let Some((log_key, key_serial)) = confs.iter().find_map(|c| {
        c.server(origin)
            .filter(|s| !s.log_public_key.is_empty())
            .map(|s| (s.log_public_key.clone(), c.serial()))
    }) else {
        failures.push(format!(
            "no global configuration lists a log key for {origin}"
        ));
        return None;
    };
    let Some(signed) = signed else {
        failures.push("there is no checkpoint".into());
        return None;
    };
    let cp = match checkpoint::verify(signed, &log_key) {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!("the checkpoint is not {origin}'s: {e}"));
            return None;
        }
    };
    if cp.checkpoint.origin != origin.to_string() {
        failures.push(format!(
            "the checkpoint is of {}'s log, not {origin}'s",
            cp.checkpoint.origin
        ));
        return None;
    }
    let mut witnessed_by = None;
    for (i, c) in signed.cosignatures.iter().enumerate() {
        match checkpoint::verify_witness(
            c,
            anchor.trust_store(),
            &anchor.instance,
            &signed.checkpoint,
        ) {
            Ok(stated) => witnessed_by = Some(stated),
            Err(e) => failures.push(format!("cosignature {} of the checkpoint: {e}", i + 1)),
        }
    }
    Some(Anchored {
        confs,
        log_key,
        key_serial,
        cp,
        witnessed_by,
    })
}

fn is(rec: &Record, kinds: &[RecordKind]) -> bool {
    kinds.iter().any(|k| rec.kind == *k as i32)
}

/// What comparing two parties' bundles shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrossCheck {
    pub proven: Vec<String>,
    pub failures: Vec<String>,
    pub not_established: Vec<String>,
}

/// Compares two verified reports of the same exchanges (a consumer's and a provider's):
/// for every exchange both hold, the signed request must be the same bytes with the same
/// signature, and so must the signed response where both hold one (a response the
/// provider signed may never have arrived, if a server or the network failed).
pub fn cross_check(a: &Report, b: &Report) -> CrossCheck {
    let mut c = CrossCheck::default();
    if a.origin == b.origin {
        c.failures.push(format!(
            "both bundles are from {}; a cross-check needs the two sides of the exchanges",
            a.origin
        ));
        return c;
    }
    let mut shared = 0;
    for (key, pa) in &a.signed {
        let Some(pb) = b.signed.get(key) else {
            continue;
        };
        shared += 1;
        let (client, id) = (&pa.client, &pa.message_id);
        if pa.request != pb.request {
            c.failures.push(format!(
                "exchange {id} of {client}: {} and {} hold different signed requests",
                a.origin, b.origin
            ));
            continue;
        }
        match (&pa.response, &pb.response) {
            (Some(ra), Some(rb)) if ra != rb => c.failures.push(format!(
                "exchange {id} of {client}: {} and {} hold different signed responses",
                a.origin, b.origin
            )),
            (Some(_), Some(_)) => c.proven.push(format!(
                "exchange {id} of {client}: {} and {} hold the same signed request and the same signed response.",
                a.origin, b.origin
            )),
            _ => {
                c.proven.push(format!(
                    "exchange {id} of {client}: {} and {} hold the same signed request.",
                    a.origin, b.origin
                ));
                c.not_established.push(format!(
                    "exchange {id} of {client}: only one side holds a signed response, so whether it reached the other is not established"
                ));
            }
        }
    }
    if shared == 0 {
        c.failures.push(format!(
            "the bundles of {} and {} have no exchange in common",
            a.origin, b.origin
        ));
    }
    c
}

/// What verifying an archive of sealed segments shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveReport {
    pub origin: String,
    pub verified: bool,
    pub proven: Vec<String>,
    pub failures: Vec<String>,
    pub not_established: Vec<String>,
}

/// Verifies an archive written by `lintas audit archive`: `manifest` and the segment
/// files in `dir`, against `anchor`. Every record of every segment is read and checked
/// against its frame, the tree head over them must be the manifest's, and that head
/// must be an earlier state of the log the checkpoint (signed with the origin's listed
/// log key, and cosigned) commits to.
pub fn verify_archive(
    manifest: &lintas_proto::audit::v1::Archive,
    dir: &std::path::Path,
    anchor: &Anchor,
) -> ArchiveReport {
    let mut r = ArchiveReport {
        origin: manifest.origin.clone(),
        ..Default::default()
    };
    if let Err(e) = check_archive(manifest, dir, anchor, &mut r) {
        r.failures.push(e);
    }
    r.verified = r.failures.is_empty();
    r
}

fn check_archive(
    m: &lintas_proto::audit::v1::Archive,
    dir: &std::path::Path,
    anchor: &Anchor,
    r: &mut ArchiveReport,
) -> Result<(), String> {
    if m.format != lintas_wire::ARCHIVE_FORMAT {
        return Err(format!(
            "not a lintas archive manifest (format '{}')",
            m.format
        ));
    }
    let origin: ServerId = m
        .origin
        .parse()
        .map_err(|e| format!("the origin '{}' is not a server id: {e}", m.origin))?;
    let mut failures = Vec::new();
    let anchored = anchored(
        &origin,
        &m.global_confs,
        m.checkpoint.as_ref(),
        anchor,
        &mut failures,
    );
    r.failures.extend(failures);
    let Some(Anchored {
        cp, witnessed_by, ..
    }) = anchored
    else {
        return Ok(());
    };
    let witnessed = witnessed_by.map(|s| at_ms(s.time_unix_ms));
    // Every segment, in order from record 0, unchanged, each record matching its frame.
    if m.segments.is_empty() {
        return Err("the archive holds no segment".into());
    }
    let mut frontier = lintas_merkle::Frontier::new();
    for s in &m.segments {
        if s.first != frontier.size() {
            return Err(format!(
                "segment {} starts at record {}, but the segments before it end at {}: one is missing or out of order",
                s.file,
                s.first,
                frontier.size()
            ));
        }
        if s.file != format!("{:020}.seg", s.first) {
            return Err(format!(
                "segment name '{}' is not the name of a segment starting at record {}",
                s.file, s.first
            ));
        }
        let path = dir.join(&s.file);
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() || meta.len() > MAX_SEGMENT_BYTES {
            return Err(format!(
                "{} is not a regular file of at most {MAX_SEGMENT_BYTES} bytes",
                path.display()
            ));
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if lintas_certs::sha256(&bytes)[..] != s.sha256[..] {
            return Err(format!(
                "segment {} is not the file the manifest names (its SHA-256 differs)",
                s.file
            ));
        }
        // The bytes that were hashed are the ones read for records.
        let leaves = lintas_log::file::segment_leaves(&bytes)
            .map_err(|e| format!("segment {}: {e}", s.file))?;
        if leaves.len() as u64 != s.count {
            return Err(format!(
                "segment {} holds {} records, the manifest says {}",
                s.file,
                leaves.len(),
                s.count
            ));
        }
        for leaf in leaves {
            frontier.push(leaf);
        }
    }
    if frontier.size() != m.size || frontier.root()[..] != m.root[..] {
        return Err("the segments' records do not form the tree head the manifest names".into());
    }
    let proof = lintas_merkle::hashes_from(&m.consistency_proof)
        .ok_or_else(|| "a proof hash is not 32 bytes".to_string())?;
    lintas_merkle::verify_consistency(
        m.size,
        cp.checkpoint.size,
        &frontier.root(),
        &cp.root,
        &proof,
    )
    .map_err(|e| {
        format!("the archived records are not the beginning of the checkpointed log ({e})")
    })?;
    r.proven.push(format!(
        "The {} segments hold records 0 to {} of the log of {origin}, unchanged: they are the beginning of the log its checkpoint of {} records (signed at {} with its listed log key{}) commits to.",
        m.segments.len(),
        m.size.saturating_sub(1),
        cp.checkpoint.size,
        at_ms(cp.checkpoint.time_unix_ms),
        witnessed
            .as_ref()
            .map(|t| format!(", witnessed by the registry at {t}"))
            .unwrap_or_default()
    ));
    if witnessed.is_none() {
        r.not_established
            .push("no witness cosigned the checkpoint".into());
    }
    Ok(())
}
