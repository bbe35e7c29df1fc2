//! Events as operators see them: subscriptions and their dead letters.

use lintas_proto::ss::v1 as pb;
use serde::{Deserialize, Serialize};

/// A subscription to a topic of a publisher hosted here, and how its deliveries go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionInfo {
    pub publisher: String,
    pub topic: String,
    pub subscriber: String,
    /// The sequence of the next event to deliver.
    pub next_sequence: u64,
    /// Events published and not yet delivered.
    pub backlog: u64,
    /// Failed deliveries of the next event so far.
    pub attempts: u32,
    /// Why the last delivery failed, if it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Events given up on (in the dead-letter store).
    pub dead_letters: u64,
}

impl From<SubscriptionInfo> for pb::SubscriptionInfo {
    fn from(s: SubscriptionInfo) -> Self {
        pb::SubscriptionInfo {
            publisher: s.publisher,
            topic: s.topic,
            subscriber: s.subscriber,
            next_sequence: s.next_sequence,
            backlog: s.backlog,
            attempts: s.attempts,
            last_error: s.last_error,
            dead_letters: s.dead_letters,
        }
    }
}

impl From<pb::SubscriptionInfo> for SubscriptionInfo {
    fn from(s: pb::SubscriptionInfo) -> Self {
        SubscriptionInfo {
            publisher: s.publisher,
            topic: s.topic,
            subscriber: s.subscriber,
            next_sequence: s.next_sequence,
            backlog: s.backlog,
            attempts: s.attempts,
            last_error: s.last_error,
            dead_letters: s.dead_letters,
        }
    }
}

/// A subscription: who subscribes to which publisher's topic.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRef {
    pub publisher: String,
    pub topic: String,
    pub subscriber: String,
}

impl From<pb::SubscriptionRef> for SubscriptionRef {
    fn from(s: pb::SubscriptionRef) -> Self {
        SubscriptionRef {
            publisher: s.publisher,
            topic: s.topic,
            subscriber: s.subscriber,
        }
    }
}

/// One subscription's dead letters: the one at `sequence` (from 1), or all.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSelection {
    pub publisher: String,
    pub topic: String,
    pub subscriber: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

impl From<pb::DeadLetterSelection> for DeadLetterSelection {
    fn from(s: pb::DeadLetterSelection) -> Self {
        DeadLetterSelection {
            publisher: s.publisher,
            topic: s.topic,
            subscriber: s.subscriber,
            sequence: (s.sequence != 0).then_some(s.sequence),
        }
    }
}

/// An event given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterInfo {
    pub sequence: u64,
    /// The event's key, and when it was published (Unix ms).
    pub key: String,
    pub published_unix_ms: i64,
    /// Deliveries tried, and why the last failed.
    pub attempts: u32,
    pub error: String,
    /// When it was given up on (again), Unix ms.
    pub at_unix_ms: i64,
    /// Waiting to be delivered again.
    pub redeliver: bool,
}

impl From<DeadLetterInfo> for pb::DeadLetter {
    fn from(l: DeadLetterInfo) -> Self {
        pb::DeadLetter {
            sequence: l.sequence,
            key: l.key,
            published_unix_ms: l.published_unix_ms,
            attempts: l.attempts,
            error: l.error,
            at_unix_ms: l.at_unix_ms,
            redeliver: l.redeliver,
        }
    }
}

impl From<pb::DeadLetter> for DeadLetterInfo {
    fn from(l: pb::DeadLetter) -> Self {
        DeadLetterInfo {
            sequence: l.sequence,
            key: l.key,
            published_unix_ms: l.published_unix_ms,
            attempts: l.attempts,
            error: l.error,
            at_unix_ms: l.at_unix_ms,
            redeliver: l.redeliver,
        }
    }
}

/// How many dead letters a request changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterCount {
    pub count: u64,
}
