//! Unary gRPC messages larger than one message between the servers: carried framed, in
//! signed chunks both ways, with the application's status; refused clearly over
//! `max_body_bytes`.

use lintas_transport::RawCodec;

use super::*;

/// The status a gRPC call of `path` with the raw message `body` is refused with, through
/// the consumer's server.
async fn refused(net: &Network, path: &str, id: &str, body: Vec<u8>) -> Status {
    let channel = plain_channel(&net.consumer_url).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let answer = grpc
        .unary(
            named(Bytes::from(body), id),
            path.parse().unwrap(),
            RawCodec,
        )
        .await;
    match answer {
        Ok(r) => panic!("{} bytes answered", r.into_inner().len()),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_unary_messages_cross_the_bus_in_signed_chunks_both_ways() {
    const LIMIT: u64 = 40 << 20;
    let net = network_edited(true, |c| c.max_body_bytes = LIMIT).await;
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", app.local_addr().unwrap());
    let (_stop, stopped) = stopper();
    tokio::spawn(lintas_examples::echo_server::serve(app, stopped));
    publish(&net, ECHO, endpoint, "echo/v1/echo.proto").await;

    // 24 MiB each way, through a generated client: every byte back.
    let size = 24 << 20;
    let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
    let mut echo = EchoClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let message = EchoMessage {
        payload: bytes.clone(),
    };
    let answer = echo.echo(named(message, "gema-besar")).await.unwrap();
    assert_eq!(
        answer.metadata().get("lintas-message-id").unwrap(),
        "gema-besar"
    );
    assert!(answer.into_inner().payload == bytes, "the echo differs");

    // A small message still travels whole on Exchange.Call.
    let answer = echo
        .echo(named(payload("kecil"), "gema-kecil"))
        .await
        .unwrap();
    assert_eq!(answer.into_inner().payload, b"kecil");

    // The application's own status comes back for a large message, as for a small one.
    let status = refused(&net, "/echo.v1.Echo/Tidak", "gema-tidak", vec![0; 5 << 20]).await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Over max_body_bytes: refused by its length, before its bytes are read.
    let too_large = vec![0; (LIMIT + 1) as usize];
    let status = refused(&net, "/echo.v1.Echo/Echo", "gema-raksasa", too_large).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_body_bytes"), "{status:?}");
    let logged = |server: &SecurityServer, id: &str, kind: RecordKind| {
        Network::records(server)
            .iter()
            .filter(|r| r.message_id == id && r.kind() == kind)
            .count()
    };
    assert_eq!(
        Network::records(&net.consumer)
            .iter()
            .filter(|r| r.message_id == "gema-raksasa")
            .count(),
        0
    );

    // The request in 25 chunks (24 MiB and the message's framing) and its end, the
    // answer in as many, each signed and logged on both sides; the small call in none.
    assert_eq!(
        logged(&net.consumer, "gema-besar", RecordKind::MessageSent),
        26
    );
    assert_eq!(
        logged(&net.provider, "gema-besar", RecordKind::MessageReceived),
        26
    );
    let answered = logged(&net.provider, "gema-besar", RecordKind::MessageSent);
    assert!(answered >= 24, "{answered}");
    assert_eq!(
        logged(&net.consumer, "gema-besar", RecordKind::MessageReceived),
        answered
    );
    assert_eq!(
        logged(&net.consumer, "gema-kecil", RecordKind::MessageSent),
        0
    );
    let said = net.verified_on_both("gema-besar").await;
    assert!(said.contains("travelled in chunks"), "{said}");
    assert!(said.contains("body in 25 signed chunks"), "{said}");
    net.verified_on_both("gema-tidak").await;

    // A small request with a large answer, to a service not declared to have large
    // messages: refused, saying how to declare it.
    let ask = |size: u32| CountRequest {
        count: 0,
        size,
        fail_at_end: false,
    };
    let refused = match echo.fill(named(ask(6 << 20), "isi-besar-ditolak")).await {
        Ok(r) => panic!("{} bytes answered", r.into_inner().payload.len()),
        Err(status) => status,
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--large-messages"),
        "{refused:?}"
    );

    // Declared: every unary call travels framed, and the answer in chunks.
    let admin = net.provider.admin();
    let mut service = admin
        .list_services(Request::new(admin_pb::ListRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .services
        .remove(0);
    service.large_messages = true;
    admin.add_service(Request::new(service)).await.unwrap();
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
    let size = 24 << 20;
    let filled = echo
        .fill(named(ask(size), "isi-besar"))
        .await
        .unwrap()
        .into_inner()
        .payload;
    assert_eq!(filled.len(), size as usize);
    assert!(
        filled
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8)
    );
    let answered = logged(&net.provider, "isi-besar", RecordKind::MessageSent);
    assert!(answered >= 24, "{answered}");
    let small = echo
        .echo(named(payload("kecil"), "gema-kecil-2"))
        .await
        .unwrap();
    assert_eq!(small.into_inner().payload, b"kecil");
    let framed = |id: &str| {
        Network::records(&net.consumer)
            .iter()
            .filter(|r| r.message_id == id && r.kind() == RecordKind::RequestSent)
            .map(|r| {
                ex::RequestHeader::decode(r.header.as_slice())
                    .unwrap()
                    .grpc_framed
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(framed("gema-kecil"), [false]);
    assert_eq!(framed("gema-kecil-2"), [true]);
    for id in ["isi-besar", "gema-kecil-2"] {
        net.verified_on_both(id).await;
    }
}
