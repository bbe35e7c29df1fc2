//! Events: the population registry publishes a change of a resident's status; social
//! assistance, subscribed through the bus, receives each event signed and logged, in
//! order, at least once: an event it refuses is retried and then dead-lettered (and
//! delivered again when the operator asks), an event published while its application
//! is down reaches it once it is back, and acknowledged events are purged.

use lintas_proto::events::v1 as ev;
use lintas_proto::events::v1::event_sink_server::{EventSink, EventSinkServer};
use lintas_proto::events::v1::events_client::EventsClient;
use lintas_proto::events::v1::subscriptions_client::SubscriptionsClient;
use lintas_proto::ss::v1 as admin_pb;
use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
use tokio::sync::mpsc;
use tonic::Response;

use super::*;

const TOPIC: &str = "kependudukan.v1.StatusPenduduk";

/// A subscriber's application: takes every event, or (`picky`) every one but those it
/// cannot read.
struct Sink {
    tx: mpsc::UnboundedSender<ev::Event>,
    picky: bool,
}

#[tonic::async_trait]
impl EventSink for Sink {
    async fn deliver(&self, request: Request<ev::Event>) -> Result<Response<ev::Ack>, Status> {
        let event = request.into_inner();
        if self.picky && event.payload == b"racun" {
            return Err(Status::invalid_argument("this event cannot be read"));
        }
        let _ = self.tx.send(event);
        Ok(Response::new(ev::Ack {}))
    }
}

/// Serves a picky sink on `listener` until the returned sender is dropped or fires.
fn serve_sink(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<ev::Event>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    serve_sink_as(listener, tx, true)
}

/// Serves a sink on `listener` until the returned sender is dropped or fires.
pub(super) fn serve_sink_as(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<ev::Event>,
    picky: bool,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop) = stopper();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(EventSinkServer::new(Sink { tx, picky }))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop,
            )
            .await
            .unwrap();
    });
    (stop_tx, task)
}

pub(super) fn named<T>(message: T, client: &str, service: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("lintas-client", client.parse().unwrap());
    r.metadata_mut()
        .insert("lintas-service", service.parse().unwrap());
    r
}

/// The population registry's application publishes `payload` under `key` on the topic.
pub(super) fn publish(key: &str, payload: &[u8]) -> Request<ev::PublishRequest> {
    named(
        ev::PublishRequest {
            topic: TOPIC.into(),
            key: key.into(),
            payload: payload.to_vec(),
        },
        PROVIDER_CLIENT,
        PROVIDER_CLIENT,
    )
}

pub(super) async fn next(rx: &mut mpsc::UnboundedReceiver<ev::Event>) -> ev::Event {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an event arrives")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_reaches_its_subscriber_in_order_even_after_it_was_down() {
    let net = network_edited(true, |c| {
        c.event_retry_base_ms = 50;
        c.event_retry_max_secs = 1;
        c.event_max_attempts = 2;
    })
    .await;
    // Redeliveries are timed by the servers' clock.
    net.inst.follow_system_clock();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_address = listener.local_addr().unwrap();
    let (stop_sink, sink_task) = serve_sink(listener, tx.clone());

    // The publisher registers its topic and grants it; the subscriber publishes its sink
    // and grants the publisher.
    let publisher = net.provider.admin();
    SecurityServerAdmin::add_service(
        &publisher,
        Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: TOPIC.into(),
            topic: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    SecurityServerAdmin::grant(
        &publisher,
        Request::new(admin_pb::Grant {
            provider: PROVIDER_CLIENT.into(),
            service: TOPIC.into(),
            subject: CONSUMER_CLIENT.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let subscriber = net.consumer.admin();
    SecurityServerAdmin::add_service(
        &subscriber,
        Request::new(admin_pb::Service {
            provider: CONSUMER_CLIENT.into(),
            service: lintas_ss::events::SINK.into(),
            endpoint: format!("http://{sink_address}"),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    SecurityServerAdmin::grant(
        &subscriber,
        Request::new(admin_pb::Grant {
            provider: CONSUMER_CLIENT.into(),
            service: lintas_ss::events::SINK.into(),
            subject: PROVIDER_CLIENT.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    net.provider.report_services().await.unwrap();
    net.consumer.report_services().await.unwrap();
    net.provider.conf().fetch().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();

    // Calling a topic as a service is refused, naming what to do.
    let mut subscriptions =
        SubscriptionsClient::new(plain_channel(&net.consumer_url).await.unwrap());
    let subscribe = |client: &str, topic: &str| {
        named(
            ev::SubscribeRequest {
                topic: topic.into(),
                from_start: false,
            },
            client,
            PROVIDER_CLIENT,
        )
    };
    let unknown = subscriptions
        .subscribe(subscribe(CONSUMER_CLIENT, "kependudukan.v1.Lain"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let not_granted = subscriptions
        .subscribe(subscribe(OTHER_CLIENT, TOPIC))
        .await
        .unwrap_err();
    assert_eq!(
        not_granted.code(),
        Code::PermissionDenied,
        "{not_granted:?}"
    );
    let subscribed = subscriptions
        .subscribe(subscribe(CONSUMER_CLIENT, TOPIC))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (subscribed.subscriber.as_str(), subscribed.next_sequence),
        (CONSUMER_CLIENT, 1)
    );

    // The registry publishes; only a topic of its own, as itself.
    let mut events = EventsClient::new(plain_channel(&net.provider_url).await.unwrap());
    for (i, (key, what)) in [
        ("3174012305870001", "PINDAH"),
        ("3273015708920002", "WAFAT"),
        ("3174012305870001", "KEMBALI"),
    ]
    .into_iter()
    .enumerate()
    {
        let published = events.publish(publish(key, what.as_bytes())).await.unwrap();
        assert_eq!(published.into_inner().sequence, i as u64 + 1);
    }
    let mut not_a_topic = publish("x", b"x");
    not_a_topic.get_mut().topic = SERVICE.into();
    let refused = events.publish(not_a_topic).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Nobody granted the sink can pass off an event as another publisher's.
    let mut forged = named(
        ev::Event {
            topic: TOPIC.into(),
            publisher: "ID/GOV/KEMENKEU/PALSU".into(),
            sequence: 99,
            ..Default::default()
        },
        PROVIDER_CLIENT,
        CONSUMER_CLIENT,
    );
    forged
        .metadata_mut()
        .insert("lintas-message-id", "palsu-1".parse().unwrap());
    let refused = lintas_proto::events::v1::event_sink_client::EventSinkClient::new(
        plain_channel(&net.provider_url).await.unwrap(),
    )
    .deliver(forged)
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("naming ID/GOV/KEMENKEU/PALSU"),
        "{refused:?}"
    );

    // In order, each once (nothing failed).
    let got: Vec<(u64, String, String)> = [
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ]
    .into_iter()
    .map(|e| (e.sequence, e.key, String::from_utf8(e.payload).unwrap()))
    .collect();
    assert_eq!(
        got,
        [
            (1, "3174012305870001".to_owned(), "PINDAH".to_owned()),
            (2, "3273015708920002".to_owned(), "WAFAT".to_owned()),
            (3, "3174012305870001".to_owned(), "KEMBALI".to_owned()),
        ]
    );

    // An event the subscriber refuses is retried, then dead-lettered; the next follows.
    events.publish(publish("k", b"racun")).await.unwrap();
    events.publish(publish("k", b"sehat")).await.unwrap();
    let after = next(&mut rx).await;
    assert_eq!(
        (after.sequence, after.payload.as_slice()),
        (5, b"sehat".as_slice())
    );
    let key = lintas_ss::events::SubKey {
        publisher: PROVIDER_CLIENT.into(),
        topic: TOPIC.into(),
        subscriber: CONSUMER_CLIENT.into(),
    };
    let dead = net.provider.events().dead_letters(&key).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].sequence, dead[0].attempts), (4, 2));
    assert!(
        dead[0].error.contains("this event cannot be read"),
        "{dead:?}"
    );
    wait_for_next(&net, &key, 6).await;
    // Operators see it: in the admin listing and the metrics.
    let listed =
        SecurityServerAdmin::list_subscriptions(&publisher, Request::new(Default::default()))
            .await
            .unwrap()
            .into_inner()
            .subscriptions;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].next_sequence,
            listed[0].backlog,
            listed[0].dead_letters
        ),
        (6, 0, 1)
    );
    let (_, _, text) = super::adapters::http(&net.provider_ops, "GET", "/metrics", &[], "").await;
    let series = format!(
        "lintas_event_dead_letters{{publisher=\"{PROVIDER_CLIENT}\",topic=\"{TOPIC}\",subscriber=\"{CONSUMER_CLIENT}\"}}"
    );
    assert_eq!(super::ops::sample(&text, &series), Some(1.0), "{text}");

    // The subscriber's application goes down; an event published meanwhile waits.
    stop_sink.send(()).unwrap();
    sink_task.await.unwrap();
    events
        .publish(publish("3174012305870001", b"PINDAH"))
        .await
        .unwrap();
    let mut tried = false;
    for _ in 0..300 {
        let place = net.provider.events().place(&key).unwrap().unwrap();
        if place.next == 6 && place.attempts >= 2 {
            tried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tried,
        "the delivery was not tried while the subscriber was down"
    );
    let place = net.provider.events().place(&key).unwrap().unwrap();
    assert!(place.last_error.contains("Unavailable"), "{place:?}");
    let waiting =
        &SecurityServerAdmin::list_subscriptions(&publisher, Request::new(Default::default()))
            .await
            .unwrap()
            .into_inner()
            .subscriptions[0];
    assert_eq!(waiting.backlog, 1);
    assert!(
        waiting.attempts >= 2 && waiting.last_error.contains("Unavailable"),
        "{waiting:?}"
    );
    // Back on the same address, and now able to read every event: the event arrives,
    // marked as a repeat delivery.
    let listener = TcpListener::bind(sink_address).await.unwrap();
    let (_stop_sink, _sink_task) = serve_sink_as(listener, tx, false);
    let late = next(&mut rx).await;
    assert_eq!(late.sequence, 6);
    assert!(late.attempt >= 2, "{late:?}");

    // Acknowledged: the publisher's server moves on.
    wait_for_next(&net, &key, 7).await;

    // The operator has the dead letter delivered again; once acknowledged it is gone.
    let selection = |sequence: u64| {
        Request::new(admin_pb::DeadLetterSelection {
            publisher: PROVIDER_CLIENT.into(),
            topic: TOPIC.into(),
            subscriber: CONSUMER_CLIENT.into(),
            sequence,
        })
    };
    let letters = SecurityServerAdmin::list_dead_letters(&publisher, selection(0))
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(
        (letters.len(), letters[0].sequence, letters[0].key.as_str()),
        (1, 4, "k")
    );
    let missing = SecurityServerAdmin::redeliver_dead_letters(&publisher, selection(5))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let asked = SecurityServerAdmin::redeliver_dead_letters(&publisher, selection(4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(asked.count, 1);
    let again = next(&mut rx).await;
    assert_eq!(
        (again.sequence, again.payload.as_slice()),
        (4, b"racun".as_slice())
    );
    assert!(again.attempt >= 2, "{again:?}");
    let mut gone = false;
    for _ in 0..500 {
        if net.provider.events().dead_letters(&key).unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the redelivered dead letter stayed");

    // Acknowledged by every subscriber: purged once past their retention (here none);
    // the topic's numbering goes on.
    let now = lintas_globalconf::Clock::now(&*net.inst.clock)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let purged = net.provider.events().purge(now, Duration::ZERO).unwrap();
    assert_eq!(purged, 6);
    assert!(
        net.provider
            .events()
            .event(PROVIDER_CLIENT, TOPIC, 6)
            .unwrap()
            .is_none()
    );
    let published = events.publish(publish("k", b"LAHIR")).await.unwrap();
    assert_eq!(published.into_inner().sequence, 7);
    assert_eq!(next(&mut rx).await.sequence, 7);
    wait_for_next(&net, &key, 8).await;

    // Every delivery is an exchange in both logs, and the evidence verifies.
    let q = lintas_proto::ss::v1::EvidenceQuery {
        client: PROVIDER_CLIENT.into(),
        ..Default::default()
    };
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let report = lintas_audit::verify(&net.consumer.evidence.export(&q).await.unwrap(), &anchor);
    assert!(report.verified, "{:#?}", report.failures);
    assert_eq!(acknowledged(&report), 7, "seven events acknowledged");
}

/// The event deliveries a verified report holds that the subscriber acknowledged.
pub(super) fn acknowledged(report: &lintas_audit::Report) -> usize {
    report
        .exchanges
        .iter()
        .filter(|x| {
            x.method == "/lintas.events.v1.EventSink/Deliver"
                && x.status.as_ref().is_some_and(|(code, _)| *code == 0)
        })
        .count()
}

/// Waits until the publisher's server has recorded the acknowledgement of every event
/// before `next` (the subscriber has the event a moment before).
async fn wait_for_next(net: &Network, key: &lintas_ss::events::SubKey, next: u64) {
    for _ in 0..500 {
        if net.provider.events().place(key).unwrap().unwrap().next == next {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("events before {next} were not acknowledged");
}

/// Grants `subject` the whole of `service` of `provider` on `server`.
async fn grant_all(server: &SecurityServer, provider: &str, service: &str, subject: &str) {
    SecurityServerAdmin::grant(
        &server.admin(),
        Request::new(admin_pb::Grant {
            provider: provider.into(),
            service: service.into(),
            subject: subject.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

/// Adds `service` of `provider` on `server`: at `endpoint`, or a topic without one.
async fn add(server: &SecurityServer, provider: &str, service: &str, endpoint: Option<&str>) {
    SecurityServerAdmin::add_service(
        &server.admin(),
        Request::new(admin_pb::Service {
            provider: provider.into(),
            service: service.into(),
            endpoint: endpoint.unwrap_or_default().into(),
            topic: endpoint.is_none(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_applying_for_a_police_permit_hears_of_each_change_of_its_status() {
    use lintas_examples::polri::v1::perizinan_client::PerizinanClient;
    use lintas_examples::polri::v1::{Izin, Keputusan, Permohonan};
    use lintas_examples::polri_izin::{Bus, Kantor, TOPIC};
    const PERIZINAN: &str = "polri.v1.Perizinan";

    let net = network().await;
    net.inst.follow_system_clock();
    // The police's permit office (here the provider's subsystem) publishes through its
    // own security server; the applying agency's application takes the events.
    let office = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let office_url = format!("http://{}", office.local_addr().unwrap());
    let (_stop_office, stop) = stopper();
    let bus = Bus::new(&net.provider_url, PROVIDER_CLIENT).unwrap();
    tokio::spawn(lintas_examples::polri_izin::serve(
        office,
        Kantor::new(bus),
        stop,
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}", sink.local_addr().unwrap());
    let (_stop_sink, _sink_task) = serve_sink(sink, tx);

    add(&net.provider, PROVIDER_CLIENT, PERIZINAN, Some(&office_url)).await;
    for method in ["Ajukan", "Lihat"] {
        SecurityServerAdmin::grant(
            &net.provider.admin(),
            Request::new(admin_pb::Grant {
                provider: PROVIDER_CLIENT.into(),
                service: PERIZINAN.into(),
                subject: CONSUMER_CLIENT.into(),
                method: method.into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    }
    add(&net.provider, PROVIDER_CLIENT, TOPIC, None).await;
    grant_all(&net.provider, PROVIDER_CLIENT, TOPIC, CONSUMER_CLIENT).await;
    add(
        &net.consumer,
        CONSUMER_CLIENT,
        lintas_ss::events::SINK,
        Some(&sink_url),
    )
    .await;
    grant_all(
        &net.consumer,
        CONSUMER_CLIENT,
        lintas_ss::events::SINK,
        PROVIDER_CLIENT,
    )
    .await;
    net.provider.report_services().await.unwrap();
    net.consumer.report_services().await.unwrap();
    net.provider.conf().fetch().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
    SubscriptionsClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .subscribe(named(
            ev::SubscribeRequest {
                topic: TOPIC.into(),
                from_start: false,
            },
            CONSUMER_CLIENT,
            PROVIDER_CLIENT,
        ))
        .await
        .unwrap();

    // The agency applies through the bus: the office knows who applied.
    let applied = PerizinanClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .ajukan(named(
            Permohonan {
                jenis: "IZIN_KERAMAIAN".into(),
                uraian: "Penyaluran bansos di GOR Ciracas, 12 Desember".into(),
            },
            CONSUMER_CLIENT,
            PROVIDER_CLIENT,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (applied.pemohon.as_str(), applied.status.as_str()),
        (CONSUMER_CLIENT, "DIAJUKAN")
    );
    // An applicant cannot decide its own permit through the bus.
    let mut agency = PerizinanClient::new(plain_channel(&net.consumer_url).await.unwrap());
    let own = agency
        .putuskan(named(
            Keputusan {
                id: applied.id.clone(),
                status: "DISETUJUI".into(),
                catatan: String::new(),
            },
            CONSUMER_CLIENT,
            PROVIDER_CLIENT,
        ))
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied, "{own:?}");
    // Officers decide it on the police's own network.
    let mut officer = PerizinanClient::new(plain_channel(&office_url).await.unwrap());
    let decide = |status: &str| Keputusan {
        id: applied.id.clone(),
        status: status.into(),
        catatan: format!("{status} oleh Polres Jakarta Timur"),
    };
    officer.putuskan(decide("DIPROSES")).await.unwrap();
    officer.putuskan(decide("DISETUJUI")).await.unwrap();
    let late = officer.putuskan(decide("DITOLAK")).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");

    // The agency heard of each change, in order.
    let mut heard = Vec::new();
    for _ in 0..3 {
        let event = next(&mut rx).await;
        assert_eq!(
            (event.topic.as_str(), event.key.as_str()),
            (TOPIC, applied.id.as_str())
        );
        let izin = Izin::decode(event.payload.as_slice()).unwrap();
        assert_eq!(izin.pemohon, CONSUMER_CLIENT);
        heard.push(izin.status);
    }
    assert_eq!(heard, ["DIAJUKAN", "DIPROSES", "DISETUJUI"]);
}
