//! Keys in a hardware token (SoftHSM2), on real processes: a registry whose
//! configuration-signing and time-stamping keys, and a provider whose signing and log
//! keys, are made in tokens and never written to disk. Calls go through, the evidence
//! verifies, and a renewal makes the new signing key in the token too.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;

use lintas_testkit::softhsm::{MODULE, SoftHsm};

use super::binary::{
    cari_at, free_port, free_port_on, lintas_cmd, population_app, serve_child_env,
};
use super::*;

/// The `--pkcs11-*` arguments for `token`.
fn token_args<'a>(hsm: &'a SoftHsm, token: &'a str) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("--pkcs11-module"),
        OsStr::new(MODULE),
        OsStr::new("--pkcs11-token"),
        OsStr::new(token),
        OsStr::new("--pkcs11-pin-file"),
        hsm.pin_file().into_os_string().leak(),
    ]
}

/// Whether the key file at `path` only names a token's key.
fn names_a_token_key(path: &std::path::Path, token: &str) -> bool {
    let text = std::fs::read_to_string(path).unwrap();
    !text.contains("PRIVATE KEY") && text.contains(&format!("pkcs11_token = \"{token}\""))
}

/// The environment of a server in this test: the tokens, and the log time-stamped and
/// witnessed every second.
fn stamp_often(hsm_conf: &std::path::Path) -> [(&'static str, &OsStr); 3] {
    [
        ("SOFTHSM2_CONF", hsm_conf.as_os_str()),
        ("LINTAS_SS_TIMESTAMP_INTERVAL_SECS", OsStr::new("1")),
        ("LINTAS_SS_WITNESS_INTERVAL_SECS", OsStr::new("1")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_in_a_token_sign_exchanges_configuration_and_time_stamps() {
    let hsm = SoftHsm::new();
    for token in ["registry", "provider"] {
        hsm.add_token(token);
    }
    let (hsm_var, hsm_conf) = hsm.env();
    let root = tempfile::tempdir().unwrap();

    // The registry: configuration-signing and time-stamping keys in its token.
    let reg = root.path().join("registry");
    let grpc = free_port();
    let host = grpc.rsplit_once(':').unwrap().0.to_owned();
    let http = free_port_on(&host);
    run(lintas_cmd(&["registry", "init", "--instance", "ID"])
        .args(["--grpc-listen", &grpc, "--http-listen", &http])
        .args(["--public-host", &host])
        .args(token_args(&hsm, "registry"))
        .arg("--dir")
        .arg(&reg)
        .env(hsm_var, &hsm_conf)
        .env("LINTAS_ADMIN_PASSWORD", "a-long-enough-password"));
    for key in ["globalconf.key.pem", "tsa.key.pem"] {
        assert!(names_a_token_key(&reg.join(key), "registry"), "{key}");
    }
    assert!(!names_a_token_key(&reg.join("tls.key.pem"), "registry"));
    let notify = root.path().join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _registry = Daemon(Some(
        lintas_cmd(&["registry", "serve", "--config"])
            .arg(reg.join("registry.toml"))
            .env(hsm_var, &hsm_conf)
            .env("LINTAS_REGISTRY_OPS_LISTEN", "127.0.0.1:0")
            .env("LINTAS_REGISTRY_MANAGEMENT_LISTEN", "127.0.0.1:0")
            .env("NOTIFY_SOCKET", &notify)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(root.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap(),
    ));
    let mut ready = [0u8; 512];
    let n = socket.recv(&mut ready).unwrap();
    assert!(
        String::from_utf8_lossy(&ready[..n]).starts_with("READY=1"),
        "{}",
        String::from_utf8_lossy(&ready[..n])
    );
    let anchor = reg.join("anchor.toml");

    // The provider's server keeps its signing and log keys in its token; the consumer's
    // keeps key files. Each enrols with a one-time token from the administrator.
    let mut servers = Vec::new();
    for (id, client, token) in [
        (PROVIDER, PROVIDER_CLIENT, Some("provider")),
        (CONSUMER, CONSUMER_CLIENT, None),
    ] {
        let dir = root.path().join(id.replace('/', "_"));
        let peer = free_port();
        run(
            lintas_cmd(&["ss", "init", "--server-id", id, "--client", client])
                .args(["--address", &peer])
                .args(token.map(|t| token_args(&hsm, t)).unwrap_or_default())
                .arg("--dir")
                .arg(&dir)
                .arg("--anchor")
                .arg(&anchor)
                .env(hsm_var, &hsm_conf),
        );
        let enrolment = run(lintas_cmd(&["registry", "admin"])
            .args(["--url", &format!("https://{grpc}")])
            .arg("--admin-dir")
            .arg(reg.join("admin"))
            .args(["token", id]));
        let config = dir.join("ss.toml");
        let registered = run(lintas_cmd(&["ss", "register", "--token", enrolment.trim()])
            .arg("--config")
            .arg(&config)
            .env(hsm_var, &hsm_conf));
        assert!(registered.contains("certificates stored"), "{registered}");
        let consumer_listen = free_port();
        let (daemon, _) = serve_child_env(&dir, &consumer_listen, &peer, &stamp_often(&hsm_conf));
        servers.push((dir, config, consumer_listen, peer, daemon));
    }
    let provider = servers[0].0.clone();
    for key in ["sign.key.pem", "log.key.pem"] {
        assert!(names_a_token_key(&provider.join(key), "provider"), "{key}");
    }
    assert!(!names_a_token_key(
        &servers[1].0.join("sign.key.pem"),
        "provider"
    ));
    // The configuration check logs in to the token and signs once; without the token it
    // says which token it did not find.
    let checked = run(lintas_cmd(&["ss", "serve", "--check-config", "--config"])
        .arg(&servers[0].1)
        .env(hsm_var, &hsm_conf));
    assert!(
        checked.contains("keys and certificates are valid"),
        "{checked}"
    );
    let elsewhere = SoftHsm::new();
    let (_, empty_conf) = elsewhere.env();
    let missing = lintas_cmd(&["ss", "serve", "--check-config", "--config"])
        .arg(&servers[0].1)
        .env(hsm_var, &empty_conf)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(3), "{said}");
    assert!(said.contains("no token is labelled 'provider'"), "{said}");

    let (app_url, _stop_app) = population_app().await;
    super::binary::publish_with_the_cli(servers[0].1.to_str().unwrap(), &app_url);
    let answer = cari_at(&servers[1].2, None).await.unwrap();
    assert_eq!(answer.nik, NIK);

    // The provider's evidence: its signatures, and the registry's cosignature and
    // time-stamp, all made in tokens, verify against the anchor.
    let bundle = provider.join("provider.evidence");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let _ = std::fs::remove_file(&bundle);
        run(
            lintas_cmd(&["audit", "export", "--client", CONSUMER_CLIENT])
                .arg("--config")
                .arg(&servers[0].1)
                .arg("--out")
                .arg(&bundle)
                .env(hsm_var, &hsm_conf),
        );
        let verified = lintas_cmd(&["audit", "verify", "--json"])
            .arg(&bundle)
            .arg("--anchor")
            .arg(&anchor)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
        assert!(verified.status.success(), "{report}");
        let bundle_report = &report["bundles"][0];
        let exchange = &bundle_report["exchanges"][0];
        assert_eq!(
            exchange["response"]["signed_by"], "ID/GOV/KEMENDAGRI",
            "{report}"
        );
        if exchange["recorded_before"].is_string()
            && bundle_report["checkpoint"]["witnessed_by"].is_string()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no time-stamp or cosignature within 60 s: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A renewal makes the new signing key in the same token.
    let renewed = run(lintas_cmd(&["ss", "certs", "renew", "--json", "--config"])
        .arg(&servers[0].1)
        .env(hsm_var, &hsm_conf));
    let renewed: serde_json::Value = serde_json::from_str(&renewed).unwrap();
    assert_eq!(renewed["state"], "approved", "{renewed}");
    let next = provider.join("sign.key.pem.next");
    assert!(names_a_token_key(&next, "provider"));
    assert_ne!(
        std::fs::read(&next).unwrap(),
        std::fs::read(provider.join("sign.key.pem")).unwrap()
    );
    // The provider restarts on it, and calls go on.
    servers[0].4.stop_with("-TERM");
    let (dir, _, listen, peer, _) = &servers[0];
    servers[0].4 = serve_child_env(dir, listen, peer, &stamp_often(&hsm_conf)).0;
    assert!(!next.exists());
    assert!(names_a_token_key(
        &provider.join("sign.key.pem"),
        "provider"
    ));
    cari_at(&servers[1].2, None).await.unwrap();
}
