//! The demo's events step: the population registry registers a topic and publishes a
//! death on it; social assistance and health insurance, each subscribed through its own
//! security server, hear of it, each delivery a signed and logged exchange.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lintas_proto::events::v1 as ev;
use lintas_proto::events::v1::event_sink_server::{EventSink, EventSinkServer};
use lintas_ss::daemon::SecurityServer;
use lintas_ss::manage::model::{GrantSpec, ServiceSpec};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{App, DUKCAPIL, NIK, app_channel};

const TOPIC: &str = "kependudukan.v1.StatusPenduduk";

/// A security server and a local application of it.
pub(super) struct Local<'a> {
    pub server: &'a Arc<SecurityServer>,
    /// Its consumer endpoint, and the endpoint's certificate.
    pub url: &'a str,
    pub cert: &'a Path,
    pub app: &'a App,
}

/// A subscriber's application: passes on what it is delivered, named by who took it.
struct Sink {
    subscriber: &'static str,
    heard: mpsc::UnboundedSender<(&'static str, ev::Event)>,
}

#[tonic::async_trait]
impl EventSink for Sink {
    async fn deliver(
        &self,
        request: tonic::Request<ev::Event>,
    ) -> Result<tonic::Response<ev::Ack>, tonic::Status> {
        let _ = self.heard.send((self.subscriber, request.into_inner()));
        Ok(tonic::Response::new(ev::Ack {}))
    }
}

/// `message` from `client` to `service`, as a local application sends it.
fn named<T>(message: T, client: &str, service: &str) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("lintas-client", client.parse()?);
    r.metadata_mut().insert("lintas-service", service.parse()?);
    Ok(r)
}

pub(super) async fn deaths(
    running: &mut crate::network::Running,
    publisher: Local<'_>,
    subscribers: [Local<'_>; 2],
) -> Result<()> {
    let manage = publisher.server.manage();
    manage
        .add_service(ServiceSpec {
            provider: DUKCAPIL.into(),
            service: TOPIC.into(),
            topic: true,
            ..Default::default()
        })
        .await?;
    for s in &subscribers {
        manage
            .grant(GrantSpec {
                provider: DUKCAPIL.into(),
                service: TOPIC.into(),
                subject: s.app.client.into(),
                method: None,
                path: None,
            })
            .await?;
    }
    publisher.server.report_services().await?;
    println!(
        "    {}: {DUKCAPIL} registers the topic {TOPIC}, granted to {} and {}",
        publisher.server.id, subscribers[0].app.client, subscribers[1].app.client
    );

    // Each subscriber's application takes events; its server publishes it as the
    // subscriber's EventSink, which the publisher may call.
    let (heard, mut hearing) = mpsc::unbounded_channel();
    for s in &subscribers {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let sink = EventSinkServer::new(Sink {
            subscriber: s.app.client,
            heard: heard.clone(),
        });
        let stop = running.stopper();
        running.tasks.push(tokio::spawn(async move {
            Ok(tonic::transport::Server::builder()
                .add_service(sink)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop,
                )
                .await?)
        }));
        let manage = s.server.manage();
        manage
            .add_service(ServiceSpec {
                provider: s.app.client.into(),
                service: lintas_ss::events::SINK.into(),
                endpoint,
                ..Default::default()
            })
            .await?;
        manage
            .grant(GrantSpec {
                provider: s.app.client.into(),
                service: lintas_ss::events::SINK.into(),
                subject: DUKCAPIL.into(),
                method: None,
                path: None,
            })
            .await?;
        s.server.report_services().await?;
    }
    for server in [
        publisher.server,
        subscribers[0].server,
        subscribers[1].server,
    ] {
        server.conf().fetch().await?;
    }

    // They subscribe through the bus, each through its own server.
    for s in &subscribers {
        let channel = app_channel(s.url, s.cert, s.app).await?;
        let subscribed = ev::subscriptions_client::SubscriptionsClient::new(channel)
            .subscribe(named(
                ev::SubscribeRequest {
                    topic: TOPIC.into(),
                    from_start: false,
                },
                s.app.client,
                DUKCAPIL,
            )?)
            .await
            .with_context(|| format!("{} could not subscribe", s.app.client))?
            .into_inner();
        println!(
            "    {} subscribes through {}: from event {}",
            s.app.client, s.server.id, subscribed.next_sequence
        );
    }

    // Dukcapil's application publishes through its own server.
    let channel = app_channel(publisher.url, publisher.cert, publisher.app).await?;
    let published = ev::events_client::EventsClient::new(channel)
        .publish(named(
            ev::PublishRequest {
                topic: TOPIC.into(),
                key: NIK.into(),
                payload: b"WAFAT".to_vec(),
            },
            DUKCAPIL,
            DUKCAPIL,
        )?)
        .await
        .context("the death could not be published")?
        .into_inner();
    println!(
        "    {DUKCAPIL} publishes WAFAT for NIK {NIK}: event {} of {TOPIC}, durable before the answer",
        published.sequence
    );
    // Each at least once: a repeat delivery is heard once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut who = std::collections::BTreeSet::new();
    while who.len() < subscribers.len() {
        let Ok(Some((subscriber, event))) = tokio::time::timeout_at(deadline, hearing.recv()).await
        else {
            bail!("the death did not reach every subscriber: only {who:?}");
        };
        if who.insert(subscriber) {
            println!(
                "    {subscriber} hears: {} for NIK {} (event {}), delivered as a signed exchange logged on both servers",
                String::from_utf8_lossy(&event.payload),
                event.key,
                event.sequence
            );
        }
    }
    Ok(())
}
