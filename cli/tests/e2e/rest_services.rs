//! REST services passed through in X-Road's REST protocol: any method, path, query,
//! headers and body to a REST backend and its answer back, signed and logged, called
//! with curl as an X-Road REST client would.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use lintas_proto::ss::v1 as admin_pb;
use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
use serde_json::{Value, json};

use super::*;

/// A backend that answers `/base/status/CODE` with that status (302 with a
/// `Location`), and anything else under `/base` with what it received, as JSON, plus
/// headers the bus must pass back (`X-Backend`) or drop (`Server`, `X-Road-Error`).
async fn backend(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(code) = uri.path().strip_prefix("/base/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        let mut r = Response::new(Body::from(format!("status {code}")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        let h = r.headers_mut();
        h.insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
        if code == 302 {
            h.insert("location", "/base/moved".parse().unwrap());
        }
        return r;
    }
    let mut seen = serde_json::Map::new();
    for (name, value) in &headers {
        seen.insert(
            name.as_str().to_owned(),
            json!(String::from_utf8_lossy(value.as_bytes())),
        );
    }
    let answer = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": seen,
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = Response::new(Body::from(answer.to_string()));
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-backend", "yes".parse().unwrap());
    h.insert("server", "backend/1.0".parse().unwrap());
    h.insert("x-road-error", "Server.Forged".parse().unwrap());
    h.insert("x-road-id", "forged-id".parse().unwrap());
    r
}

/// Runs curl with `args` (after `-s -i --path-as-is`): status, headers with lower-case
/// names, body.
async fn curl(args: Vec<String>) -> (u16, HashMap<String, String>, Vec<u8>) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "-i", "--path-as-is", "--max-time", "30"])
            .args(&args)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "curl failed: {out:?}");
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head and a body");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

async fn add_rest_service(net: &Network, code: &str, endpoint: &str) -> String {
    net.provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: code.into(),
            endpoint: endpoint.into(),
            rest: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .message
}

async fn grant_rest(net: &Network, code: &str, subject: &str, method: &str, path: &str) {
    SecurityServerAdmin::grant(
        &net.provider.admin(),
        Request::new(admin_pb::Grant {
            provider: PROVIDER_CLIENT.into(),
            service: code.into(),
            method: method.into(),
            subject: subject.into(),
            path: path.into(),
        }),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_services_pass_any_request_through_signed_and_logged() {
    let net = network().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop_backend, stop) = stopper();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(backend))
            .with_graceful_shutdown(stop)
            .await
    });
    let consumer = net.consumer_url.clone();
    let url = |rest: &str| format!("{consumer}/r1/{PROVIDER_CLIENT}/{rest}");
    let client = |c: &str| vec!["-H".to_owned(), format!("X-Road-Client: {c}")];

    // Published a moment ago, and called at once: the consumer's server fetches the
    // configuration out of turn for a service it does not know yet.
    let said = add_rest_service(&net, "gema", &format!("{backend_url}/base")).await;
    assert!(said.contains("consumers call /r1/"), "{said}");
    grant_rest(&net, "gema", CONSUMER_CLIENT, "", "").await;
    grant_rest(&net, "gema", OTHER_CLIENT, "GET", "/publik/*").await;
    net.provider.report_services().await.unwrap();
    let (status, _, body) = curl([client(CONSUMER_CLIENT), vec![url("gema/halo")]].concat()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Any method, path, query, headers and body; the backend sees them as sent, with the
    // bus's X-Road headers, and without the per-hop ones.
    let (status, headers, body) = curl(
        [
            client(CONSUMER_CLIENT),
            [
                "-X",
                "PUT",
                "-H",
                "X-Road-Id: rest-pass-1",
                "-H",
                "X-Road-UserId: ID1234567890",
                "-H",
                "X-Road-Issue: kasus-7",
                "-H",
                "X-Road-Represented-Party: GOV/KEMENKES",
                "-H",
                "Authorization: Bearer rahasia",
                "-H",
                "Content-Type: text/plain; charset=iso-8859-1",
                "-H",
                "X-Kontrak: satu",
                "-H",
                "X-Road-Request-Hash: palsu",
                "--data-binary",
                "isi \u{1}\u{2} badan",
            ]
            .map(str::to_owned)
            .to_vec(),
            vec![url("gema/a%20b/c/?x=1&y=dua&x=3")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = json_of(&body);
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/base/a%20b/c/");
    assert_eq!(seen["query"], "x=1&y=dua&x=3");
    assert_eq!(seen["body"], "isi \u{1}\u{2} badan");
    let sent = &seen["headers"];
    assert_eq!(sent["authorization"], "Bearer rahasia");
    assert_eq!(sent["content-type"], "text/plain; charset=iso-8859-1");
    assert_eq!(sent["x-kontrak"], "satu");
    assert_eq!(sent["x-road-client"], CONSUMER_CLIENT);
    assert_eq!(sent["x-road-service"], format!("{PROVIDER_CLIENT}/gema"));
    assert_eq!(sent["x-road-id"], "rest-pass-1");
    assert_eq!(sent["x-road-userid"], "ID1234567890");
    assert_eq!(sent["x-road-issue"], "kasus-7");
    assert_eq!(sent["x-road-represented-party"], "GOV/KEMENKES");
    assert!(sent.get("user-agent").is_none(), "{sent}");
    assert_eq!(sent["x-road-request-hash"], headers["x-road-request-hash"]);
    // The answer: the backend's headers, the bus's X-Road headers, none forged.
    assert_eq!(headers["x-backend"], "yes");
    assert_eq!(headers["content-type"], "application/json");
    assert!(!headers.contains_key("server"), "{headers:?}");
    assert!(!headers.contains_key("x-road-error"), "{headers:?}");
    assert_eq!(headers["x-road-id"], "rest-pass-1");
    assert_eq!(headers["x-road-client"], CONSUMER_CLIENT);
    assert_eq!(headers["x-road-service"], format!("{PROVIDER_CLIENT}/gema"));

    // Signed and logged on both sides: the request line, the headers and the body's
    // hash are in the signed header; the answer's status too.
    for h in net.logged_requests("rest-pass-1", &headers["x-road-request-hash"]) {
        assert_eq!(h.method, "/gema/PUT");
        assert_eq!(h.represented_party, "GOV/KEMENKES");
        let rest = h.rest.unwrap();
        assert_eq!(
            (rest.verb.as_str(), rest.path.as_str()),
            ("PUT", "/a%20b/c/")
        );
        assert_eq!(rest.query, "x=1&y=dua&x=3");
        // The credential is signed as a commitment: its value is in no record.
        let authorization = rest
            .headers
            .iter()
            .find(|h| h.name == "authorization")
            .unwrap();
        assert!(authorization.value.is_empty());
        assert_eq!(authorization.value_commitment.len(), 32);
    }
    for server in [&net.consumer, &net.provider] {
        for r in Network::records(server) {
            let bytes = prost::Message::encode_to_vec(&r);
            assert!(
                !bytes.windows(7).any(|w| w == b"rahasia"),
                "a record holds the credential"
            );
        }
    }
    let q = lintas_proto::ss::v1::EvidenceQuery {
        message_id: "rest-pass-1".into(),
        ..Default::default()
    };
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let c = lintas_audit::verify(&net.consumer.evidence.export(&q).await.unwrap(), &anchor);
    let p = lintas_audit::verify(&net.provider.evidence.export(&q).await.unwrap(), &anchor);
    assert!(
        c.verified && p.verified,
        "{:#?} {:#?}",
        c.failures,
        p.failures
    );
    assert!(lintas_audit::cross_check(&c, &p).failures.is_empty());
    // The auditor reads the request line and the status the provider signed.
    let said = c.proven.join("\n");
    assert!(
        said.contains("requested PUT /a%20b/c/?x=1&y=dua&x=3 of REST service gema (headers "),
        "{said}"
    );
    assert!(said.contains("authorization"), "{said}");
    assert!(
        said.contains("answered that request with HTTP status 200"),
        "{said}"
    );

    // A member-level client (the member that owns the consumer's server), as X-Road
    // has them: granted as a member, named without a subsystem.
    grant_rest(&net, "gema", "ID/GOV/KEMENSOS", "GET", "/anggota").await;
    net.provider.report_services().await.unwrap();
    let (status, _, body) =
        curl([client("ID/GOV/KEMENSOS"), vec![url("gema/anggota")]].concat()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json_of(&body)["headers"]["x-road-client"],
        "ID/GOV/KEMENSOS"
    );
    // Another member does not call through this server.
    let (status, headers, body) =
        curl([client("ID/GOV/KEMENDAGRI"), vec![url("gema/anggota")]].concat()).await;
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["x-road-error"], "Server.ClientProxy.UnknownMember");

    // The backend's statuses and bodies come back as they are, redirects unfollowed.
    for code in [201, 302, 404, 405, 500, 503] {
        let (status, headers, body) = curl(
            [
                client(CONSUMER_CLIENT),
                vec![url(&format!("gema/status/{code}"))],
            ]
            .concat(),
        )
        .await;
        assert_eq!(status, code);
        assert_eq!(body, format!("status {code}").as_bytes());
        assert!(!headers.contains_key("x-road-error"), "{code}: {headers:?}");
        if code == 302 {
            assert_eq!(headers["location"], "/base/moved");
        }
    }

    // Access by method and path pattern; paths that could mean another path are refused.
    let other = |rest: &str, extra: &[&str]| {
        let mut args = client(OTHER_CLIENT);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url(rest));
        curl(args)
    };
    let (status, _, _) = other("gema/publik/berita", &[]).await;
    assert_eq!(status, 200);
    // (path, extra curl arguments, HTTP status, X-Road-Error, words in the message)
    let refused: &[(&str, &[&str], u16, &str, &str)] = &[
        (
            "gema/publik/a/b",
            &[],
            500,
            "Server.ServerProxy.AccessDenied",
            "is not allowed to call GET /publik/a/b",
        ),
        (
            "gema/rahasia",
            &[],
            500,
            "Server.ServerProxy.AccessDenied",
            "not allowed",
        ),
        (
            "gema/publik/berita",
            &["-X", "DELETE"],
            500,
            "Server.ServerProxy.AccessDenied",
            "DELETE",
        ),
        (
            "gema/publik/../rahasia",
            &[],
            400,
            "Client.BadRequest",
            "dot segments",
        ),
        (
            "gema/publik/%2e%2e/rahasia",
            &[],
            400,
            "Client.BadRequest",
            "dot segments",
        ),
        (
            "gema/publik/a%2Fb",
            &[],
            400,
            "Client.BadRequest",
            "encoded '/'",
        ),
        (
            "tiada/x",
            &[],
            500,
            "Server.ClientProxy.UnknownService",
            "lists no service tiada",
        ),
        (
            "gema/x",
            &["-H", "X-Road-Represented-Party: a/b/c"],
            400,
            "Client.InvalidRepresentedParty",
            "too many parts",
        ),
        (
            "gema/x",
            &["-H", "X-Road-Security-Server: ID/GOV/KEMENDAGRI/SS9"],
            500,
            "Server.ClientProxy.InvalidSecurityServer",
            "does not host",
        ),
    ];
    for (path, extra, want_status, want_error, words) in refused {
        let (status, headers, body) = other(path, extra).await;
        let e = json_of(&body);
        assert_eq!(
            (status, e["type"].as_str().unwrap()),
            (*want_status, *want_error),
            "{path}: {e}"
        );
        assert_eq!(headers["x-road-error"], *want_error, "{path}");
        assert!(
            e["message"].as_str().unwrap().contains(words),
            "{path}: {e}"
        );
    }
    // Naming the provider's server in X-Road-Security-Server is honoured.
    let (status, _, _) = other(
        "gema/publik/x",
        &["-H", &format!("X-Road-Security-Server: {PROVIDER}")],
    )
    .await;
    assert_eq!(status, 200);
    // Errors in XML when the client asks for it.
    let (status, headers, body) = other("gema/rahasia", &["-H", "Accept: application/xml"]).await;
    assert_eq!(status, 500);
    assert!(
        headers["content-type"].starts_with("application/xml"),
        "{headers:?}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("<error><type>Server.ServerProxy.AccessDenied</type><message>"),
        "{text}"
    );
    // A path that is neither REST nor gRPC: an X-Road error, not a gRPC status.
    let (status, headers, _) = curl(vec![format!("{consumer}/r2/{PROVIDER_CLIENT}/gema")]).await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-road-error"], "Client.BadRequest");

    // Discovery: the REST service with the endpoints the client may call; the clients
    // in XML by default, as X-Road lists them.
    let (_, _, body) = curl(
        [
            client(OTHER_CLIENT),
            vec![
                url("allowedMethods"),
                "-H".into(),
                "Accept: application/json".into(),
            ],
        ]
        .concat(),
    )
    .await;
    let allowed = json_of(&body);
    let gema = allowed["service"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service_code"] == "gema")
        .unwrap_or_else(|| panic!("{allowed}"));
    assert_eq!(gema["service_type"], "REST");
    assert_eq!(
        gema["endpoint_list"],
        json!([{"method": "GET", "path": "/publik/*"}])
    );
    let (status, headers, body) = curl(vec![format!("{consumer}/listClients")]).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"].starts_with("text/xml"),
        "{headers:?}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("<ns2:clientList xmlns:ns1=\"http://x-road.eu/xsd/identifiers\""),
        "{text}"
    );
    assert!(
        text.contains("<ns2:id ns1:objectType=\"SUBSYSTEM\"><ns1:xRoadInstance>ID</ns1:xRoadInstance><ns1:memberClass>GOV</ns1:memberClass><ns1:memberCode>KEMENDAGRI</ns1:memberCode><ns1:subsystemCode>DUKCAPIL</ns1:subsystemCode></ns2:id>"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dukcapil_api_is_called_as_an_x_road_rest_service_with_query_parameters() {
    let net = network().await;
    let legacy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let legacy_url = format!("http://{}", legacy.local_addr().unwrap());
    let (_stop_legacy, stop) = stopper();
    tokio::spawn(lintas_examples::dukcapil_rest::serve(legacy, stop));
    add_rest_service(&net, "penduduk", &format!("{legacy_url}/api/v1")).await;
    grant_rest(&net, "penduduk", CONSUMER_CLIENT, "GET", "/penduduk").await;
    grant_rest(&net, "penduduk", CONSUMER_CLIENT, "GET", "/penduduk/*").await;
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
    let call = |path_and_query: &str| {
        curl(vec![
            "-H".into(),
            format!("X-Road-Client: {CONSUMER_CLIENT}"),
            format!(
                "{}/r1/{PROVIDER_CLIENT}/penduduk{path_and_query}",
                net.consumer_url
            ),
        ])
    };
    let (status, _, body) = call(&format!("/penduduk?nik={NIK}")).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["data"]["nama"], "Siti Rahayu");
    let (status, _, body) = call(&format!("/penduduk/{NIK}")).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["data"]["tempat_lahir"], "Jakarta");
    // The backend's own refusals, unchanged.
    let (status, headers, body) = call("/penduduk?nik=123").await;
    assert_eq!(status, 400);
    assert!(!headers.contains_key("x-road-error"));
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("harus 16 digit")
    );
    // Not granted: the family card.
    let (status, headers, _) = call("/kk/3174010101090001").await;
    assert_eq!(status, 500);
    assert_eq!(headers["x-road-error"], "Server.ServerProxy.AccessDenied");
}

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
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    for id in ["berkas-unggah", "berkas-unduh", "berkas-kecil"] {
        let q = admin_pb::EvidenceQuery {
            message_id: id.into(),
            ..Default::default()
        };
        let c = lintas_audit::verify(&net.consumer.evidence.export(&q).await.unwrap(), &anchor);
        let p = lintas_audit::verify(&net.provider.evidence.export(&q).await.unwrap(), &anchor);
        assert!(c.verified, "{id}: {:#?}", c.failures);
        assert!(p.verified, "{id}: {:#?}", p.failures);
        assert!(
            lintas_audit::cross_check(&c, &p).failures.is_empty(),
            "{id}"
        );
        let said = c.proven.join("\n");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_backend_published_from_its_openapi_document_is_called_over_grpc_too() {
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage};
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    const CODE: &str = "dukcapil.Kependudukan";

    let net = network().await;
    let legacy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let legacy_url = format!("http://{}", legacy.local_addr().unwrap());
    let (_stop_legacy, stop) = stopper();
    tokio::spawn(lintas_examples::dukcapil_rest::serve(legacy, stop));
    // Published with its OpenAPI document, no .proto: the methods are generated.
    let said = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: CODE.into(),
            endpoint: format!("{legacy_url}/api/v1"),
            rest: true,
            openapi: include_bytes!("../../../examples/openapi/dukcapil.yaml").to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .message;
    assert!(
        said.contains("CariPenduduk, AmbilPenduduk, AmbilKartuKeluarga"),
        "{said}"
    );
    // Or fetched from the backend, which serves it.
    let fetched = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: "dukcapil.Salinan".into(),
            endpoint: format!("{legacy_url}/api/v1"),
            rest: true,
            openapi_path: "/openapi.yaml".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .message;
    assert!(fetched.contains("CariPenduduk"), "{fetched}");
    let missing = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: "dukcapil.Hilang".into(),
            endpoint: format!("{legacy_url}/api/v1"),
            rest: true,
            openapi_path: "/tidak-ada.yaml".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(missing.message().contains("HTTP 404"), "{missing:?}");
    // A document that cannot be read is refused, saying why.
    let refused = net
        .provider
        .admin()
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: "rusak".into(),
            endpoint: legacy_url.clone(),
            rest: true,
            openapi: b"swagger: '2.0'".to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(refused.message().contains("OpenAPI 3.0"), "{refused:?}");
    // Access by HTTP method and path, as for any REST service: not the family card.
    grant_rest(&net, CODE, CONSUMER_CLIENT, "GET", "/penduduk").await;
    grant_rest(&net, CODE, CONSUMER_CLIENT, "GET", "/penduduk/*").await;
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();

    // A gRPC client learns the service by reflection, as grpcurl does, and calls it.
    let channel = plain_channel(&net.consumer_url).await.unwrap();
    assert!(
        reflected_services(channel.clone(), CONSUMER_CLIENT)
            .await
            .contains(&CODE.to_owned())
    );
    let answer = reflect(
        channel.clone(),
        CONSUMER_CLIENT,
        MessageRequest::FileContainingSymbol(CODE.into()),
    )
    .await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("{answer:?}")
    };
    let set = prost_types::FileDescriptorSet {
        file: files
            .file_descriptor_proto
            .iter()
            .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()).unwrap())
            .collect(),
    };
    let pool = DescriptorPool::from_file_descriptor_set(set).unwrap();
    let service = pool.get_service_by_name(CODE).unwrap();
    let call = |method: &'static str, request: serde_json::Value| {
        let m = service.methods().find(|m| m.name() == method).unwrap();
        let body = DynamicMessage::deserialize(m.input(), request)
            .unwrap()
            .encode_to_vec();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.unwrap();
            let mut r = Request::new(Bytes::from(body));
            r.metadata_mut()
                .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
            r.metadata_mut()
                .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
            let path = format!("/{CODE}/{method}").parse().unwrap();
            grpc.unary(r, path, lintas_transport::RawCodec)
                .await
                .map(|answer| DynamicMessage::decode(m.output(), answer.into_inner()).unwrap())
        }
    };
    let nama = |answer: &DynamicMessage| {
        let data = answer.get_field_by_name("data").unwrap();
        let nama = data
            .as_message()
            .unwrap()
            .get_field_by_name("nama")
            .unwrap();
        nama.as_str().unwrap().to_owned()
    };
    let by_query = call("CariPenduduk", json!({"nik": NIK})).await.unwrap();
    assert_eq!(nama(&by_query), "Siti Rahayu");
    let by_path = call("AmbilPenduduk", json!({"nik": NIK})).await.unwrap();
    assert_eq!(nama(&by_path), "Siti Rahayu");
    // The backend's HTTP errors are gRPC statuses, its message passed on.
    let missing = call("AmbilPenduduk", json!({"nik": "3174000000000000"}))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    assert!(missing.message().contains("tidak ditemukan"), "{missing:?}");
    let denied = call("AmbilKartuKeluarga", json!({"no_kk": "3174010101090001"}))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // The same backend through the REST entry, and both logs hold the REST request the
    // gRPC call became.
    let (status, _, body) = curl(vec![
        "-H".into(),
        format!("X-Road-Client: {CONSUMER_CLIENT}"),
        format!(
            "{}/r1/{PROVIDER_CLIENT}/{CODE}/penduduk?nik={NIK}",
            net.consumer_url
        ),
    ])
    .await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["data"]["nama"], "Siti Rahayu");
    // getOpenAPI answers the document the provider published, byte for byte.
    let (status, headers, body) = curl(vec![
        "-H".into(),
        format!("X-Road-Client: {CONSUMER_CLIENT}"),
        format!(
            "{}/r1/{PROVIDER_CLIENT}/getOpenAPI?serviceCode={CODE}",
            net.consumer_url
        ),
    ])
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "text/yaml");
    assert_eq!(
        body,
        include_bytes!("../../../examples/openapi/dukcapil.yaml")
    );
    let logged = Network::records(&net.provider)
        .iter()
        .filter(|r| r.kind() == RecordKind::RequestReceived && r.method == format!("/{CODE}/GET"))
        .count();
    assert_eq!(
        logged, 4,
        "three gRPC calls that reached the provider and one REST call"
    );
}
