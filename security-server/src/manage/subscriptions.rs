//! Subscriptions to the topics of the publishers hosted here, as operators see them.

use super::model::{ListQuery, Page, SubscriptionInfo};
use super::{Manage, ManageError, paged};

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
}
