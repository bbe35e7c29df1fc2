//! Operating a node: every daemon's metrics (checked by promtool), truthful readiness,
//! and listeners that survive floods of idle, slow and abusive connections.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::adapters::{adapter_config, http, load_adapter};
use super::*;

/// `promtool check metrics` over `text`; its complaint when it has one.
fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// GET `path` on an operations listener: status, headers and body.
pub(super) async fn ops_get(
    ops: &str,
    path: &str,
) -> (u16, std::collections::HashMap<String, String>, String) {
    http(ops, "GET", path, &[], "").await
}

/// The value of the series `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_daemon_serves_metrics_promtool_accepts_and_readiness_tells_the_truth() {
    let net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();

    // An adapter with its own operations listener.
    let config = adapter_config(&net.inst.root, "http://127.0.0.1:9", |t| t);
    let (adapter, backend) = load_adapter(&config).unwrap();
    let adapter_ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let adapter_ops_addr = adapter_ops.local_addr().unwrap().to_string();
    let listeners = lintas_adapter::Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ops: adapter_ops,
    };
    let (_adapter_stop, stop) = stopper();
    tokio::spawn(async move { lintas_adapter::serve(listeners, &adapter, backend, stop).await });

    let daemons = [
        ("registry", net.inst.ops.clone()),
        ("provider", net.provider_ops.clone()),
        ("consumer", net.consumer_ops.clone()),
        ("adapter", adapter_ops_addr),
    ];
    for (name, ops) in &daemons {
        let (status, headers, text) = http(ops, "GET", "/metrics", &[], "").await;
        assert_eq!(status, 200, "{name}");
        assert!(
            headers["content-type"].starts_with("text/plain; version=0.0.4"),
            "{name}: {headers:?}"
        );
        if let Err(complaint) = promtool_check(&text) {
            panic!("promtool refuses {name}'s metrics:\n{complaint}\n{text}");
        }
        assert_eq!(sample(&text, "lintas_ready"), Some(1.0), "{name}:\n{text}");
        let (status, _, body) = http(ops, "GET", "/readyz", &[], "").await;
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.starts_with("ready\n"), "{name}: {body}");
        let (status, _, body) = http(ops, "GET", "/healthz", &[], "").await;
        assert_eq!((status, body.as_str()), (200, "alive\n"), "{name}");
        let (_, headers, open) = http(
            ops,
            "GET",
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
            "",
        )
        .await;
        assert!(headers["content-type"].starts_with("application/openmetrics-text"));
        assert!(open.ends_with("# EOF\n"), "{name}");
    }

    let (_, _, registry) = http(&net.inst.ops, "GET", "/metrics", &[], "").await;
    for (series, at_least) in [
        ("lintas_registry_servers", 2.0),
        ("lintas_registry_members", 2.0),
        ("lintas_globalconf_serial", 1.0),
        ("lintas_globalconf_fetches_total", 1.0),
        (
            "lintas_grpc_requests_total{service=\"lintas.registry.v1.Registration\",method=\"Submit\",code=\"Ok\"}",
            2.0,
        ),
    ] {
        let value = sample(&registry, series).unwrap_or_else(|| panic!("{series}:\n{registry}"));
        assert!(value >= at_least, "{series} = {value}");
    }
    let (_, _, provider) = http(&net.provider_ops, "GET", "/metrics", &[], "").await;
    for series in [
        "lintas_globalconf_serial",
        "lintas_globalconf_expiry_seconds",
        "lintas_certificate_expiry_seconds{certificate=\"signing\"}",
        "lintas_certificate_expiry_seconds{certificate=\"tls\"}",
        "lintas_log_records",
        "lintas_connections_open{listener=\"provider\"}",
        "lintas_connections_accepted_total{listener=\"provider\"}",
        "lintas_health_component{component=\"configuration\",state=\"ready\"}",
    ] {
        assert!(sample(&provider, series).is_some(), "{series}:\n{provider}");
    }
    assert!(sample(&provider, "lintas_log_records").unwrap() >= 2.0);
    // The call is counted at both edges, by who called what and how it ended.
    let (_, _, consumer) = http(&net.consumer_ops, "GET", "/metrics", &[], "").await;
    for (side, text) in [("consumer", &consumer), ("provider", &provider)] {
        let series = format!(
            "lintas_exchanges_total{{side=\"{side}\",client=\"{CONSUMER_CLIENT}\",provider=\"{PROVIDER_CLIENT}\",service=\"{SERVICE}\",method=\"CariNik\",code=\"Ok\",source=\"\"}}"
        );
        assert_eq!(sample(text, &series), Some(1.0), "{series}:\n{text}");
        let latency = format!(
            "lintas_exchange_duration_seconds_count{{side=\"{side}\",service=\"{SERVICE}\",method=\"CariNik\"}}"
        );
        assert_eq!(sample(text, &latency), Some(1.0), "{latency}");
    }

    // The configuration expires (the registry's re-signing is an hour away): calls are
    // refused, and every way of asking says why.
    let mut watch = tonic_health::pb::health_client::HealthClient::new(
        plain_channel(&net.consumer_url).await.unwrap(),
    )
    .watch(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .unwrap()
    .into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(watch.message().await.unwrap().unwrap().status, serving);
    net.inst
        .clock
        .advance(Duration::from_secs(net.inst.config.conf_validity_secs + 1));
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    tokio::time::timeout(Duration::from_secs(10), async {
        while watch.message().await.unwrap().unwrap().status != not_serving {}
    })
    .await
    .expect("gRPC health follows readiness");
    let (status, _, body) = http(&net.consumer_ops, "GET", "/readyz", &[], "").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("configuration") && body.contains("expired"),
        "{body}"
    );
    let (status, _, json) = http(&net.consumer_ops, "GET", "/readyz?format=json", &[], "").await;
    assert_eq!(status, 503);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["ready"], false);
    assert!(
        report["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "configuration" && c["state"] == "not_ready"),
        "{json}"
    );
    let (_, _, text) = http(&net.consumer_ops, "GET", "/metrics", &[], "").await;
    assert_eq!(sample(&text, "lintas_ready"), Some(0.0));
    // The registry's published configuration expired too (by its clock).
    let (status, _, body) = http(&net.inst.ops, "GET", "/readyz", &[], "").await;
    assert_eq!(status, 503, "{body}");
    let public = net.inst.config.globalconf_urls[0]
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, body) = http(&public, "GET", "/healthz", &[], "").await;
    assert_eq!(
        status, 503,
        "the registry's public health follows readiness: {body}"
    );
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(
    from: std::net::Ipv4Addr,
    to: &str,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    socket.connect(to.parse().unwrap()).await
}

/// Whether `stream` is closed by the other side within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_idle_and_slow_connections_do_not_stall_legitimate_calls() {
    let net = network().await;
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
    let provider_ops = net.provider_ops.clone();
    let consumer_address = net.consumer_url.trim_start_matches("http://").to_owned();
    // A fresh mutual-TLS connection to the provider port before the flood, for scale.
    let started = Instant::now();
    let _ = net.send(net.sign(net.header(), b"x"), None).await;
    let baseline = started.elapsed();

    // 1,000 connections that never send a byte, from 100 other loopback addresses, half
    // against the provider port (TLS) and half against the consumer endpoint.
    let mut idle = Vec::new();
    for n in 0..1000u32 {
        let from = std::net::Ipv4Addr::new(127, 0, 1, (n % 100) as u8 + 2);
        let to = if n % 2 == 0 {
            &net.provider_address
        } else {
            &consumer_address
        };
        idle.push(connect_from(from, to).await.unwrap());
    }
    // And idle connections against the registry's gRPC (TLS) and HTTP ports.
    for n in 0..400u32 {
        let from = std::net::Ipv4Addr::new(127, 0, 4, (n % 40) as u8 + 2);
        let to = if n % 2 == 0 {
            net.inst.config.grpc_listen
        } else {
            net.inst.config.http_listen
        };
        idle.push(connect_from(from, &to.to_string()).await.unwrap());
    }
    // One source opening more handshakes than it may: the extra ones are closed at once.
    let greedy = std::net::Ipv4Addr::new(127, 0, 2, 2);
    let mut extra = Vec::new();
    for _ in 0..40 {
        extra.push(connect_from(greedy, &net.provider_address).await.unwrap());
    }
    // A client sending its TLS handshake one byte per second; the time the server cuts
    // it off is when its reading side sees the end.
    let slow = connect_from(std::net::Ipv4Addr::new(127, 0, 2, 3), &net.provider_address)
        .await
        .unwrap();
    let slow_started = Instant::now();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let slow_writer = tokio::spawn(async move {
        let hello = [
            0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        for byte in hello.iter().cycle().take(30) {
            if slow_write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let slow_cut = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(30), async {
            while matches!(slow_read.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await
        .ok()
        .map(|()| Instant::now())
    });

    // Legitimate calls from 127.0.0.1: through both servers, and a fresh TLS connection
    // straight to the provider port.
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "a call stalled for {took:?}");
        best = best.min(took);
    }
    assert!(best < Duration::from_millis(200), "best call took {best:?}");
    // The registry still answers: the configuration over HTTP, its API over TLS.
    let started = Instant::now();
    net.consumer.conf().fetch().await.unwrap();
    net.inst
        .admin()
        .list_registrations(lintas_proto::registry::v1::ListRegistrationsRequest::default())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the registry stalled for {took:?}"
    );
    // Whatever the provider server answers, it answers after a new handshake, and the
    // flood does not make it wait.
    let started = Instant::now();
    let _ = net.send(net.sign(net.header(), b"x"), None).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(200).max(baseline * 4),
        "a new TLS connection took {took:?} (before the flood: {baseline:?})"
    );

    let mut refused = 0;
    for stream in &mut extra {
        if closed_within(stream, Duration::from_millis(500)).await {
            refused += 1;
        }
    }
    assert!(refused >= 40 - 16, "only {refused} of 40 were refused");
    let cut = slow_cut
        .await
        .unwrap()
        .expect("the slow handshake is cut off");
    slow_writer.abort();
    let limit = lintas_transport::Limits::default().handshake_timeout();
    let after = cut - slow_started;
    assert!(
        after >= limit && after < limit + Duration::from_secs(2),
        "cut after {after:?}"
    );

    let (_, _, text) = http(&provider_ops, "GET", "/metrics", &[], "").await;
    let count = |reason: &str| {
        sample(
            &text,
            &format!(
                "lintas_connections_refused_total{{listener=\"provider\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(count("per_source_handshake_limit") >= 24.0, "{text}");
    assert!(count("handshake_timeout") >= 1.0, "{text}");
    drop(idle);
}

/// An HTTP/2 frame header: length, type, flags, stream.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_and_resets_streams_in_a_loop_is_cut_off() {
    let net = network().await;
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    write.write_all(&hello).await.unwrap();

    // Frames from the server until it closes: (type, payload).
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        let mut header = [0u8; 9];
        while read.read_exact(&mut header).await.is_ok() {
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if read.read_exact(&mut payload).await.is_err() {
                break;
            }
            frames.push((header[3], payload));
        }
        frames
    });
    // HEADERS (POST, http, /: indexed from HPACK's static table) and RST_STREAM
    // (CANCEL), written together, again and again.
    let mut sent = 0;
    for n in 0..20_000u32 {
        let id = 2 * n + 1;
        let mut pair = frame(0x1, 0x4, id, &[0x83, 0x86, 0x84]);
        pair.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
        if write.write_all(&pair).await.is_err() {
            break;
        }
        sent += 1;
    }
    let frames = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the server closes the connection")
        .unwrap();
    assert!(
        frames.iter().any(|(kind, _)| *kind == 0x7),
        "no GOAWAY after {sent} resets"
    );
    // The server's first SETTINGS carry the stream limit.
    let settings = &frames.iter().find(|(k, _)| *k == 0x4).unwrap().1;
    let limit = settings
        .chunks(6)
        .find(|s| s[..2] == [0, 3])
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(
        limit,
        Some(lintas_transport::Limits::default().max_concurrent_streams)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_drains_refuses_new_exchanges_and_is_published() {
    use lintas_proto::ss::v1 as ss;
    use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
    let net = network().await;
    // The provider application holds the first call until released.
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", app.local_addr().unwrap());
    let (_stop_app, stop) = stopper();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                lintas_examples::kependudukan::v1::penduduk_server::PendudukServer::new(GatedApp {
                    arrived: std::sync::Mutex::new(Some(arrived_tx)),
                    release: tokio::sync::Mutex::new(Some(release_rx)),
                }),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(app),
                stop,
            ),
    );
    net.provider
        .access
        .add_service(ServiceEntry {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: SERVICE.parse().unwrap(),
            endpoint,
            ca_pem: None,
            descriptor_set: None,
        })
        .unwrap();
    let in_flight = tokio::spawn(cari_nik(
        plain_channel(&net.consumer_url).await.unwrap(),
        CONSUMER_CLIENT,
        NIK,
        None,
    ));
    arrived.await.unwrap();

    let admin = lintas_ss::admin::AdminService(net.provider.clone());
    admin
        .set_maintenance(Request::new(ss::MaintenanceRequest {
            on: true,
            reason: "moving racks".into(),
        }))
        .await
        .unwrap();
    let (status, _, body) = http(&net.provider_ops, "GET", "/readyz", &[], "").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("maintenance") && body.contains("moving racks"),
        "{body}"
    );
    let health = admin
        .health(Request::new(ss::ListRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!health.ready && health.maintenance);
    assert_eq!(health.maintenance_reason, "moving racks");

    // A new exchange is refused, retriably, and says why.
    let refused = net.cari(CONSUMER_CLIENT, NIK).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(source(&refused), "provider-server");
    assert!(refused.message().contains("maintenance"), "{refused:?}");
    // The one in flight finishes.
    release.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap().nik, NIK);

    // Published: the next configuration marks the provider's server.
    let serial = net.provider.report_services().await.unwrap();
    let conf = net.consumer.conf().fetch().await.unwrap();
    assert!(conf.serial() >= serial);
    assert!(conf.server(&PROVIDER.parse().unwrap()).unwrap().maintenance);

    admin
        .set_maintenance(Request::new(ss::MaintenanceRequest {
            on: false,
            reason: String::new(),
        }))
        .await
        .unwrap();
    assert_eq!(net.cari(CONSUMER_CLIENT, NIK).await.unwrap().nik, NIK);
    let (status, _, _) = http(&net.provider_ops, "GET", "/readyz", &[], "").await;
    assert_eq!(status, 200);
    net.provider.report_services().await.unwrap();
    let conf = net.consumer.conf().fetch().await.unwrap();
    assert!(!conf.server(&PROVIDER.parse().unwrap()).unwrap().maintenance);
}

/// An HTTP/1.1 POST from the loopback address `from`; the status code.
async fn post_from(from: std::net::Ipv4Addr, address: &str, path: &str, body: &[u8]) -> u16 {
    let mut stream = connect_from(from, address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_time_stamp_requests_is_limited_per_source_and_servers_still_get_tokens() {
    let net = network().await;
    let tsa = net.inst.config.globalconf_urls[0]
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let request = lintas_timestamp::request(&[7u8; 32], Some(1)).unwrap();
    let flooder = std::net::Ipv4Addr::new(127, 0, 3, 2);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..100 {
        *statuses
            .entry(post_from(flooder, &tsa, "/tsa", &request).await)
            .or_insert(0) += 1;
    }
    // A burst of a tenth of the default 120 a minute, then 429.
    assert!(
        statuses.get(&200).copied().unwrap_or(0) <= 13,
        "{statuses:?}"
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 87,
        "{statuses:?}"
    );
    // The servers, from their own address, still get their tokens.
    record_and_checkpoint(&net.provider, "after the flood").await;
    assert!(net.provider.timestamp_now().await.unwrap().is_some());
    let (_, _, provider) = ops_get(&net.provider_ops, "/metrics").await;
    assert!(
        sample(&provider, "lintas_timestamp_age_seconds").is_some(),
        "{provider}"
    );
    let (_, _, text) = http(&net.inst.ops, "GET", "/metrics", &[], "").await;
    assert!(
        sample(&text, "lintas_tsa_requests_total{result=\"limited\"}").unwrap_or(0.0) >= 87.0,
        "{text}"
    );
}

/// A population registry that remembers the trace context each call arrived with.
type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;

struct TraceApp {
    seen: Seen,
}

#[tonic::async_trait]
impl lintas_examples::kependudukan::v1::penduduk_server::Penduduk for TraceApp {
    async fn cari_nik(
        &self,
        request: Request<CariNikRequest>,
    ) -> Result<tonic::Response<DataPenduduk>, Status> {
        let md = request.metadata();
        let get = |k| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        self.seen
            .lock()
            .unwrap()
            .push((get("traceparent"), get("tracestate")));
        Ok(tonic::Response::new(DataPenduduk {
            nik: request.into_inner().nik,
            nama: "Traced".into(),
            ..Default::default()
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_the_provider_application_and_both_logs() {
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let net = network().await;
    let seen = Seen::default();
    let app = TraceApp { seen: seen.clone() };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (_stop_app, stop) = stopper();
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
    // Published with its descriptors, so the REST entry can call it too.
    publish_described(&net, endpoint).await;

    let trace_ids = |id: &str| -> Vec<String> {
        [&net.consumer, &net.provider]
            .iter()
            .flat_map(|s| Network::records(s))
            .filter(|r| r.message_id == id)
            .map(|r| r.trace_id)
            .collect()
    };
    let grpc = |traceparent: Option<&'static str>, id: &'static str| {
        let url = net.consumer_url.clone();
        async move {
            let mut req = Request::new(CariNikRequest { nik: NIK.into() });
            let md = req.metadata_mut();
            md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
            md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
            md.insert("lintas-message-id", id.parse().unwrap());
            if let Some(t) = traceparent {
                md.insert("traceparent", t.parse().unwrap());
                md.insert("tracestate", "lintas=test,other=1".parse().unwrap());
            }
            PendudukClient::new(plain_channel(&url).await.unwrap())
                .cari_nik(req)
                .await
                .unwrap()
        }
    };

    // The application's own trace context arrives unchanged and names both records.
    let answer = grpc(Some(PARENT), "traced-1").await;
    assert_eq!(answer.metadata().get("traceparent").unwrap(), PARENT);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &(PARENT.to_owned(), "lintas=test,other=1".to_owned())
    );
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(trace_ids("traced-1"), vec![id; 4]);

    // Without one, the consumer's server starts one, which the caller is told.
    let answer = grpc(None, "traced-2").await;
    let started = answer
        .metadata()
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let started_id = lintas_ss::trace::trace_id_of(&started)
        .expect("a valid traceparent")
        .to_owned();
    assert_ne!(started_id, id);
    assert_eq!(seen.lock().unwrap().last().unwrap().0, started);
    assert_eq!(trace_ids("traced-2"), vec![started_id; 4]);

    // The REST entry takes it from the HTTP header.
    let address = net.consumer_url.trim_start_matches("http://").to_owned();
    let (status, headers, body) = http(
        &address,
        "POST",
        &format!("/r1/{PROVIDER_CLIENT}/{SERVICE}/CariNik"),
        &[
            ("X-Road-Client", CONSUMER_CLIENT),
            ("X-Road-Id", "traced-3"),
            ("traceparent", PARENT),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"nik": "{NIK}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["traceparent"], PARENT);
    assert_eq!(seen.lock().unwrap().last().unwrap().0, PARENT);
    assert_eq!(trace_ids("traced-3"), vec![id; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_has_an_operational_record_that_the_owner_can_query() {
    use lintas_proto::opmon::v1 as om;
    use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
    let net = network().await;
    let started = lintas_ss::daemon::now_ms(&*net.inst.clock);
    // One answered call with a user id, one refused (no grant for this client).
    let mut req = Request::new(CariNikRequest { nik: NIK.into() });
    let md = req.metadata_mut();
    md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    md.insert("lintas-message-id", "opmon-1".parse().unwrap());
    md.insert("lintas-user-id", "ID3174012305870001".parse().unwrap());
    PendudukClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .cari_nik(req)
        .await
        .unwrap();
    net.cari(OTHER_CLIENT, NIK).await.unwrap_err();

    // Records are written by a task of their own: two exchanges, two records each side.
    for server in [&net.consumer, &net.provider] {
        tokio::time::timeout(Duration::from_secs(10), server.opmon().written(2))
            .await
            .expect("monitoring records are written");
    }
    let query = |server: &Arc<lintas_ss::daemon::SecurityServer>, q: om::OpQuery| {
        let admin = lintas_ss::admin::AdminService(server.clone());
        async move {
            admin
                .operational_data(Request::new(q))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let all = om::OpQuery {
        from_unix_ms: started - 1000,
        ..Default::default()
    };
    for (server, side) in [(&net.consumer, "consumer"), (&net.provider, "provider")] {
        let page = query(server, all.clone()).await;
        let ok = page
            .records
            .iter()
            .find(|r| r.message_id == "opmon-1")
            .unwrap_or_else(|| panic!("{side}: {page:?}"));
        assert_eq!(ok.side, side);
        assert_eq!(ok.client, CONSUMER_CLIENT);
        assert_eq!(ok.provider, PROVIDER_CLIENT);
        assert_eq!(
            (ok.service.as_str(), ok.method.as_str()),
            (SERVICE, "CariNik")
        );
        assert_eq!(ok.code, "Ok");
        assert_eq!(ok.trace_id.len(), 32);
        assert!(ok.request_bytes > 0 && ok.response_bytes > 0, "{ok:?}");
        // Never the id itself: its hash.
        assert!(ok.user_id.starts_with("sha256:"), "{ok:?}");
        assert!(!format!("{page:?}").contains("ID3174012305870001"));
        assert!(
            ok.total_us > 0 && ok.signing_us > 0 && ok.durable_us > 0,
            "{ok:?}"
        );
        if side == "consumer" {
            assert!(ok.peer_us > 0 && ok.peer_server == PROVIDER, "{ok:?}");
        } else {
            assert!(ok.app_us > 0 && ok.peer_server == CONSUMER, "{ok:?}");
        }
        let refused = page
            .records
            .iter()
            .find(|r| r.client == OTHER_CLIENT)
            .unwrap_or_else(|| panic!("{side}: {page:?}"));
        assert_eq!(refused.code, "PermissionDenied");
        assert_eq!(refused.error_source, "provider-server");
    }
    // Filters.
    let only = query(
        &net.provider,
        om::OpQuery {
            client: OTHER_CLIENT.into(),
            ..all.clone()
        },
    )
    .await;
    assert!(only.records.iter().all(|r| r.client == OTHER_CLIENT));
    let later = lintas_ss::daemon::now_ms(&*net.inst.clock) + 60_000;
    let none = lintas_ss::admin::AdminService(net.provider.clone())
        .operational_data(Request::new(om::OpQuery {
            from_unix_ms: later,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(none.records.is_empty());

    // Through the bus: the owner's own subsystem, once granted, reads the server's
    // records; another member's subsystem never can.
    let call = |url: String, client: &'static str| async move {
        let mut req = Request::new(om::OpQuery {
            from_unix_ms: started - 1000,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("lintas-client", client.parse().unwrap());
        req.metadata_mut()
            .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
        om::operational_data_client::OperationalDataClient::new(plain_channel(&url).await.unwrap())
            .query(req)
            .await
    };
    let foreign = call(net.consumer_url.clone(), CONSUMER_CLIENT)
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied, "{foreign:?}");
    assert!(
        foreign.message().contains("only subsystems of"),
        "{foreign:?}"
    );
    let ungranted = call(net.provider_url.clone(), PROVIDER_CLIENT)
        .await
        .unwrap_err();
    assert_eq!(ungranted.code(), Code::PermissionDenied, "{ungranted:?}");
    net.provider
        .access
        .grant(Grant {
            provider: PROVIDER_CLIENT.parse().unwrap(),
            service: lintas_ss::opmon::SERVICE.parse().unwrap(),
            method: None,
            subject: Subject::Client(ClientId::Subsystem(PROVIDER_CLIENT.parse().unwrap())),
        })
        .unwrap();
    let page = call(net.provider_url.clone(), PROVIDER_CLIENT)
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.records.iter().any(|r| r.message_id == "opmon-1"),
        "{page:?}"
    );
}

/// Publishes the population service at `endpoint` with its descriptors (so the REST
/// entry can call it), and has the consumer's server fetch the configuration.
async fn publish_described(net: &Network, endpoint: String) {
    use lintas_proto::ss::v1 as ss;
    use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
    let mut compiler = protox::Compiler::new([
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/proto")
    ])
    .unwrap();
    compiler.include_imports(true);
    compiler
        .open_file("kependudukan/v1/penduduk.proto")
        .unwrap();
    lintas_ss::admin::AdminService(net.provider.clone())
        .add_service(Request::new(ss::Service {
            provider: PROVIDER_CLIENT.into(),
            service: SERVICE.into(),
            endpoint,
            descriptor_set: compiler.encode_file_descriptor_set(),
            ..Default::default()
        }))
        .await
        .unwrap();
    net.provider.report_services().await.unwrap();
    net.consumer.conf().fetch().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_bodies_never_arrive_end_at_the_deadline() {
    let net = network_edited(true, |c| c.connection_limits.request_timeout_secs = 1).await;
    publish_described(&net, format!("http://{}", net.app_address)).await;
    let address = net.consumer_url.trim_start_matches("http://").to_owned();

    // A REST request that promises a body and sends a tenth of it.
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /r1/{PROVIDER_CLIENT}/{SERVICE}/CariNik HTTP/1.1\r\nHost: {address}\r\nX-Road-Client: {CONSUMER_CLIENT}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"nik\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout_secs"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A gRPC call whose request message never comes.
    let channel = plain_channel(&net.consumer_url).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = Request::new(tokio_stream::pending::<Bytes>());
    req.metadata_mut()
        .insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    req.metadata_mut()
        .insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    let started = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        grpc.streaming(
            req,
            format!("/{SERVICE}/CariNik").parse().unwrap(),
            lintas_transport::RawCodec,
        ),
    )
    .await
    .expect("the server answers")
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("request_timeout_secs"),
        "{status:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The endpoint still serves.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_otlp_collector_when_one_is_configured() {
    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    // The collector's side of OTLP/HTTP: JSON bodies POSTed to /v1/traces.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
                "{}"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(collector, app).await });
    let net = network_edited(true, |c| c.otlp_endpoint = endpoint.clone()).await;

    let mut req = Request::new(CariNikRequest { nik: NIK.into() });
    let md = req.metadata_mut();
    md.insert("lintas-client", CONSUMER_CLIENT.parse().unwrap());
    md.insert("lintas-service", PROVIDER_CLIENT.parse().unwrap());
    md.insert("traceparent", PARENT.parse().unwrap());
    PendudukClient::new(plain_channel(&net.consumer_url).await.unwrap())
        .cari_nik(req)
        .await
        .unwrap();

    // One span from each server, both children of the caller's span.
    let mut spans = std::collections::BTreeMap::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while spans.len() < 2 {
            let body = rx.recv().await.unwrap();
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let server = rs["resource"]["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == "lintas.server")
                    .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                    .unwrap();
                for span in rs["scopeSpans"][0]["spans"].as_array().unwrap() {
                    spans.insert(server.clone(), span.clone());
                }
            }
        }
    })
    .await
    .expect("both servers export their span");
    for (server, kind) in [(CONSUMER, 3), (PROVIDER, 2)] {
        let span = &spans[server];
        assert_eq!(
            span["traceId"], "0af7651916cd43dd8448eb211c80319c",
            "{span}"
        );
        assert_eq!(span["parentSpanId"], "b7ad6b7169203331");
        assert_eq!(span["kind"], kind);
        assert!(
            span["name"].as_str().unwrap().ends_with("CariNik"),
            "{span}"
        );
        assert_eq!(span["status"]["code"], 1);
        assert!(
            span["attributes"].as_array().unwrap().iter().any(
                |a| a["key"] == "lintas.client" && a["value"]["stringValue"] == CONSUMER_CLIENT
            ),
            "{span}"
        );
    }
    let (_, _, text) = http(&net.consumer_ops, "GET", "/metrics", &[], "").await;
    // Counted once the collector has answered, which may be a moment after it received.
    assert!(
        sample(&text, "lintas_otlp_spans_exported_total").is_some(),
        "{text}"
    );
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An HPACK literal header field without indexing, new name, no Huffman coding.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// Reads HTTP/2 frames from `read` until one of type `kind` arrives; its flags and payload.
async fn frame_of(read: &mut tokio::net::tcp::OwnedReadHalf, kind: u8) -> (u8, u32, Vec<u8>) {
    let mut header = [0u8; 9];
    loop {
        read.read_exact(&mut header).await.unwrap();
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        read.read_exact(&mut payload).await.unwrap();
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if header[3] == kind {
            return (header[4], stream, payload);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_streams_cost_bounded_memory_and_refusals_are_logged_once() {
    let inst = Instance::start().await;
    let servers = binary_pair(&inst).await;
    let consumer = &servers[1];
    let limits = lintas_transport::Limits::default();
    let per_connection = limits.max_concurrent_streams;
    let connections = 8;
    let before = rss_kib(consumer.daemon.pid());

    // gRPC calls that send their headers and never a message, as many as the server
    // lets each connection have, on several connections.
    let path = "/kependudukan.v1.Penduduk/CariNik";
    let mut headers = vec![0x83u8, 0x86, 0x04, path.len() as u8];
    headers.extend_from_slice(path.as_bytes());
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("lintas-client", CONSUMER_CLIENT),
        ("lintas-service", PROVIDER_CLIENT),
    ] {
        headers.extend(hpack_literal(name, value));
    }
    let mut held = Vec::new();
    let mut refused_extra = 0;
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(&consumer.consumer_listen)
            .await
            .unwrap();
        let (mut read, mut write) = stream.into_split();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(0x4, 0, 0, &[]));
        write.write_all(&hello).await.unwrap();
        // The server's settings, acknowledged, so that its stream limit applies.
        loop {
            let (flags, _, _) = frame_of(&mut read, 0x4).await;
            if flags & 1 == 0 {
                break;
            }
        }
        write.write_all(&frame(0x4, 1, 0, &[])).await.unwrap();
        let mut burst = Vec::new();
        for n in 0..=per_connection {
            burst.extend(frame(0x1, 0x4, 2 * n + 1, &headers));
        }
        // A PING after them: its answer means every HEADERS before it was handled.
        burst.extend(frame(0x6, 0, 0, b"lintas!!"));
        write.write_all(&burst).await.unwrap();
        // One stream past the limit is refused (RST_STREAM, REFUSED_STREAM).
        let (_, stream_id, payload) =
            tokio::time::timeout(Duration::from_secs(10), frame_of(&mut read, 0x3))
                .await
                .expect("the stream past the limit is refused");
        assert_eq!(stream_id, 2 * per_connection + 1);
        assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), 7);
        refused_extra += 1;
        tokio::time::timeout(Duration::from_secs(10), frame_of(&mut read, 0x6))
            .await
            .expect("the server answers the PING");
        held.push((read, write));
    }
    assert_eq!(refused_extra, connections);
    let after = rss_kib(consumer.daemon.pid());
    let streams = u64::from(per_connection) * connections as u64;
    let grown = after.saturating_sub(before);
    println!(
        "{streams} held streams: resident memory {before} KiB -> {after} KiB ({} KiB a stream)",
        grown / streams
    );
    assert!(
        grown < 64 * 1024,
        "{streams} held streams grew the server by {grown} KiB"
    );

    // Refusals by a limit are counted and logged once per source: a source opening more
    // handshakes than it may on the provider port.
    let greedy = std::net::Ipv4Addr::new(127, 0, 5, 2);
    let mut extra = Vec::new();
    for _ in 0..40 {
        extra.push(connect_from(greedy, &consumer.peer).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut extra {
        if closed_within(stream, Duration::from_millis(500)).await {
            closed += 1;
        }
    }
    assert!(closed >= 24, "{closed}");
    drop((held, extra));
    let log = std::fs::read_to_string(consumer.dir.join("serve.log")).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("refused or closed by a limit") && l.contains("127.0.5.2"))
        .count();
    assert_eq!(lines, 1, "{log}");
}
