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
const PROVIDER2: &str = "ID/GOV/KEMENDAGRI/SS2";
/// Calls that start this long after a provider server dies must all succeed.
const FAILOVER_WITHIN: Duration = Duration::from_secs(1);
/// The longest a consumer's server puts a failing provider server aside
/// (`select::MAX_BACKOFF` in the security server).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Records in the log of the server whose operations listener is `ops`.
async fn log_records(ops: &str) -> f64 {
    let (_, _, text) = ops_get(ops, "/metrics").await;
    sample(&text, "lintas_log_records").unwrap_or_else(|| panic!("{text}"))
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
        run(&mut binary::lintas_cmd(&[
            "ss",
            "service",
            "add",
            PROVIDER_CLIENT,
            SERVICE,
            "--endpoint",
            &app_url,
            "--config",
            &p.config,
        ]));
        run(&mut binary::lintas_cmd(&[
            "ss",
            "acl",
            "grant",
            PROVIDER_CLIENT,
            SERVICE,
            CONSUMER_CLIENT,
            "--config",
            &p.config,
        ]));
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
    // Until 32 calls have started past the failover time.
    tokio::time::timeout(Duration::from_secs(60), late_enough.notified())
        .await
        .expect("calls after the kill did not finish");
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
    let out = servers[2].dir.join("all.evidence");
    run(binary::lintas_cmd(&[
        "audit",
        "export",
        "--client",
        CONSUMER_CLIENT,
        "--config",
        &servers[2].config,
    ])
    .arg("--out")
    .arg(&out));
    let bundle =
        lintas_proto::audit::v1::EvidenceBundle::decode(std::fs::read(&out).unwrap().as_slice())
            .unwrap();
    let report = lintas_audit::verify(&bundle, &anchor);
    assert!(report.verified, "{:#?}", report.failures);
    for id in &answered {
        assert!(
            report
                .exchanges
                .iter()
                .any(|x| &x.message_id == id && x.request.is_some() && x.response.is_some()),
            "answered call {id} has no signed request and response in the consumer's log"
        );
    }
    let retries: Vec<_> = report
        .exchanges
        .iter()
        .filter(|x| x.retry_of.is_some())
        .collect();
    assert!(
        !retries.is_empty(),
        "no call was retried on the other server"
    );
    assert!(
        report
            .proven
            .iter()
            .any(|p| p.contains("retried attempt 0 on")),
        "{:#?}",
        report.proven
    );
}
