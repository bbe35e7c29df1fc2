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
pub(super) async fn curl(args: Vec<String>) -> (u16, HashMap<String, String>, Vec<u8>) {
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

async fn add_rest_service(net: &Network, code: &str, endpoint: &str) -> admin_pb::Service {
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
        .service
        .unwrap()
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
    assert!(said.rest && !said.described, "{said:?}");
    grant_rest(&net, "gema", CONSUMER_CLIENT, "", "").await;
    grant_rest(&net, "gema", OTHER_CLIENT, "GET", "/publik/*").await;
    net.provider.report_services().await.unwrap();
    let (status, _, body) = curl([client(CONSUMER_CLIENT), vec![url("gema/halo")]].concat()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // An idempotency key is not taken on a REST service's calls: refused, not ignored.
    let keyed = vec![
        "-H".to_owned(),
        "Idempotency-Key: k-1".to_owned(),
        url("gema/halo"),
    ];
    let (status, _, body) = curl([client(CONSUMER_CLIENT), keyed].concat()).await;
    let said = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{said}");
    assert!(
        said.contains("Idempotency-Key is taken on calls to gRPC services"),
        "{said}"
    );

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

    // Discovery: the REST service with the endpoints the client may call (its own grant
    // and its member's); the clients in XML by default, as X-Road lists them.
    net.consumer.conf().fetch().await.unwrap();
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
        json!([{"method": "GET", "path": "/anggota"}, {"method": "GET", "path": "/publik/*"}])
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

mod large_bodies;
mod openapi;

/// Many REST calls at once over the one connection between the two servers: each call's
/// request side ends with its opening, so the provider's server never finishes a stream
/// the consumer's still holds open (HTTP/2 resets those, and after 256 on a connection
/// the provider's server closed it, failing every call on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rest_calls_at_once_all_get_through() {
    use http_body_util::{BodyExt, Full};
    let net = network().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop_backend, stop) = stopper();
    let echo = axum::Router::new().route("/echo", axum::routing::post(|b: Bytes| async move { b }));
    tokio::spawn(async move {
        axum::serve(listener, echo)
            .with_graceful_shutdown(stop)
            .await
    });
    add_rest_service(&net, "gema", &backend_url).await;
    grant_rest(&net, "gema", CONSUMER_CLIENT, "", "").await;
    net.provider.report_services().await.unwrap();
    let url = format!("{}/r1/{PROVIDER_CLIENT}/gema/echo", net.consumer_url);
    let http: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    // The configuration listing the service may take a moment.
    for _ in 0..100 {
        let probe = hyper::Request::post(&url)
            .header("X-Road-Client", CONSUMER_CLIENT)
            .body(Full::new(Bytes::from_static(b"coba")))
            .unwrap();
        if http.request(probe).await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 64 callers, 40 calls each: 2,560 on the one connection between the servers.
    let tasks: Vec<_> = (0..64usize)
        .map(|c| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                for i in c * 40..(c + 1) * 40 {
                    let body = Bytes::from(format!("panggilan {i}"));
                    let request = hyper::Request::post(&url)
                        .header("X-Road-Client", CONSUMER_CLIENT)
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let answer = http.request(request).await.unwrap();
                    let status = answer.status();
                    let got = answer.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(status, 200, "call {i}: {}", String::from_utf8_lossy(&got));
                    assert_eq!(got, body, "call {i}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
