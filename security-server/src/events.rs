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

use serde::{Deserialize, Serialize};
use tonic::Code;

pub mod delivery;
pub mod endpoint;
mod store;

pub use store::{Events, TREES};

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

/// An event given up on, kept until an operator has it redelivered or discards it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub sequence: u64,
    /// Deliveries tried, redeliveries included.
    pub attempts: u32,
    /// Why the last one failed.
    pub error: String,
    /// When it was given up on (again).
    pub at_unix_ms: i64,
    /// An operator asked for it to be delivered again: it goes before the
    /// subscription's next event.
    #[serde(default)]
    pub redeliver: bool,
    /// Redeliveries that found the subscriber out of reach since then.
    #[serde(default)]
    pub tries: u32,
    /// Not redelivered before this time (Unix ms).
    #[serde(default)]
    pub due_unix_ms: i64,
}

/// Whether a kept event may be purged: every subscription to its topic has passed it
/// (`floor`: the lowest next sequence among them, or one past the last event when there
/// is none), no dead letter names it, and it was published `retention` or longer ago
/// (so a subscriber that joins from the start, or a restored server, still finds it).
pub fn purgeable(
    sequence: u64,
    published_unix_ms: i64,
    floor: u64,
    dead_letter: bool,
    retention: Duration,
    now_ms: i64,
) -> bool {
    let age = i128::from(now_ms) - i128::from(published_unix_ms);
    sequence < floor
        && !dead_letter
        && age >= i128::try_from(retention.as_millis()).unwrap_or(i128::MAX)
}

#[cfg(test)]
mod tests;
