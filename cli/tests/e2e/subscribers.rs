//! Two subscribers on security servers of their own, as real `lintas ss serve`
//! processes: the population registry publishes a change of a resident's status and
//! both social assistance and health insurance receive it; health insurance's security
//! server is killed, and the event published meanwhile reaches it once the server is
//! back. A dead letter is listed and delivered again with the command line.

use lintas_proto::events::v1 as ev;
use lintas_proto::events::v1::events_client::EventsClient;
use lintas_proto::events::v1::subscriptions_client::SubscriptionsClient;
use tokio::sync::mpsc;

use super::binary::{BinServer, lintas_cmd, serve_child_env};
use super::events::{named, next, publish, serve_sink_as};
use super::*;

const TOPIC: &str = "kependudukan.v1.StatusPenduduk";
const BPJS_SERVER: &str = "ID/GOV/BPJSKES/SS1";
const BPJS: &str = "ID/GOV/BPJSKES/JKN";
const SINK: &str = "lintas.events.v1.EventSink";

fn cli(server: &BinServer, args: &[&str]) -> String {
    run(lintas_cmd(args).arg("--config").arg(&server.config))
}

/// The publisher's subscriptions as `lintas ss events list --json` gives them.
fn listed(publisher: &BinServer) -> Vec<serde_json::Value> {
    let out = cli(publisher, &["ss", "events", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().unwrap().clone()
}

/// Polls `check` on the publisher's subscription of `subscriber` until it holds.
async fn until(
    publisher: &BinServer,
    subscriber: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    for _ in 0..300 {
        let subs = listed(publisher);
        if subs
            .iter()
            .any(|s| s["subscriber"] == subscriber && check(s))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{subscriber}'s subscription never got there: {:?}",
        listed(publisher)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_subscribers_hear_of_a_death_and_one_whose_server_was_down_hears_it_after() {
    let inst = Instance::start().await;
    inst.follow_system_clock();
    // Quick retries, and an event refused twice is given up on.
    let env: [(&str, &std::ffi::OsStr); 3] = [
        ("LINTAS_SS_EVENT_RETRY_BASE_MS", "100".as_ref()),
        ("LINTAS_SS_EVENT_RETRY_MAX_SECS", "1".as_ref()),
        ("LINTAS_SS_EVENT_MAX_ATTEMPTS", "2".as_ref()),
    ];
    // The publisher last, so that it knows both subscribers' servers from the start.
    let mut servers = binary::binary_servers_env(
        &inst,
        &[
            (BPJS_SERVER, BPJS),
            (CONSUMER, CONSUMER_CLIENT),
            (PROVIDER, PROVIDER_CLIENT),
        ],
        &env,
    )
    .await;
    let (dtks_tx, mut dtks_rx) = mpsc::unbounded_channel();
    let (bpjs_tx, mut bpjs_rx) = mpsc::unbounded_channel();
    let dtks_sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bpjs_sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (dtks_url, bpjs_address) = (
        format!("http://{}", dtks_sink.local_addr().unwrap()),
        bpjs_sink.local_addr().unwrap(),
    );
    let _dtks = serve_sink_as(dtks_sink, dtks_tx, false);
    let (stop_bpjs_sink, bpjs_sink_task) = serve_sink_as(bpjs_sink, bpjs_tx.clone(), true);

    // The registry's topic, granted to both; each subscriber's sink, granted to the
    // registry.
    let publisher = &servers[2];
    cli(
        publisher,
        &["ss", "service", "add", PROVIDER_CLIENT, TOPIC, "--topic"],
    );
    for subscriber in [CONSUMER_CLIENT, BPJS] {
        cli(
            publisher,
            &["ss", "acl", "grant", PROVIDER_CLIENT, TOPIC, subscriber],
        );
    }
    let bpjs_url = format!("http://{bpjs_address}");
    for (server, client, url) in [
        (&servers[0], BPJS, &bpjs_url),
        (&servers[1], CONSUMER_CLIENT, &dtks_url),
    ] {
        cli(
            server,
            &["ss", "service", "add", client, SINK, "--endpoint", url],
        );
        cli(
            server,
            &["ss", "acl", "grant", client, SINK, PROVIDER_CLIENT],
        );
        let subscribed = SubscriptionsClient::new(
            plain_channel(&format!("http://{}", server.consumer_listen))
                .await
                .unwrap(),
        )
        .subscribe(named(
            ev::SubscribeRequest {
                topic: TOPIC.into(),
                from_start: false,
            },
            client,
            PROVIDER_CLIENT,
        ))
        .await
        .unwrap()
        .into_inner();
        assert_eq!(subscribed.next_sequence, 1);
    }
    let mut events = EventsClient::new(
        plain_channel(&format!("http://{}", servers[2].consumer_listen))
            .await
            .unwrap(),
    );

    // A move: both hear of it.
    events
        .publish(publish("3174012305870001", b"PINDAH"))
        .await
        .unwrap();
    for rx in [&mut dtks_rx, &mut bpjs_rx] {
        let e = next(rx).await;
        assert_eq!(
            (e.sequence, e.payload.as_slice()),
            (1, b"PINDAH".as_slice())
        );
    }
    until(&servers[2], BPJS, |s| s["next_sequence"] == 2).await;

    // Health insurance's security server dies; a death is published meanwhile. Social
    // assistance hears of it at once; health insurance's waits, tried again and again.
    servers[0].daemon.stop_with("-KILL");
    events
        .publish(publish("3273015708920002", b"WAFAT"))
        .await
        .unwrap();
    let e = next(&mut dtks_rx).await;
    assert_eq!((e.sequence, e.payload.as_slice()), (2, b"WAFAT".as_slice()));
    until(&servers[2], BPJS, |s| {
        s["backlog"] == 1
            && s["attempts"].as_u64().unwrap() >= 2
            && s["last_error"].as_str().unwrap().contains("Unavailable")
    })
    .await;
    let shown = cli(&servers[2], &["ss", "events", "list"]);
    assert!(
        shown.contains(&format!(
            "{PROVIDER_CLIENT} {TOPIC}  ->  {BPJS}: next event 2, 1 waiting"
        )),
        "{shown}"
    );

    // Its server is back: the death reaches it.
    let b = &servers[0];
    servers[0].daemon = serve_child_env(&b.dir, &b.consumer_listen, &b.peer, &env).0;
    let e = next(&mut bpjs_rx).await;
    assert_eq!((e.sequence, e.payload.as_slice()), (2, b"WAFAT".as_slice()));
    assert!(e.attempt >= 2, "{e:?}");
    until(&servers[2], BPJS, |s| {
        s["next_sequence"] == 3 && s["backlog"] == 0
    })
    .await;

    // An event health insurance's application cannot read is given up on; the next
    // follows, and the operator has the dead letter delivered again once it can.
    events.publish(publish("k", b"racun")).await.unwrap();
    events.publish(publish("k", b"LAHIR")).await.unwrap();
    for want in [3, 4] {
        assert_eq!(next(&mut dtks_rx).await.sequence, want);
    }
    let e = next(&mut bpjs_rx).await;
    assert_eq!((e.sequence, e.payload.as_slice()), (4, b"LAHIR".as_slice()));
    let letters = cli(
        &servers[2],
        &[
            "ss",
            "events",
            "dead-letters",
            PROVIDER_CLIENT,
            TOPIC,
            BPJS,
            "--json",
        ],
    );
    let letters: serde_json::Value = serde_json::from_str(&letters).unwrap();
    let letters = letters["items"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (
            letters[0]["sequence"].as_u64(),
            letters[0]["attempts"].as_u64()
        ),
        (Some(3), Some(2))
    );
    stop_bpjs_sink.send(()).unwrap();
    bpjs_sink_task.await.unwrap();
    let _bpjs = serve_sink_as(
        TcpListener::bind(bpjs_address).await.unwrap(),
        bpjs_tx,
        false,
    );
    let said = cli(
        &servers[2],
        &[
            "ss",
            "events",
            "redeliver",
            PROVIDER_CLIENT,
            TOPIC,
            BPJS,
            "--sequence",
            "3",
        ],
    );
    assert!(said.starts_with("1 dead letter(s)"), "{said}");
    let e = next(&mut bpjs_rx).await;
    assert_eq!((e.sequence, e.payload.as_slice()), (3, b"racun".as_slice()));
    until(&servers[2], BPJS, |s| s["dead_letters"] == 0).await;
    let zero = lintas_cmd(&["ss", "events", "discard", PROVIDER_CLIENT, TOPIC, BPJS])
        .args(["--sequence", "0", "--config", &servers[2].config])
        .output()
        .unwrap();
    assert!(!zero.status.success(), "--sequence 0 is not taken for all");
    // The operator ends health insurance's subscription; social assistance's goes on.
    let ended = cli(
        &servers[2],
        &["ss", "events", "end", PROVIDER_CLIENT, TOPIC, BPJS],
    );
    assert!(ended.contains("ended at event 5"), "{ended}");
    let left: Vec<_> = listed(&servers[2])
        .iter()
        .map(|s| s["subscriber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, [CONSUMER_CLIENT]);

    // Health insurance's log holds each acknowledged delivery, signed by the registry's
    // server, and verifies offline.
    let out = servers[0].dir.join("events.evidence");
    run(lintas_cmd(&[
        "audit",
        "export",
        "--client",
        PROVIDER_CLIENT,
        "--config",
        &servers[0].config,
    ])
    .arg("--out")
    .arg(&out));
    let bundle =
        lintas_proto::audit::v1::EvidenceBundle::decode(std::fs::read(&out).unwrap().as_slice())
            .unwrap();
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let report = lintas_audit::verify(&bundle, &anchor);
    assert!(report.verified, "{:#?}", report.failures);
    assert_eq!(
        super::events::acknowledged(&report),
        4,
        "events 1, 2, 4 and 3 acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_on_two_servers_is_subscribed_to_where_its_topic_is_registered() {
    use super::ha::PROVIDER2;
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let env: [(&str, &std::ffi::OsStr); 1] = [("LINTAS_SS_CONF_POLL_SECS", "5".as_ref())];
    let servers = binary::binary_servers_env(
        &inst,
        &[
            (PROVIDER, PROVIDER_CLIENT),
            (PROVIDER2, PROVIDER_CLIENT),
            (CONSUMER, CONSUMER_CLIENT),
        ],
        &env,
    )
    .await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}", sink.local_addr().unwrap());
    let _sink = serve_sink_as(sink, tx, false);
    // The registry publishes through its second server: the topic is registered there.
    let home = &servers[1];
    cli(
        home,
        &["ss", "service", "add", PROVIDER_CLIENT, TOPIC, "--topic"],
    );
    cli(
        home,
        &[
            "ss",
            "acl",
            "grant",
            PROVIDER_CLIENT,
            TOPIC,
            CONSUMER_CLIENT,
        ],
    );
    let subscriber = &servers[2];
    cli(
        subscriber,
        &[
            "ss",
            "service",
            "add",
            CONSUMER_CLIENT,
            SINK,
            "--endpoint",
            &sink_url,
        ],
    );
    cli(
        subscriber,
        &["ss", "acl", "grant", CONSUMER_CLIENT, SINK, PROVIDER_CLIENT],
    );

    // Once the subscriber's server has the catalogue listing the topic, every
    // subscription call goes to that server (the other has no such topic and would
    // refuse it): sixteen in a row are answered.
    let mut discovery = lintas_proto::discovery::v1::discovery_client::DiscoveryClient::new(
        plain_channel(&format!("http://{}", subscriber.consumer_listen))
            .await
            .unwrap(),
    );
    let mut listed_topic = false;
    for _ in 0..200 {
        let mut ask = Request::new(lintas_proto::discovery::v1::ListServicesRequest {
            provider: PROVIDER_CLIENT.into(),
            ..Default::default()
        });
        ask.metadata_mut()
            .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
        let services = discovery.list_services(ask).await.unwrap().into_inner();
        if services.services.iter().any(|s| s.service == TOPIC) {
            listed_topic = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listed_topic,
        "the subscriber's server never saw the topic listed"
    );
    let mut subscriptions = SubscriptionsClient::new(
        plain_channel(&format!("http://{}", subscriber.consumer_listen))
            .await
            .unwrap(),
    );
    let subscribe = || {
        named(
            ev::SubscribeRequest {
                topic: TOPIC.into(),
                from_start: false,
            },
            CONSUMER_CLIENT,
            PROVIDER_CLIENT,
        )
    };
    for i in 0..16 {
        let answered = subscriptions.subscribe(subscribe()).await;
        assert!(
            answered.is_ok(),
            "subscription call {i} reached the other server: {answered:?}"
        );
    }
    assert_eq!(listed(home).len(), 1);
    assert!(listed(&servers[0]).is_empty());

    // Published through that server, the event reaches the subscriber.
    let published = EventsClient::new(
        plain_channel(&format!("http://{}", home.consumer_listen))
            .await
            .unwrap(),
    )
    .publish(publish("3174012305870001", b"WAFAT"))
    .await
    .unwrap();
    assert_eq!(published.into_inner().sequence, 1);
    let e = next(&mut rx).await;
    assert_eq!((e.sequence, e.payload.as_slice()), (1, b"WAFAT".as_slice()));
}
