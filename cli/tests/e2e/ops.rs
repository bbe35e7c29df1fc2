//! Operating a node: every daemon's metrics (checked by promtool), truthful readiness,
//! and maintenance.

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
pub(super) fn sample(text: &str, series: &str) -> Option<f64> {
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
        ("lintas_globalconf_fetches_total{answer=\"gzip\"}", 1.0),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_drains_refuses_new_exchanges_and_is_published() {
    use lintas_proto::ss::v1 as ss;
    use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
    let net = network().await;
    // The provider application holds the first call until released.
    let (arrived, release, _stop_app) = publish_gated_app(&net).await;
    let in_flight = tokio::spawn(cari_nik(
        plain_channel(&net.consumer_url).await.unwrap(),
        CONSUMER_CLIENT,
        NIK,
        None,
    ));
    arrived.await.unwrap();

    let admin = net.provider.admin();
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
        .health(Request::new(ss::ListRequest::default()))
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

/// Publishes the population service at `endpoint` with its descriptors (so the REST
/// entry can call it), and has the consumer's server fetch the configuration.
pub(super) async fn publish_described(net: &Network, endpoint: String) {
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
    net.provider
        .admin()
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
