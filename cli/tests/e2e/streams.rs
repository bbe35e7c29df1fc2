//! Streaming gRPC through both security servers: server, client and bidirectional
//! streams, every message signed, chained and logged; flow control, cancellation and
//! deadlines end to end.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use lintas_examples::echo::v1::echo_client::EchoClient;
use lintas_examples::echo::v1::{CountRequest, EchoMessage};
use lintas_examples::echo_server::Watch;
use lintas_proto::ss::v1 as admin_pb;
use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
use tokio_stream::StreamExt;

use super::*;

const ECHO: &str = "echo.v1.Echo";

/// `service` at `endpoint` on the provider's server, published with the descriptors of
/// the example `proto` file (which say which methods stream) and granted to the
/// consumer's client.
async fn publish(net: &Network, service: &str, endpoint: String, proto: &str) {
    let examples: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/proto");
    let set = lintas_adapter::compile(Path::new(proto), &[examples])
        .unwrap()
        .encode_file_descriptor_set();
    let admin = net.provider.admin();
    admin
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: service.into(),
            endpoint,
            descriptor_set: set,
            ..Default::default()
        }))
        .await
        .unwrap();
    SecurityServerAdmin::grant(
        &admin,
        Request::new(admin_pb::Grant {
            provider: PROVIDER_CLIENT.into(),
            service: service.into(),
            subject: CONSUMER_CLIENT.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
}

/// The echo application behind the provider's server, published.
async fn echo_network() -> (Network, Arc<Watch>) {
    let mut net = network().await;
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", app.local_addr().unwrap());
    let watch = Arc::new(Watch::default());
    let (stop, stopped) = stopper();
    net._stops.push(stop);
    tokio::spawn(lintas_examples::echo_server::serve_watched(
        app,
        watch.clone(),
        stopped,
    ));
    publish(&net, ECHO, endpoint, "echo/v1/echo.proto").await;
    (net, watch)
}

fn named<T>(message: T, id: &str) -> Request<T> {
    let mut r = Request::new(message);
    let md = r.metadata_mut();
    md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    md.insert("lintas-message-id", id.parse().unwrap());
    r
}

/// The operational-monitoring record of exchange `id` on `server`, once written (the
/// records are written by a task of their own).
async fn monitored(server: &SecurityServer, id: &str) -> lintas_proto::opmon::v1::OpRecord {
    let admin = server.admin();
    for _ in 0..200 {
        let page = admin
            .operational_data(Request::new(lintas_proto::opmon::v1::OpQuery::default()))
            .await
            .unwrap()
            .into_inner();
        if let Some(r) = page.records.into_iter().find(|r| r.message_id == id) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no monitoring record of {id}");
}

fn payload(text: &str) -> EchoMessage {
    EchoMessage {
        payload: text.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cross_the_bus_signed_chained_and_logged() {
    let (net, watch) = echo_network().await;
    let mut echo = EchoClient::new(plain_channel(&net.consumer_url).await.unwrap());

    // Server streaming: every message, in order.
    let request = CountRequest {
        count: 5,
        size: 16,
        fail_at_end: false,
    };
    let mut counted = echo
        .count(named(request, "alir-hitung"))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(m) = counted.message().await.unwrap() {
        seen.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
    }
    assert_eq!(seen, [0, 1, 2, 3, 4]);

    // Client streaming: the application gets every message and the end.
    let parts = tokio_stream::iter(["satu ", "dua ", "tiga"].map(payload));
    let joined = echo
        .join(named(parts, "alir-gabung"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.payload, b"satu dua tiga");

    // Bidirectional: each answer arrives before the client sends the next message,
    // so nothing waits for the end of the request stream.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = echo
        .chat(named(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "alir-obrolan",
        ))
        .await
        .unwrap()
        .into_inner();
    for word in ["halo", "apa kabar"] {
        tx.send(payload(word)).await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!(answer.payload, format!("re: {word}").as_bytes());
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());

    // The application's error after its messages reaches the client as its own.
    let request = CountRequest {
        count: 2,
        size: 8,
        fail_at_end: true,
    };
    let mut failing = echo
        .count(named(request, "alir-gagal"))
        .await
        .unwrap()
        .into_inner();
    assert!(failing.message().await.unwrap().is_some());
    assert!(failing.message().await.unwrap().is_some());
    let e = failing.message().await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert_eq!(source(&e), "provider-app");
    assert!(e.message().contains("gagal di akhir"));

    // Both logs hold every message, chained: the evidence verifies on each side and
    // the two sides agree.
    for id in ["alir-hitung", "alir-gabung", "alir-obrolan", "alir-gagal"] {
        let said = net.verified_on_both(id).await;
        assert!(said.contains("stream"), "{id}: {said}");
    }
    // Each side's monitoring record of the chat counts the bytes of every encoded
    // message (two bytes of field and length each): "halo" and "apa kabar" up (17),
    // each with "re: " before it down (25).
    for (server, side) in [(&net.consumer, "consumer"), (&net.provider, "provider")] {
        let chat = monitored(server, "alir-obrolan").await;
        assert_eq!(
            (chat.request_bytes, chat.response_bytes),
            (17, 25),
            "{side}: {chat:?}"
        );
    }
    let messages = |server: &SecurityServer, kind: RecordKind| {
        Network::records(server)
            .iter()
            .filter(|r| r.message_id == "alir-hitung" && r.kind() == kind)
            .count()
    };
    assert_eq!(messages(&net.provider, RecordKind::MessageSent), 5);
    assert_eq!(messages(&net.consumer, RecordKind::MessageReceived), 5);
    // The request of a server stream: one message and the end.
    assert_eq!(messages(&net.consumer, RecordKind::MessageSent), 2);

    // Flow control: a client that stops reading stops the application, with only a
    // bounded number of 64 KiB messages in flight (10,000 would be 640 MiB).
    let request = CountRequest {
        count: 10_000,
        size: 64 * 1024,
        fail_at_end: false,
    };
    let mut slow = echo
        .count(named(request, "alir-lambat"))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..5 {
        slow.message().await.unwrap().unwrap();
    }
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut last = u64::MAX;
    for _ in 0..100 {
        pace.tick().await;
        let now = watch.produced.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        last < 1_000,
        "the application produced {last} messages for a client that read 5"
    );
    // Cancellation: the client goes away, and the application's stream is cancelled.
    drop(slow);
    let mut waited = 0;
    while !watch.cancelled.load(Ordering::SeqCst) {
        assert!(waited < 100, "the application never saw the cancellation");
        pace.tick().await;
        waited += 1;
    }

    // The client's deadline reaches the application: a chat nobody speaks in ends
    // with DEADLINE_EXCEEDED, not never.
    let (_quiet, rx) = tokio::sync::mpsc::channel::<EchoMessage>(1);
    let mut request = named(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        "alir-tenggat",
    );
    request.set_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let ended = match echo.chat(request).await {
        Ok(r) => r.into_inner().next().await.and_then(Result::err),
        Err(e) => Some(e),
    };
    let e = ended.expect("the stream ended with an error");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // Access revoked during a stream ends it at its next message.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = echo
        .chat(named(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "alir-dicabut",
        ))
        .await
        .unwrap()
        .into_inner();
    tx.send(payload("sebelum")).await.unwrap();
    assert!(answers.message().await.unwrap().is_some());
    SecurityServerAdmin::revoke(
        &net.provider.admin(),
        Request::new(admin_pb::Grant {
            provider: PROVIDER_CLIENT.into(),
            service: ECHO.into(),
            subject: CONSUMER_CLIENT.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    tx.send(payload("sesudah")).await.unwrap();
    let e = answers.message().await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(source(&e), "provider-server");
    assert!(e.message().contains("revoked during the stream"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_school_roster_streams_from_the_dapodik_database() {
    use lintas_examples::dapodik::v1::DaftarSiswaRequest;
    use lintas_examples::dapodik::v1::rombel_client::RombelClient;
    let mut net = network().await;
    let db = net.inst.root.join("sekolah.db");
    lintas_examples::sekolah_db::create_sqlite(&db).unwrap();
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = stopper();
    net._stops.push(stop);
    tokio::spawn(lintas_examples::dapodik_roster::serve(app, db, stopped));
    publish(
        &net,
        "dapodik.v1.Rombel",
        endpoint,
        "dapodik/v1/rombel.proto",
    )
    .await;

    let mut rombel = RombelClient::new(plain_channel(&net.consumer_url).await.unwrap());
    let roster = |npsn: &str, aktif_saja: bool, id: &str| {
        named(
            DaftarSiswaRequest {
                npsn: npsn.into(),
                aktif_saja,
            },
            id,
        )
    };
    let mut pupils = rombel
        .alir_siswa(roster("20100002", false, "rombel-1"))
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while let Some(siswa) = pupils.message().await.unwrap() {
        assert_eq!(siswa.sekolah, "SMP Negeri 109 Jakarta");
        names.push(siswa.nama);
    }
    assert_eq!(names, ["Andi Pratama", "Dewi Rahayu"]);
    // Only those still at school.
    let mut active = rombel
        .alir_siswa(roster("20100002", true, "rombel-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.message().await.unwrap().unwrap().nama, "Dewi Rahayu");
    assert!(active.message().await.unwrap().is_none());
    // The application's refusal, as its own.
    let refused = match rombel.alir_siswa(roster("123", false, "rombel-3")).await {
        Ok(r) => r.into_inner().message().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(source(&refused), "provider-app");
    assert!(refused.message().contains("harus 8 digit"));
}

/// A peer that speaks `Exchange.Stream` itself, with the consumer server's TLS identity
/// and signing key: what a modified security server could send.
struct RawStream {
    to_provider: tokio::sync::mpsc::Sender<ex::StreamFrame>,
    answers: tonic::Streaming<ex::StreamFrame>,
    request_hash: [u8; 32],
    key: lintas_certs::KeyPair,
}

impl RawStream {
    async fn open(net: &Network, method: &str) -> Result<RawStream, Status> {
        let mut header = net.header();
        header.method = method.into();
        header.stream = true;
        let key = lintas_certs::keys::read(&net.consumer_paths.sign_key()).unwrap();
        let signed = lintas_ss::daemon::sign_request(
            header,
            Vec::new(),
            &key,
            read_cert(&net.consumer_paths.sign_cert()),
        )
        .unwrap();
        let request_hash = lintas_certs::sha256(&signed.header);
        let cert = read_cert(&net.consumer_paths.tls_cert());
        let tls_key = lintas_certs::keys::read(&net.consumer_paths.tls_key()).unwrap();
        let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
        let tls = lintas_transport::client_config(
            anchor.trust_store(),
            lintas_certs::Role::Server,
            Some((&cert, &tls_key)),
        )
        .unwrap();
        let channel =
            lintas_transport::channel(&format!("https://{}", net.provider_address), tls).unwrap();
        let (to_provider, rx) = tokio::sync::mpsc::channel(8);
        to_provider
            .send(ex::StreamFrame {
                frame: Some(ex::stream_frame::Frame::Open(signed)),
            })
            .await
            .unwrap();
        let answers = ex::exchange_client::ExchangeClient::new(channel)
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(RawStream {
            to_provider,
            answers,
            request_hash,
            key,
        })
    }

    /// Sends a client message with `header` (edited from a correct one) signed by `key`.
    async fn send(
        &self,
        edit: impl FnOnce(&mut ex::MessageHeader),
        body: &[u8],
        key: &lintas_certs::KeyPair,
    ) {
        let mut header = ex::MessageHeader {
            request_header_sha256: self.request_hash.to_vec(),
            from_provider: false,
            seq: 0,
            prev_sha256: self.request_hash.to_vec(),
            body_sha256: lintas_certs::sha256(body).to_vec(),
            body_len: body.len() as u64,
            ..Default::default()
        };
        edit(&mut header);
        let header = prost::Message::encode_to_vec(&header);
        let signature =
            lintas_ss::batch::sign_one(key, lintas_ss::chain::MESSAGE_DOMAIN, &header).unwrap();
        let frame = ex::StreamFrame {
            frame: Some(ex::stream_frame::Frame::Message(ex::SignedMessage {
                header,
                signature: Some(signature),
                body: Bytes::copy_from_slice(body),
                ..Default::default()
            })),
        };
        let _ = self.to_provider.send(frame).await;
    }

    /// The status of the provider's signed close, skipping any messages.
    async fn closed_with(&mut self) -> ex::ResponseHeader {
        loop {
            let frame = self.answers.message().await.unwrap().expect("a close");
            if let Some(ex::stream_frame::Frame::Close(c)) = frame.frame {
                return prost::Message::decode(c.header.as_slice()).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_refuses_stream_messages_out_of_order_or_not_signed_by_the_client() {
    let (net, _) = echo_network().await;
    let chat = format!("/{ECHO}/Chat");
    let other = lintas_certs::keys::generate().unwrap();

    // (what is wrong, the header edit, signed by the client's key, code, words)
    type Edit = fn(&mut ex::MessageHeader);
    let cases: [(&str, Edit, bool, Code, &str); 4] = [
        (
            "skipped",
            |h| h.seq = 1,
            true,
            Code::InvalidArgument,
            "where message 0 was due",
        ),
        (
            "another stream",
            |h| h.request_header_sha256 = vec![7; 32],
            true,
            Code::InvalidArgument,
            "another stream",
        ),
        (
            "wrong direction",
            |h| h.from_provider = true,
            true,
            Code::InvalidArgument,
            "other direction",
        ),
        (
            "foreign key",
            |_| {},
            false,
            Code::Unauthenticated,
            "request message",
        ),
    ];
    for (what, edit, own_key, code, words) in cases {
        let mut raw = RawStream::open(&net, &chat).await.unwrap();
        let key = if own_key { &raw.key } else { &other };
        raw.send(edit, b"halo", key).await;
        let close = raw.closed_with().await;
        assert_eq!(Code::from_i32(close.status_code), code, "{what}: {close:?}");
        assert!(close.status_message.contains(words), "{what}: {close:?}");
        assert_eq!(close.error_source, "provider-server", "{what}");
        // Nothing reached the application.
        assert_eq!(close.messages, 0, "{what}");
    }
    // A stream header on the unary call: refused.
    let mut header = net.header();
    header.stream = true;
    let refused = net.send(net.sign(header, b""), None).await.unwrap_err();
    assert!(
        refused.message().contains("must open Exchange.Stream"),
        "{refused:?}"
    );
}

mod large_messages;

/// A stream opened by a consumer's server whose configuration predates the provider's
/// renewal: the first connection fails on the pinned certificate, a newer configuration
/// is fetched and the stream opens with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reaches_a_provider_that_switched_certificates_since_the_consumer_looked() {
    let (net, _watch) = echo_network().await;
    let config = SsConfig::load(&net.provider_paths.0.join("ss.toml"), std::iter::empty()).unwrap();
    let renewed = Node::open(config).unwrap().renew().await.unwrap();
    assert_eq!(renewed.state, "approved");
    let switched = net
        .provider
        .admin()
        .switch_certificates(Request::new(admin_pb::SwitchRequest { now: true }))
        .await
        .unwrap()
        .into_inner();
    assert!(switched.switched);
    let mut echo = EchoClient::new(plain_channel(&net.consumer_url).await.unwrap());
    let request = CountRequest {
        count: 3,
        size: 8,
        fail_at_end: false,
    };
    let mut counted = echo
        .count(named(request, "alir-setelah-perpanjangan"))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while counted.message().await.unwrap().is_some() {
        seen += 1;
    }
    assert_eq!(seen, 3);
}
