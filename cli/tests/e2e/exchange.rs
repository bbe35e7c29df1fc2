//! The exchange between two members: a consumer application calls its security server,
//! which signs and relays to the provider's security server, which checks, records, and
//! calls the provider application. Happy path and each refusal.

use std::sync::Arc;

use bytes::Bytes;
use lintas_examples::kependudukan::v1::penduduk_client::PendudukClient;
use lintas_examples::kependudukan::v1::{CariNikRequest, DataPenduduk};
use lintas_identifiers::ClientId;
use lintas_log::RecordKind;
use lintas_proto::exchange::v1 as ex;
use lintas_ss::access::{Grant, ServiceEntry, Subject};
use lintas_ss::daemon::SecurityServer;
use prost::Message;
use tonic::{Request, Status};

use std::future::Future;

use super::*;

const SERVICE: &str = "kependudukan.v1.Penduduk";
const NIK: &str = "3174012305870001";
/// A second subsystem on the consumer's server, without access rights.
const OTHER_CLIENT: &str = "ID/GOV/KEMENSOS/PKH";

/// A registry, a provider and a consumer security server, and the provider application.
struct Network {
    inst: Instance,
    provider: Arc<SecurityServer>,
    consumer: Arc<SecurityServer>,
    consumer_url: String,
    provider_address: String,
    consumer_paths: lintas_ss::Paths,
    provider_paths: lintas_ss::Paths,
    app_address: String,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Stop the provider's and the consumer's security server; each task ends when its
    /// server has stopped.
    provider_stop: Option<ServerStop>,
    consumer_stop: Option<ServerStop>,
    /// The provider's server's own consumer endpoint (its subsystems call through it).
    provider_url: String,
    /// Each server's operations listener, `host:port`.
    provider_ops: String,
    consumer_ops: String,
    /// The provider's server's management API, `host:port`.
    provider_management: String,
}

/// Where a started server listens.
struct Urls {
    /// The consumer endpoint, `http://host:port`.
    consumer: String,
    /// The operations listener, `host:port`.
    ops: String,
    /// The management API, `host:port`.
    management: String,
}

type ServerStop = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// Appends a system record to `server`'s log and signs a checkpoint over it.
async fn record_and_checkpoint(server: &SecurityServer, detail: &str) {
    server
        .log
        .append(lintas_log::Record {
            kind: RecordKind::System as i32,
            detail: detail.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.evidence.checkpoint_now().unwrap().unwrap();
}

fn stopper() -> (
    tokio::sync::oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async {
        let _ = rx.await;
    })
}

async fn network() -> Network {
    network_with(true).await
}

/// `dev`: the consumer takes local applications over plaintext loopback; otherwise over
/// TLS with registered client certificates.
async fn network_with(dev: bool) -> Network {
    network_edited(dev, |_| {}).await
}

/// A network whose servers' configurations `edit` changes before they open.
async fn network_edited(dev: bool, edit: impl Fn(&mut SsConfig)) -> Network {
    let inst = Instance::start().await;
    let provider_peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consumer_peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider_address = provider_peer.local_addr().unwrap().to_string();
    let p_node = inst.node_at(PROVIDER, &[PROVIDER_CLIENT], &provider_address);
    let c_node = inst.node_with(
        CONSUMER,
        &[CONSUMER_CLIENT, OTHER_CLIENT],
        &consumer_peer.local_addr().unwrap().to_string(),
        dev,
    );
    inst.enrol(&p_node).await;
    inst.enrol(&c_node).await;
    let (mut p_node, mut c_node) = (p_node, c_node);
    edit(&mut p_node.config);
    edit(&mut c_node.config);
    let consumer_paths = c_node.paths.clone();
    let provider_paths = p_node.paths.clone();
    let provider = SecurityServer::open(p_node, inst.clock.clone()).unwrap();
    let consumer = SecurityServer::open(c_node, inst.clock.clone()).unwrap();

    let mut stops = Vec::new();
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_address = app.local_addr().unwrap().to_string();
    let (tx, stop) = stopper();
    stops.push(tx);
    tokio::spawn(lintas_examples::population_registry::serve(app, stop));

    provider
        .access
        .add_service(ServiceEntry {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: SERVICE.parse().unwrap(),
            endpoint: format!("http://{app_address}"),
            ca_pem: None,
            descriptor_set: None,
            rest: false,
            large_messages: false,
            topic: false,
            openapi: None,
        })
        .unwrap();
    provider.access.grant(grant(Some("CariNik"))).unwrap();

    let (provider_urls, provider_stop) = start(provider.clone(), provider_peer).await;
    let (consumer_urls, consumer_stop) = start(consumer.clone(), consumer_peer).await;
    let consumer_url = consumer_urls.consumer.clone();
    Network {
        inst,
        provider,
        consumer,
        consumer_url,
        provider_address,
        consumer_paths,
        provider_paths,
        app_address,
        _stops: stops,
        provider_stop: Some(provider_stop),
        consumer_stop: Some(consumer_stop),
        provider_url: provider_urls.consumer,
        provider_ops: provider_urls.ops,
        consumer_ops: consumer_urls.ops,
        provider_management: provider_urls.management,
    }
}

/// Serves `server` (consumer endpoint and operations listener on new loopback ports,
/// provider endpoint on `peer`); returns where it listens and how to stop it.
async fn start(server: Arc<SecurityServer>, peer: TcpListener) -> (Urls, ServerStop) {
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let management = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Urls {
        consumer: format!("http://{}", local.local_addr().unwrap()),
        ops: ops.local_addr().unwrap().to_string(),
        management: management.local_addr().unwrap().to_string(),
    };
    let (tx, stop) = stopper();
    let listeners = lintas_ss::serve::Listeners {
        consumer: local,
        provider: peer,
        ops,
        management: Some(management),
    };
    let task = tokio::spawn(async move {
        lintas_ss::serve::serve(server, listeners, stop)
            .await
            .unwrap();
    });
    (url, (tx, task))
}

fn grant(method: Option<&str>) -> Grant {
    Grant {
        provider: PROVIDER_CLIENT.parse().unwrap(),
        service: SERVICE.parse().unwrap(),
        method: method.map(str::to_owned),
        subject: Subject::Client(ClientId::Subsystem(CONSUMER_CLIENT.parse().unwrap())),
        path: None,
    }
}

fn source(status: &Status) -> &str {
    status
        .metadata()
        .get(lintas_ss::daemon::ERROR_SOURCE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

impl Network {
    /// Calls CariNik through the consumer's security server with a generated client.
    async fn cari(&self, client: &str, nik: &str) -> Result<DataPenduduk, Status> {
        cari_nik(plain_channel(&self.consumer_url).await?, client, nik, None).await
    }

    /// Exports exchange `id` from both servers' logs and verifies each bundle offline
    /// and the two against each other; what the consumer's evidence proves.
    async fn verified_on_both(&self, id: &str) -> String {
        let anchor = lintas_globalconf::Anchor::load(&self.inst.anchor()).unwrap();
        let q = lintas_proto::ss::v1::EvidenceQuery {
            message_id: id.into(),
            ..Default::default()
        };
        let c = lintas_audit::verify(&self.consumer.evidence.export(&q).await.unwrap(), &anchor);
        let p = lintas_audit::verify(&self.provider.evidence.export(&q).await.unwrap(), &anchor);
        assert!(c.verified, "{id}: {:#?}", c.failures);
        assert!(p.verified, "{id}: {:#?}", p.failures);
        assert!(
            lintas_audit::cross_check(&c, &p).failures.is_empty(),
            "{id}"
        );
        c.proven.join("\n")
    }

    /// The request header each server logged for `message_id`, after checking that
    /// its SHA-256 is `request_hash` (base64, as `X-Road-Request-Hash` gives it).
    fn logged_requests(&self, message_id: &str, request_hash: &str) -> Vec<ex::RequestHeader> {
        use base64::Engine;
        let hash = base64::engine::general_purpose::STANDARD
            .decode(request_hash)
            .unwrap();
        [&self.consumer, &self.provider]
            .into_iter()
            .map(|server| {
                let logged = Network::records(server)
                    .into_iter()
                    .find(|r| {
                        r.message_id == message_id
                            && matches!(
                                r.kind(),
                                RecordKind::RequestSent | RecordKind::RequestReceived
                            )
                    })
                    .expect("the REST call is logged");
                assert_eq!(lintas_certs::sha256(&logged.header).to_vec(), hash);
                ex::RequestHeader::decode(logged.header.as_slice()).unwrap()
            })
            .collect()
    }

    fn records(server: &SecurityServer) -> Vec<lintas_log::Record> {
        (0..server.log.len())
            .map(|i| server.log.get(i).unwrap().unwrap())
            .collect()
    }

    /// A request header as the consumer server would sign it.
    fn header(&self) -> ex::RequestHeader {
        ex::RequestHeader {
            message_id: format!("forged-{}", rand_suffix()),
            client: CONSUMER_CLIENT.into(),
            service_provider: PROVIDER_CLIENT.into(),
            method: format!("/{SERVICE}/CariNik"),
            consumer_server: CONSUMER.into(),
            provider_server: PROVIDER.into(),
            time_unix_ms: lintas_ss::daemon::now_ms(&*self.inst.clock),
            conf_serial: 0,
            ..Default::default()
        }
    }

    /// Signs `header` over `body` with the consumer's real signing key.
    fn sign(&self, header: ex::RequestHeader, body: &[u8]) -> ex::SignedRequest {
        let key = lintas_certs::keys::read(&self.consumer_paths.sign_key()).unwrap();
        lintas_ss::daemon::sign_request(
            header,
            body.to_vec(),
            &key,
            read_cert(&self.consumer_paths.sign_cert()),
        )
        .unwrap()
    }

    /// Sends a signed request straight to the provider server with the TLS identity in
    /// `paths` (the consumer server's when `None`).
    async fn send(
        &self,
        signed: ex::SignedRequest,
        paths: Option<&lintas_ss::Paths>,
    ) -> Result<ex::SignedResponse, Status> {
        let paths = paths.unwrap_or(&self.consumer_paths);
        let cert = read_cert(&paths.tls_cert());
        let key = lintas_certs::keys::read(&paths.tls_key()).unwrap();
        let anchor = lintas_globalconf::Anchor::load(&self.inst.anchor()).unwrap();
        let tls = lintas_transport::client_config(
            anchor.trust_store(),
            lintas_certs::Role::Server,
            Some((&cert, &key)),
        )
        .unwrap();
        let channel =
            lintas_transport::channel(&format!("https://{}", self.provider_address), tls).unwrap();
        ex::exchange_client::ExchangeClient::new(channel)
            .call(signed)
            .await
            .map(|r| r.into_inner())
    }
}

fn rand_suffix() -> String {
    lintas_certs::hex(&lintas_certs::sha256(
        format!("{:?}", std::time::Instant::now()).as_bytes(),
    ))[..16]
        .to_owned()
}

#[tokio::test]
async fn a_call_crosses_two_security_servers_and_both_record_it() {
    let net = network().await;
    let answer = net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    assert_eq!(answer.nama, "Siti Rahayu");
    assert_eq!(answer.provinsi, "DKI Jakarta");

    let kinds =
        |s: &SecurityServer| -> Vec<i32> { Network::records(s).iter().map(|r| r.kind).collect() };
    assert_eq!(
        kinds(&net.consumer),
        [
            RecordKind::RequestSent as i32,
            RecordKind::ResponseReceived as i32
        ]
    );
    assert_eq!(
        kinds(&net.provider),
        [
            RecordKind::RequestReceived as i32,
            RecordKind::ResponseSent as i32
        ]
    );
    // Both sides hold the same signed request header and the same signed response.
    let c = Network::records(&net.consumer);
    let p = Network::records(&net.provider);
    assert_eq!(c[0].header, p[0].header);
    assert_eq!(c[0].signature, p[0].signature);
    assert_eq!(c[1].header, p[1].header);
    assert_eq!(c[1].signature, p[1].signature);
    let response = ex::ResponseHeader::decode(c[1].header.as_slice()).unwrap();
    assert_eq!(
        response.request_header_sha256,
        lintas_certs::sha256(&c[0].header)
    );
    assert_eq!(response.request_record, 0);

    // An error the application itself returns reaches the caller as the application's.
    let err = net
        .cari(CONSUMER_CLIENT, "9999999999999999")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(source(&err), "provider-app");
    assert!(err.message().contains("no resident"));
}

/// A gRPC client that knows nothing of lintas or of the service's schema: protobuf
/// bytes encoded by hand, a pass-through codec.
#[derive(Clone, Copy, Default)]
struct HandCodec;

impl tonic::codec::Codec for HandCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = HandCodec;
    type Decoder = HandCodec;
    fn encoder(&mut self) -> HandCodec {
        HandCodec
    }
    fn decoder(&mut self) -> HandCodec {
        HandCodec
    }
}

impl tonic::codec::Encoder for HandCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for HandCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `CariNikRequest { nik }` encoded by hand: field 1, wire type 2.
fn hand_encoded(nik: &str) -> Bytes {
    let mut b = vec![0x0a, nik.len() as u8];
    b.extend_from_slice(nik.as_bytes());
    Bytes::from(b)
}

#[tokio::test]
async fn any_grpc_stack_works_through_the_bus_and_streams_are_refused() {
    let net = network().await;
    let channel = tonic::transport::Endpoint::from_shared(net.consumer_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/{SERVICE}/CariNik").parse().unwrap();
    let request = |messages: Vec<Bytes>| {
        let mut r = Request::new(tokio_stream::iter(messages));
        r.metadata_mut()
            .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
        r.metadata_mut()
            .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
        r
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let answer = grpc
        .client_streaming(request(vec![hand_encoded(NIK)]), path.clone(), HandCodec)
        .await
        .unwrap()
        .into_inner();
    // DataPenduduk field 2 (nama) is "Siti Rahayu".
    let nama = b"\x12\x0bSiti Rahayu";
    assert!(answer.windows(nama.len()).any(|w| w == nama), "{answer:?}");

    // Two request messages in one call: refused until streaming is supported.
    grpc.ready().await.unwrap();
    let err = grpc
        .client_streaming(
            request(vec![hand_encoded(NIK), hand_encoded(NIK)]),
            path,
            HandCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert_eq!(source(&err), "consumer-server");
}

#[tokio::test]
async fn the_consumer_server_refuses_unknown_and_foreign_clients() {
    let net = network().await;
    // Not hosted here (and not registered anywhere).
    let err = net.cari("ID/GOV/KEMENSOS/UNKNOWN", NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not hosted"), "{}", err.message());
    assert_eq!(source(&err), "consumer-server");
    // Claiming another member's subsystem, which this server does not host.
    let err = net.cari(PROVIDER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Malformed identifiers.
    let err = net.cari("ID/GOV/KEMEN SOS/DTKS", NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Nothing was relayed or recorded for any of them.
    assert_eq!(net.consumer.log.len(), 0);
    assert_eq!(net.provider.log.len(), 0);
}

#[tokio::test]
async fn access_rights_are_checked_and_changes_apply_at_once() {
    let net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    net.provider.access.revoke(&grant(Some("CariNik"))).unwrap();
    let err = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(source(&err), "provider-server");
    assert!(err.message().contains("not allowed"), "{}", err.message());
    let last = net
        .provider
        .log
        .get(net.provider.log.len() - 1)
        .unwrap()
        .unwrap();
    assert_eq!(last.kind, RecordKind::Rejection as i32);
    assert_eq!(last.status_code, Code::PermissionDenied as i32);

    // A grant to a global group the client's member belongs to works too.
    let mut admin = net.inst.admin();
    admin
        .add_group(pb::AddGroupRequest {
            code: "bansos".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    admin
        .add_group_member(pb::GroupMemberRequest {
            code: "bansos".into(),
            client: "ID/GOV/KEMENSOS".into(),
        })
        .await
        .unwrap();
    net.provider.conf().fetch().await.unwrap();
    let mut by_group = grant(None);
    by_group.subject = Subject::Group("bansos".parse().unwrap());
    net.provider.access.grant(by_group).unwrap();
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
}

#[tokio::test]
async fn the_provider_server_refuses_forged_and_replayed_requests() {
    let net = network().await;
    let body = hand_encoded(NIK).to_vec();

    // Untouched, the forger's request is accepted: the refusals below are each about
    // the one thing changed.
    let good = net.sign(net.header(), &body);
    net.send(good.clone(), None).await.unwrap();

    // Replay of the same signed request.
    let err = net.send(good.clone(), None).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Signature tampered.
    let mut tampered = net.sign(net.header(), &body);
    let value = &mut tampered.signature.as_mut().unwrap().value;
    let n = value.len();
    value[n - 2] ^= 1;
    let err = net.send(tampered, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A batch signature whose inclusion proof was altered: it leads to another root.
    let mut moved = net.sign(net.header(), &body);
    let sig = moved.signature.as_mut().unwrap();
    sig.tree_size = 2;
    sig.path = vec![vec![0x42; 32]];
    let err = net.send(moved, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("signature does not verify"),
        "{err:?}"
    );

    // No signature at all.
    let mut unsigned = net.sign(net.header(), &body);
    unsigned.signature = None;
    let err = net.send(unsigned, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("not signed"), "{err:?}");

    // Header tampered after signing.
    let mut altered = net.sign(net.header(), &body);
    let mut h = ex::RequestHeader::decode(altered.header.as_slice()).unwrap();
    h.purpose = "changed after signing".into();
    altered.header = h.encode_to_vec();
    let err = net.send(altered, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Body tampered: refused, and the message id is not used up by the forgery, so
    // the genuine request that was copied is still accepted.
    let genuine = net.sign(net.header(), &body);
    let mut swapped = genuine.clone();
    swapped.body = hand_encoded("3273015708920002").to_vec();
    let err = net.send(swapped, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("body"), "{}", err.message());
    net.send(genuine, None).await.unwrap();

    // A header with a field no version knows, or a field twice, signed as it is: not
    // accepted as signed, since a reader might see something else in it.
    let key = lintas_certs::keys::read(&net.consumer_paths.sign_key()).unwrap();
    let mut h = net.header().encode_to_vec();
    h.extend_from_slice(&[0xF8, 0x07, 0x01]);
    let mut odd = net.sign(net.header(), &body);
    odd.header = h;
    odd.signature = Some(
        lintas_ss::batch::sign_one(&key, lintas_ss::daemon::REQUEST_DOMAIN, &odd.header).unwrap(),
    );
    let err = net.send(odd, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("not in the one encoding"),
        "{}",
        err.message()
    );

    // Addressed to another provider server.
    let mut h = net.header();
    h.provider_server = "ID/GOV/KEMENDAGRI/SS2".into();
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("addressed to"), "{}", err.message());

    // Signed too long ago, or in the future.
    let mut h = net.header();
    h.time_unix_ms -= 10 * 60 * 1000;
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("before this server's clock"),
        "{}",
        err.message()
    );
    let mut h = net.header();
    h.time_unix_ms += 10 * 60 * 1000;
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert!(
        err.message().contains("ahead of this server's clock"),
        "{}",
        err.message()
    );

    // Claims to come from another consumer server than the TLS peer.
    let mut h = net.header();
    h.consumer_server = "ID/GOV/KEMENSOS/SS2".into();
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("claims consumer server"),
        "{}",
        err.message()
    );

    // Signed with another member's key (the provider's own).
    let mut foreign = net.sign(net.header(), &body);
    let key = lintas_certs::keys::read(&net.provider_paths.sign_key()).unwrap();
    foreign.signature = Some(
        lintas_ss::batch::sign_one(&key, lintas_ss::daemon::REQUEST_DOMAIN, &foreign.header)
            .unwrap(),
    );
    foreign.signer_cert = read_cert(&net.provider_paths.sign_cert());
    let err = net.send(foreign, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("not by ID/GOV/KEMENSOS"),
        "{}",
        err.message()
    );

    // A provider subsystem not hosted there, and a service not mapped.
    let mut h = net.header();
    h.service_provider = "ID/GOV/KEMENDAGRI/OTHER".into();
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let mut h = net.header();
    h.method = "/other.v1.Service/Call".into();
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    // The same message id from another client is not a replay (it is refused later,
    // by access rights: that subsystem has none).
    let mut h = net.header();
    h.message_id = ex::RequestHeader::decode(good.header.as_slice())
        .unwrap()
        .message_id;
    h.client = OTHER_CLIENT.into();
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Claims a client the TLS peer does not host.
    let mut h = net.header();
    h.client = "ID/GOV/KEMENSOS/OTHER".into();
    let err = net.send(net.sign(h, &body), None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Every refusal is recorded.
    let rejections = Network::records(&net.provider)
        .iter()
        .filter(|r| r.kind == RecordKind::Rejection as i32)
        .count();
    assert_eq!(rejections, 16);
}

#[tokio::test]
async fn an_expired_configuration_stops_calls_with_a_clear_error() {
    let net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    net.inst
        .clock
        .advance(Duration::from_secs(net.inst.config.conf_validity_secs + 1));
    let err = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(source(&err), "consumer-server");
    assert!(err.message().contains("expired"), "{}", err.message());
}

#[tokio::test]
async fn a_revoked_signing_certificate_is_refused() {
    let net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let serial = lintas_certs::CertInfo::parse(&read_cert(&net.consumer_paths.sign_cert()))
        .unwrap()
        .serial_hex();
    net.inst
        .admin()
        .revoke(pb::RevokeRequest {
            serial,
            reason: "key compromise".into(),
        })
        .await
        .unwrap();
    net.provider.conf().fetch().await.unwrap();
    let err = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(source(&err), "provider-server");
    assert!(err.message().contains("revoked"), "{}", err.message());
    // The consumer's server, once it holds that configuration, says it cannot serve.
    net.consumer.conf().fetch().await.unwrap();
    let (status, _, body) = ops::ops_get(&net.consumer_ops, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("certificates")
            && body.contains("signing certificate")
            && body.contains("revoked"),
        "{body}"
    );
}

#[tokio::test]
async fn a_peer_from_an_untrusted_ca_cannot_connect() {
    let net = network().await;
    // A server enrolled in another instance, whose CA this instance does not approve.
    let other = Instance::start().await;
    let stranger = other.node(CONSUMER, &[CONSUMER_CLIENT]);
    other.enrol(&stranger).await;
    let err = net
        .send(net.sign(net.header(), b""), Some(&stranger.paths))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("alert"), "{err:?}");
    assert!(net.provider.log.is_empty(), "nothing reached the checks");
}

#[tokio::test]
async fn a_member_signing_certificate_cannot_complete_a_handshake_with_the_provider_port() {
    let net = network().await;
    // The consumer's own signing key and certificate, of the same CA, presented as a
    // TLS identity: refused in the handshake, for want of the clientAuth usage.
    let dir = tempfile::tempdir().unwrap();
    let paths = lintas_ss::Paths(dir.path().to_owned());
    std::fs::copy(net.consumer_paths.sign_cert(), paths.tls_cert()).unwrap();
    std::fs::copy(net.consumer_paths.sign_key(), paths.tls_key()).unwrap();
    let err = net
        .send(net.sign(net.header(), b""), Some(&paths))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("alert"), "{err:?}");
    assert!(net.provider.log.is_empty(), "nothing reached the checks");
    // The server's TLS certificate still does.
    net.send(net.sign(net.header(), &hand_encoded(NIK)), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_provider_application_is_reported_as_such() {
    let net = network().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    net.provider
        .access
        .add_service(ServiceEntry {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: SERVICE.parse().unwrap(),
            endpoint: format!("http://{closed}"),
            ca_pem: None,
            descriptor_set: None,
            rest: false,
            large_messages: false,
            topic: false,
            openapi: None,
        })
        .unwrap();
    let err = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(source(&err), "provider-server");
    assert!(err.message().contains("unreachable"), "{}", err.message());
    // Back to the real application: it works again.
    net.provider
        .access
        .add_service(ServiceEntry {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: SERVICE.parse().unwrap(),
            endpoint: format!("http://{}", net.app_address),
            ca_pem: None,
            descriptor_set: None,
            rest: false,
            large_messages: false,
            topic: false,
            openapi: None,
        })
        .unwrap();
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
}

/// A plaintext channel to a consumer endpoint (development mode).
async fn plain_channel(url: &str) -> Result<tonic::transport::Channel, Status> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))
}

/// A local application's client: TLS to the consumer endpoint (trusting its own
/// certificate), presenting `identity` if given.
async fn tls_channel(
    net: &Network,
    identity: Option<(&[u8], &lintas_certs::KeyPair)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let consumer_cert = std::fs::read_to_string(net.consumer_paths.consumer_cert()).unwrap();
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(consumer_cert))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            lintas_certs::pem::cert_to_pem(cert),
            key.serialize_pem(),
        ));
    }
    tonic::transport::Endpoint::from_shared(net.consumer_url.replace("http://", "https://"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

/// Calls CariNik for `nik` as `client` through a consumer endpoint, optionally under
/// a chosen message id.
async fn cari_nik(
    channel: tonic::transport::Channel,
    client: &str,
    nik: &str,
    message_id: Option<&str>,
) -> Result<DataPenduduk, Status> {
    let mut req = Request::new(CariNikRequest { nik: nik.into() });
    let md = req.metadata_mut();
    md.insert("lintas-client", client.parse().unwrap());
    md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    if let Some(id) = message_id {
        md.insert("lintas-message-id", id.parse().unwrap());
    }
    PendudukClient::new(channel)
        .cari_nik(req)
        .await
        .map(|r| r.into_inner())
}

fn app_identity(name: &str) -> (Vec<u8>, lintas_certs::KeyPair) {
    let validity = lintas_certs::ca::Validity::starting(
        std::time::SystemTime::now(),
        Duration::from_secs(86400),
    )
    .unwrap();
    let (key, cert) = lintas_certs::ca::self_signed(&["localhost".into()], name, validity).unwrap();
    (cert, key)
}

#[tokio::test]
async fn local_applications_are_authenticated_by_registered_client_certificates() {
    let net = network_with(false).await;
    let (dtks_cert, dtks_key) = app_identity("dtks-app");
    let (pkh_cert, pkh_key) = app_identity("pkh-app");
    let (stranger_cert, stranger_key) = app_identity("stranger");
    net.consumer
        .access
        .add_client_cert(CONSUMER_CLIENT.parse().unwrap(), &dtks_cert)
        .unwrap();
    net.consumer
        .access
        .add_client_cert(OTHER_CLIENT.parse().unwrap(), &pkh_cert)
        .unwrap();

    // The registered application, acting for its own subsystem, is answered.
    let dtks = tls_channel(&net, Some((&dtks_cert, &dtks_key)))
        .await
        .unwrap();
    assert_eq!(
        cari_nik(dtks.clone(), CONSUMER_CLIENT, NIK, None)
            .await
            .unwrap()
            .nama,
        "Siti Rahayu"
    );

    // A registered application claiming another subsystem's identity is refused.
    let pkh = tls_channel(&net, Some((&pkh_cert, &pkh_key)))
        .await
        .unwrap();
    let err = cari_nik(pkh, CONSUMER_CLIENT, NIK, None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("registered for ID/GOV/KEMENSOS/PKH"),
        "{}",
        err.message()
    );

    // An unregistered certificate, or none, does not get through the handshake.
    for identity in [Some((&stranger_cert[..], &stranger_key)), None] {
        let refused = match tls_channel(&net, identity).await {
            Err(e) => format!("{e:?}"),
            Ok(channel) => format!(
                "{:?}",
                cari_nik(channel, CONSUMER_CLIENT, NIK, None)
                    .await
                    .unwrap_err()
            ),
        };
        // The server refuses the certificate: the client sees the server's alert.
        assert!(refused.contains("received fatal alert"), "{refused}");
    }
    // Plaintext is not accepted on a TLS endpoint.
    assert!(net.cari(CONSUMER_CLIENT, NIK).await.is_err());

    // Removing the registration takes effect at once, even on a connection opened
    // before it: every call is checked.
    let fingerprint = lintas_certs::hex(&lintas_certs::sha256(&dtks_cert));
    assert!(
        net.consumer
            .access
            .remove_client_cert(&fingerprint)
            .unwrap()
    );
    let err = cari_nik(dtks, CONSUMER_CLIENT, NIK, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(
        net.provider.log.len(),
        2,
        "only the one allowed call reached the provider"
    );
}

#[tokio::test]
async fn provided_services_reach_the_registry_catalogue() {
    let net = network().await;
    let serial = net.provider.report_services().await.unwrap();
    let conf = net.consumer.conf().fetch().await.unwrap();
    assert!(conf.serial() >= serial);
    let listed: Vec<_> = conf
        .conf
        .services
        .iter()
        .map(|s| (s.provider.as_str(), s.service.as_str(), s.server.as_str()))
        .collect();
    assert_eq!(listed, [(PROVIDER_CLIENT, SERVICE, PROVIDER)]);

    // Reporting the same list again publishes nothing new.
    assert_eq!(net.provider.report_services().await.unwrap(), serial);

    // A server cannot put another member's subsystem in the catalogue.
    net.consumer
        .access
        .add_service(ServiceEntry {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: SERVICE.parse().unwrap(),
            endpoint: "http://127.0.0.1:9".into(),
            ca_pem: None,
            descriptor_set: None,
            rest: false,
            large_messages: false,
            topic: false,
            openapi: None,
        })
        .unwrap();
    let err = net.consumer.report_services().await.unwrap_err();
    assert!(err.to_string().contains("does not host"), "{err}");

    // Removing the service and reporting takes it out of the next configuration.
    net.provider
        .access
        .remove_service(&PROVIDER_CLIENT.parse().unwrap(), &SERVICE.parse().unwrap())
        .unwrap();
    net.provider.report_services().await.unwrap();
    let conf = net.consumer.conf().fetch().await.unwrap();
    assert!(conf.conf.services.is_empty());
}

#[tokio::test]
async fn a_provider_application_can_be_reached_over_tls() {
    let net = network().await;
    let (app_cert, app_key) = app_identity("population-registry");
    let app_cert_pem = lintas_certs::pem::cert_to_pem(&app_cert);
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://localhost:{}", app.local_addr().unwrap().port());
    let (_stop_app, stop) = stopper();
    tokio::spawn(lintas_examples::population_registry::serve_tls(
        app,
        app_cert_pem.clone(),
        app_key.serialize_pem(),
        stop,
    ));
    let entry = |ca_pem: Option<String>| ServiceEntry {
        provider: PROVIDER_CLIENT.parse().unwrap(),
        service: SERVICE.parse().unwrap(),
        endpoint: endpoint.clone(),
        ca_pem,
        descriptor_set: None,
        rest: false,
        large_messages: false,
        topic: false,
        openapi: None,
    };
    net.provider
        .access
        .add_service(entry(Some(app_cert_pem)))
        .unwrap();
    assert_eq!(
        net.cari(CONSUMER_CLIENT, NIK).await.unwrap().nama,
        "Siti Rahayu"
    );

    // Trusting the wrong certificate: the application cannot be reached.
    let (other, _) = app_identity("someone-else");
    net.provider
        .access
        .add_service(entry(Some(lintas_certs::pem::cert_to_pem(&other))))
        .unwrap();
    let err = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(source(&err), "provider-server");

    // An https endpoint without certificates to trust, or a malformed one, is refused.
    assert!(net.provider.access.add_service(entry(None)).is_err());
    let mut bad = entry(None);
    bad.endpoint = "ftp://localhost:1".into();
    assert!(net.provider.access.add_service(bad).is_err());
}

#[tokio::test]
async fn security_server_endpoints_answer_grpc_health_checks() {
    use tonic_health::pb::health_client::HealthClient;
    let net = network().await;
    let channel = tonic::transport::Endpoint::from_shared(net.consumer_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let p = &net.consumer_paths;
    let tls = lintas_transport::client_config(
        anchor.trust_store(),
        lintas_certs::Role::Server,
        Some((
            &read_cert(&p.tls_cert()),
            &lintas_certs::keys::read(&p.tls_key()).unwrap(),
        )),
    )
    .unwrap();
    let provider_endpoint =
        lintas_transport::channel(&format!("https://{}", net.provider_address), tls).unwrap();
    // The consumer endpoint (plaintext here) and the provider endpoint (mutual TLS).
    for (channel, service) in [
        (channel, ""),
        (provider_endpoint.clone(), ""),
        (provider_endpoint, "lintas.exchange.v1.Exchange"),
    ] {
        assert_serving(HealthClient::new(channel), service).await;
    }
}

#[tokio::test]
async fn a_signing_certificate_not_listed_for_the_peer_server_is_refused() {
    let net = network().await;
    // Another server of the same member, with its own valid signing certificate.
    let sibling = net.inst.node("ID/GOV/KEMENSOS/SS2", &[]);
    net.inst.enrol(&sibling).await;
    net.provider.conf().fetch().await.unwrap();
    // Signed with the sibling's key, sent by SS1: the certificate is genuine and of the
    // right member, but the configuration does not list it for SS1.
    let key = lintas_certs::keys::read(&sibling.paths.sign_key()).unwrap();
    let signed = lintas_ss::daemon::sign_request(
        net.header(),
        hand_encoded(NIK).to_vec(),
        &key,
        read_cert(&sibling.paths.sign_cert()),
    )
    .unwrap();
    let err = net.send(signed, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message()
            .contains("not one the global configuration lists"),
        "{}",
        err.message()
    );
}

/// A provider server impostor holding the real provider's TLS identity (so the
/// consumer's pin passes), answering with responses forged in one of several ways.
#[derive(Clone, Copy)]
enum Forgery {
    /// Signed by the provider's member, but for another request.
    Unbound,
    /// Correctly bound and signed, then the body swapped.
    BodySwapped,
    /// Signed with a key of another member (the consumer's own).
    WrongSigner,
}

struct Impostor {
    forgery: Arc<std::sync::Mutex<Forgery>>,
    sign_key: lintas_certs::KeyPair,
    sign_cert: Vec<u8>,
    other_key: lintas_certs::KeyPair,
    other_cert: Vec<u8>,
}

#[tonic::async_trait]
impl ex::exchange_server::Exchange for Impostor {
    type StreamStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ex::StreamFrame, Status>> + Send>>;

    async fn stream(
        &self,
        _: Request<tonic::Streaming<ex::StreamFrame>>,
    ) -> Result<tonic::Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented(
            "the impostor forges unary answers only",
        ))
    }

    async fn call(
        &self,
        request: Request<ex::SignedRequest>,
    ) -> Result<tonic::Response<ex::SignedResponse>, Status> {
        let signed = request.into_inner();
        let h = ex::RequestHeader::decode(signed.header.as_slice()).unwrap();
        let forgery = *self.forgery.lock().unwrap();
        let body = b"\x12\x05Forged".to_vec();
        let mut response = ex::ResponseHeader {
            request_header_sha256: lintas_certs::sha256(&signed.header).to_vec(),
            message_id: h.message_id,
            body_sha256: lintas_certs::sha256(&body).to_vec(),
            body_len: body.len() as u64,
            provider_server: PROVIDER.into(),
            ..Default::default()
        };
        if matches!(forgery, Forgery::Unbound) {
            response.request_header_sha256 = lintas_certs::sha256(b"another request").to_vec();
        }
        let (key, cert) = match forgery {
            Forgery::WrongSigner => (&self.other_key, &self.other_cert),
            _ => (&self.sign_key, &self.sign_cert),
        };
        let (header, signature) = lintas_ss::envelope::sign_response(&response, key).unwrap();
        let body = match forgery {
            Forgery::BodySwapped => b"\x12\x07Swapped".to_vec(),
            _ => body,
        };
        Ok(tonic::Response::new(ex::SignedResponse {
            header,
            signature: Some(signature),
            signer_cert: cert.clone(),
            body,
            ..Default::default()
        }))
    }
}

#[tokio::test]
async fn forged_responses_are_refused_and_recorded_by_the_consumer_server() {
    let mut net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    // The real provider server stops; the impostor takes its address and identity.
    let (stop, task) = net.provider_stop.take().unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    let listener = TcpListener::bind(&net.provider_address).await.unwrap();
    let p = &net.provider_paths;
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let tls = lintas_transport::server_config(
        &read_cert(&p.tls_cert()),
        &lintas_certs::keys::read(&p.tls_key()).unwrap(),
        anchor.trust_store(),
        lintas_transport::ClientAuth::Required,
    )
    .unwrap();
    let forgery = Arc::new(std::sync::Mutex::new(Forgery::Unbound));
    let impostor = Impostor {
        forgery: forgery.clone(),
        sign_key: lintas_certs::keys::read(&p.sign_key()).unwrap(),
        sign_cert: read_cert(&p.sign_cert()),
        other_key: lintas_certs::keys::read(&net.consumer_paths.sign_key()).unwrap(),
        other_cert: read_cert(&net.consumer_paths.sign_cert()),
    };
    let (_stop_impostor, stopped) = stopper();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ex::exchange_server::ExchangeServer::new(impostor))
            .serve_with_incoming_shutdown(
                lintas_transport::incoming(
                    listener,
                    tls,
                    lintas_transport::Admission::new("impostor", Default::default()),
                ),
                stopped,
            ),
    );

    for (f, reason) in [
        (Forgery::Unbound, "does not answer this request"),
        (Forgery::BodySwapped, "body does not match"),
        (Forgery::WrongSigner, "not by ID/GOV/KEMENDAGRI"),
    ] {
        *forgery.lock().unwrap() = f;
        let err = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{err:?}");
        assert!(err.message().contains(reason), "{}", err.message());
        // The refused response is kept, as received, in a FAILED record.
        let last = net
            .consumer
            .log
            .get(net.consumer.log.len() - 1)
            .unwrap()
            .unwrap();
        assert_eq!(last.kind, RecordKind::Failed as i32);
        assert_eq!(last.status_code, Code::DataLoss as i32);
        assert!(!last.header.is_empty() && last.signature.is_some());
    }
}

/// A provider application that answers only when released, and tells when a request
/// has reached it.
struct GatedApp {
    arrived: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[tonic::async_trait]
impl lintas_examples::kependudukan::v1::penduduk_server::Penduduk for GatedApp {
    async fn cari_nik(
        &self,
        request: Request<CariNikRequest>,
    ) -> Result<tonic::Response<DataPenduduk>, Status> {
        if let Some(arrived) = self.arrived.lock().unwrap().take() {
            let _ = arrived.send(());
        }
        if let Some(release) = self.release.lock().await.take() {
            let _ = release.await;
        }
        Ok(tonic::Response::new(DataPenduduk {
            nik: request.into_inner().nik,
            nama: "Answered after shutdown began".into(),
            ..Default::default()
        }))
    }
}

/// Serves `app` as a population registry on a new loopback port until the returned
/// sender is dropped; returns its endpoint URL.
async fn serve_population_app(
    app: impl lintas_examples::kependudukan::v1::penduduk_server::Penduduk,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, stop) = stopper();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                lintas_examples::kependudukan::v1::penduduk_server::PendudukServer::new(app),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop,
            ),
    );
    (endpoint, tx)
}

/// Publishes, as the provider's service, a population registry that holds its first
/// call until released; returns the signal that the call arrived, the release, and
/// the app's stop.
async fn publish_gated_app(
    net: &Network,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    let (endpoint, stop_app) = serve_population_app(GatedApp {
        arrived: std::sync::Mutex::new(Some(arrived_tx)),
        release: tokio::sync::Mutex::new(Some(release_rx)),
    })
    .await;
    net.provider
        .access
        .add_service(ServiceEntry {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: SERVICE.parse().unwrap(),
            endpoint,
            ca_pem: None,
            descriptor_set: None,
            rest: false,
            large_messages: false,
            topic: false,
            openapi: None,
        })
        .unwrap();
    (arrived, release, stop_app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_both_servers_drains_a_call_in_flight_and_keeps_its_records() {
    let mut net = network().await;
    let (arrived, release, _stop_app) = publish_gated_app(&net).await;
    let (consumer_records, provider_records) = (net.consumer.log.len(), net.provider.log.len());

    let channel = tonic::transport::Endpoint::from_shared(net.consumer_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = tokio::spawn(cari_nik(channel, CONSUMER_CLIENT, NIK, None));
    arrived.await.unwrap();

    // Both servers are told to stop while the call waits in the provider application.
    let (stop_provider, provider_task) = net.provider_stop.take().unwrap();
    let (stop_consumer, consumer_task) = net.consumer_stop.take().unwrap();
    stop_provider.send(()).unwrap();
    stop_consumer.send(()).unwrap();
    tokio::task::yield_now().await;
    assert!(
        !provider_task.is_finished() && !consumer_task.is_finished(),
        "a server stopped with a call in flight"
    );

    release.send(()).unwrap();
    let answer = call.await.unwrap().expect("the call in flight is answered");
    assert_eq!(answer.nama, "Answered after shutdown began");
    provider_task.await.unwrap();
    consumer_task.await.unwrap();

    // Its four records were durable before the answer.
    let kinds = |s: &SecurityServer, from: u64| -> Vec<i32> {
        (from..s.log.len())
            .map(|i| s.log.get(i).unwrap().unwrap().kind)
            .collect()
    };
    assert_eq!(
        kinds(&net.consumer, consumer_records),
        [
            RecordKind::RequestSent as i32,
            RecordKind::ResponseReceived as i32
        ]
    );
    assert_eq!(
        kinds(&net.provider, provider_records),
        [
            RecordKind::RequestReceived as i32,
            RecordKind::ResponseSent as i32
        ]
    );
    // Stopped: new calls are not taken.
    let refused = tonic::transport::Endpoint::from_shared(net.consumer_url.clone())
        .unwrap()
        .connect()
        .await;
    assert!(
        refused.is_err(),
        "the stopped consumer server still accepts connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_checkpointed_and_witnessed_and_a_forked_log_is_refused() {
    use lintas_log::checkpoint::{self, Checkpoint};
    use lintas_proto::registry::v1 as reg;
    let net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let p = &net.provider;
    let signed = p.evidence.checkpoint_now().unwrap().unwrap();
    assert!(
        p.evidence.checkpoint_now().unwrap().is_none(),
        "nothing new to sign"
    );
    let size = p.evidence.witness_now().await.unwrap();
    assert_eq!(size, p.log.len());

    // Anyone can fetch what the registry holds: the provider's checkpoint, signed with
    // the log key the global configuration lists, cosigned with the registry's
    // configuration-signing certificate.
    let mut public = reg::registration_client::RegistrationClient::new(net.inst.channel(None));
    let held = public
        .witnessed_checkpoint(reg::WitnessedCheckpointRequest {
            origin: PROVIDER.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.checkpoint, signed.checkpoint);
    let conf = p.conf().current().unwrap();
    let listed = conf.server(&PROVIDER.parse().unwrap()).unwrap();
    let v = checkpoint::verify(&held, &listed.log_public_key).unwrap();
    assert_eq!(
        (v.checkpoint.size, v.root),
        (size, p.log.root_at(size).unwrap())
    );
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let witness = anchor
        .trust_store()
        .verify(
            &held.cosignatures[0].signer_cert,
            lintas_certs::Role::GlobalConf,
            std::time::SystemTime::now(),
        )
        .unwrap();
    checkpoint::verify_cosignature(&held.cosignatures[0], &witness.public_key, &held.checkpoint)
        .unwrap();
    let err = public
        .witnessed_checkpoint(reg::WitnessedCheckpointRequest {
            origin: "ID/GOV/NOBODY/SS1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The log grows; the next checkpoint is accepted with a consistency proof.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    p.evidence.checkpoint_now().unwrap().unwrap();
    let witnessed = p.evidence.witness_now().await.unwrap();
    assert!(witnessed > size);

    // A fork: the provider's log key signs another history of the next real size, and
    // hands it in with the real consistency proof. The registry refuses it.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let now = p.log.len();
    let log_key = lintas_certs::keys::read(&net.provider_paths.log_key()).unwrap();
    let fork = checkpoint::sign(
        &log_key,
        &Checkpoint {
            origin: PROVIDER.into(),
            size: now,
            root: vec![0x42; 32],
            time_unix_ms: lintas_ss::daemon::now_ms(&*net.inst.clock),
        },
    )
    .unwrap();
    let proof: Vec<Vec<u8>> = p
        .log
        .consistency_proof(witnessed, now)
        .unwrap()
        .iter()
        .map(|h| h.to_vec())
        .collect();
    let tls = |paths: &lintas_ss::Paths| {
        (
            read_cert(&paths.tls_cert()),
            lintas_certs::keys::read(&paths.tls_key()).unwrap(),
        )
    };
    let (cert, key) = tls(&net.provider_paths);
    let mut as_provider =
        reg::registration_client::RegistrationClient::new(net.inst.channel(Some((&cert, &key))));
    let add = |checkpoint: &lintas_log::checkpoint::SignedCheckpoint, old_size: u64| {
        reg::AddCheckpointRequest {
            checkpoint: Some(checkpoint.clone()),
            old_size,
            consistency_proof: proof.clone(),
        }
    };
    let err = as_provider
        .add_checkpoint(add(&fork, witnessed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("forked or rewritten"), "{err:?}");
    // A proof from a size the registry does not hold is refused as such.
    let err = as_provider.add_checkpoint(add(&fork, 1)).await.unwrap_err();
    assert!(
        err.message()
            .contains(&format!("holds the checkpoint of size {witnessed}")),
        "{err:?}"
    );
    // Nobody else can hand in the provider's checkpoints, and nobody anonymously.
    let real = p.evidence.checkpoint_now().unwrap().unwrap();
    let (cert, key) = tls(&net.consumer_paths);
    let mut as_consumer =
        reg::registration_client::RegistrationClient::new(net.inst.channel(Some((&cert, &key))));
    let err = as_consumer
        .add_checkpoint(add(&real, witnessed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = public
        .add_checkpoint(add(&real, witnessed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The registry still holds the true history, and it goes on from there.
    assert_eq!(p.evidence.witness_now().await.unwrap(), now);
    let held = public
        .witnessed_checkpoint(reg::WitnessedCheckpointRequest {
            origin: PROVIDER.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.checkpoint, real.checkpoint);
}

/// Calls CariNik through the bus with a chosen message id.
async fn cari_with_id(net: &Network, id: &str) {
    let channel = plain_channel(&net.consumer_url).await.unwrap();
    cari_nik(channel, CONSUMER_CLIENT, NIK, Some(id))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_bundles_verify_offline_and_every_tampering_is_caught() {
    use lintas_proto::audit::v1::EvidenceBundle;
    let net = network().await;
    // A first call, then both logs are checkpointed and time-stamped by the registry's
    // TSA: the later records name that token, which bounds them from below.
    cari_with_id(&net, "bukti-0000").await;
    for s in [&net.consumer, &net.provider] {
        s.evidence.checkpoint_now().unwrap().unwrap();
        s.evidence.timestamp_now().await.unwrap().unwrap();
    }
    // A peer sends the provider a request it cannot sign, claiming the same message
    // id and another method: it is refused, and its refusal record must not bend the
    // evidence of the real exchange that follows it.
    let mut claim = net.header();
    claim.message_id = "bukti-0001".into();
    claim.method = "/rahasia.v1.Data/Curi".into();
    let mut forged = net.sign(claim, b"x");
    forged.signature.as_mut().unwrap().value[8] ^= 1;
    net.send(forged, None).await.unwrap_err();
    cari_with_id(&net, "bukti-0001").await;
    cari_with_id(&net, "bukti-0002").await;
    let q = lintas_proto::ss::v1::EvidenceQuery {
        message_id: "bukti-0001".into(),
        ..Default::default()
    };
    let consumer = net.consumer.evidence.export(&q).await.unwrap();
    let provider = net.provider.evidence.export(&q).await.unwrap();
    assert_eq!(
        consumer.entries.len(),
        2,
        "request sent and response received"
    );
    assert_eq!(
        provider.entries.len(),
        3,
        "request received, response sent, the refusal"
    );
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();

    let c = lintas_audit::verify(&consumer, &anchor);
    assert!(c.verified, "{:#?}", c.failures);
    let p = lintas_audit::verify(&provider, &anchor);
    assert!(p.verified, "{:#?}", p.failures);
    assert_eq!(p.exchanges.len(), 1);
    assert_eq!(p.exchanges[0].method, format!("/{SERVICE}/CariNik"));
    assert!(
        p.not_established
            .iter()
            .any(|n| n.contains("refused a request")
                && n.contains("what a refused request claims is not verified")),
        "{:?}",
        p.not_established
    );
    let words = c.proven.join("\n");
    for needle in [
        "entries of the log of ID/GOV/KEMENSOS/SS1",
        "witnessed by the registry of instance ID",
        &format!(
            "{CONSUMER_CLIENT} requested /{SERVICE}/CariNik of {PROVIDER_CLIENT} (message bukti-0001"
        ),
        "signed by member ID/GOV/KEMENSOS",
        &format!("{PROVIDER_CLIENT} answered that request with Ok"),
        "signed by member ID/GOV/KEMENDAGRI",
        "were written between",
        "by trusted time (RFC 3161 time-stamps of the log's checkpoints)",
    ] {
        assert!(words.contains(needle), "'{needle}' not in:\n{words}");
    }
    assert!(
        consumer.timestamps.len() >= 2,
        "the named time-stamp and the covering one"
    );
    let x = &c.exchanges[0];
    assert_eq!(
        (x.message_id.as_str(), x.status.as_ref().map(|s| s.0)),
        ("bukti-0001", Some(0))
    );
    let cross = lintas_audit::cross_check(&c, &p);
    assert!(cross.failures.is_empty(), "{:?}", cross.failures);
    assert_eq!(cross.proven.len(), 1);
    assert!(cross.proven[0].contains("the same signed request and the same signed response"));

    // Each kind of tampering, and what catches it.
    let fails = |b: &EvidenceBundle| {
        let r = lintas_audit::verify(b, &anchor);
        assert!(!r.verified, "a tampered bundle verified");
        r.failures.join("\n")
    };
    let expect = |b: &EvidenceBundle, needle: &str| {
        let f = fails(b);
        assert!(f.contains(needle), "'{needle}' not in:\n{f}");
    };
    // A byte of an entry changed (the message id, same length).
    let mut b = consumer.clone();
    let rec = &mut b.entries[1].record;
    let at = rec.windows(10).position(|w| w == b"bukti-0001").unwrap();
    rec[at + 9] = b'9';
    expect(
        &b,
        "is not the record ID/GOV/KEMENSOS/SS1's checkpointed log holds",
    );
    // An entry deleted: the response is left without its request.
    let mut b = consumer.clone();
    b.entries.remove(0);
    expect(&b, "is a response to a request this bundle does not hold");
    // Two entries reordered.
    let mut b = consumer.clone();
    b.entries.swap(0, 1);
    expect(&b, "out of order");
    // A certificate swapped for another member's.
    let mut b = consumer.clone();
    let own = lintas_certs::sha256(&read_cert(&net.consumer_paths.sign_cert()));
    let provider_cert = read_cert(&net.provider_paths.sign_cert());
    for cert in &mut b.certificates {
        if lintas_certs::sha256(cert) == own {
            *cert = provider_cert.clone();
        }
    }
    expect(&b, "signing certificate");
    // A backdated entry: the record's time changed, the bytes no longer in the log.
    let mut b = consumer.clone();
    let mut r = lintas_log::Record::decode(b.entries[0].record.as_slice()).unwrap();
    r.time_unix_ms -= 86_400_000;
    b.entries[0].record = r.encode_to_vec();
    expect(&b, "is not the record");
    // A checkpoint of another history, even signed with the right log key: the entries
    // are not in it and the witness's cosignature is for another checkpoint.
    let mut b = consumer.clone();
    let key = lintas_certs::keys::read(&net.consumer_paths.log_key()).unwrap();
    let mut cp = lintas_log::checkpoint::Checkpoint::decode(
        b.checkpoint.as_ref().unwrap().checkpoint.as_slice(),
    )
    .unwrap();
    cp.root = vec![0x11; 32];
    let mut forged = lintas_log::checkpoint::sign(&key, &cp).unwrap();
    forged.cosignatures = b.checkpoint.as_ref().unwrap().cosignatures.clone();
    b.checkpoint = Some(forged);
    let f = fails(&b);
    assert!(
        f.contains("cosignature 1 of the checkpoint: the cosignature is for another checkpoint"),
        "{f}"
    );
    assert!(f.contains("is not the record"), "{f}");
    // A time-stamp token substituted by another (the provider's, over its own log).
    let mut b = consumer.clone();
    b.timestamps[0].stamped.as_mut().unwrap().token = provider.timestamps[0]
        .stamped
        .as_ref()
        .unwrap()
        .token
        .clone();
    expect(&b, "the token does not verify");
    expect(&b, "stamps another digest");
    // A time-stamp the records name, removed.
    let mut b = consumer.clone();
    b.timestamps.clear();
    expect(&b, "names a time-stamp the bundle does not hold");
    // A cosignature under another certificate of the instance: not the registry's.
    let mut b = consumer.clone();
    b.checkpoint.as_mut().unwrap().cosignatures[0].signer_cert =
        read_cert(&net.consumer_paths.sign_cert());
    expect(&b, "the witness certificate is not the registry's");
    // The other server's checkpoint: not signed with this log's key.
    let mut b = consumer.clone();
    b.checkpoint = provider.checkpoint.clone();
    expect(&b, "the checkpoint is not ID/GOV/KEMENSOS/SS1's");
    // The two sides do not match when one holds another exchange.
    let other = net
        .provider
        .evidence
        .export(&lintas_proto::ss::v1::EvidenceQuery {
            message_id: "bukti-0002".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let failed = lintas_audit::cross_check(&c, &lintas_audit::verify(&other, &anchor)).failures;
    assert!(failed[0].contains("no exchange in common"), "{failed:?}");
    // Bodies, kept beside the records, come with the evidence when asked for; one that
    // is not the body its record describes is caught.
    let with_bodies = lintas_proto::ss::v1::EvidenceQuery {
        with_bodies: true,
        ..q.clone()
    };
    let bundled = net.consumer.evidence.export(&with_bodies).await.unwrap();
    assert!(bundled.entries.iter().all(|e| !e.body.is_empty()));
    let r = lintas_audit::verify(&bundled, &anchor);
    assert!(r.verified, "{:?}", r.failures);
    assert!(
        r.proven
            .iter()
            .any(|p| p
                .contains("2 message bodies in the bundle are the ones their records describe"))
    );
    let mut b = bundled.clone();
    b.entries[1].body[0] ^= 1;
    expect(
        &b,
        "carries a body that is not the one its record describes",
    );
    // Past the retention period the bodies are purged; the proofs do not need them.
    let later = lintas_ss::daemon::now_ms(&*net.inst.clock) + 31 * 86_400_000;
    assert!(net.consumer.bodies.purge(later).unwrap() >= 1);
    let purged = net.consumer.evidence.export(&with_bodies).await.unwrap();
    assert!(purged.entries.iter().all(|e| e.body.is_empty()));
    let r = lintas_audit::verify(&purged, &anchor);
    assert!(r.verified, "{:?}", r.failures);

    // Another instance's anchor trusts none of it.
    let foreign = Instance::start().await;
    let foreign_anchor = lintas_globalconf::Anchor::load(&foreign.anchor()).unwrap();
    let r = lintas_audit::verify(&consumer, &foreign_anchor);
    assert!(!r.verified);
    assert!(
        r.failures[0].contains("does not verify against the anchor"),
        "{:?}",
        r.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_time_stamp_for_too_long_the_servers_fail_closed_until_one_is_had() {
    let net = network().await;
    // A fresh configuration at the current (manual) time: any change republishes it.
    let refresh = |name: &'static str| {
        let net = &net;
        async move {
            net.inst
                .admin()
                .add_member(pb::AddMemberRequest {
                    id: format!("ID/GOV/{name}"),
                    name: name.into(),
                })
                .await
                .unwrap();
            net.consumer.conf().fetch().await.unwrap();
            net.provider.conf().fetch().await.unwrap();
        }
    };
    // A call (the servers are up), its records time-stamped; then an idle hour: no
    // record waits for a time-stamp, so nothing is refused.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    for s in [&net.consumer, &net.provider] {
        s.evidence.checkpoint_now().unwrap();
        s.evidence.timestamp_now().await.unwrap().unwrap();
    }
    net.inst.clock.advance(Duration::from_secs(3601));
    refresh("SATU").await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    // An hour passes with those records never time-stamped (the TSA unreachable, say).
    net.inst.clock.advance(Duration::from_secs(3601));
    refresh("DUA").await;
    let err = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("without a trusted time-stamp has waited")
            && err.message().contains("timestamp_fail_closed_secs is 3600"),
        "{}",
        err.message()
    );
    let status = net.consumer.evidence.log_status();
    assert!(status.failing_closed && status.seconds_without_timestamp >= 3600);
    // Once the logs are time-stamped again, calls go through.
    for s in [&net.consumer, &net.provider] {
        s.evidence.checkpoint_now().unwrap();
        s.evidence.timestamp_now().await.unwrap().unwrap();
    }
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let status = net.consumer.evidence.log_status();
    assert!(
        !status.failing_closed && status.timestamped_size > 0,
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_can_use_another_time_stamping_authority_the_configuration_lists() {
    use lintas_certs::ca::{Ca, Validity};
    let inst = Instance::start().await;
    // Another authority, outside the instance's PKI (say, a national one), with its own
    // CA and an RFC 3161 service on loopback.
    let validity =
        Validity::starting(std::time::SystemTime::now(), Duration::from_secs(86400)).unwrap();
    let other: lintas_identifiers::Code = "BSRE".parse().unwrap();
    let ca = Ca::create(&other, validity).unwrap();
    let key = lintas_certs::keys::generate().unwrap();
    let cert = ca
        .issue_for_key(
            &key,
            &lintas_certs::Profile::Tsa {
                instance: other,
                name: "tsa".parse().unwrap(),
            },
            validity,
        )
        .unwrap();
    let tsa = Arc::new(
        lintas_timestamp::Tsa::new(
            Arc::new(key),
            cert.clone(),
            lintas_timestamp::DEFAULT_POLICY,
        )
        .unwrap(),
    );
    let clock = inst.clock.clone();
    let app = axum::Router::new().route(
        "/tsa",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tsa = tsa.clone();
            let now = lintas_certs::unix_secs(lintas_globalconf::Clock::now(&*clock));
            async move { tsa.respond(&body, now) }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tsa", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // A certificate that cannot time-stamp is refused; the TSA's is listed.
    let err = inst
        .admin()
        .add_timestamping_authority(pb::TimestampingAuthorityRequest {
            name: "bsre".into(),
            url: url.clone(),
            cert: ca.cert_der().to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    inst.admin()
        .add_timestamping_authority(pb::TimestampingAuthorityRequest {
            name: "bsre".into(),
            url,
            cert: cert.clone(),
        })
        .await
        .unwrap();

    // A server configured to use it has its checkpoints stamped there.
    let mut node = inst.node(CONSUMER, &[CONSUMER_CLIENT]);
    inst.enrol(&node).await;
    node.config.timestamping_authority = "bsre".into();
    let server = SecurityServer::open(node, inst.clock.clone()).unwrap();
    server.conf().fetch().await.unwrap();
    record_and_checkpoint(&server, "started").await;
    server.evidence.timestamp_now().await.unwrap().unwrap();
    assert_eq!(server.timestamps.latest_size(), 1);

    // Removed from the configuration, it is no longer used.
    inst.admin()
        .remove_timestamping_authority(pb::TimestampingAuthorityRequest {
            name: "bsre".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.conf().fetch().await.unwrap();
    record_and_checkpoint(&server, "again").await;
    let err = server
        .evidence
        .timestamp_now()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no time-stamping authority 'bsre'"), "{err}");
    // Its earlier token is no longer trusted under the new configuration.
    let stamped = server.timestamps.first_covering(0).unwrap().unwrap();
    let digest = lintas_certs::sha256(&stamped.checkpoint.unwrap().checkpoint);
    let conf = server.conf().current().unwrap();
    let err = lintas_ss::timestamps::verify_token(&stamped.token, &digest, &conf).unwrap_err();
    assert!(
        err.contains("not one the global configuration lists"),
        "{err}"
    );
}
#[path = "adapters.rs"]
mod adapters;
mod asn;
mod backup;
mod binary;
mod console;
mod events;
mod ha;
mod hsm;
mod idempotency;
mod limits;
mod management;
mod monitoring;
mod ops;
mod packaging;
mod quotas;
mod renewal;
mod rest_services;
mod rotation;
mod streams;
mod strict_evidence;
mod subscribers;
