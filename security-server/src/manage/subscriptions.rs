//! Subscriptions to the topics of the publishers hosted here, and their dead letters,
//! as operators see them.

use lintas_identifiers::{ClientId, ServiceName, SubsystemId};

use super::model::{
    DeadLetterCount, DeadLetterInfo, DeadLetterSelection, ListQuery, Page, SubscriptionInfo,
    SubscriptionRef,
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
                (key, info(s))
            })
            .collect();
        paged(all, q)
    }

    /// Ends a subscription for its subscriber, its dead letters with it; answers it as
    /// it was.
    pub async fn end_subscription(
        &self,
        s: SubscriptionRef,
    ) -> Result<SubscriptionInfo, ManageError> {
        let key = subscription(&s.publisher, &s.topic, &s.subscriber)?;
        let events = self.events.clone();
        let ended = tokio::task::spawn_blocking(move || {
            let status = events.status()?.into_iter().find(|x| x.key == key);
            if status.is_some() {
                events.unsubscribe(&key)?;
            }
            Ok::<_, crate::SsError>(status)
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?
        .map_err(ManageError::from)?;
        let ended = ended.ok_or_else(|| {
            ManageError::NotFound(format!(
                "{} has no subscription to {} of {}",
                s.subscriber, s.topic, s.publisher
            ))
        })?;
        tracing::info!(publisher = %s.publisher, topic = %s.topic, subscriber = %s.subscriber, "subscription ended by an operator");
        Ok(info(ended))
    }

    /// A subscription's dead letters, oldest first (all of them: `sequence` ignored).
    pub fn dead_letters(
        &self,
        s: &DeadLetterSelection,
    ) -> Result<Vec<DeadLetterInfo>, ManageError> {
        let key = subscription(&s.publisher, &s.topic, &s.subscriber)?;
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
        let key = subscription(&s.publisher, &s.topic, &s.subscriber)?;
        if s.sequence == Some(0) {
            return Err(invalid(
                "sequence",
                "events are numbered from 1; leave it out for all",
            ));
        }
        // Delivered again only by a publisher still hosted here (else its letters can
        // only be discarded).
        let hosted = key
            .publisher
            .parse()
            .is_ok_and(|p: SubsystemId| self.own.hosts(&p));
        let (events, which) = (self.events.clone(), s.sequence);
        let changed = tokio::task::spawn_blocking(move || {
            if !redeliver {
                return events.discard(&key, which).map(Some);
            }
            if !hosted || events.place(&key)?.is_none() {
                return Ok(None);
            }
            events.redeliver(&key, which).map(Some)
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?
        .map_err(ManageError::from)?
        .ok_or_else(|| {
            ManageError::Precondition(format!(
                "{} does not subscribe to {} of {} here (or that publisher is no longer hosted here): its dead letters can only be discarded",
                s.subscriber, s.topic, s.publisher
            ))
        })?;
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

/// The subscription the three names name. The publisher need not be hosted here any
/// more: its subscriptions can still be ended and their letters discarded.
fn subscription(publisher: &str, topic: &str, subscriber: &str) -> Result<SubKey, ManageError> {
    let publisher: SubsystemId = publisher.parse().map_err(|e| invalid("publisher", e))?;
    let topic: ServiceName = topic.parse().map_err(|e| invalid("topic", e))?;
    let subscriber: ClientId = subscriber.parse().map_err(|e| invalid("subscriber", e))?;
    Ok(SubKey {
        publisher: publisher.to_string(),
        topic: topic.to_string(),
        subscriber: subscriber.to_string(),
    })
}

fn info(s: crate::events::SubStatus) -> SubscriptionInfo {
    SubscriptionInfo {
        publisher: s.key.publisher,
        topic: s.key.topic,
        subscriber: s.key.subscriber,
        next_sequence: s.place.next,
        backlog: s.backlog,
        attempts: s.place.attempts,
        last_error: s.place.last_error,
        dead_letters: s.dead_letters,
    }
}

/// The audit log's words for a subscription.
pub fn subscription_target(s: &SubscriptionRef) -> String {
    format!("{} {} -> {}", s.publisher, s.topic, s.subscriber)
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
