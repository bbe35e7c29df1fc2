//! Subscriptions to the topics of the publishers hosted here, and their dead letters,
//! as operators see them.

use lintas_identifiers::{ClientId, ServiceName};

use super::model::{
    DeadLetterCount, DeadLetterInfo, DeadLetterSelection, ListQuery, Page, SubscriptionInfo,
};
use super::{Manage, ManageError, invalid, paged};
use crate::events::SubKey;

impl Manage {
    pub fn subscriptions(&self, q: &ListQuery) -> Result<Page<SubscriptionInfo>, ManageError> {
        let all = self
            .events
            .status()
            .map_err(ManageError::from)?
            .into_iter()
            .map(|s| {
                let key = format!("{} {} {}", s.key.publisher, s.key.topic, s.key.subscriber);
                let info = SubscriptionInfo {
                    publisher: s.key.publisher,
                    topic: s.key.topic,
                    subscriber: s.key.subscriber,
                    next_sequence: s.place.next,
                    backlog: s.backlog,
                    attempts: s.place.attempts,
                    last_error: s.place.last_error,
                    dead_letters: s.dead_letters,
                };
                (key, info)
            })
            .collect();
        paged(all, q)
    }

    /// The subscription a selection names: of a publisher hosted here.
    fn subscription(&self, s: &DeadLetterSelection) -> Result<SubKey, ManageError> {
        let publisher = self.hosted(&s.publisher)?;
        let topic: ServiceName = s.topic.parse().map_err(|e| invalid("topic", e))?;
        let subscriber: ClientId = s.subscriber.parse().map_err(|e| invalid("subscriber", e))?;
        Ok(SubKey {
            publisher: publisher.to_string(),
            topic: topic.to_string(),
            subscriber: subscriber.to_string(),
        })
    }

    /// A subscription's dead letters, oldest first (all of them: `sequence` ignored).
    pub fn dead_letters(
        &self,
        s: &DeadLetterSelection,
    ) -> Result<Vec<DeadLetterInfo>, ManageError> {
        let key = self.subscription(s)?;
        let letters = self.events.dead_letters(&key).map_err(ManageError::from)?;
        letters
            .into_iter()
            .map(|l| {
                let event = self
                    .events
                    .event(&key.publisher, &key.topic, l.sequence)
                    .map_err(ManageError::from)?
                    .unwrap_or_default();
                Ok(DeadLetterInfo {
                    sequence: l.sequence,
                    key: event.key,
                    published_unix_ms: event.published_unix_ms,
                    attempts: l.attempts,
                    error: l.error,
                    at_unix_ms: l.at_unix_ms,
                    redeliver: l.redeliver,
                })
            })
            .collect()
    }

    /// Has dead letters delivered again (`redeliver`) or removes them for good.
    pub async fn change_dead_letters(
        &self,
        s: DeadLetterSelection,
        redeliver: bool,
    ) -> Result<DeadLetterCount, ManageError> {
        let key = self.subscription(&s)?;
        let (events, which) = (self.events.clone(), s.sequence);
        let changed = tokio::task::spawn_blocking(move || {
            if redeliver {
                events.redeliver(&key, which)
            } else {
                events.discard(&key, which)
            }
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?
        .map_err(ManageError::from)?;
        if let (Some(sequence), 0) = (s.sequence, changed) {
            return Err(ManageError::NotFound(format!(
                "{} has no dead letter {sequence} of {} {}",
                s.subscriber, s.publisher, s.topic
            )));
        }
        let what = if redeliver {
            "redelivered"
        } else {
            "discarded"
        };
        tracing::info!(publisher = %s.publisher, topic = %s.topic, subscriber = %s.subscriber, count = changed, "dead letters {what}");
        Ok(DeadLetterCount {
            count: changed as u64,
        })
    }
}

/// The audit log's words for a selection of dead letters.
pub fn dead_letters_target(s: &DeadLetterSelection) -> String {
    let which = s
        .sequence
        .map_or_else(|| "all".to_owned(), |n| format!("#{n}"));
    format!(
        "{} {} -> {} dead letters {which}",
        s.publisher, s.topic, s.subscriber
    )
}
