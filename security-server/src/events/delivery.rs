//! Delivers each subscription's events, one at a time and in order, as exchanges from
//! the publisher to the subscriber's `EventSink`, until the server stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lintas_globalconf::Clock;
use prost::Message;
use tokio::task::JoinSet;

use super::{AfterFailure, Events, SINK, SubKey};
use crate::SsError;
use crate::consumer::{Call, Consumer, call_provider, random_id};
use crate::errors::now_ms;

/// The longest the loop sleeps without looking at the subscriptions again.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

/// Which delivery of an event.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// The subscription's next event (or the first kept after it), after `attempts`
    /// failed ones.
    Next { attempts: u32 },
    /// A dead letter an operator asked to deliver again.
    Redelivery { attempts: u32 },
}

/// What is due for `key` now: a redelivery first, then its next event; or when
/// something is due later.
fn due_for(
    events: &Events,
    key: &SubKey,
    place: &super::Place,
    now: i64,
) -> Result<Result<(lintas_proto::events::v1::Event, Delivery), Option<i64>>, SsError> {
    if let Some(letter) = events.next_redelivery(key)? {
        if letter.due_unix_ms > now {
            return Ok(Err(Some(letter.due_unix_ms)));
        }
        match events.event(&key.publisher, &key.topic, letter.sequence)? {
            Some(event) => {
                let attempts = letter.attempts;
                return Ok(Ok((event, Delivery::Redelivery { attempts })));
            }
            None => {
                tracing::error!(subscription = %key_text(key), sequence = letter.sequence, "a dead letter's event is no longer kept; discarded");
                events.discard(key, Some(letter.sequence))?;
            }
        }
    }
    let Some(event) = events.event_from(&key.publisher, &key.topic, place.next)? else {
        return Ok(Err(None));
    };
    if place.due_unix_ms > now {
        return Ok(Err(Some(place.due_unix_ms)));
    }
    let attempts = if event.sequence == place.next {
        place.attempts
    } else {
        0
    };
    Ok(Ok((event, Delivery::Next { attempts })))
}

/// Runs deliveries until `stop` says so.
pub async fn run(
    events: Arc<Events>,
    consumer: Arc<Consumer>,
    access: Arc<crate::access::Access>,
    clock: Arc<dyn Clock>,
    stop: lintas_transport::Stop,
) {
    let mut running: JoinSet<()> = JoinSet::new();
    // The subscription each delivery under way is for, by task (a delivery that
    // panicked frees its subscription too).
    let mut busy: HashMap<tokio::task::Id, SubKey> = HashMap::new();
    loop {
        let now = now_ms(&*clock);
        let mut wait = LOOK_AGAIN;
        let due = {
            let (events, busy): (_, HashSet<SubKey>) =
                (events.clone(), busy.values().cloned().collect());
            let (consumer, access) = (consumer.clone(), access.clone());
            tokio::task::spawn_blocking(move || {
                let mut due = Vec::new();
                let mut later = None::<i64>;
                for (key, place) in events.subscriptions()? {
                    if busy.contains(&key) || !still_granted(&consumer, &access, &key) {
                        continue;
                    }
                    match due_for(&events, &key, &place, now)? {
                        Ok(delivery) => due.push((key, delivery)),
                        Err(Some(at)) => later = Some(later.map_or(at, |l| l.min(at))),
                        Err(None) => {}
                    }
                }
                Ok::<_, SsError>((due, later))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        };
        match due {
            Ok((due, later)) => {
                if let Some(at) = later {
                    let left = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
                    wait = wait.min(Duration::from_millis(left));
                }
                for (key, (event, delivery)) in due {
                    let (events, consumer, clock) =
                        (events.clone(), consumer.clone(), clock.clone());
                    let task_key = key.clone();
                    let task = running.spawn(async move {
                        deliver(&events, &consumer, &*clock, &task_key, event, delivery).await;
                    });
                    busy.insert(task.id(), key);
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the event subscriptions failed"),
        }
        tokio::select! {
            _ = events.changed.notified() => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "an event delivery ended abnormally");
                        e.id()
                    }
                };
                busy.remove(&id);
            }
            _ = tokio::time::sleep(wait) => {}
            _ = stop.stopped() => break,
        }
    }
    // Deliveries under way finish: their outcome is recorded.
    while running.join_next().await.is_some() {}
}

/// One delivery of `event` to the subscriber of `key`, and its outcome recorded.
async fn deliver(
    events: &Arc<Events>,
    consumer: &Arc<Consumer>,
    clock: &dyn Clock,
    key: &SubKey,
    mut event: lintas_proto::events::v1::Event,
    delivery: Delivery,
) {
    let sequence = event.sequence;
    event.attempt = match delivery {
        Delivery::Next { attempts } | Delivery::Redelivery { attempts } => attempts,
    };
    let outcome = call(consumer, key, event).await;
    let failure = outcome.as_ref().err().map(|status| {
        let by_application = status
            .metadata()
            .get(crate::errors::ERROR_SOURCE)
            .and_then(|v| v.to_str().ok())
            == Some(crate::errors::ErrorSource::ProviderApp.as_str());
        (
            super::refused(status.code(), by_application),
            format!("{:?}: {}", status.code(), status.message()),
        )
    });
    let (events, owned, now) = (events.clone(), key.clone(), now_ms(clock));
    let recorded = tokio::task::spawn_blocking(move || {
        let failure = failure
            .as_ref()
            .map(|(refused, error)| (*refused, error.as_str()));
        match (delivery, failure) {
            (Delivery::Next { .. }, None) => events.delivered(&owned, sequence).map(|()| None),
            (Delivery::Next { .. }, Some((refused, error))) => {
                events.failed(&owned, sequence, refused, error, now)
            }
            (Delivery::Redelivery { .. }, failure) => {
                events.redelivered(&owned, sequence, failure.map_or(Ok(()), Err), now)
            }
        }
    })
    .await;
    let redelivery = matches!(delivery, Delivery::Redelivery { .. });
    match (recorded, outcome) {
        (Ok(Ok(None)), Ok(())) => {
            if redelivery {
                tracing::info!(subscription = %key_text(key), sequence, "dead letter redelivered");
            }
        }
        // The subscription ended, or the letter was discarded, meanwhile.
        (Ok(Ok(None)), Err(_)) => {}
        (Ok(Ok(Some(AfterFailure::DeadLetter))), Err(status)) => {
            tracing::warn!(subscription = %key_text(key), sequence, redelivery, code = ?status.code(), reason = %status.message(), "event given up on: in the dead-letter store");
        }
        (Ok(Ok(Some(AfterFailure::RetryIn(wait)))), Err(status)) => {
            tracing::info!(subscription = %key_text(key), sequence, redelivery, code = ?status.code(), retry_in_ms = wait.as_millis() as u64, "event delivery failed; retried");
        }
        (Ok(Ok(Some(_))), Ok(())) => {}
        (Ok(Err(e)), _) => {
            tracing::error!(subscription = %key_text(key), sequence, error = %e, "recording an event delivery failed");
        }
        (Err(e), _) => {
            tracing::error!(subscription = %key_text(key), sequence, error = %e, "recording an event delivery failed");
        }
    }
}

/// Whether the subscriber may still have the topic's events: the topic is still one
/// of the publisher's here and still granted to it. A subscription whose grant was
/// revoked waits, undelivered, until it is granted again or the subscriber leaves.
fn still_granted(consumer: &Consumer, access: &crate::access::Access, key: &SubKey) -> bool {
    let (Ok(conf), Ok(publisher), Ok(subscriber), Ok(topic)) = (
        consumer
            .conf
            .current(crate::errors::ErrorSource::ConsumerServer),
        key.publisher.parse::<lintas_identifiers::SubsystemId>(),
        key.subscriber.parse::<lintas_identifiers::ClientId>(),
        key.topic.parse::<lintas_identifiers::ServiceName>(),
    ) else {
        return false;
    };
    let is_topic = access
        .service(&publisher, &topic)
        .is_some_and(|entry| entry.topic);
    let as_subscribe = lintas_identifiers::MethodPath {
        service: topic,
        method: "Subscribe".into(),
    };
    is_topic && access.allowed(&conf, &subscriber, &publisher, &as_subscribe, None)
}

fn key_text(key: &SubKey) -> String {
    format!("{} {} -> {}", key.publisher, key.topic, key.subscriber)
}

/// The exchange that delivers `event`: from the publisher to the subscriber's sink.
async fn call(
    consumer: &Consumer,
    key: &SubKey,
    event: lintas_proto::events::v1::Event,
) -> Result<(), tonic::Status> {
    let bad = |what: &str, e: String| tonic::Status::internal(format!("{what}: {e}"));
    let call = Call {
        client: key
            .publisher
            .parse()
            .map_err(|e: lintas_identifiers::IdError| bad("publisher", e.to_string()))?,
        provider: key
            .subscriber
            .parse()
            .map_err(|e: lintas_identifiers::IdError| bad("subscriber", e.to_string()))?,
        method: format!("/{SINK}/Deliver")
            .parse()
            .map_err(|e: lintas_identifiers::IdError| bad("method", e.to_string()))?,
        message_id: random_id()?,
        user_id: String::new(),
        purpose: String::new(),
        issue: format!("{} #{}", event.topic, event.sequence),
        trace: crate::trace::TraceContext::continue_or_start(None, None),
        rest: None,
        rest_secrets: Vec::new(),
        represented_party: String::new(),
        server: None,
        idempotency_key: String::new(),
    };
    call_provider(consumer, call, Bytes::from(event.encode_to_vec()))
        .await
        .map(|_| ())
}
