//! High availability and scale: the configuration served to many pollers (ETag, 304,
//! gzip), and a provider subsystem on two security servers with failover.

use super::adapters::http;
use super::ops::{ops_get, sample};
use super::*;

#[tokio::test]
async fn pollers_get_304_for_the_configuration_they_hold_and_gzip_otherwise() {
    let inst = Instance::start().await;
    let http_addr = inst.config.http_listen.to_string();
    let signed = pb::registration_client::RegistrationClient::new(inst.channel(None))
        .get_global_conf(pb::GetGlobalConfRequest {})
        .await
        .unwrap()
        .into_inner();
    let blob = prost::Message::encode_to_vec(&signed);
    let etag = format!("\"{}\"", lintas_certs::hex(&lintas_certs::sha256(&blob)));

    // The tag is the document's SHA-256; holding it gets a 304 with no body.
    let (status, headers, _) = http(&http_addr, "HEAD", "/globalconf", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("etag"), Some(&etag));
    assert_eq!(
        headers.get("vary").map(String::as_str),
        Some("Accept-Encoding")
    );
    for held in [etag.as_str(), &format!("\"stale\", W/{etag}")] {
        let (status, headers, body) = http(
            &http_addr,
            "GET",
            "/globalconf",
            &[("If-None-Match", held)],
            "",
        )
        .await;
        assert_eq!(status, 304, "{held}");
        assert_eq!(headers.get("etag"), Some(&etag));
        assert!(body.is_empty());
    }
    let (status, headers, _) = http(
        &http_addr,
        "HEAD",
        "/globalconf",
        &[("If-None-Match", "\"stale\""), ("Accept-Encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-encoding").map(String::as_str),
        Some("gzip")
    );

    // The configuration client asks for gzip, then names what it holds.
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client =
        lintas_globalconf::ConfClient::open(anchor, dir.path(), inst.clock.clone()).unwrap();
    let first = client.fetch().await.unwrap();
    assert_eq!(first.blob, blob);
    let again = client.fetch().await.unwrap();
    assert_eq!(again.serial(), first.serial());
    let (_, _, metrics) = ops_get(&inst.ops, "/metrics").await;
    let fetches = |answer: &str| {
        sample(
            &metrics,
            &format!("lintas_globalconf_fetches_total{{answer=\"{answer}\"}}"),
        )
        .unwrap_or(0.0)
    };
    // Two HEADs and one GET with the tag above; the client's two fetches.
    assert_eq!(fetches("gzip"), 2.0, "{metrics}");
    assert_eq!(fetches("not_modified"), 3.0, "{metrics}");
    assert_eq!(fetches("full"), 1.0, "{metrics}");
}

/// A second security server of the provider's member, hosting the same subsystem.
pub(super) const PROVIDER2: &str = "ID/GOV/KEMENDAGRI/SS2";
/// Calls that start this long after a provider server dies must all succeed.
const FAILOVER_WITHIN: Duration = Duration::from_secs(1);
/// The longest a consumer's server puts a failing provider server aside
/// (`select::MAX_BACKOFF` in the security server).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Records in the log of the server whose operations listener is `ops`.
pub(super) async fn log_records(ops: &str) -> f64 {
    let (_, _, text) = ops_get(ops, "/metrics").await;
    sample(&text, "lintas_log_records").unwrap_or_else(|| panic!("{text}"))
}

/// Attempts the consumer's server whose operations listener is `ops` retried on
/// another server, whatever the failed attempt's code.
async fn retries(ops: &str) -> f64 {
    let (_, _, text) = ops_get(ops, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("lintas_exchange_retries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `rounds` rounds of `parallel` calls at once through the consumer endpoint at
/// `listen`, with message ids `{tag}-{round}-{n}`; the ids of the answered ones, or the
/// first failure.
async fn call_rounds(
    listen: &str,
    tag: &str,
    rounds: usize,
    parallel: usize,
) -> Result<Vec<String>, (String, Status)> {
    let mut answered = Vec::new();
    for round in 0..rounds {
        let calls: Vec<_> = (0..parallel)
            .map(|n| {
                let (listen, id) = (listen.to_owned(), format!("{tag}-{round}-{n}"));
                tokio::spawn(async move {
                    match binary::cari_at(&listen, Some(&id)).await {
                        Ok(_) => Ok(id),
                        Err(e) => Err((id, e)),
                    }
                })
            })
            .collect();
        for call in calls {
            answered.push(call.await.unwrap()?);
        }
    }
    Ok(answered)
}

// Multi-threaded: the registry serves in this process while the test waits on children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subsystem_on_two_servers_survives_maintenance_and_a_killed_server() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let mut servers = binary::binary_servers(
        &inst,
        &[
            (PROVIDER, PROVIDER_CLIENT),
            (PROVIDER2, PROVIDER_CLIENT),
            (CONSUMER, CONSUMER_CLIENT),
        ],
    )
    .await;
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", app.local_addr().unwrap());
    let (_stop_app, stop) = stopper();
    tokio::spawn(lintas_examples::population_registry::serve(app, stop));
    for p in &servers[..2] {
        binary::publish_with_the_cli(&p.config, &app_url);
    }
    let consumer = servers[2].consumer_listen.clone();
    let (ops1, ops2) = (servers[0].ops.clone(), servers[1].ops.clone());

    // Both serve: calls in parallel are spread over them.
    let before = (log_records(&ops1).await, log_records(&ops2).await);
    let mut answered = call_rounds(&consumer, "spread", 8, 4).await.unwrap();
    assert!(
        log_records(&ops1).await > before.0,
        "the first server got no call"
    );
    assert!(
        log_records(&ops2).await > before.1,
        "the second server got no call"
    );

    // Maintenance on one: every call goes to the other, and none fails.
    run(&mut binary::lintas_cmd(&[
        "ss",
        "maintenance",
        "on",
        "--reason",
        "upgrade",
        "--config",
        &servers[0].config,
    ]));
    let held = log_records(&ops1).await;
    answered.extend(call_rounds(&consumer, "maintenance", 8, 4).await.unwrap());
    assert_eq!(
        log_records(&ops1).await,
        held,
        "the server in maintenance recorded an exchange"
    );
    run(&mut binary::lintas_cmd(&[
        "ss",
        "maintenance",
        "off",
        "--config",
        &servers[0].config,
    ]));

    // One is killed under load: calls that start after it died still succeed.
    let done = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let (enough, late_enough) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let late_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers: Vec<_> = (0..8)
        .map(|t| {
            let (done, killed_at, enough, late_enough, late_calls, consumer) = (
                done.clone(),
                killed_at.clone(),
                enough.clone(),
                late_enough.clone(),
                late_calls.clone(),
                consumer.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = 0;
                while !done.load(Ordering::SeqCst) {
                    let id = format!("kill-{t}-{i}");
                    i += 1;
                    let started = std::time::Instant::now();
                    let outcome = binary::cari_at(&consumer, Some(&id)).await;
                    if i == 20 {
                        enough.notify_one();
                    }
                    let after_kill = killed_at
                        .lock()
                        .unwrap()
                        .map(|k| started.saturating_duration_since(k));
                    if after_kill.is_some_and(|a| a >= FAILOVER_WITHIN)
                        && late_calls.fetch_add(1, Ordering::SeqCst) + 1 == 32
                    {
                        late_enough.notify_one();
                    }
                    seen.push((id, outcome.map(|_| ()), after_kill));
                }
                seen
            })
        })
        .collect();
    enough.notified().await;
    servers[0].daemon.stop_with("-KILL");
    *killed_at.lock().unwrap() = Some(std::time::Instant::now());
    // Until 32 calls have started past the failover time, and the dead server's backoff
    // has ended at least once so that a call tried it, failed to connect and was
    // retried on the other (the consumer counts the retries).
    tokio::time::timeout(Duration::from_secs(60), late_enough.notified())
        .await
        .expect("calls after the kill did not finish");
    let consumer_ops = servers[2].ops.clone();
    let retried = async {
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        loop {
            pace.tick().await;
            if retries(&consumer_ops).await > 0.0 {
                break;
            }
        }
    };
    tokio::time::timeout(MAX_BACKOFF * 2, retried)
        .await
        .expect("no call was retried on the other server");
    done.store(true, Ordering::SeqCst);
    let mut late = 0;
    for c in callers {
        for (id, outcome, after_kill) in c.await.unwrap() {
            match (outcome, after_kill) {
                (Ok(()), after) => {
                    if after.is_some_and(|a| a >= FAILOVER_WITHIN) {
                        late += 1;
                    }
                    answered.push(id);
                }
                (Err(e), Some(after)) if after >= FAILOVER_WITHIN => {
                    panic!("call {id}, started {after:?} after the kill, failed: {e:?}")
                }
                // In flight when the server died, or just after: may fail.
                (Err(_), _) => {}
            }
        }
    }
    assert!(late > 0, "no call was made after the failover time");

    // Restarted, it is used again.
    let p = &servers[0];
    let (daemon, ops1) = binary::serve_child(&p.dir, &p.consumer_listen, &p.peer);
    servers[0].daemon = daemon;
    let held = log_records(&ops1).await;
    let deadline = std::time::Instant::now() + MAX_BACKOFF * 3;
    // Calls at a steady pace until one reaches it.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut round = 0;
    while log_records(&ops1).await == held {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted server got no call"
        );
        pace.tick().await;
        answered.extend(
            call_rounds(&consumer, &format!("back-{round}"), 1, 4)
                .await
                .unwrap(),
        );
        round += 1;
    }

    // Every call the application saw answered is in the consumer's evidence, and the
    // retries are linked to the attempts they repeat.
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    // In bundles of 40 exchanges, written one at a time into one file.
    let out = servers[2].dir.join("all.evidence");
    let said = run(binary::lintas_cmd(&[
        "audit",
        "export",
        "--client",
        CONSUMER_CLIENT,
        "--per-bundle",
        "40",
        "--config",
        &servers[2].config,
    ])
    .arg("--out")
    .arg(&out));
    assert!(!said.contains("in 1 bundle(s)"), "{said}");
    let verified = run(binary::lintas_cmd(&["audit", "verify"])
        .arg(&out)
        .arg("--anchor")
        .arg(inst.anchor()));
    assert!(
        verified.contains("Result: the evidence verifies."),
        "{verified}"
    );
    let mut exchanges = Vec::new();
    let mut proven = Vec::new();
    let bytes = std::fs::read(&out).unwrap();
    let magic = b"lintas-evidence-bundles/v1\n";
    let mut rest = bytes.strip_prefix(&magic[..]).expect("several bundles");
    while !rest.is_empty() {
        let bundle =
            lintas_proto::audit::v1::EvidenceBundle::decode_length_delimited(&mut rest).unwrap();
        let report = lintas_audit::verify(&bundle, &anchor);
        assert!(report.verified, "{:#?}", report.failures);
        // No exchange is split between bundles.
        assert!(
            report.exchanges.iter().all(|x| x.request.is_some()),
            "an exchange without its request"
        );
        exchanges.extend(report.exchanges);
        proven.extend(report.proven);
    }
    for id in &answered {
        assert!(
            exchanges
                .iter()
                .any(|x| &x.message_id == id && x.request.is_some() && x.response.is_some()),
            "answered call {id} has no signed request and response in the consumer's log"
        );
    }
    assert!(
        exchanges.iter().any(|x| x.retry_of.is_some()),
        "no call was retried on the other server"
    );
    assert!(
        proven.iter().any(|p| p.contains("retried attempt 0 on")),
        "{proven:#?}"
    );
}

/// One registry node serving in this process until stopped.
struct RegistryNode {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RegistryNode {
    fn serve(
        config: RegistryConfig,
        clock: Arc<ManualClock>,
        grpc: TcpListener,
        http: TcpListener,
    ) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let registry =
                tokio::task::block_in_place(|| lintas_registry::open(&config, clock)).unwrap();
            let listeners = lintas_registry::Listeners {
                grpc,
                http,
                ops,
                management: None,
            };
            lintas_registry::serve(registry, &config, listeners, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        RegistryNode {
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// A security server directory for `server` hosting `client`, registered (not yet
/// decided) with the registry its anchor names.
async fn registered(root: &Path, anchor: &Path, server: &str, client: &str) -> (Node, String) {
    let dir = root.join(server.replace('/', "_"));
    let mut config = SsConfig::new(server.parse().unwrap(), "127.0.0.1:5500".parse().unwrap());
    config.clients = vec![client.parse().unwrap()];
    config.member_name = "Test member".into();
    config.dev_plaintext_loopback = true;
    let path = lintas_ss::init(&dir, &config, anchor).unwrap();
    let node = Node::open(SsConfig::load(&path, std::iter::empty()).unwrap()).unwrap();
    let filed = node.register(None).await.unwrap();
    (node, filed.request_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registry_nodes_over_postgresql_serve_one_instance() {
    let pg = lintas_testkit::pg::Server::start();
    pg.load("CREATE DATABASE registry").await;
    let database = pg.url().replace("/postgres", "/registry");
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (grpc1, http1, grpc2, http2) = (bind().await, bind().await, bind().await, bind().await);
    let addr = |l: &TcpListener| l.local_addr().unwrap();
    let (g2, h2) = (addr(&grpc2), addr(&http2));
    let report = lintas_registry::init(
        &InitOptions {
            instance: "ID".parse().unwrap(),
            dir: root.path().join("registry"),
            grpc_listen: addr(&grpc1),
            http_listen: addr(&http1),
            public_host: "127.0.0.1".into(),
            admin_name: "admin".parse().unwrap(),
            database: database.clone(),
            // Reached by another name: the registry's certificate must name both.
            other_nodes: vec![lintas_registry::NodeUrls {
                grpc_url: format!("https://localhost:{}", g2.port()),
                globalconf_url: format!("http://localhost:{}/globalconf", h2.port()),
            }],
            pkcs11: None,
        },
        clock.clone(),
    )
    .unwrap();
    // The second node: the same directory (keys) and database, its own listeners.
    let config = RegistryConfig::load(&report.config_path, std::iter::empty()).unwrap();
    let mut second = config.clone();
    (second.grpc_listen, second.http_listen) = (g2, h2);
    let node_urls: Vec<String> = config.node_urls().into_iter().map(str::to_owned).collect();
    assert_eq!(node_urls.len(), 2);
    let mut one = RegistryNode::serve(config, clock.clone(), grpc1, http1);
    let mut two = RegistryNode::serve(second, clock.clone(), grpc2, http2);
    let admin_of =
        |urls: &[&str]| lintas_registry::admin::connect_any(&report.admin_dir, urls).unwrap();
    let (at_one, at_two) = (admin_of(&[&node_urls[0]]), admin_of(&[&node_urls[1]]));
    let anchor = lintas_globalconf::Anchor::load(&report.anchor_path).unwrap();
    assert_eq!(anchor.registry_urls, node_urls);
    assert_eq!(anchor.globalconf_urls.len(), 2);

    // A request filed through one node is decided once, even when both nodes approve
    // it at the same moment.
    let (node, request_id) =
        registered(root.path(), &report.anchor_path, PROVIDER, PROVIDER_CLIENT).await;
    let approve = |mut admin: RegistryAdminClient<Channel>, id: String| async move {
        admin
            .approve(pb::DecisionRequest {
                request_id: id,
                reason: String::new(),
            })
            .await
    };
    // Each node takes in the other's changes within a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let pending = at_two
            .clone()
            .list_registrations(pb::ListRegistrationsRequest {
                state: pb::RegistrationState::Pending as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .registrations;
        if pending.iter().any(|r| r.request_id == request_id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node two never saw the request"
        );
        tick.tick().await;
    }
    let (a, b) = tokio::join!(
        approve(at_one.clone(), request_id.clone()),
        approve(at_two.clone(), request_id.clone())
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one approval goes through: {a:?} {b:?}"
    );
    assert!(matches!(node.poll().await.unwrap(), Enrolment::Approved(_)));
    let client = node.conf_client(clock.clone()).unwrap();
    let before = client.fetch().await.unwrap();
    assert_eq!(before.conf.servers.len(), 1);
    // Both nodes serve the same signed document.
    let fetched_from = |url: &str| {
        let anchor = anchor.clone();
        let (url, clock) = (url.to_owned(), clock.clone());
        async move {
            let dir = tempfile::tempdir().unwrap();
            lintas_globalconf::ConfClient::open(anchor, dir.path(), clock)
                .unwrap()
                .with_urls(vec![url])
                .fetch()
                .await
                .map(|c| c.blob.clone())
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fetched_from(&anchor.globalconf_urls[1]).await.unwrap() != before.blob {
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes serve different documents"
        );
        tick.tick().await;
    }

    // Node one stops: the configuration comes from node two, registrations go through
    // it, and administrators reach it through the same list of nodes.
    one.stop().await;
    let (late, late_id) =
        registered(root.path(), &report.anchor_path, CONSUMER, CONSUMER_CLIENT).await;
    approve(admin_of(&[&node_urls[0], &node_urls[1]]), late_id)
        .await
        .unwrap();
    assert!(matches!(late.poll().await.unwrap(), Enrolment::Approved(_)));
    let after = client.fetch().await.unwrap();
    assert!(after.serial() > before.serial());
    assert_eq!(after.conf.servers.len(), 2);
    two.stop().await;
}

#[tokio::test]
async fn admin_lists_come_in_pages_with_filters() {
    let inst = Instance::start().await;
    let mut admin = inst.admin();
    for n in 0..7 {
        admin
            .add_member(pb::AddMemberRequest {
                id: format!("ID/GOV/M{n}"),
                name: if n % 2 == 0 {
                    "Dinas even"
                } else {
                    "Dinas odd"
                }
                .into(),
            })
            .await
            .unwrap();
    }
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_members(pb::ListMembersRequest {
                filter: String::new(),
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.members.len() <= 3);
        pages.push(
            page.members
                .iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let all: Vec<String> = pages.concat();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(
        all,
        (0..7).map(|n| format!("ID/GOV/M{n}")).collect::<Vec<_>>()
    );
    let odd = admin
        .list_members(pb::ListMembersRequest {
            filter: "odd".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(odd.members.len(), 3);
    assert!(odd.next_page_token.is_empty());
    let bad = admin
        .list_servers(pb::ListServersRequest {
            page_token: "not a token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_the_verified_configuration_and_servers_need_not_trust_it() {
    let inst = Instance::start().await;
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror_url = format!("http://{}/globalconf", http.local_addr().unwrap());
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror_ops = ops.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (stop_mirror, stop) = stopper();
    let mirror = tokio::spawn(lintas_registry::mirror::serve_mirror(
        lintas_registry::mirror::MirrorOptions {
            anchor: anchor.clone(),
            dir: dir.path().to_owned(),
            upstream: Vec::new(),
            poll: Duration::from_millis(200),
            limits: Default::default(),
        },
        inst.clock.clone(),
        lintas_registry::mirror::MirrorListeners { http, ops },
        stop,
    ));

    // A server whose configuration names the mirror fetches the registry's document
    // through it, 304 included.
    let node = inst.node("ID/GOV/KEMENDAGRI/SS9", &[PROVIDER_CLIENT]);
    let mut config = node.config.clone();
    config.globalconf_urls = vec![mirror_url.clone()];
    let node = Node::open(config).unwrap();
    let client = inst.conf_client(&node);
    let signed = pb::registration_client::RegistrationClient::new(inst.channel(None))
        .get_global_conf(pb::GetGlobalConfRequest {})
        .await
        .unwrap()
        .into_inner();
    let registry_blob = prost::Message::encode_to_vec(&signed);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        // Only the mirror: the registry's own URL is not asked.
        match client
            .clone()
            .with_urls(vec![mirror_url.clone()])
            .fetch()
            .await
        {
            Ok(c) if c.blob == registry_blob => break c,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the mirror never served"
                );
                tick.tick().await;
            }
        }
    };
    // The server's own order asks the mirror first (and it answers 304).
    client.fetch().await.unwrap();
    let (_, _, metrics) = ops_get(&mirror_ops, "/metrics").await;
    assert!(
        sample(
            &metrics,
            "lintas_globalconf_fetches_total{answer=\"not_modified\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    let (status, _, _) = ops_get(&mirror_ops, "/readyz").await;
    assert_eq!(status, 200);

    // A change at the registry reaches the servers through the mirror.
    inst.admin()
        .add_member(pb::AddMemberRequest {
            id: "ID/GOV/BARU".into(),
            name: "Baru".into(),
        })
        .await
        .unwrap();
    let newer = loop {
        let c = inst
            .conf_client(&node)
            .with_urls(vec![mirror_url.clone()])
            .fetch()
            .await
            .unwrap();
        if c.serial() > first.serial() {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror kept the old serial"
        );
        tick.tick().await;
    };
    assert!(newer.conf.members.iter().any(|m| m.id == "ID/GOV/BARU"));

    // A mirror that serves anything else is refused by the server, which falls back to
    // the registry's own URL.
    let forged = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forged_url = format!("http://{}/globalconf", forged.local_addr().unwrap());
    let mut tampered = newer.blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = asked.clone();
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/globalconf",
            axum::routing::get(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let t = tampered.clone();
                async move { t }
            }),
        );
        axum::serve(forged, app).await.unwrap();
    });
    let fresh = tempfile::tempdir().unwrap();
    let alone =
        lintas_globalconf::ConfClient::open(anchor.clone(), fresh.path(), inst.clock.clone())
            .unwrap()
            .with_urls(vec![forged_url.clone()]);
    assert!(
        alone.fetch().await.is_err(),
        "a tampered document was taken"
    );
    let with_fallback =
        lintas_globalconf::ConfClient::open(anchor, fresh.path(), inst.clock.clone())
            .unwrap()
            .with_urls(vec![forged_url, inst.config.globalconf_urls[0].clone()]);
    assert!(with_fallback.fetch().await.unwrap().serial() >= newer.serial());
    // Having failed, the bad mirror is asked after the registry for a while.
    with_fallback.fetch().await.unwrap();
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);

    stop_mirror.send(()).unwrap();
    mirror.await.unwrap().unwrap();
}
