//! Idempotency keys on the provider's server. A client may send a unary call with a key
//! (`lintas-idempotency-key`, signed in the request header); this server keeps, for
//! `idempotency_window_secs`, (client, provider, service, key) → the first request's
//! fingerprint (method and body hash) and, once the application answered, that answer.
//! A later request with the same fingerprint under the key is answered with the first
//! answer, signed again for it and naming the first exchange's message id, without
//! calling the application; another request under the key is refused. The entry is
//! durable before the application is called and again once it answered, so a restart
//! never lets the application see the request twice: a first request cut off by a
//! restart leaves its outcome unknown, and a retry is told so.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SsError;

/// Longest key, in bytes of printable ASCII.
pub const MAX_KEY_LEN: usize = 128;
/// The refusals' reasons: the key was used for another request; the request first sent
/// under it is still being answered; it was being answered when the server stopped.
pub const KEY_REUSED: &str = "IdempotencyKeyReused";
pub const IN_PROGRESS: &str = "IdempotencyInProgress";
pub const OUTCOME_UNKNOWN: &str = "IdempotencyOutcomeUnknown";

/// A key as a client may send it: 1 to 128 printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// The application's answer, as kept for repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub code: i32,
    pub message: String,
    #[serde(with = "base64_vec")]
    pub body: Vec<u8>,
    /// This server (not the application) produced the status.
    pub by_server: bool,
}

mod base64_vec {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD
            .decode(String::deserialize(d)?)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    /// Being answered by this server since it started as `boot`.
    Answering {
        boot: String,
    },
    Answered(Kept),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// SHA-256 of the method and the body hash, hex.
    fingerprint: String,
    /// The first request's message id.
    message_id: String,
    expires_unix_ms: i64,
    state: State,
}

/// What a request under a key is to be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The first under its key: call the application, then [`Idempotency::finish`].
    First(Ticket),
    /// A repeat: the first request's message id and answer.
    Repeat { message_id: String, kept: Kept },
}

/// Why a request under a key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The key was used for another request (another method or body).
    Reused { message_id: String },
    /// The first request under the key is being answered.
    InProgress { message_id: String },
    /// The first request was being answered when this server stopped.
    Interrupted { message_id: String },
}

/// The entry a first request holds until it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    key: Vec<u8>,
}

/// A request under a key: who, what and which.
pub struct Keyed<'a> {
    pub client: &'a str,
    pub provider: &'a str,
    /// The service, `package.Service` or a REST service code.
    pub service: &'a str,
    pub key: &'a str,
    pub method: &'a str,
    pub body_sha256: &'a [u8],
    pub message_id: &'a str,
}

impl Keyed<'_> {
    fn store_key(&self) -> Vec<u8> {
        [self.client, self.provider, self.service, self.key]
            .join("\n")
            .into_bytes()
    }

    fn fingerprint(&self) -> String {
        let mut text = self.method.as_bytes().to_vec();
        text.push(0);
        text.extend_from_slice(self.body_sha256);
        lintas_certs::hex(&lintas_certs::sha256(&text))
    }
}

/// What the entry under a key says about a request with `fingerprint` at `now_ms`
/// (`boot`: this server's run): `None` when it is the first.
fn decide(
    existing: Option<&Entry>,
    fingerprint: &str,
    now_ms: i64,
    boot: &str,
) -> Option<Result<Begun, Refused>> {
    // A request still being answered in this run holds its key past the window.
    let live = |e: &&Entry| {
        e.expires_unix_ms > now_ms || matches!(&e.state, State::Answering { boot: b } if b == boot)
    };
    let e = existing.filter(live)?;
    let message_id = e.message_id.clone();
    Some(match &e.state {
        _ if e.fingerprint != fingerprint => Err(Refused::Reused { message_id }),
        State::Answered(kept) => Ok(Begun::Repeat {
            message_id,
            kept: kept.clone(),
        }),
        State::Answering { boot: b } if b == boot => Err(Refused::InProgress { message_id }),
        State::Answering { .. } => Err(Refused::Interrupted { message_id }),
    })
}

/// The keys of this server's provided services, in the state store.
pub struct Idempotency {
    tree: sled::Tree,
    /// This run of the server.
    boot: String,
    window: Duration,
}

fn encode(e: &Entry) -> Result<Vec<u8>, SsError> {
    serde_json::to_vec(e).map_err(crate::state_error)
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    serde_json::from_slice(bytes).ok()
}

impl Idempotency {
    pub const TREE: &'static str = "idempotency";

    pub fn open(db: &sled::Db, window: Duration, boot: String) -> Result<Self, SsError> {
        Ok(Idempotency {
            tree: db.open_tree(Self::TREE).map_err(crate::state_error)?,
            boot,
            window,
        })
    }

    /// Takes a request under a key: the first, durably held before it is answered; a
    /// repeat, with the first answer; or a refusal. Blocks on a disk flush.
    pub fn begin(&self, k: &Keyed<'_>, now_ms: i64) -> Result<Result<Begun, Refused>, SsError> {
        let key = k.store_key();
        let fingerprint = k.fingerprint();
        loop {
            let current = self.tree.get(&key).map_err(crate::state_error)?;
            let existing = current.as_deref().and_then(decode);
            if let Some(decided) = decide(existing.as_ref(), &fingerprint, now_ms, &self.boot) {
                return Ok(decided);
            }
            let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
            let entry = Entry {
                fingerprint: fingerprint.clone(),
                message_id: k.message_id.to_owned(),
                expires_unix_ms: now_ms.saturating_add(window_ms),
                state: State::Answering {
                    boot: self.boot.clone(),
                },
            };
            let swapped = self
                .tree
                .compare_and_swap(&key, current, Some(encode(&entry)?))
                .map_err(crate::state_error)?;
            // Another request under the key came between: decide again on what it wrote.
            if swapped.is_ok() {
                self.tree.flush().map_err(crate::state_error)?;
                return Ok(Ok(Begun::First(Ticket { key })));
            }
        }
    }

    /// Keeps the application's answer to the first request for its repeats. Blocks on a
    /// disk flush.
    pub fn finish(&self, ticket: Ticket, kept: Kept) -> Result<(), SsError> {
        let Some(mut entry) = self
            .tree
            .get(&ticket.key)
            .map_err(crate::state_error)?
            .as_deref()
            .and_then(decode)
        else {
            return Ok(());
        };
        entry.state = State::Answered(kept);
        self.tree
            .insert(&ticket.key, encode(&entry)?)
            .map_err(crate::state_error)?;
        self.tree.flush().map_err(crate::state_error)?;
        Ok(())
    }

    /// Lets the key go: the application never saw the request, so a retry may try
    /// again.
    pub fn release(&self, ticket: Ticket) -> Result<(), SsError> {
        self.tree.remove(&ticket.key).map_err(crate::state_error)?;
        self.tree.flush().map_err(crate::state_error)?;
        Ok(())
    }

    /// Every key kept, as a backup carries them (a key still being answered is one
    /// cut off by a restart once restored).
    pub fn export(&self) -> Result<Vec<crate::access::StoredEntry>, SsError> {
        self.tree
            .iter()
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(crate::state_error)
            })
            .collect()
    }

    /// Removes the entries whose window has passed (and any that cannot be read);
    /// answers how many.
    pub fn purge(&self, now_ms: i64) -> Result<usize, SsError> {
        let mut gone = 0;
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(crate::state_error)?;
            let past = decode(&v).is_none_or(|e| {
                e.expires_unix_ms <= now_ms
                    && !matches!(&e.state, State::Answering { boot } if *boot == self.boot)
            });
            // Only the entry read: one a request took over meanwhile stays.
            if past
                && self
                    .tree
                    .compare_and_swap(&k, Some(v), None as Option<&[u8]>)
                    .map_err(crate::state_error)?
                    .is_ok()
            {
                gone += 1;
            }
        }
        if gone > 0 {
            self.tree.flush().map_err(crate::state_error)?;
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests;
