//! REST bodies larger than a chunk, up and down, with curl: every byte arrives, each
//! chunk is signed and logged on both sides, and the evidence verifies.

use super::*;

/// A backend of files: `POST /files` answers the SHA-256 and length of what it received;
/// `GET /files/N` answers N bytes (byte i is i mod 251), streamed without a length.
fn files_backend() -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/files",
            post(|body: Bytes| async move {
                json!({
                    "sha256": lintas_certs::hex(&lintas_certs::sha256(&body)),
                    "len": body.len(),
                })
                .to_string()
            }),
        )
        .route(
            "/files/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<usize>| async move {
                    let parts = (0..n).step_by(64 * 1024).map(move |start| {
                        let end = (start + 64 * 1024).min(n);
                        Ok::<_, std::io::Error>(Bytes::from(
                            (start..end).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
                        ))
                    });
                    let mut r = Response::new(Body::from_stream(tokio_stream::iter(parts)));
                    r.headers_mut()
                        .insert("x-backend", "files".parse().unwrap());
                    r
                },
            ),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_cross_the_bus_in_signed_chunks_both_ways() {
    const LIMIT: u64 = 40 << 20;
    let net = network_edited(true, |c| c.max_body_bytes = LIMIT).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop_backend, stop) = stopper();
    tokio::spawn(async move {
        axum::serve(listener, files_backend())
            .with_graceful_shutdown(stop)
            .await
    });
    add_rest_service(&net, "berkas", &backend_url).await;
    grant_rest(&net, "berkas", CONSUMER_CLIENT, "", "").await;
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
    let url = |path: &str| format!("{}/r1/{PROVIDER_CLIENT}/berkas{path}", net.consumer_url);
    let named = |id: &str| {
        vec![
            "-H".to_owned(),
            format!("X-Road-Client: {CONSUMER_CLIENT}"),
            "-H".to_owned(),
            format!("X-Road-Id: {id}"),
        ]
    };
    let dir = tempfile::tempdir().unwrap();

    // 24 MiB up: the backend receives every byte, in order.
    let size = 24 << 20;
    let upload: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
    let file = dir.path().join("unggah.bin");
    std::fs::write(&file, &upload).unwrap();
    let (status, _, body) = curl(
        [
            named("berkas-unggah"),
            vec![
                // No 100 Continue to wait for: its head would come first.
                "-H".into(),
                "Expect:".into(),
                "--data-binary".into(),
                format!("@{}", file.display()),
                url("/files"),
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let got = json_of(&body);
    assert_eq!(got["len"], size);
    assert_eq!(
        got["sha256"],
        lintas_certs::hex(&lintas_certs::sha256(&upload))
    );

    // 24 MiB down, streamed by the backend without a length: every byte, and the
    // backend's headers.
    let (status, headers, body) =
        curl([named("berkas-unduh"), vec![url(&format!("/files/{size}"))]].concat()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-backend"], "files");
    assert_eq!(body.len(), size);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

    // A small answer still travels whole, in the signed close.
    let (status, _, body) = curl([named("berkas-kecil"), vec![url("/files/10")]].concat()).await;
    assert_eq!((status, body.len()), (200, 10));

    // The metrics count the bytes each way, as they went.
    let (_, _, text) = super::adapters::http(&net.consumer_ops, "GET", "/metrics", &[], "").await;
    let bytes = |direction: &str| {
        super::ops::sample(
            &text,
            &format!(
                "lintas_exchange_message_bytes_total{{side=\"consumer\",service=\"berkas\",direction=\"{direction}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("{text}"))
    };
    assert!(bytes("out") >= size as f64, "{}", bytes("out"));
    assert!(bytes("in") >= size as f64, "{}", bytes("in"));

    // A backend that is down: the provider's server says so in its signed close, which
    // the consumer's server records as the answer (not as a failure of its own).
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    add_rest_service(&net, "mati", &closed_url).await;
    grant_rest(&net, "mati", CONSUMER_CLIENT, "", "").await;
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
    let (status, headers, _) = curl(
        [
            named("berkas-mati"),
            vec![format!("{}/r1/{PROVIDER_CLIENT}/mati/x", net.consumer_url)],
        ]
        .concat(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(headers["x-road-error"], "Server.ServerProxy.NetworkError");
    let kinds: Vec<RecordKind> = Network::records(&net.consumer)
        .iter()
        .filter(|r| r.message_id == "berkas-mati")
        .map(|r| r.kind())
        .collect();
    assert_eq!(
        kinds,
        [RecordKind::RequestSent, RecordKind::ResponseReceived]
    );

    // Over the limit: refused before the body is read.
    let big = dir.path().join("besar.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(LIMIT + 1)
        .unwrap();
    let (status, headers, body) = curl(
        [
            named("berkas-besar"),
            vec![
                "--data-binary".into(),
                format!("@{}", big.display()),
                url("/files"),
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["x-road-error"], "Client.BadRequest");
    assert!(String::from_utf8_lossy(&body).contains("max_body_bytes"));

    // Each chunk is signed and logged on both sides, and the evidence verifies, the
    // chunks chained and named by the close.
    let chunks = |server: &SecurityServer, id: &str, kind: RecordKind| {
        Network::records(server)
            .iter()
            .filter(|r| r.message_id == id && r.kind() == kind)
            .count()
    };
    // 24 chunks of 1 MiB and the end.
    assert_eq!(
        chunks(&net.consumer, "berkas-unggah", RecordKind::MessageSent),
        25
    );
    assert_eq!(
        chunks(&net.provider, "berkas-unggah", RecordKind::MessageReceived),
        25
    );
    assert!(chunks(&net.provider, "berkas-unduh", RecordKind::MessageSent) >= 24);
    assert_eq!(
        chunks(&net.provider, "berkas-unduh", RecordKind::MessageSent),
        chunks(&net.consumer, "berkas-unduh", RecordKind::MessageReceived)
    );
    assert_eq!(
        chunks(&net.consumer, "berkas-kecil", RecordKind::MessageReceived),
        0
    );
    for id in ["berkas-unggah", "berkas-unduh", "berkas-kecil"] {
        let said = net.verified_on_both(id).await;
        assert_eq!(
            said.contains("travelled in chunks"),
            id != "berkas-kecil",
            "{id}: {said}"
        );
        if id == "berkas-unggah" {
            assert!(said.contains("body in 24 signed chunks"), "{said}");
        }
    }
}
