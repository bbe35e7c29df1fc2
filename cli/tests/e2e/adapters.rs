//! Legacy systems on the bus: a REST/JSON system behind the REST adapter, called through
//! two security servers by gRPC and by an X-Road-style REST client, with the catalogue's
//! descriptors and the discovery metaservices.

use lintas_examples::bpjs::v1::kepesertaan_client::KepesertaanClient;
use lintas_examples::bpjs::v1::{CekPesertaRequest, Peserta};
use lintas_examples::dapodik::v1::sekolah_client::SekolahClient;
use lintas_examples::dapodik::v1::{CariSiswaRequest, DaftarSiswaRequest, Siswa};
use lintas_examples::dukcapil::v1::kependudukan_client::KependudukanClient;
use lintas_examples::dukcapil::v1::{CariKeluargaRequest, CariNikRequest as DukcapilNik};
use lintas_proto::discovery::v1 as discovery_pb;
use lintas_proto::discovery::v1::discovery_client::DiscoveryClient;
use lintas_proto::ss::v1 as admin_pb;
use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
use serde_json::Value;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use super::binary::lintas_cmd;
use super::*;

const DUKCAPIL: &str = "dukcapil.v1.Kependudukan";
const BPJS: &str = "bpjs.v1.Kepesertaan";
const DAPODIK: &str = "dapodik.v1.Sekolah";

/// A PostgreSQL server of the test's own.
use lintas_testkit::pg;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The REST example's configuration, pointed at `base_url`, with `edit` applied.
pub(super) fn adapter_config(
    dir: &Path,
    base_url: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    example_config(dir, "dukcapil-rest.toml", base_url, edit)
}

/// An example adapter configuration (`examples/adapters/NAME`) listening on an OS-chosen
/// port, with its backend at `backend` and `edit` applied.
pub(super) fn example_config(
    dir: &Path,
    name: &str,
    backend: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let text = std::fs::read_to_string(examples_dir().join("adapters").join(name))
        .unwrap()
        .replace("http://127.0.0.1:8081", backend)
        .replace("http://127.0.0.1:8082", backend)
        .replace("127.0.0.1:7101", "127.0.0.1:0")
        .replace("127.0.0.1:7102", "127.0.0.1:0")
        .replace("127.0.0.1:7103", "127.0.0.1:0")
        .replace("127.0.0.1:7105", "127.0.0.1:0")
        .replace("127.0.0.1:7195", "127.0.0.1:0")
        .replace("127.0.0.1:7191", "127.0.0.1:0")
        .replace("127.0.0.1:7192", "127.0.0.1:0")
        .replace("127.0.0.1:7193", "127.0.0.1:0")
        .replace(
            "[\"../proto\"]",
            &format!("[{:?}]", examples_dir().join("proto").display().to_string()),
        );
    let path = dir.join(format!("adapter-{}.toml", rand_suffix()));
    std::fs::write(&path, edit(text)).unwrap();
    path
}

pub(super) fn load_adapter(
    path: &Path,
) -> Result<(lintas_adapter::Adapter, Arc<dyn lintas_adapter::Backend>), String> {
    let adapter = lintas_adapter::load(path).map_err(|e| e.to_string())?;
    let backend = match &adapter.backend {
        lintas_adapter::BackendSection::Rest(t) => lintas_adapter_rest::build(&adapter, t.clone()),
        lintas_adapter::BackendSection::Soap(t) => lintas_adapter_soap::build(&adapter, t.clone()),
        lintas_adapter::BackendSection::Sql(t) => lintas_adapter_sql::build(&adapter, t.clone()),
    }
    .map_err(|e| e.to_string())?;
    Ok((adapter, backend))
}

/// Serves the adapter configured at `path`; returns its endpoint URL.
pub(super) async fn serve_adapter(
    path: &Path,
    stops: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) -> String {
    let (adapter, backend) = load_adapter(path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, stop) = stopper();
    stops.push(tx);
    let listeners = lintas_adapter::Listeners {
        grpc: listener,
        ops: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    tokio::spawn(async move { lintas_adapter::serve(listeners, &adapter, backend, stop).await });
    url
}

/// Adds `service` at `endpoint` on the provider's server as its administrator would
/// (descriptors by reflection), grants it to the consumer's client, and publishes it.
pub(super) async fn publish(net: &Network, service: &str, endpoint: &str) -> Vec<String> {
    let admin = net.provider.admin();
    let reply = admin
        .add_service(Request::new(admin_pb::Service {
            provider: PROVIDER_CLIENT.into(),
            service: service.into(),
            endpoint: endpoint.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap()
        .methods;
    let granted = SecurityServerAdmin::grant(
        &admin,
        Request::new(admin_pb::Grant {
            provider: PROVIDER_CLIENT.into(),
            service: service.into(),
            method: String::new(),
            subject: CONSUMER_CLIENT.into(),
            path: String::new(),
        }),
    )
    .await;
    // Publishing a new endpoint for a service already granted keeps the grant.
    if let Err(e) = granted {
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    }
    let serial = net.provider.report_services().await.unwrap();
    let conf = net.consumer.conf().fetch().await.unwrap();
    assert!(conf.serial() >= serial);
    reply
}

/// An HTTP/1.1 exchange over a bare TCP connection: status, headers (lower-case
/// names) and body.
pub(super) async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, std::collections::HashMap<String, String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect::<std::collections::HashMap<_, _>>();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn dukcapil_nik(
    net: &Network,
    nik: &str,
) -> Result<lintas_examples::dukcapil::v1::Penduduk, Status> {
    let mut req = Request::new(DukcapilNik { nik: nik.into() });
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    KependudukanClient::new(plain_channel(&net.consumer_url).await?)
        .cari_nik(req)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_rest_system_behind_the_adapter_is_called_through_the_bus() {
    let mut net = network().await;
    let legacy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let legacy_url = format!("http://{}", legacy.local_addr().unwrap());
    let (stop_legacy, stop) = stopper();
    tokio::spawn(lintas_examples::dukcapil_rest::serve(legacy, stop));
    let config = adapter_config(&net.inst.root, &legacy_url, |t| t);
    let endpoint = serve_adapter(&config, &mut net._stops).await;
    let reply = publish(&net, DUKCAPIL, &endpoint).await;
    assert_eq!(reply, ["CariNik", "CariKeluarga"], "descriptors published");

    // gRPC through both security servers, to the adapter, to the REST API.
    let siti = dukcapil_nik(&net, NIK).await.unwrap();
    assert_eq!(siti.nama, "Siti Rahayu");
    assert_eq!(siti.no_kk, "3174010101090001");
    let mut req = Request::new(CariKeluargaRequest {
        no_kk: "3174010101090001".into(),
        aktif_saja: true,
    });
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    let family = KependudukanClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .cari_keluarga(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(family.kepala_keluarga, "Siti Rahayu");
    // The query string carried aktif_saja: the deceased grandfather is left out.
    assert_eq!(family.anggota.len(), 3);

    // The backend's errors reach the caller as the application's own.
    let unknown = dukcapil_nik(&net, "3174019999990009").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(source(&unknown), "provider-app");
    assert!(
        unknown.message().contains("HTTP 404 Not Found"),
        "{unknown:?}"
    );
    assert!(unknown.message().contains("tidak ditemukan"), "{unknown:?}");
    let malformed = dukcapil_nik(&net, "123").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("harus 16 digit"),
        "{malformed:?}"
    );

    // An X-Road REST client: plain HTTP/1.1, JSON in and out.
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let call_path = format!("/r1/{PROVIDER_CLIENT}/{DUKCAPIL}/CariNik");
    let (status, headers, body) = http(
        &address,
        "POST",
        &call_path,
        &[
            ("X-Road-Client", CONSUMER_CLIENT),
            ("X-Road-Id", "rest-call-1"),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"nik": "{NIK}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["nama"], "Siti Rahayu");
    assert_eq!(answer["tempat_lahir"], "Jakarta");
    assert_eq!(headers["x-road-request-id"], "rest-call-1");
    assert_eq!(headers["x-road-id"], "rest-call-1");
    assert_eq!(headers["x-road-client"], CONSUMER_CLIENT);
    assert_eq!(
        headers["x-road-service"],
        format!("{PROVIDER_CLIENT}/{DUKCAPIL}")
    );
    assert!(!headers.contains_key("x-road-error"));
    // The request hash is the SHA-256 of the signed request header both logs hold.
    net.logged_requests("rest-call-1", &headers["x-road-request-hash"]);

    // Errors: the service's own (no X-Road-Error), the caller's, the bus's.
    let (status, headers, body) = http(
        &address,
        "POST",
        &call_path,
        &[("X-Road-Client", CONSUMER_CLIENT)],
        r#"{"nik": "3174019999990009"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert!(!headers.contains_key("x-road-error"));
    let e = json(&body);
    assert_eq!(e["type"], "Service.NotFound");
    assert!(e["message"].as_str().unwrap().contains("tidak ditemukan"));
    assert!(!e["detail"].as_str().unwrap().is_empty(), "the message id");

    // (headers, path, body, HTTP status, error type, words in the message)
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        u16,
        &'a str,
        &'a str,
    );
    let cases: &[Case] = &[
        (
            &[],
            &call_path,
            r#"{"nik": "1"}"#,
            400,
            "Client.MissingHeader",
            "X-Road-Client header is required",
        ),
        (
            &[("X-Road-Client", "ID/GOV")],
            &call_path,
            "{}",
            400,
            "Client.InvalidClientIdentifier",
            "X-Road-Client",
        ),
        // A member-level client, not granted this service.
        (
            &[("X-Road-Client", "ID/GOV/KEMENSOS")],
            &call_path,
            &format!(r#"{{"nik": "{NIK}"}}"#),
            500,
            "Server.ServerProxy.AccessDenied",
            "ID/GOV/KEMENSOS is not allowed to call",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &call_path,
            r#"{"nik": 5"#,
            400,
            "Client.BadRequest",
            "not a valid dukcapil.v1.CariNikRequest",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &call_path,
            r#"{"nomor": "1"}"#,
            400,
            "Client.BadRequest",
            "nomor",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &format!("/r1/{PROVIDER_CLIENT}/{DUKCAPIL}/Hapus"),
            "{}",
            400,
            "Client.BadRequest",
            "has no method Hapus",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &format!("/r1/{PROVIDER_CLIENT}/tidak.Ada/CariNik"),
            "{}",
            500,
            "Server.ClientProxy.UnknownService",
            "lists no service tidak.Ada",
        ),
        (
            &[("X-Road-Client", OTHER_CLIENT)],
            &call_path,
            &format!(r#"{{"nik": "{NIK}"}}"#),
            500,
            "Server.ServerProxy.AccessDenied",
            "is not allowed to call",
        ),
    ];
    let too_long = "x".repeat(300);
    let too_large = format!(r#"{{"nik": "{}"}}"#, "1".repeat(5 * 1024 * 1024));
    let more: &[Case] = &[
        (
            &[("X-Road-Client", CONSUMER_CLIENT), ("X-Road-Id", "a b")],
            &call_path,
            "{}",
            400,
            "Client.InvalidMessageId",
            "X-Road-Id",
        ),
        (
            &[
                ("X-Road-Client", CONSUMER_CLIENT),
                ("X-Road-UserId", &too_long),
            ],
            &call_path,
            "{}",
            400,
            "Client.InvalidHttpHeader",
            "X-Road-UserId is longer than 256",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &format!("{call_path}?nik=1"),
            "{}",
            400,
            "Client.BadRequest",
            "query parameters are not mapped",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &format!("/r1/{PROVIDER_CLIENT}/listMethods"),
            "",
            400,
            "Client.BadRequest",
            "metaservices are called with GET",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &format!("/r1/{PROVIDER_CLIENT}/hapusSemua"),
            "",
            400,
            "Client.BadRequest",
            "no metaservice hapusSemua",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            "/r1/ID/GOV/KEMENDAGRI",
            "",
            400,
            "Client.BadRequest",
            "expected /r1/INSTANCE",
        ),
        (
            &[("X-Road-Client", CONSUMER_CLIENT)],
            &call_path,
            &too_large,
            413,
            "Client.BadRequest",
            "limit",
        ),
    ];
    for (headers, path, body, want_status, want_type, want_text) in cases.iter().chain(more) {
        let (status, got_headers, got) = http(&address, "POST", path, headers, body).await;
        let e = json(&got);
        assert_eq!(
            (status, e["type"].as_str().unwrap()),
            (*want_status, *want_type),
            "{got}"
        );
        assert_eq!(
            got_headers.get("x-road-error").map(String::as_str),
            Some(*want_type)
        );
        assert!(e["message"].as_str().unwrap().contains(want_text), "{got}");
    }

    // Discovery metaservices.
    let get = |path: String, client: &'static str| {
        let address = address.clone();
        async move {
            let (status, _, body) = http(
                &address,
                "GET",
                &path,
                &[("X-Road-Client", client), ("Accept", "application/json")],
                "",
            )
            .await;
            assert_eq!(status, 200, "{path}: {body}");
            json(&body)
        }
    };
    let clients = get("/listClients".into(), CONSUMER_CLIENT).await;
    let members = clients["member"].as_array().unwrap();
    assert!(members.iter().any(|m| m["id"]
        == serde_json::json!({"object_type": "SUBSYSTEM", "xroad_instance": "ID",
            "member_class": "GOV", "member_code": "KEMENDAGRI", "subsystem_code": "DUKCAPIL"})));
    assert!(
        members
            .iter()
            .any(|m| m["id"]["object_type"] == "MEMBER" && m["id"]["member_code"] == "KEMENSOS")
    );

    let listed = get(
        format!("/r1/{PROVIDER_CLIENT}/listMethods"),
        CONSUMER_CLIENT,
    )
    .await;
    let services: Vec<(String, Value)> = listed["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service_code"].as_str().unwrap().to_owned(),
                s["methods"].clone(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            (
                DUKCAPIL.to_owned(),
                serde_json::json!(["CariNik", "CariKeluarga"])
            ),
            // Added without descriptors: listed, its methods unknown.
            (SERVICE.to_owned(), serde_json::json!([])),
        ]
    );
    let allowed = get(
        format!("/r1/{PROVIDER_CLIENT}/allowedMethods"),
        CONSUMER_CLIENT,
    )
    .await;
    assert_eq!(allowed["service"].as_array().unwrap().len(), 2);
    assert_eq!(
        allowed["service"][0]["methods"],
        serde_json::json!(["CariNik", "CariKeluarga"])
    );
    // Granted one method by name only.
    assert_eq!(
        allowed["service"][1]["methods"],
        serde_json::json!(["CariNik"])
    );
    let none = get("/allowedMethods".into(), OTHER_CLIENT).await;
    assert_eq!(none["service"], serde_json::json!([]));
    // A whole service granted, without descriptors: listed, its methods unknown.
    net.provider
        .access
        .grant(Grant {
            method: None,
            subject: Subject::Client(ClientId::Subsystem(OTHER_CLIENT.parse().unwrap())),
            ..grant(None)
        })
        .unwrap();
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
    let whole = get("/allowedMethods".into(), OTHER_CLIENT).await;
    assert_eq!(whole["service"].as_array().unwrap().len(), 1, "{whole}");
    assert_eq!(whole["service"][0]["service_code"], SERVICE);
    assert_eq!(whole["service"][0]["methods"], serde_json::json!([]));

    let spec = get(
        format!("/r1/{PROVIDER_CLIENT}/getOpenAPI?serviceCode={DUKCAPIL}"),
        CONSUMER_CLIENT,
    )
    .await;
    assert_eq!(spec["openapi"], "3.0.3");
    let op = &spec["paths"][&call_path]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/dukcapil.v1.CariNikRequest"
    );
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["dukcapil.v1.Penduduk"]["properties"]["nik"]["type"],
        "string"
    );
    assert_eq!(
        schemas["dukcapil.v1.Keluarga"]["properties"]["anggota"]["type"],
        "array"
    );
    assert_eq!(
        schemas["dukcapil.v1.CariKeluargaRequest"]["properties"]["aktif_saja"]["type"],
        "boolean"
    );
    let (status, headers, _) = http(
        &address,
        "GET",
        &format!("/r1/{PROVIDER_CLIENT}/getOpenAPI?serviceCode={SERVICE}"),
        &[("X-Road-Client", CONSUMER_CLIENT)],
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-road-error"], "Client.ServiceNotDescribed");

    // A mapping whose answer does not fit the declared types.
    let mismatch = adapter_config(&net.inst.root, &legacy_url, |t| {
        t.replace("dukcapil/v1/kependudukan.proto", "uji.proto")
            .replace("dukcapil.v1.Kependudukan", "uji.v1.Salah")
            .replace(
                &format!("[{:?}]", examples_dir().join("proto").display().to_string()),
                "[\".\"]",
            )
            .replace("[rest.methods.CariKeluarga]\nverb = \"GET\"\npath = \"/api/v1/kk/{no_kk}\"\nresponse = \"data\"\n", "")
    });
    std::fs::write(
        net.inst.root.join("uji.proto"),
        "syntax = \"proto3\"; package uji.v1;\n\
         service Salah { rpc CariNik(Nik) returns (Orang); }\n\
         message Nik { string nik = 1; }\n\
         message Orang { string nik = 1; bool nama = 2; }\n",
    )
    .unwrap();
    let wrong = serve_adapter(&mismatch, &mut net._stops).await;
    publish(&net, "uji.v1.Salah", &wrong).await;
    let (status, headers, body) = http(
        &address,
        "POST",
        &format!("/r1/{PROVIDER_CLIENT}/uji.v1.Salah/CariNik"),
        &[("X-Road-Client", CONSUMER_CLIENT)],
        &format!(r#"{{"nik": "{NIK}"}}"#),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(!headers.contains_key("x-road-error"));
    let e = json(&body);
    assert_eq!(e["type"], "Service.Internal");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("the backend's answer does not fit uji.v1.Orang"),
        "{body}"
    );

    // Discovery over gRPC, and reflection listing exactly what each client may call.
    assert_eq!(
        reflected_services(
            plain_channel(&net.consumer_url).await.unwrap(),
            CONSUMER_CLIENT
        )
        .await,
        [DUKCAPIL, "uji.v1.Salah"]
    );
    assert!(
        reflected_services(
            plain_channel(&net.consumer_url).await.unwrap(),
            OTHER_CLIENT
        )
        .await
        .is_empty()
    );
    // Older clients ask by v1alpha and hear the same.
    {
        use tonic_reflection::pb::v1alpha as alpha;
        let mut r = Request::new(tokio_stream::iter([alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        }]));
        r.metadata_mut()
            .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
        let answer = alpha::server_reflection_client::ServerReflectionClient::new(
            plain_channel(&net.consumer_url).await.unwrap(),
        )
        .server_reflection_info(r)
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
        let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            answer.message_response
        else {
            panic!("{answer:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(names, [DUKCAPIL, "uji.v1.Salah"]);
    }
    let files = reflect(
        plain_channel(&net.consumer_url).await.unwrap(),
        CONSUMER_CLIENT,
        MessageRequest::FileContainingSymbol(format!("{DUKCAPIL}.CariNik")),
    )
    .await;
    let Some(MessageResponse::FileDescriptorResponse(r)) = files.message_response else {
        panic!("{files:?}")
    };
    let file =
        prost_types::FileDescriptorProto::decode(r.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.name(), "dukcapil/v1/kependudukan.proto");
    assert_eq!(file.service[0].method.len(), 2);
    let hidden = reflect(
        plain_channel(&net.consumer_url).await.unwrap(),
        OTHER_CLIENT,
        MessageRequest::FileContainingSymbol(DUKCAPIL.into()),
    )
    .await;
    assert!(
        matches!(
            hidden.message_response,
            Some(MessageResponse::ErrorResponse(_))
        ),
        "{hidden:?}"
    );

    let mut discovery = DiscoveryClient::new(plain_channel(&net.consumer_url).await.unwrap());
    // In pages of two: the first names the next, the second is the last.
    let page = |token: String| {
        let mut discovery = discovery.clone();
        async move {
            discovery
                .allowed_methods(with_client(discovery_pb::AllowedMethodsRequest {
                    provider: PROVIDER_CLIENT.into(),
                    page_size: 2,
                    page_token: token,
                }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = page(String::new()).await;
    assert_eq!(first.services.len(), 2);
    let second = page(first.next_page_token.clone()).await;
    assert!(second.next_page_token.is_empty());
    let listed: Vec<(&str, Vec<String>)> = first
        .services
        .iter()
        .chain(&second.services)
        .map(|s| (s.service.as_str(), s.methods.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            (
                DUKCAPIL,
                vec!["CariNik".to_owned(), "CariKeluarga".to_owned()]
            ),
            (SERVICE, vec!["CariNik".to_owned()]),
            ("uji.v1.Salah", vec!["CariNik".to_owned()]),
        ]
    );
    let clients = discovery
        .list_clients(with_client(discovery_pb::ListClientsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(clients.clients.iter().any(|c| c.id == PROVIDER_CLIENT));
    let set = discovery
        .get_service_descriptor(with_client(discovery_pb::ServiceDescriptorRequest {
            provider: PROVIDER_CLIENT.into(),
            service: DUKCAPIL.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .descriptor_set;
    let pool = prost_reflect::DescriptorPool::decode(set.as_slice()).unwrap();
    assert!(pool.get_message_by_name("dukcapil.v1.Keluarga").is_some());
    let err = discovery
        .list_services(Request::new(discovery_pb::ListServicesRequest {
            provider: PROVIDER_CLIENT.into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("lintas-client is required"),
        "{err:?}"
    );

    // The backend is down: the adapter says so, and the caller hears it.
    stop_legacy.send(()).unwrap();
    let down = loop {
        match dukcapil_nik(&net, NIK).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert_eq!(source(&down), "provider-app");
    assert!(down.message().contains("unreachable"), "{down:?}");
}

fn with_client<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    r
}

/// The registry's side of descriptor publication: sets are uploaded before the report
/// that names them, checked, and removed once no service names them.
#[tokio::test]
async fn the_registry_checks_published_descriptors_and_drops_unused_ones() {
    use lintas_proto::registry::v1 as reg;
    let mut net = network().await;
    // The provider's server is stopped: its own reports would race with the test's.
    let (stop, stopped) = net.provider_stop.take().unwrap();
    stop.send(()).unwrap();
    stopped.await.unwrap();
    let (cert, key) = (
        read_cert(&net.provider_paths.tls_cert()),
        lintas_certs::keys::read(&net.provider_paths.tls_key()).unwrap(),
    );
    let mut as_provider =
        reg::registration_client::RegistrationClient::new(net.inst.channel(Some((&cert, &key))));
    let mut upload =
        reg::catalogue_client::CatalogueClient::new(net.inst.channel(Some((&cert, &key))));
    let mut compiler = protox::Compiler::new([examples_dir().join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler
        .open_file("dukcapil/v1/kependudukan.proto")
        .unwrap();
    compiler.open_file("bpjs/v1/kepesertaan.proto").unwrap();
    // One set defining two services.
    let set = compiler.encode_file_descriptor_set();
    let hash = lintas_certs::sha256(&set).to_vec();
    let reported = |service: &str, hash: &[u8], subject: &str| reg::ReportedService {
        provider: PROVIDER_CLIENT.into(),
        service: service.into(),
        descriptor_sha256: hash.to_vec(),
        grants: vec![lintas_proto::globalconf::v1::AccessGrant {
            method: String::new(),
            subject: subject.into(),
            path: String::new(),
        }],
        rest: false,
        openapi_sha256: Vec::new(),
        large_messages: false,
        quotas: Vec::new(),
        topic: false,
    };
    let report = |service: &str, hash: &[u8], subject: &str| reg::ServiceReport {
        services: vec![reported(service, hash, subject)],
        maintenance: false,
    };

    // Named before it was uploaded: nothing changes, the set is asked for.
    let first = as_provider
        .report_services(report(DUKCAPIL, &hash, CONSUMER_CLIENT))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.missing_descriptors, std::slice::from_ref(&hash));
    assert_eq!(first.conf_serial, 0);

    // A set another server uploaded does not count for this one.
    let (their_cert, their_key) = (
        read_cert(&net.consumer_paths.tls_cert()),
        lintas_certs::keys::read(&net.consumer_paths.tls_key()).unwrap(),
    );
    reg::catalogue_client::CatalogueClient::new(net.inst.channel(Some((&their_cert, &their_key))))
        .upload_descriptor(reg::ServiceDescriptor {
            descriptor_set: set.clone(),
        })
        .await
        .unwrap();
    let still = as_provider
        .report_services(report(DUKCAPIL, &hash, CONSUMER_CLIENT))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.missing_descriptors, std::slice::from_ref(&hash));

    // Malformed sets are refused at upload; a set is refused for a service it does not define.
    let garbage = upload
        .upload_descriptor(reg::ServiceDescriptor {
            descriptor_set: b"not a descriptor set".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
    assert!(garbage.message().contains("descriptors:"), "{garbage:?}");
    let uploaded = upload
        .upload_descriptor(reg::ServiceDescriptor {
            descriptor_set: set.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(uploaded.sha256, hash);
    let wrong = as_provider
        .report_services(report("lain.v1.Layanan", &hash, CONSUMER_CLIENT))
        .await
        .unwrap_err();
    assert!(
        wrong.message().contains("do not define lain.v1.Layanan"),
        "{wrong:?}"
    );
    let bad_grant = as_provider
        .report_services(report(DUKCAPIL, &hash, "group:bukan kode"))
        .await
        .unwrap_err();
    assert!(
        bad_grant.message().contains("grant subject"),
        "{bad_grant:?}"
    );

    // Now it is accepted and served by hash to anyone.
    let serial = as_provider
        .report_services(report(DUKCAPIL, &hash, CONSUMER_CLIENT))
        .await
        .unwrap()
        .into_inner()
        .conf_serial;
    assert!(serial > 0);
    let mut public = reg::registration_client::RegistrationClient::new(net.inst.channel(None));
    let fetched = public
        .get_service_descriptor(reg::ServiceDescriptorRequest {
            sha256: hash.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.descriptor_set, set);
    let conf = net.consumer.conf().fetch().await.unwrap();
    let listed = conf
        .conf
        .services
        .iter()
        .find(|s| s.service == DUKCAPIL)
        .unwrap();
    assert_eq!(listed.descriptor_sha256, hash);
    assert_eq!(listed.grants[0].subject, CONSUMER_CLIENT);

    // Held while any service names it; gone once none does.
    as_provider
        .report_services(reg::ServiceReport {
            services: vec![
                reported(DUKCAPIL, &hash, CONSUMER_CLIENT),
                reported(BPJS, &hash, CONSUMER_CLIENT),
            ],
            maintenance: false,
        })
        .await
        .unwrap();
    as_provider
        .report_services(report(BPJS, &hash, CONSUMER_CLIENT))
        .await
        .unwrap();
    public
        .get_service_descriptor(reg::ServiceDescriptorRequest {
            sha256: hash.clone(),
        })
        .await
        .unwrap();
    // Once no service names it, it is gone.
    as_provider
        .report_services(reg::ServiceReport {
            services: vec![],
            maintenance: false,
        })
        .await
        .unwrap();
    let gone = public
        .get_service_descriptor(reg::ServiceDescriptorRequest { sha256: hash })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Only registered servers may upload.
    let mut anonymous = reg::catalogue_client::CatalogueClient::new(net.inst.channel(None));
    let refused = anonymous
        .upload_descriptor(reg::ServiceDescriptor {
            descriptor_set: set,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

async fn cek_peserta(net: &Network, nik: &str) -> Result<Peserta, Status> {
    let mut req = Request::new(CekPesertaRequest { nik: nik.into() });
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    KepesertaanClient::new(plain_channel(&net.consumer_url).await?)
        .cek_peserta(req)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_soap_service_behind_the_adapter_is_called_through_the_bus() {
    let mut net = network().await;
    let legacy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let legacy_url = format!("http://{}", legacy.local_addr().unwrap());
    let (stop_legacy, stop) = stopper();
    tokio::spawn(lintas_examples::bpjs_soap::serve(legacy, stop));
    let config = example_config(&net.inst.root, "bpjs-soap.toml", &legacy_url, |t| t);
    let endpoint = serve_adapter(&config, &mut net._stops).await;
    let reply = publish(&net, BPJS, &endpoint).await;
    assert_eq!(reply, ["CekPeserta"], "descriptors published");

    let siti = cek_peserta(&net, NIK).await.unwrap();
    assert_eq!(
        (
            siti.nama.as_str(),
            siti.status.as_str(),
            siti.kelas_rawat,
            siti.pbi
        ),
        ("Siti Rahayu", "AKTIF", 3, true)
    );
    assert_eq!(siti.faskes, "Puskesmas Duren Sawit");

    // A SOAP fault is the application's error, with the fault's own words.
    let unknown = cek_peserta(&net, "3174019999990009").await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert_eq!(source(&unknown), "provider-app");
    assert_eq!(
        unknown.message(),
        "SOAP fault soapenv:Client: NIK 3174019999990009 tidak terdaftar sebagai peserta JKN"
    );

    // An answer that does not fit the declared types, called by an X-Road REST client.
    std::fs::write(
        net.inst.root.join("ujisoap.proto"),
        "syntax = \"proto3\"; package uji.v1;\n\
         service SalahSoap { rpc CekPeserta(Nik) returns (Orang); }\n\
         message Nik { string nik = 1; }\n\
         message Orang { int32 nama = 3; }\n",
    )
    .unwrap();
    let mismatch = example_config(&net.inst.root, "bpjs-soap.toml", &legacy_url, |t| {
        t.replace("bpjs/v1/kepesertaan.proto", "ujisoap.proto")
            .replace("bpjs.v1.Kepesertaan", "uji.v1.SalahSoap")
            .replace(
                &format!("[{:?}]", examples_dir().join("proto").display().to_string()),
                "[\".\"]",
            )
    });
    let wrong = serve_adapter(&mismatch, &mut net._stops).await;
    publish(&net, "uji.v1.SalahSoap", &wrong).await;
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let (status, _, body) = http(
        &address,
        "POST",
        &format!("/r1/{PROVIDER_CLIENT}/uji.v1.SalahSoap/CekPeserta"),
        &[("X-Road-Client", CONSUMER_CLIENT)],
        &format!(r#"{{"nik": "{NIK}"}}"#),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        json(&body)["message"],
        "the backend's answer does not fit uji.v1.Orang: field nama: 'Siti Rahayu' is not a 32-bit integer"
    );

    stop_legacy.send(()).unwrap();
    let down = loop {
        match cek_peserta(&net, NIK).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().contains("unreachable"), "{down:?}");
}

async fn cari_siswa(net: &Network, nik: &str) -> Result<Siswa, Status> {
    let mut req = Request::new(CariSiswaRequest { nik: nik.into() });
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    SekolahClient::new(plain_channel(&net.consumer_url).await?)
        .cari_siswa(req)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_school_database_behind_the_sql_adapter_is_called_through_the_bus() {
    let mut net = network().await;
    // SQLite, embedded: the default.
    let db = net.inst.root.join("sekolah.db");
    lintas_examples::sekolah_db::create_sqlite(&db).unwrap();
    let sqlite = format!("sqlite:{}", db.display());
    let on = |database: String| move |t: String| t.replace("sqlite:../sql/sekolah.db", &database);
    let config = example_config(&net.inst.root, "dapodik-sql.toml", "", on(sqlite.clone()));
    let endpoint = serve_adapter(&config, &mut net._stops).await;
    let reply = publish(&net, DAPODIK, &endpoint).await;
    assert_eq!(reply, ["CariSiswa", "DaftarSiswa"], "descriptors published");

    let dewi = cari_siswa(&net, "3174014107120003").await.unwrap();
    assert_eq!(
        (
            dewi.nama.as_str(),
            dewi.sekolah.as_str(),
            dewi.tingkat,
            dewi.aktif
        ),
        ("Dewi Rahayu", "SMP Negeri 109 Jakarta", 8, true)
    );
    let mut req = Request::new(DaftarSiswaRequest {
        npsn: "20100002".into(),
        aktif_saja: true,
    });
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    let pupils = SekolahClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .daftar_siswa(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pupils.siswa.len(), 1, "the pupil who left is not listed");

    let unknown = cari_siswa(&net, "3174019999990009").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(source(&unknown), "provider-app");
    assert_eq!(unknown.message(), "the query found no row");

    // A column that does not fit its field, called by an X-Road REST client.
    let mismatch = example_config(&net.inst.root, "dapodik-sql.toml", "", |t| {
        on(sqlite.clone())(t).replacen("s.tingkat, s.aktif", "s.nama AS tingkat, s.aktif", 1)
    });
    let wrong = serve_adapter(&mismatch, &mut net._stops).await;
    publish(&net, DAPODIK, &wrong).await;
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let (status, _, body) = http(
        &address,
        "POST",
        &format!("/r1/{PROVIDER_CLIENT}/{DAPODIK}/CariSiswa"),
        &[("X-Road-Client", CONSUMER_CLIENT)],
        r#"{"nik": "3174014107120003"}"#,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        json(&body)["message"],
        "the database's answer does not fit dapodik.v1.Siswa: column tingkat: field tingkat: 'Dewi Rahayu' is not a 32-bit integer"
    );

    // PostgreSQL, the same example; then the database goes down.
    let server = pg::Server::start();
    server.load(lintas_examples::sekolah_db::SCRIPT).await;
    let postgres = example_config(&net.inst.root, "dapodik-sql.toml", "", |t| {
        on(server.url())(t).replace(
            "WHERE s.npsn = :npsn AND",
            "WHERE s.npsn = :npsn AND 1 / (length(:npsn) - 8) >= 0 AND",
        )
    });
    let endpoint = serve_adapter(&postgres, &mut net._stops).await;
    publish(&net, DAPODIK, &endpoint).await;
    let dewi = cari_siswa(&net, "3174014107120003").await.unwrap();
    assert_eq!(dewi.sekolah, "SMP Negeri 109 Jakarta");
    // An error the database raises reaches the caller as the application's.
    let (status, _, body) = http(
        &address,
        "POST",
        &format!("/r1/{PROVIDER_CLIENT}/{DAPODIK}/DaftarSiswa"),
        &[("X-Road-Client", CONSUMER_CLIENT)],
        r#"{"npsn": "20100002"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["type"], "Service.InvalidArgument");
    assert_eq!(json(&body)["message"], "database: division by zero");
    server.stop();
    let down = cari_siswa(&net, "3174014107120003").await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert_eq!(source(&down), "provider-app");
    server.resume();
    let back = cari_siswa(&net, "3174014107120003").await.unwrap();
    assert_eq!(back.nama, "Dewi Rahayu");
}

/// The examples' social-assistance consumer checks a household with all three legacy
/// systems: two over gRPC, the school database through the REST entry.
#[tokio::test]
async fn the_social_assistance_consumer_calls_all_three_legacy_systems() {
    let mut net = network().await;
    let root = net.inst.root.clone();
    let rest_api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let soap_api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest_url = format!("http://{}", rest_api.local_addr().unwrap());
    let soap_url = format!("http://{}", soap_api.local_addr().unwrap());
    let (stop_rest, stop) = stopper();
    tokio::spawn(lintas_examples::dukcapil_rest::serve(rest_api, stop));
    let (stop_soap, stop) = stopper();
    tokio::spawn(lintas_examples::bpjs_soap::serve(soap_api, stop));
    let db = root.join("sekolah.db");
    lintas_examples::sekolah_db::create_sqlite(&db).unwrap();
    let configs = [
        (
            DUKCAPIL,
            example_config(&root, "dukcapil-rest.toml", &rest_url, |t| t),
        ),
        (
            BPJS,
            example_config(&root, "bpjs-soap.toml", &soap_url, |t| t),
        ),
        (
            DAPODIK,
            example_config(&root, "dapodik-sql.toml", "", |t| {
                t.replace(
                    "sqlite:../sql/sekolah.db",
                    &format!("sqlite:{}", db.display()),
                )
            }),
        ),
    ];
    for (service, config) in &configs {
        let endpoint = serve_adapter(config, &mut net._stops).await;
        publish(&net, service, &endpoint).await;
    }

    let providers = lintas_examples::bansos::Providers {
        dukcapil: PROVIDER_CLIENT.into(),
        bpjs: PROVIDER_CLIENT.into(),
        dapodik: PROVIDER_CLIENT.into(),
    };
    let channel = plain_channel(&net.consumer_url).await.unwrap();
    let a =
        lintas_examples::bansos::assess(channel, CONSUMER_CLIENT, &providers, "3174010101090001")
            .await
            .unwrap();
    let found: Vec<(&str, bool, bool)> = a
        .members
        .iter()
        .map(|m| {
            (
                m.nama.as_str(),
                m.jkn.as_ref().is_some_and(|j| j.1),
                m.school.is_some(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("Siti Rahayu", true, false),
            ("Agus Rahayu", true, false),
            ("Dewi Rahayu", false, true),
        ]
    );
    assert!(a.eligible());
    assert_eq!(a.pupils(), 1);
    let text = a.to_string();
    assert!(text.contains("Dewi Rahayu (3174014107120003): no JKN membership; pupil at SMP Negeri 109 Jakarta, grade 8"), "{text}");
    // Each REST call was an exchange of its own, logged under the id it was answered with.
    let dewi = &a.members[2];
    assert!(
        Network::records(&net.consumer)
            .iter()
            .any(|r| r.message_id == dewi.school_message_id
                && r.method == format!("/{DAPODIK}/CariSiswa"))
    );

    // A legacy system that is down stops the assessment with the reason.
    stop_soap.send(()).unwrap();
    let err = loop {
        let channel = plain_channel(&net.consumer_url).await.unwrap();
        match lintas_examples::bansos::assess(
            channel,
            CONSUMER_CLIENT,
            &providers,
            "3174010101090001",
        )
        .await
        {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    assert!(
        err.starts_with("BPJS: ") && err.contains("unreachable"),
        "{err}"
    );
    drop(stop_rest);
}

#[test]
fn bad_adapter_mappings_are_refused_with_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "path = \"/api/v1/penduduk/{nik}\"",
            "path = \"/api/v1/penduduk/{nomor}\"",
            "[rest.methods.CariNik]: dukcapil.v1.CariNikRequest has no field 'nomor' (it has: nik)",
        ),
        (
            "verb = \"GET\"\npath = \"/api/v1/penduduk",
            "verbb = \"GET\"\npath = \"/api/v1/penduduk",
            "[rest.methods.CariNik]: unknown field `verbb`",
        ),
        (
            "[rest.methods.CariKeluarga]",
            "[rest.methods.CariKK]",
            "[rest.methods.CariKK]: service dukcapil.v1.Kependudukan has no method CariKK (it has: CariKeluarga, CariNik)",
        ),
        (
            "path = \"/api/v1/kk/{no_kk}\"",
            "path = \"/api/v1/kk/{no_kk\"",
            "'{' without '}'",
        ),
        (
            "verb = \"GET\"\npath = \"/api/v1/penduduk",
            "verb = \"FETCH\"\npath = \"/api/v1/penduduk",
            "verb 'FETCH' is not one of",
        ),
        (
            "response = \"data\"\n\n[rest.methods.CariKeluarga]",
            "body = \"*\"\n\n[rest.methods.CariKeluarga]",
            "a GET request carries no body",
        ),
        (
            "service = \"dukcapil.v1.Kependudukan\"",
            "service = \"dukcapil.v1.Tidak\"",
            "service dukcapil.v1.Tidak is not defined by dukcapil/v1/kependudukan.proto (it defines: dukcapil.v1.Kependudukan)",
        ),
        (
            "timeout_ms = 5000",
            "timeout_ms = 5000\nretries = 3",
            "[rest]: unknown field `retries`",
        ),
        (
            "base_url = \"http://127.0.0.1:9\"",
            "base_url = \"https://127.0.0.1:9\"",
            "an https:// backend needs ca_file",
        ),
        (
            "proto = \"dukcapil/v1/kependudukan.proto\"",
            "proto = \"dukcapil/v1/hilang.proto\"",
            "proto dukcapil/v1/hilang.proto",
        ),
    ];
    for (from, to, want) in cases {
        let path = adapter_config(dir.path(), "http://127.0.0.1:9", |t| {
            assert!(t.contains(from), "{from}");
            t.replacen(from, to, 1)
        });
        let err = load_adapter(&path).map(|_| ()).unwrap_err();
        assert!(err.contains(want), "{to}: {err}");
    }
    let soap_cases: &[(&str, &str, &str)] = &[
        (
            "operation = \"CekPesertaRequest\"",
            "operation = \"Cek Peserta\"",
            "[soap.methods.CekPeserta]: operation 'Cek Peserta' is not an XML element name",
        ),
        (
            "version = \"1.1\"",
            "version = \"1.3\"",
            "unknown variant `1.3`",
        ),
        (
            "namespace = \"http://bpjs-kesehatan.go.id/ws/kepesertaan\"\n",
            "",
            "missing field `namespace`",
        ),
        (
            "action = \"http",
            "actoin = \"http",
            "unknown field `actoin`",
        ),
        (
            "endpoint = \"http://127.0.0.1:9/ws/kepesertaan\"",
            "endpoint = \"/ws/kepesertaan\"",
            "must be an absolute http:// or https:// URL",
        ),
    ];
    for (from, to, want) in soap_cases {
        let path = example_config(dir.path(), "bpjs-soap.toml", "http://127.0.0.1:9", |t| {
            assert!(t.contains(from), "{from}");
            t.replacen(from, to, 1)
        });
        let err = load_adapter(&path).map(|_| ()).unwrap_err();
        assert!(err.contains(want), "{to}: {err}");
    }

    // A method without a mapping.
    let path = adapter_config(dir.path(), "http://127.0.0.1:9", |t| {
        t[..t.find("[rest.methods.CariKeluarga]").unwrap()].to_owned()
    });
    let err = load_adapter(&path).map(|_| ()).unwrap_err();
    assert!(
        err.contains("method dukcapil.v1.Kependudukan.CariKeluarga has no mapping: add a [rest.methods.CariKeluarga] table"),
        "{err}"
    );

    // The command checks the shipped examples as they stand.
    for (file, want) in [
        (
            "dukcapil-rest.toml",
            "dukcapil.v1.Kependudukan (methods: CariNik, CariKeluarga)",
        ),
        (
            "bpjs-soap.toml",
            "bpjs.v1.Kepesertaan (methods: CekPeserta)",
        ),
    ] {
        let out = run(lintas_cmd(&["adapter", "check", "--config"])
            .arg(examples_dir().join("adapters").join(file)));
        assert!(out.contains(want), "{out}");
    }
}
