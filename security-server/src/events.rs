//! Events: the publisher's side. A provider subsystem publishes events on a topic it
//! registered (a catalogue entry marked as a topic, whose grants say who may subscribe);
//! subscribers subscribe through the bus (`lintas.events.v1.Subscriptions`, answered by
//! this server); this server keeps every event and every subscription's place durably
//! in its state store and delivers each event to each subscriber as an exchange of its
//! own (client: the publisher; service: the subscriber's `lintas.events.v1.EventSink`),
//! signed and logged on both servers like any call. A subscription's events go one at a
//! time, in order, so events with the same key arrive in the order they were published.
//! An answer OK acknowledges an event; any other is retried with backoff, for as long
//! as the subscriber cannot be reached, and at most `max_attempts` times when it
//! refuses the event, which then goes to the dead-letter store and the next follows.

use std::time::Duration;

use lintas_proto::events::v1 as ev;
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::SsError;

pub mod delivery;
pub mod endpoint;

/// The service a subscriber's application implements and publishes.
pub const SINK: &str = "lintas.events.v1.EventSink";
/// The service subscribers call, answered by the publisher's server itself.
pub const SUBSCRIPTIONS: &str = "lintas.events.v1.Subscriptions";

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The wait after the first failure, doubled after each next one.
    pub base: Duration,
    /// The longest wait.
    pub most: Duration,
    /// Attempts of an event the subscriber refuses (answers with an error of its own)
    /// before it goes to the dead-letter store.
    pub max_attempts: u32,
}

/// What a failed delivery leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after this long.
    RetryIn(Duration),
    /// Give up on the event: to the dead-letter store, and on to the next.
    DeadLetter,
}

/// Whether a delivery that failed with `code` found the subscriber out of reach or busy
/// (rather than refusing the event).
pub fn unreachable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

/// Whether a failed delivery was the subscriber's application refusing the event: an
/// error of its own (`by_application`), other than being busy. Anything else (the
/// subscriber's server or the bus failing, the publisher's side not yet trusted) is
/// waited out.
pub fn refused(code: Code, by_application: bool) -> bool {
    by_application && !unreachable(code)
}

/// Whether a failed delivery is tried again, and when: `attempts` failed deliveries of
/// the event so far (this one included) set the wait, `refusals` of them the subscriber
/// refused ([`refused`]). A subscriber that cannot be reached or is busy is waited for,
/// however long; an event it refuses is retried until it has refused it
/// `retry.max_attempts` times.
pub fn after_failure(attempts: u32, refusals: u32, retry: &Retry) -> AfterFailure {
    if refusals >= retry.max_attempts {
        return AfterFailure::DeadLetter;
    }
    let doublings = attempts.saturating_sub(1).min(20);
    let wait = retry.base.saturating_mul(1 << doublings).min(retry.most);
    AfterFailure::RetryIn(wait)
}

/// A subscription's place: the next event to deliver and how its delivery goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub next: u64,
    /// Failed attempts of the next event so far.
    pub attempts: u32,
    /// Of those, the ones the subscriber refused.
    #[serde(default)]
    pub refusals: u32,
    /// Not before this time (Unix ms).
    pub due_unix_ms: i64,
    /// Why the last attempt failed.
    pub last_error: String,
}

/// Who subscribes to what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey {
    pub publisher: String,
    pub topic: String,
    pub subscriber: String,
}

impl SubKey {
    fn bytes(&self) -> Vec<u8> {
        [
            self.publisher.as_str(),
            self.topic.as_str(),
            self.subscriber.as_str(),
        ]
        .join("\n")
        .into_bytes()
    }

    fn parse(bytes: &[u8]) -> Option<SubKey> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split('\n');
        Some(SubKey {
            publisher: parts.next()?.to_owned(),
            topic: parts.next()?.to_owned(),
            subscriber: parts.next()?.to_owned(),
        })
    }
}

/// A subscription as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubStatus {
    pub key: SubKey,
    pub place: Place,
    /// Events published and not yet delivered (or given up on).
    pub backlog: u64,
    pub dead_letters: u64,
}

/// An event given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub sequence: u64,
    pub attempts: u32,
    pub error: String,
    pub at_unix_ms: i64,
}

fn topic_key(publisher: &str, topic: &str) -> Vec<u8> {
    format!("{publisher}\n{topic}\n").into_bytes()
}

/// The events this server's publishers published and their subscriptions, in the
/// state store.
pub struct Events {
    /// (publisher, topic, sequence) → the encoded event.
    log: sled::Tree,
    /// (publisher, topic) → the last sequence.
    last: sled::Tree,
    /// (publisher, topic, subscriber) → its [`Place`].
    subs: sled::Tree,
    /// (publisher, topic, subscriber, sequence) → [`DeadLetter`].
    dead: sled::Tree,
    pub retry: Retry,
    /// Woken when an event is published or a subscription changes.
    pub changed: tokio::sync::Notify,
    /// Serialises publishing, so sequences are given out in order.
    publishing: std::sync::Mutex<()>,
}

fn state<T>(r: Result<T, sled::Error>) -> Result<T, SsError> {
    r.map_err(crate::state_error)
}

impl Events {
    pub fn open(db: &sled::Db, retry: Retry) -> Result<Self, SsError> {
        Ok(Events {
            log: state(db.open_tree("events/log"))?,
            last: state(db.open_tree("events/last"))?,
            subs: state(db.open_tree("events/subscriptions"))?,
            dead: state(db.open_tree("events/dead"))?,
            retry,
            changed: tokio::sync::Notify::new(),
            publishing: std::sync::Mutex::new(()),
        })
    }

    fn flush(&self) -> Result<(), SsError> {
        for tree in [&self.log, &self.last, &self.subs, &self.dead] {
            state(tree.flush())?;
        }
        Ok(())
    }

    fn last_sequence(&self, publisher: &str, topic: &str) -> Result<u64, SsError> {
        Ok(state(self.last.get(topic_key(publisher, topic)))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Keeps an event durably; answers its sequence in its topic (from 1). Blocks on a
    /// disk flush.
    pub fn publish(
        &self,
        publisher: &str,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        now_ms: i64,
    ) -> Result<u64, SsError> {
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let sequence = self.last_sequence(publisher, topic)? + 1;
        let event = ev::Event {
            topic: topic.to_owned(),
            publisher: publisher.to_owned(),
            sequence,
            key: key.to_owned(),
            payload,
            published_unix_ms: now_ms,
            attempt: 0,
        };
        let mut at = topic_key(publisher, topic);
        at.extend_from_slice(&sequence.to_be_bytes());
        state(self.log.insert(at, event.encode_to_vec()))?;
        state(
            self.last
                .insert(topic_key(publisher, topic), &sequence.to_be_bytes()),
        )?;
        self.flush()?;
        self.changed.notify_one();
        Ok(sequence)
    }

    /// The event at `sequence` of a topic, if kept.
    pub fn event(
        &self,
        publisher: &str,
        topic: &str,
        sequence: u64,
    ) -> Result<Option<ev::Event>, SsError> {
        let mut at = topic_key(publisher, topic);
        at.extend_from_slice(&sequence.to_be_bytes());
        Ok(state(self.log.get(at))?.and_then(|v| ev::Event::decode(v.as_ref()).ok()))
    }

    /// Subscribes (or answers the subscription there is): from the next event
    /// published, or `from_start` from the first kept. Blocks on a disk flush.
    pub fn subscribe(&self, key: &SubKey, from_start: bool) -> Result<Place, SsError> {
        if let Some(place) = self.place(key)? {
            return Ok(place);
        }
        let next = if from_start {
            1
        } else {
            self.last_sequence(&key.publisher, &key.topic)? + 1
        };
        let place = Place {
            next,
            ..Place::default()
        };
        self.set_place(key, &place)?;
        self.changed.notify_one();
        Ok(place)
    }

    /// Ends a subscription; answers its place, if there was one.
    pub fn unsubscribe(&self, key: &SubKey) -> Result<Option<Place>, SsError> {
        let was = self.place(key)?;
        state(self.subs.remove(key.bytes()))?;
        self.flush()?;
        Ok(was)
    }

    pub fn place(&self, key: &SubKey) -> Result<Option<Place>, SsError> {
        Ok(state(self.subs.get(key.bytes()))?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn set_place(&self, key: &SubKey, place: &Place) -> Result<(), SsError> {
        let bytes = serde_json::to_vec(place).map_err(crate::state_error)?;
        state(self.subs.insert(key.bytes(), bytes))?;
        self.flush()
    }

    /// Moves a subscription from the place `was` (as stored) to `place`, unless it
    /// changed meanwhile (an unsubscribe during a delivery stays).
    fn move_place(&self, key: &SubKey, was: sled::IVec, place: &Place) -> Result<(), SsError> {
        let bytes = serde_json::to_vec(place).map_err(crate::state_error)?;
        let _ = state(
            self.subs
                .compare_and_swap(key.bytes(), Some(was), Some(bytes)),
        )?;
        self.flush()
    }

    /// The stored place of `key` if it is at `sequence`.
    fn place_at(
        &self,
        key: &SubKey,
        sequence: u64,
    ) -> Result<Option<(sled::IVec, Place)>, SsError> {
        Ok(state(self.subs.get(key.bytes()))?.and_then(|raw| {
            let place: Place = serde_json::from_slice(&raw).ok()?;
            (place.next == sequence).then_some((raw, place))
        }))
    }

    /// Every subscription and its place.
    pub fn subscriptions(&self) -> Result<Vec<(SubKey, Place)>, SsError> {
        let mut out = Vec::new();
        for kv in self.subs.iter() {
            let (k, v) = state(kv)?;
            if let (Some(key), Ok(place)) = (SubKey::parse(&k), serde_json::from_slice(&v)) {
                out.push((key, place));
            }
        }
        Ok(out)
    }

    /// The event `sequence` was acknowledged: the next one follows. Blocks on a disk
    /// flush.
    pub fn delivered(&self, key: &SubKey, sequence: u64) -> Result<(), SsError> {
        match self.place_at(key, sequence)? {
            Some((raw, _)) => self.move_place(
                key,
                raw,
                &Place {
                    next: sequence + 1,
                    ..Place::default()
                },
            ),
            // Unsubscribed meanwhile, or moved on.
            None => Ok(()),
        }
    }

    /// The delivery of `sequence` failed (`refused`: the subscriber refused the event):
    /// retried later, or given up on. Blocks on a disk flush.
    pub fn failed(
        &self,
        key: &SubKey,
        sequence: u64,
        refused: bool,
        error: &str,
        now_ms: i64,
    ) -> Result<AfterFailure, SsError> {
        let Some((raw, place)) = self.place_at(key, sequence)? else {
            return Ok(AfterFailure::RetryIn(Duration::ZERO));
        };
        let attempts = place.attempts + 1;
        let refusals = place.refusals + u32::from(refused);
        let after = after_failure(attempts, refusals, &self.retry);
        let place = match after {
            AfterFailure::DeadLetter => {
                let mut at = key.bytes();
                at.push(b'\n');
                at.extend_from_slice(&sequence.to_be_bytes());
                let letter = DeadLetter {
                    sequence,
                    attempts,
                    error: error.to_owned(),
                    at_unix_ms: now_ms,
                };
                let bytes = serde_json::to_vec(&letter).map_err(crate::state_error)?;
                state(self.dead.insert(at, bytes))?;
                Place {
                    next: sequence + 1,
                    ..Place::default()
                }
            }
            AfterFailure::RetryIn(wait) => Place {
                next: sequence,
                attempts,
                refusals,
                due_unix_ms: now_ms
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                last_error: error.to_owned(),
            },
        };
        self.move_place(key, raw, &place)?;
        Ok(after)
    }

    /// Every subscription with its backlog and dead letters.
    pub fn status(&self) -> Result<Vec<SubStatus>, SsError> {
        self.subscriptions()?
            .into_iter()
            .map(|(key, place)| {
                let last = self.last_sequence(&key.publisher, &key.topic)?;
                let mut prefix = key.bytes();
                prefix.push(b'\n');
                let dead_letters = self.dead.scan_prefix(prefix).count() as u64;
                Ok(SubStatus {
                    backlog: (last + 1).saturating_sub(place.next),
                    dead_letters,
                    key,
                    place,
                })
            })
            .collect()
    }

    /// The events given up on for a subscription, oldest first.
    pub fn dead_letters(&self, key: &SubKey) -> Result<Vec<DeadLetter>, SsError> {
        let mut prefix = key.bytes();
        prefix.push(b'\n');
        let mut out = Vec::new();
        for kv in self.dead.scan_prefix(prefix) {
            let (_, v) = state(kv)?;
            if let Ok(letter) = serde_json::from_slice(&v) {
                out.push(letter);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
