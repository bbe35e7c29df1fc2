//! The events store: events, places, dead letters, in the state store's trees.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use lintas_proto::events::v1 as ev;
use prost::Message;

use super::{AfterFailure, DeadLetter, Place, Retry, SubKey, SubStatus, after_failure, purgeable};
use crate::SsError;

/// The state store's trees of events, in the order a backup reads them.
pub const TREES: [&str; 4] = [
    "events/last",
    "events/log",
    "events/subscriptions",
    "events/dead",
];

fn topic_key(publisher: &str, topic: &str) -> Vec<u8> {
    format!("{publisher}\n{topic}\n").into_bytes()
}

fn event_key(publisher: &str, topic: &str, sequence: u64) -> Vec<u8> {
    let mut at = topic_key(publisher, topic);
    at.extend_from_slice(&sequence.to_be_bytes());
    at
}

/// The sequence at the end of a key of the log or the dead-letter tree.
fn sequence_of(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8).map(|at| &key[at..])?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

fn letters_prefix(key: &SubKey) -> Vec<u8> {
    let mut prefix = key.bytes();
    prefix.push(b'\n');
    prefix
}

fn letter_key(key: &SubKey, sequence: u64) -> Vec<u8> {
    let mut at = letters_prefix(key);
    at.extend_from_slice(&sequence.to_be_bytes());
    at
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
    /// Serialises publishing, so sequences are given out in order (and a backup reads
    /// a topic's last sequence and its events as one).
    publishing: std::sync::Mutex<()>,
}

fn state<T>(r: Result<T, sled::Error>) -> Result<T, SsError> {
    r.map_err(crate::state_error)
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, SsError> {
    serde_json::to_vec(value).map_err(crate::state_error)
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

    fn one_at_a_time(&self) -> std::sync::MutexGuard<'_, ()> {
        self.publishing.lock().unwrap_or_else(|p| p.into_inner())
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
        let _one_at_a_time = self.one_at_a_time();
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
        state(
            self.log
                .insert(event_key(publisher, topic, sequence), event.encode_to_vec()),
        )?;
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
        Ok(state(self.log.get(event_key(publisher, topic, sequence)))?
            .and_then(|v| ev::Event::decode(v.as_ref()).ok()))
    }

    /// The first event kept of a topic at `sequence` or after it (those before it may
    /// have been purged while a subscription still pointed at them).
    pub fn event_from(
        &self,
        publisher: &str,
        topic: &str,
        sequence: u64,
    ) -> Result<Option<ev::Event>, SsError> {
        let from = event_key(publisher, topic, sequence);
        let to = event_key(publisher, topic, u64::MAX);
        for kv in self.log.range(from..=to) {
            let (_, v) = state(kv)?;
            if let Ok(event) = ev::Event::decode(v.as_ref()) {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// Subscribes (or answers the subscription there is): from the next event
    /// published, or `from_start` from the first kept. Blocks on a disk flush.
    pub fn subscribe(&self, key: &SubKey, from_start: bool) -> Result<Place, SsError> {
        if let Some(place) = self.place(key)? {
            return Ok(place);
        }
        let next_published = self.last_sequence(&key.publisher, &key.topic)? + 1;
        let next = if from_start {
            self.event_from(&key.publisher, &key.topic, 1)?
                .map_or(next_published, |e| e.sequence)
        } else {
            next_published
        };
        let place = Place {
            next,
            ..Place::default()
        };
        state(self.subs.insert(key.bytes(), json(&place)?))?;
        self.flush()?;
        self.changed.notify_one();
        Ok(place)
    }

    /// Ends a subscription, and its dead letters go with it; answers its place, if
    /// there was one.
    pub fn unsubscribe(&self, key: &SubKey) -> Result<Option<Place>, SsError> {
        let was = self.place(key)?;
        state(self.subs.remove(key.bytes()))?;
        // After the place: a failed delivery that wrote a letter before finds the place
        // gone and takes it back, or its letter is removed here.
        self.discard(key, None)?;
        self.flush()?;
        Ok(was)
    }

    pub fn place(&self, key: &SubKey) -> Result<Option<Place>, SsError> {
        Ok(state(self.subs.get(key.bytes()))?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Moves a subscription from the place `was` (as stored) to `place`, unless it
    /// changed meanwhile (an unsubscribe during a delivery stays).
    fn move_place(&self, key: &SubKey, was: sled::IVec, place: &Place) -> Result<(), SsError> {
        let _ = state(
            self.subs
                .compare_and_swap(key.bytes(), Some(was), Some(json(place)?)),
        )?;
        self.flush()
    }

    /// The stored place of `key` if `sequence` is its next event (or the first kept
    /// after it).
    fn place_at(
        &self,
        key: &SubKey,
        sequence: u64,
    ) -> Result<Option<(sled::IVec, Place)>, SsError> {
        Ok(state(self.subs.get(key.bytes()))?.and_then(|raw| {
            let place: Place = serde_json::from_slice(&raw).ok()?;
            (place.next <= sequence).then_some((raw, place))
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
    /// retried later, or given up on; `None` when the subscription ended or moved on
    /// meanwhile. A dead letter is written before the subscription moves past it (a
    /// crash in between delivers the event again), and taken back when the subscription
    /// changed meanwhile. Blocks on a disk flush.
    pub fn failed(
        &self,
        key: &SubKey,
        sequence: u64,
        refused: bool,
        error: &str,
        now_ms: i64,
    ) -> Result<Option<AfterFailure>, SsError> {
        let Some((raw, place)) = self.place_at(key, sequence)? else {
            return Ok(None);
        };
        // Failures so far count for the event they were about.
        let (attempts, refusals) = if place.next == sequence {
            (place.attempts + 1, place.refusals + u32::from(refused))
        } else {
            (1, u32::from(refused))
        };
        let after = after_failure(attempts, refusals, &self.retry);
        let (place, letter) = match after {
            AfterFailure::DeadLetter => {
                let letter = json(&DeadLetter {
                    sequence,
                    attempts,
                    error: error.to_owned(),
                    at_unix_ms: now_ms,
                    redeliver: false,
                    tries: 0,
                    due_unix_ms: 0,
                })?;
                state(self.dead.insert(letter_key(key, sequence), letter.clone()))?;
                let place = Place {
                    next: sequence + 1,
                    ..Place::default()
                };
                (place, Some(letter))
            }
            AfterFailure::RetryIn(wait) => {
                let place = Place {
                    next: sequence,
                    attempts,
                    refusals,
                    due_unix_ms: due(now_ms, wait),
                    last_error: error.to_owned(),
                };
                (place, None)
            }
        };
        let moved = state(
            self.subs
                .compare_and_swap(key.bytes(), Some(raw), Some(json(&place)?)),
        )?
        .is_ok();
        if !moved && let Some(letter) = letter {
            // Ended or moved on meanwhile: the letter is not this subscription's.
            let _ = state(self.dead.compare_and_swap(
                letter_key(key, sequence),
                Some(letter),
                None::<Vec<u8>>,
            ))?;
        }
        self.flush()?;
        Ok(moved.then_some(after))
    }

    /// Every subscription with its backlog and dead letters.
    pub fn status(&self) -> Result<Vec<SubStatus>, SsError> {
        self.subscriptions()?
            .into_iter()
            .map(|(key, place)| {
                let last = self.last_sequence(&key.publisher, &key.topic)?;
                let dead_letters = self.dead.scan_prefix(letters_prefix(&key)).count() as u64;
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
        let mut out = Vec::new();
        for kv in self.dead.scan_prefix(letters_prefix(key)) {
            let (_, v) = state(kv)?;
            if let Ok(letter) = serde_json::from_slice(&v) {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// Changes the dead letters of `key` (the one at `sequence`, or all): `change`
    /// answers the new letter, or `None` to remove it; a letter changed meanwhile is
    /// read and changed again. Answers how many it changed.
    fn change_letters(
        &self,
        key: &SubKey,
        sequence: Option<u64>,
        change: impl Fn(DeadLetter) -> Option<DeadLetter>,
    ) -> Result<usize, SsError> {
        let at: Vec<sled::IVec> = match sequence {
            Some(s) => vec![letter_key(key, s).into()],
            None => state(
                self.dead
                    .scan_prefix(letters_prefix(key))
                    .keys()
                    .collect::<Result<_, _>>(),
            )?,
        };
        let mut changed = 0;
        for at in at {
            loop {
                let Some(raw) = state(self.dead.get(&at))? else {
                    break;
                };
                let Ok(letter) = serde_json::from_slice::<DeadLetter>(&raw) else {
                    break;
                };
                let new = change(letter).map(|l| json(&l)).transpose()?;
                if state(self.dead.compare_and_swap(&at, Some(raw), new))?.is_ok() {
                    changed += 1;
                    break;
                }
            }
        }
        state(self.dead.flush())?;
        Ok(changed)
    }

    /// Has the dead letters of `key` (the one at `sequence`, or all) delivered again,
    /// before the subscription's next event; answers how many. Blocks on a disk flush.
    pub fn redeliver(&self, key: &SubKey, sequence: Option<u64>) -> Result<usize, SsError> {
        let marked = self.change_letters(key, sequence, |l| {
            Some(DeadLetter {
                redeliver: true,
                tries: 0,
                due_unix_ms: 0,
                ..l
            })
        })?;
        self.changed.notify_one();
        Ok(marked)
    }

    /// Removes the dead letters of `key` (the one at `sequence`, or all) for good;
    /// answers how many. Blocks on a disk flush.
    pub fn discard(&self, key: &SubKey, sequence: Option<u64>) -> Result<usize, SsError> {
        self.change_letters(key, sequence, |_| None)
    }

    /// The first dead letter of `key` an operator asked to redeliver, if any.
    pub fn next_redelivery(&self, key: &SubKey) -> Result<Option<DeadLetter>, SsError> {
        for kv in self.dead.scan_prefix(letters_prefix(key)) {
            let (_, v) = state(kv)?;
            if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&v)
                && letter.redeliver
            {
                return Ok(Some(letter));
            }
        }
        Ok(None)
    }

    /// A redelivery of the dead letter at `sequence` ended: acknowledged (`Ok`: the
    /// letter goes), or failed: refused by the subscriber, it is a dead letter again,
    /// waiting for another request; out of reach, tried again with backoff. Answers
    /// what follows a failure (`None`: acknowledged, or the letter was discarded
    /// meanwhile). Blocks on a disk flush.
    pub fn redelivered(
        &self,
        key: &SubKey,
        sequence: u64,
        outcome: Result<(), (bool, &str)>,
        now_ms: i64,
    ) -> Result<Option<AfterFailure>, SsError> {
        let retry = self.retry;
        let after = std::cell::Cell::new(None);
        self.change_letters(key, Some(sequence), |l| {
            let (refused, error) = outcome.err()?;
            let mut l = DeadLetter {
                attempts: l.attempts.saturating_add(1),
                error: error.to_owned(),
                ..l
            };
            if refused {
                l.redeliver = false;
                l.at_unix_ms = now_ms;
                after.set(Some(AfterFailure::DeadLetter));
            } else {
                l.tries = l.tries.saturating_add(1);
                let next = after_failure(l.tries, 0, &retry);
                if let AfterFailure::RetryIn(wait) = next {
                    l.due_unix_ms = due(now_ms, wait);
                }
                after.set(Some(next));
            }
            Some(l)
        })?;
        Ok(after.get())
    }

    /// Removes the events every subscription has passed, no dead letter names and
    /// published `retention` or longer ago ([`purgeable`]); answers how many. Blocks
    /// on disk flushes.
    pub fn purge(&self, now_ms: i64, retention: Duration) -> Result<u64, SsError> {
        // The lowest next event of each topic's subscriptions, and the events dead
        // letters name.
        let mut floors: HashMap<Vec<u8>, u64> = HashMap::new();
        for (key, place) in self.subscriptions()? {
            let floor = floors
                .entry(topic_key(&key.publisher, &key.topic))
                .or_insert(u64::MAX);
            *floor = (*floor).min(place.next);
        }
        let mut named: HashMap<Vec<u8>, BTreeSet<u64>> = HashMap::new();
        for kv in self.dead.iter() {
            let (at, _) = state(kv)?;
            let (Some(sequence), Some(key)) = (
                sequence_of(&at),
                at.len()
                    .checked_sub(9)
                    .and_then(|end| SubKey::parse(&at[..end])),
            ) else {
                continue;
            };
            named
                .entry(topic_key(&key.publisher, &key.topic))
                .or_default()
                .insert(sequence);
        }
        let mut removed = 0;
        for kv in self.last.iter() {
            let (topic, last) = state(kv)?;
            let last = <[u8; 8]>::try_from(last.as_ref()).map_or(0, u64::from_be_bytes);
            let floor = floors.get(topic.as_ref()).copied().unwrap_or(last + 1);
            let none = BTreeSet::new();
            let dead = named.get(topic.as_ref()).unwrap_or(&none);
            for kv in self.log.scan_prefix(&topic) {
                let (at, raw) = state(kv)?;
                let Some(sequence) = sequence_of(&at) else {
                    continue;
                };
                if sequence >= floor {
                    break;
                }
                let published = ev::Event::decode(raw.as_ref()).map_or(0, |e| e.published_unix_ms);
                if purgeable(
                    sequence,
                    published,
                    floor,
                    dead.contains(&sequence),
                    retention,
                    now_ms,
                ) {
                    state(self.log.remove(at))?;
                    removed += 1;
                } else if !dead.contains(&sequence) {
                    // Later events were published later still.
                    break;
                }
            }
        }
        if removed > 0 {
            state(self.log.flush())?;
        }
        Ok(removed)
    }

    /// Every entry of the events' trees, as a backup carries them, consistent with the
    /// topics' last sequences as read at the start (with no publishing meanwhile):
    /// events published later, and dead letters of them, are left out, and a place
    /// beyond them is taken back to the first left out.
    pub fn export(&self) -> Result<Vec<lintas_proto::ss::v1::StateEntry>, SsError> {
        let entry = |tree: &str, key: &[u8], value: Vec<u8>| lintas_proto::ss::v1::StateEntry {
            tree: tree.into(),
            key: key.to_vec(),
            value,
        };
        let lasts: HashMap<Vec<u8>, u64> = {
            let _one_at_a_time = self.one_at_a_time();
            let mut lasts = HashMap::new();
            for kv in self.last.iter() {
                let (k, v) = state(kv)?;
                let last = <[u8; 8]>::try_from(v.as_ref()).map_or(0, u64::from_be_bytes);
                lasts.insert(k.to_vec(), last);
            }
            lasts
        };
        let last_of = |topic: &[u8]| lasts.get(topic).copied().unwrap_or(0);
        let mut out: Vec<_> = lasts
            .iter()
            .map(|(k, last)| entry(TREES[0], k, last.to_be_bytes().to_vec()))
            .collect();
        for kv in self.log.iter() {
            let (k, v) = state(kv)?;
            if let Some(s) = sequence_of(&k)
                && s <= last_of(&k[..k.len() - 8])
            {
                out.push(entry(TREES[1], &k, v.to_vec()));
            }
        }
        for kv in self.subs.iter() {
            let (k, v) = state(kv)?;
            let (Some(key), Ok(mut place)) =
                (SubKey::parse(&k), serde_json::from_slice::<Place>(&v))
            else {
                continue;
            };
            let after_last = last_of(&topic_key(&key.publisher, &key.topic)) + 1;
            if place.next > after_last {
                place = Place {
                    next: after_last,
                    ..Place::default()
                };
            }
            out.push(entry(TREES[2], &k, json(&place)?));
        }
        for kv in self.dead.iter() {
            let (k, v) = state(kv)?;
            let topic = k
                .len()
                .checked_sub(9)
                .and_then(|end| SubKey::parse(&k[..end]))
                .map(|key| topic_key(&key.publisher, &key.topic));
            if let (Some(s), Some(topic)) = (sequence_of(&k), topic)
                && s <= last_of(&topic)
            {
                out.push(entry(TREES[3], &k, v.to_vec()));
            }
        }
        Ok(out)
    }
}

fn due(now_ms: i64, wait: Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}
