//! Delivers each subscription's events, one at a time and in order, as exchanges from
//! the publisher to the subscriber's `EventSink`, until the server stops.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lintas_globalconf::Clock;
use prost::Message;
use tokio::task::JoinSet;

use super::{AfterFailure, Events, SINK, SubKey};
use crate::consumer::{Call, Consumer, call_provider, random_id};
use crate::errors::now_ms;

/// The longest the loop sleeps without looking at the subscriptions again.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

/// Runs deliveries until `stop` says so.
pub async fn run(
    events: Arc<Events>,
    consumer: Arc<Consumer>,
    access: Arc<crate::access::Access>,
    clock: Arc<dyn Clock>,
    stop: lintas_transport::Stop,
) {
    let mut running: JoinSet<SubKey> = JoinSet::new();
    let mut busy: HashSet<SubKey> = HashSet::new();
    loop {
        let now = now_ms(&*clock);
        let mut wait = LOOK_AGAIN;
        let subscriptions = {
            let events = events.clone();
            tokio::task::spawn_blocking(move || events.subscriptions())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        match subscriptions {
            Ok(subscriptions) => {
                for (key, place) in subscriptions {
                    if busy.contains(&key) || !still_granted(&consumer, &access, &key) {
                        continue;
                    }
                    let waiting = events
                        .event(&key.publisher, &key.topic, place.next)
                        .ok()
                        .flatten();
                    let Some(event) = waiting else { continue };
                    if place.due_unix_ms > now {
                        let left = u64::try_from(place.due_unix_ms - now).unwrap_or(0);
                        wait = wait.min(Duration::from_millis(left));
                        continue;
                    }
                    busy.insert(key.clone());
                    let (events, consumer, clock) =
                        (events.clone(), consumer.clone(), clock.clone());
                    let attempt = place.attempts;
                    running.spawn(async move {
                        deliver(&events, &consumer, &*clock, &key, event, attempt).await;
                        key
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the event subscriptions failed"),
        }
        tokio::select! {
            _ = events.changed.notified() => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(key) = done {
                    busy.remove(&key);
                }
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
    attempt: u32,
) {
    let sequence = event.sequence;
    event.attempt = attempt;
    let outcome = match call(consumer, key, event).await {
        Ok(()) => {
            let (events, key) = (events.clone(), key.clone());
            tokio::task::spawn_blocking(move || events.delivered(&key, sequence))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        }
        Err(status) => {
            let (events, owned, now) = (events.clone(), key.clone(), now_ms(clock));
            let error = format!("{:?}: {}", status.code(), status.message());
            let by_application = status
                .metadata()
                .get(crate::errors::ERROR_SOURCE)
                .and_then(|v| v.to_str().ok())
                == Some(crate::errors::ErrorSource::ProviderApp.as_str());
            let refused = super::refused(status.code(), by_application);
            let failed = tokio::task::spawn_blocking(move || {
                events.failed(&owned, sequence, refused, &error, now)
            })
            .await;
            match failed {
                Ok(Ok(AfterFailure::DeadLetter)) => {
                    tracing::warn!(subscription = %key_text(key), sequence, code = ?status.code(), reason = %status.message(), "event given up on: in the dead-letter store");
                    Ok(())
                }
                Ok(Ok(AfterFailure::RetryIn(wait))) => {
                    tracing::info!(subscription = %key_text(key), sequence, code = ?status.code(), retry_in_ms = wait.as_millis() as u64, "event delivery failed; retried");
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    if let Err(e) = outcome {
        tracing::error!(subscription = %key_text(key), sequence, error = %e, "recording an event delivery failed");
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
