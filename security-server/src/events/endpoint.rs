//! The two doors of events: `lintas.events.v1.Events/Publish` on the consumer endpoint,
//! for the publishers this server hosts, and `lintas.events.v1.Subscriptions`, which
//! subscribers call through the bus and this server answers itself.

use std::sync::Arc;

use lintas_globalconf::{Clock, VerifiedConf};
use lintas_identifiers::{ClientId, MethodPath, ServiceName, SubsystemId};
use lintas_proto::events::v1 as ev;
use prost::Message;
use tonic::{Code, Request, Response, Status};

use super::{Events, SubKey};
use crate::access::Access;
use crate::errors::{ErrorSource, error, now_ms};
use crate::local::LocalApps;

/// Longest event key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The topic `name` of `publisher`, if this server has it registered as one.
fn topic_of(access: &Access, publisher: &SubsystemId, name: &str) -> Result<ServiceName, String> {
    let topic: ServiceName = name.parse().map_err(|e| format!("topic: {e}"))?;
    match access.service(publisher, &topic) {
        Some(entry) if entry.topic => Ok(topic),
        Some(_) => Err(format!("{topic} of {publisher} is a service, not a topic")),
        None => Err(format!(
            "{publisher} has no topic {topic} here; register it with `lintas ss service add {publisher} {topic} --topic`"
        )),
    }
}

/// `Events/Publish` for the publishers hosted here.
pub struct Publishing {
    pub local: Arc<LocalApps>,
    pub access: Arc<Access>,
    pub events: Arc<Events>,
    pub clock: Arc<dyn Clock>,
    /// Largest payload, as for a message.
    pub max_payload: usize,
}

fn refused(code: Code, message: impl Into<String>) -> Status {
    error(code, ErrorSource::ConsumerServer, message)
}

#[tonic::async_trait]
impl ev::events_server::Events for Publishing {
    async fn publish(
        &self,
        request: Request<ev::PublishRequest>,
    ) -> Result<Response<ev::Published>, Status> {
        let client = crate::discovery::client_of(&self.local, &request)?;
        let ClientId::Subsystem(publisher) = client else {
            return Err(refused(
                Code::InvalidArgument,
                format!("{client} is a member: a publisher is one of its subsystems"),
            ));
        };
        let r = request.into_inner();
        let topic = topic_of(&self.access, &publisher, &r.topic)
            .map_err(|why| refused(Code::FailedPrecondition, why))?;
        if r.key.len() > MAX_KEY_BYTES {
            return Err(refused(
                Code::InvalidArgument,
                format!("an event key is at most {MAX_KEY_BYTES} bytes"),
            ));
        }
        if r.payload.len() > self.max_payload {
            return Err(refused(
                Code::ResourceExhausted,
                format!(
                    "an event's payload is at most {} bytes (max_message_bytes)",
                    self.max_payload
                ),
            ));
        }
        let (events, now) = (self.events.clone(), now_ms(&*self.clock));
        let (p, t) = (publisher.to_string(), topic.to_string());
        let sequence =
            tokio::task::spawn_blocking(move || events.publish(&p, &t, &r.key, r.payload, now))
                .await
                .map_err(|e| refused(Code::Internal, format!("publishing failed: {e}")))?
                .map_err(|e| refused(Code::Internal, format!("publishing failed: {e}")))?;
        Ok(Response::new(ev::Published {
            topic: topic.to_string(),
            sequence,
        }))
    }
}

/// `Subscriptions/Subscribe` and `Unsubscribe` from `client`, a subscriber calling
/// through the bus: checked against the topic's grants. Answers the encoded
/// `Subscription`, or the status to answer with.
pub fn subscription(
    events: &Events,
    access: &Access,
    conf: &VerifiedConf,
    client: &ClientId,
    publisher: &SubsystemId,
    method: &MethodPath,
    body: &[u8],
) -> Result<Vec<u8>, (Code, String)> {
    let r = ev::SubscribeRequest::decode(body)
        .map_err(|e| (Code::InvalidArgument, format!("SubscribeRequest: {e}")))?;
    let topic = topic_of(access, publisher, &r.topic).map_err(|why| (Code::NotFound, why))?;
    let ClientId::Subsystem(subscriber) = client else {
        return Err((
            Code::InvalidArgument,
            format!("{client} is a member: a subscriber is one of its subsystems"),
        ));
    };
    let as_topic = MethodPath {
        service: topic.clone(),
        method: "Subscribe".into(),
    };
    // Leaving needs no grant: one revoked must still be able to go.
    if method.method != "Unsubscribe" && !access.allowed(conf, client, publisher, &as_topic, None) {
        return Err((
            Code::PermissionDenied,
            format!("{client} is not allowed to subscribe to {topic} of {publisher}"),
        ));
    }
    let key = SubKey {
        publisher: publisher.to_string(),
        topic: topic.to_string(),
        subscriber: subscriber.to_string(),
    };
    let internal = |e: crate::SsError| (Code::Internal, format!("subscriptions: {e}"));
    let place = match method.method.as_str() {
        "Subscribe" => events.subscribe(&key, r.from_start).map_err(internal)?,
        "Unsubscribe" => events.unsubscribe(&key).map_err(internal)?.ok_or_else(|| {
            (
                Code::NotFound,
                format!("{client} is not subscribed to {topic} of {publisher}"),
            )
        })?,
        other => {
            return Err((
                Code::Unimplemented,
                format!("{} has no method {other}", super::SUBSCRIPTIONS),
            ));
        }
    };
    Ok(ev::Subscription {
        topic: key.topic,
        publisher: key.publisher,
        subscriber: key.subscriber,
        next_sequence: place.next,
    }
    .encode_to_vec())
}
