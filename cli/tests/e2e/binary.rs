//! The real `lintas` binary: two security servers run as processes, configured while
//! running, and one killed with calls in flight and restarted.

use super::*;

/// A free port on a loopback address of its own, for a child process to listen on.
/// Not on 127.0.0.1: every connection the tests open to a loopback address takes its
/// source port there, and could take this one before the child binds it.
pub(super) fn free_port() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(TAKEN.fetch_add(1, Ordering::Relaxed));
    let [a, b, c, _] = n.to_be_bytes();
    free_port_on(&std::net::Ipv4Addr::new(127, 1 + a % 250, b, 1 + c % 250).to_string())
}

/// A free port on loopback address `ip`, as `ip:port`.
pub(super) fn free_port_on(ip: &str) -> String {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A `lintas ss serve` child process and what it was started with.
pub(super) struct BinServer {
    pub(super) daemon: Daemon,
    pub(super) config: String,
    pub(super) dir: std::path::PathBuf,
    pub(super) consumer_listen: String,
    pub(super) peer: String,
    /// Its operations listener, `host:port`.
    pub(super) ops: String,
}

pub(super) fn lintas_cmd(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lintas"));
    cmd.args(args);
    cmd
}

/// Starts `lintas ss serve` in `dir` (with the default, relative `--config`, its log in
/// `serve.log`) and waits until it says it is listening; returns it and its operations
/// listener.
pub(super) fn serve_child(
    dir: &std::path::Path,
    consumer_listen: &str,
    peer: &str,
) -> (Daemon, String) {
    serve_child_env(dir, consumer_listen, peer, &[])
}

/// [`serve_child`] with more environment variables.
pub(super) fn serve_child_env(
    dir: &std::path::Path,
    consumer_listen: &str,
    peer: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> (Daemon, String) {
    use std::io::BufRead;
    let mut child = lintas_cmd(&["ss", "serve"])
        .envs(env.iter().copied())
        .current_dir(dir)
        .env("LINTAS_SS_CONSUMER_LISTEN", consumer_listen)
        .env("LINTAS_SS_DEV_PLAINTEXT_LOOPBACK", "true")
        .env("LINTAS_SS_PROVIDER_LISTEN", peer)
        .env("LINTAS_SS_OPS_LISTEN", "127.0.0.1:0")
        .env("LINTAS_SS_MANAGEMENT_LISTEN", "127.0.0.1:0")
        // Small log segments, so that these runs seal and archive some.
        .env("LINTAS_SS_LOG_SEGMENT_KIB", "4")
        .stdout(std::process::Stdio::piped())
        // Its log, as a service manager would keep it.
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("serve.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // A server that did not start says why in its log (a port taken meanwhile, say).
    assert!(
        line.contains("listening: consumer="),
        "`lintas ss serve` in {} did not start: {line}\n{}",
        dir.display(),
        std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
    );
    let ops = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ops="))
        .unwrap_or_default()
        .to_owned();
    (Daemon(Some(child)), ops)
}

/// The provider's and the consumer's security servers as real processes: each
/// initialised, registered, approved by the administrator and serving.
pub(super) async fn binary_pair(inst: &Instance) -> Vec<BinServer> {
    binary_servers(
        inst,
        &[(PROVIDER, PROVIDER_CLIENT), (CONSUMER, CONSUMER_CLIENT)],
    )
    .await
}

/// Security servers as real processes, one per (server id, hosted subsystem), in that
/// order: each initialised, registered, approved by the administrator and serving.
pub(super) async fn binary_servers(inst: &Instance, which: &[(&str, &str)]) -> Vec<BinServer> {
    binary_servers_env(inst, which, &[]).await
}

/// [`binary_servers`], each served with more environment variables.
pub(super) async fn binary_servers_env(
    inst: &Instance,
    which: &[(&str, &str)],
    env: &[(&str, &std::ffi::OsStr)],
) -> Vec<BinServer> {
    let mut servers = Vec::new();
    for &(id, client) in which {
        let dir = inst.root.join(format!("bin-{}", id.replace('/', "_")));
        let peer = free_port();
        run(lintas_cmd(&[
            "ss",
            "init",
            "--server-id",
            id,
            "--client",
            client,
            "--address",
            &peer,
        ])
        .arg("--dir")
        .arg(&dir)
        .arg("--anchor")
        .arg(inst.anchor()));
        let config = dir.join("ss.toml");
        let config = config.to_str().unwrap().to_owned();
        // Checked with the settings it is served with (the log's first segment is
        // made by whichever opens it first).
        let check = || {
            let mut cmd = lintas_cmd(&["ss", "serve", "--check-config", "--config", &config]);
            cmd.env("LINTAS_SS_LOG_SEGMENT_KIB", "4");
            run(&mut cmd)
        };
        let checked = check();
        assert!(checked.contains("not enrolled yet"), "{checked}");
        run(&mut lintas_cmd(&["ss", "register", "--config", &config]));
        let pending = inst.pending().await;
        inst.admin()
            .approve(pb::DecisionRequest {
                request_id: pending[0].request_id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap();
        let status = run(&mut lintas_cmd(&["ss", "status", "--config", &config]));
        assert!(status.contains("certificates stored"), "{status}");
        assert!(status.contains("not running"), "{status}");
        let consumer_listen = free_port();
        let checked = check();
        assert!(
            checked.contains("keys, certificates and state are valid"),
            "{checked}"
        );
        let (daemon, ops) = serve_child_env(&dir, &consumer_listen, &peer, env);
        // Beside the running server, which holds the state, the rest is checked.
        let checked = check();
        assert!(checked.contains("the server is running"), "{checked}");
        servers.push(BinServer {
            daemon,
            config,
            dir,
            consumer_listen,
            peer,
            ops,
        });
    }
    servers
}

/// The population registry served on a loopback port: its URL, and what stops it
/// when dropped.
pub(super) async fn population_app() -> (String, tokio::sync::oneshot::Sender<()>) {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    let (stop_app, stop) = stopper();
    tokio::spawn(lintas_examples::population_registry::serve(app, stop));
    (url, stop_app)
}

/// Publishes the population registry at `app_url` on the server of `config` and grants
/// it to the consumer's client, with the CLI.
pub(super) fn publish_with_the_cli(config: &str, app_url: &str) {
    run(&mut lintas_cmd(&[
        "ss",
        "service",
        "add",
        PROVIDER_CLIENT,
        SERVICE,
        "--endpoint",
        app_url,
        "--config",
        config,
    ]));
    run(&mut lintas_cmd(&[
        "ss",
        "acl",
        "grant",
        PROVIDER_CLIENT,
        SERVICE,
        CONSUMER_CLIENT,
        "--config",
        config,
    ]));
}

/// Calls CariNik through the consumer endpoint at `listen` (development mode).
pub(super) async fn cari_at(
    listen: &str,
    message_id: Option<&str>,
) -> Result<DataPenduduk, Status> {
    let channel = plain_channel(&format!("http://{listen}")).await?;
    cari_nik(channel, CONSUMER_CLIENT, NIK, message_id).await
}

// Multi-threaded: the registry serves in this process while the test blocks on children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_two_security_servers_configured_while_running() {
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let lintas = lintas_cmd;
    let servers = binary_pair(&inst).await;
    let (app_url, _stop_app) = population_app().await;

    let provider_config = &servers[0].config;
    let out = run(&mut lintas(&[
        "ss",
        "service",
        "add",
        PROVIDER_CLIENT,
        SERVICE,
        "--endpoint",
        &app_url,
        "--config",
        provider_config,
    ]));
    assert!(out.contains("is served by"), "{out}");
    // The population registry serves no reflection: the server says what that means.
    assert!(
        out.contains(
            "no descriptors are published (the application does not serve gRPC server reflection)"
        ),
        "{out}"
    );
    // Given the .proto file, the same service is published with its descriptors.
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/proto/kependudukan/v1/penduduk.proto");
    let out = run(lintas(&[
        "ss",
        "service",
        "add",
        PROVIDER_CLIENT,
        SERVICE,
        "--endpoint",
        &app_url,
        "--config",
        provider_config,
        "--proto",
    ])
    .arg(&proto));
    assert!(
        out.contains("its descriptors are published (methods: CariNik)"),
        "{out}"
    );
    let listed = run(&mut lintas(&[
        "ss",
        "service",
        "list",
        "--config",
        provider_config,
    ]));
    assert!(listed.contains("methods: CariNik"), "{listed}");
    let call = || cari_at(&servers[1].consumer_listen, None);
    // No grant yet: refused by the provider server.
    let err = call().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let out = run(&mut lintas(&[
        "ss",
        "acl",
        "grant",
        PROVIDER_CLIENT,
        SERVICE,
        CONSUMER_CLIENT,
        "--method",
        "CariNik",
        "--config",
        provider_config,
    ]));
    assert!(out.contains("granted"), "{out}");
    let provider_dir = std::path::Path::new(provider_config).parent().unwrap();
    let listed = run(lintas(&["ss", "acl", "list"]).current_dir(provider_dir));
    assert!(listed.contains(CONSUMER_CLIENT), "{listed}");
    assert_eq!(call().await.unwrap().nama, "Siti Rahayu");

    // The same lists for scripts: the management API's fields.
    let json = |args: &[&str]| -> serde_json::Value {
        let out = run(lintas(args).arg("--json").current_dir(provider_dir));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let services = json(&["ss", "service", "list"]);
    assert_eq!(
        services["items"][0]["provider"], PROVIDER_CLIENT,
        "{services}"
    );
    assert_eq!(services["items"][0]["methods"][0], "CariNik", "{services}");
    assert_eq!(services["items"][0]["described"], true, "{services}");
    let grants = json(&["ss", "acl", "list"]);
    assert_eq!(
        grants["items"],
        serde_json::json!([{"provider": PROVIDER_CLIENT, "service": SERVICE,
            "subject": CONSUMER_CLIENT, "method": "CariNik"}])
    );
    // A quota from the command line, refused with the field named when wrong.
    let out = run(lintas(&[
        "ss",
        "quota",
        "set",
        PROVIDER_CLIENT,
        SERVICE,
        "--rate",
        "600/min",
        "--burst",
        "50",
        "--method",
        "CariNik",
    ])
    .current_dir(provider_dir));
    assert!(
        out.contains("quota set") && out.contains("600/min, burst 50"),
        "{out}"
    );
    let bad = lintas(&[
        "ss",
        "quota",
        "set",
        PROVIDER_CLIENT,
        SERVICE,
        "--rate",
        "600",
    ])
    .current_dir(provider_dir)
    .output()
    .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("CALLS/PERIOD"),
        "{bad:?}"
    );
    assert_eq!(
        json(&["ss", "quota", "list"])["items"],
        serde_json::json!([{"provider": PROVIDER_CLIENT, "service": SERVICE,
            "method": "CariNik", "rate": "600/min", "burst": 50}])
    );
    assert_eq!(call().await.unwrap().nama, "Siti Rahayu");
    assert!(json(&["ss", "client-cert", "list"])["items"].is_array());
    let users = json(&["ss", "user", "list"]);
    assert_eq!(users["items"][0]["name"], "admin", "{users}");
    assert!(json(&["ss", "api-key", "list"])["items"].is_array());
    let log = json(&["ss", "log-status"]);
    assert!(log["records"].as_u64().unwrap() >= 2, "{log}");
    let conf = json(&["ss", "conf"]);
    assert!(conf["serial"].as_u64().unwrap() > 0, "{conf}");
    assert!(conf["servers"].as_u64().unwrap() >= 2, "{conf}");

    // The operator's view of the running server: ready, then in maintenance, then back.
    let status = run(&mut lintas(&["ss", "status", "--config", provider_config]));
    assert!(status.contains("ready: the server can serve"), "{status}");
    let out = run(&mut lintas(&[
        "ss",
        "maintenance",
        "on",
        "--reason",
        "upgrade",
        "--config",
        provider_config,
    ]));
    assert!(out.contains("maintenance on"), "{out}");
    let json = lintas(&["ss", "status", "--json", "--config", provider_config])
        .output()
        .unwrap();
    assert!(!json.status.success(), "not ready exits non-zero");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ready"], false);
    assert_eq!(report["maintenance_reason"], "upgrade");
    let err = call().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    run(&mut lintas(&[
        "ss",
        "maintenance",
        "off",
        "--config",
        provider_config,
    ]));
    run(&mut lintas(&[
        "ss",
        "status",
        "--json",
        "--config",
        provider_config,
    ]));
    assert_eq!(call().await.unwrap().nama, "Siti Rahayu");
    // Every exchange has its monitoring record, refusals included.
    let json = run(&mut lintas(&[
        "ss",
        "opmon",
        "--json",
        "--config",
        provider_config,
    ]));
    let page: serde_json::Value = serde_json::from_str(&json).unwrap();
    let records = page["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["code"] == "Ok" && r["method"] == "CariNik"),
        "{json}"
    );
    assert!(
        records.iter().any(|r| r["code"] == "PermissionDenied"),
        "{json}"
    );
    let text = run(&mut lintas(&[
        "ss",
        "opmon",
        "--client",
        CONSUMER_CLIENT,
        "--limit",
        "1",
        "--config",
        provider_config,
    ]));
    assert!(text.contains("more: add --cursor"), "{text}");

    // Bad administrative input is refused with the reason.
    let bad = lintas(&[
        "ss",
        "acl",
        "grant",
        "ID/GOV/KEMENSOS/DTKS",
        SERVICE,
        CONSUMER_CLIENT,
        "--config",
        provider_config,
    ])
    .output()
    .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not hosted on this server"));

    // Users and API keys of the management API, over the socket; `init` made the first
    // administrator, and every change above is in the admin audit log.
    let users = run(&mut lintas(&[
        "ss",
        "user",
        "list",
        "--config",
        provider_config,
    ]));
    assert!(users.contains("admin  system-administrator"), "{users}");
    let added = run(lintas(&[
        "ss",
        "user",
        "add",
        "siti",
        "--role",
        "service-administrator,auditor",
        "--config",
        provider_config,
    ])
    .env("LINTAS_PASSWORD", "kata sandi yang panjang"));
    assert!(
        added.contains("siti  service-administrator,auditor"),
        "{added}"
    );
    assert!(!added.contains("shown once"), "{added}");
    let short = lintas(&[
        "ss",
        "user",
        "add",
        "budi",
        "--role",
        "auditor",
        "--config",
        provider_config,
    ])
    .env("LINTAS_PASSWORD", "pendek")
    .output()
    .unwrap();
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("password: at least 12 characters"),
        "{short:?}"
    );
    let key = run(&mut lintas(&[
        "ss",
        "api-key",
        "create",
        "--name",
        "laporan harian",
        "--role",
        "auditor",
        "--config",
        provider_config,
    ]));
    assert!(key.contains("key (shown once): lintas_"), "{key}");
    let log_file = servers[0].dir.join("admin-log.jsonl");
    run(
        lintas(&["ss", "admin-log", "export", "--config", provider_config])
            .arg("--out")
            .arg(&log_file),
    );
    let entries =
        lintas_manage::audit::verify(&std::fs::read(&log_file).unwrap(), "export").unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.actor.starts_with("socket:uid "))
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    for expected in [
        ("service.add", "ok"),
        ("grant.add", "ok"),
        ("user.add", "ok"),
        ("api-key.add", "ok"),
    ] {
        assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
    }
    assert!(
        actions
            .iter()
            .any(|(a, o)| *a == "user.add" && o.contains("at least 12 characters")),
        "{actions:?}"
    );
    // The log never holds a password.
    assert!(!String::from_utf8_lossy(&std::fs::read(&log_file).unwrap()).contains("kata sandi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_calls_in_flight_restarts_and_every_answered_call_is_in_both_logs() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let mut servers = binary_pair(&inst).await;
    let (app_url, _stop_app) = population_app().await;
    publish_with_the_cli(&servers[0].config, &app_url);

    // Sixteen callers, each with its own message ids, until told to stop.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..16)
        .map(|t| {
            let (answered, count, enough, done) = (
                answered.clone(),
                count.clone(),
                enough.clone(),
                done.clone(),
            );
            let listen = servers[1].consumer_listen.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !done.load(Ordering::SeqCst) {
                    let id = format!("crash-{t}-{i}");
                    i += 1;
                    if cari_at(&listen, Some(&id)).await.is_ok() {
                        answered.lock().unwrap().push(id);
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == 60 {
                            enough.notify_one();
                        }
                    }
                }
            })
        })
        .collect();
    enough.notified().await;
    // The provider's server dies at once, with calls in flight.
    servers[0].daemon.stop_with("-KILL");
    done.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 60);

    // It starts again: its log is checked against its last checkpoint and the witness.
    let p = &servers[0];
    servers[0].daemon = serve_child(&p.dir, &p.consumer_listen, &p.peer).0;

    // Every call a client saw answered is in both logs, and the evidence verifies.
    let anchor = lintas_globalconf::Anchor::load(&inst.anchor()).unwrap();
    let mut reports = Vec::new();
    for s in &servers {
        let out = s.dir.join("all.evidence");
        run(lintas_cmd(&[
            "audit",
            "export",
            "--client",
            CONSUMER_CLIENT,
            "--config",
            &s.config,
        ])
        .arg("--out")
        .arg(&out));
        let bundle = lintas_proto::audit::v1::EvidenceBundle::decode(
            std::fs::read(&out).unwrap().as_slice(),
        )
        .unwrap();
        let report = lintas_audit::verify(&bundle, &anchor);
        assert!(report.verified, "{}: {:#?}", s.config, report.failures);
        reports.push(report);
    }
    let failed = lintas_audit::cross_check(&reports[0], &reports[1]).failures;
    assert!(failed.is_empty(), "{failed:?}");
    for id in &answered {
        for r in &reports {
            let x = r
                .exchanges
                .iter()
                .find(|x| &x.message_id == id)
                .unwrap_or_else(|| {
                    panic!("answered call {id} is missing from the log of {}", r.origin)
                });
            assert!(
                x.request.is_some() && x.response.is_some(),
                "answered call {id} lacks its signed request or response in the log of {}",
                r.origin
            );
        }
    }

    // The running server reports its log's state.
    let out = run(&mut lintas_cmd(&[
        "ss",
        "log-status",
        "--config",
        &servers[1].config,
    ]));
    assert!(out.contains("witnessed by the registry:"), "{out}");

    // The provider's sealed segments, archived and verified offline.
    let archive = servers[0].dir.join("archive");
    run(
        lintas_cmd(&["audit", "archive", "--config", &servers[0].config])
            .arg("--out")
            .arg(&archive),
    );
    let verify = || {
        lintas_cmd(&["audit", "verify-archive"])
            .arg(&archive)
            .arg("--anchor")
            .arg(inst.anchor())
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("unchanged: they are the beginning of the log"),
        "{text}"
    );
    // One changed byte in an archived segment is found.
    let first = archive.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("is not the file the manifest names"),
        "{text}"
    );
}
