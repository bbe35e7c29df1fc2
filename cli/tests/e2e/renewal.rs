//! `lintas ss certs renew` on real processes: the registry approves a renewal the
//! server's own certificate authenticates, peers accept the server before it switches
//! (the configuration lists both certificates) and after, when it switches while
//! serving and when it restarts on the new ones.

use super::binary::{
    binary_pair, cari_at, lintas_cmd, population_app, publish_with_the_cli, serve_child,
};
use super::*;

/// Whether the security server listening at `peer` presents the TLS certificate
/// `cert` to a new connection (one that trusts only that certificate, made with the
/// consumer's server's identity).
async fn presents(peer: &str, cert: &[u8], consumer_dir: &std::path::Path, anchor: &Path) -> bool {
    let anchor = lintas_globalconf::Anchor::load(anchor).unwrap();
    let trust = anchor.trust_store();
    let identity = (
        lintas_certs::files::read_cert(&consumer_dir.join("tls.crt.pem")).unwrap(),
        lintas_certs::keys::read(&consumer_dir.join("tls.key.pem")).unwrap(),
    );
    let tls = lintas_transport::pinned_client_config(
        trust,
        Role::Server,
        &[lintas_certs::sha256(cert)],
        Some((&identity.0, &identity.1)),
    )
    .unwrap();
    let channel = lintas_transport::channel(&format!("https://{peer}"), tls).unwrap();
    // An empty request is refused by the server, after the handshake; a certificate
    // other than the pinned one fails the handshake.
    let answer = lintas_proto::exchange::v1::exchange_client::ExchangeClient::new(channel)
        .call(lintas_proto::exchange::v1::SignedRequest::default())
        .await;
    !matches!(answer, Err(s) if s.code() == Code::Unavailable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_server_is_accepted_before_and_after_it_switches_while_serving() {
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let mut servers = binary_pair(&inst).await;
    let (app_url, _stop_app) = population_app().await;
    publish_with_the_cli(&servers[0].config, &app_url);
    cari_at(&servers[1].consumer_listen, None).await.unwrap();

    let provider = servers[0].dir.clone();
    let old_tls = std::fs::read(provider.join("tls.crt.pem")).unwrap();
    let old_der = lintas_certs::files::read_cert(&provider.join("tls.crt.pem")).unwrap();
    // A request the registry no longer knows (expired undecided) is filed again.
    std::fs::write(provider.join("renewal.toml"), "request_id = \"0123\"\n").unwrap();
    let provider_config = servers[0].config.clone();
    let renew = |switch_now: bool| {
        let mut cmd = lintas_cmd(&["ss", "certs", "renew", "--json", "--config"]);
        cmd.arg(&provider_config);
        if switch_now {
            cmd.arg("--switch-now");
        }
        let renewal: serde_json::Value = serde_json::from_str(&run(&mut cmd)).unwrap();
        renewal
    };
    let renewal = renew(false);
    assert_eq!(renewal["state"], "approved", "{renewal}");
    assert!(
        renewal["decided_by"]
            .as_str()
            .unwrap()
            .contains("TLS certificate"),
        "{renewal}"
    );
    // The running server switches once every configuration from before the renewal
    // has expired (an hour here): not yet.
    assert_eq!(renewal["switched"], false, "{renewal}");
    let switch_at = renewal["switch_at"].as_i64().unwrap();
    let now = lintas_certs::unix_secs(SystemTime::now());
    assert!(
        (now + 3000..=now + 3700).contains(&switch_at),
        "{switch_at} at {now}"
    );
    assert!(provider.join("tls.crt.pem.next").exists());
    assert_eq!(
        std::fs::read(provider.join("tls.crt.pem")).unwrap(),
        old_tls
    );

    // The consumer's server restarts with the configuration that lists the provider's
    // new certificate first (fetched into its cache by `ss conf`): the provider still
    // presents the old one, which is listed beside it.
    servers[1].daemon.stop_with("-TERM");
    run(&mut lintas_cmd(&[
        "ss",
        "conf",
        "--config",
        &servers[1].config,
    ]));
    let c = &servers[1];
    servers[1].daemon = serve_child(&c.dir, &c.consumer_listen, &c.peer).0;
    cari_at(&servers[1].consumer_listen, None).await.unwrap();
    assert!(presents(&servers[0].peer, &old_der, &servers[1].dir, &inst.anchor()).await);

    // Switched at once, without a restart: the provider presents its new certificate
    // to new connections and answers calls.
    let pid = servers[0].daemon.0.as_ref().unwrap().id();
    let renewal = renew(true);
    assert_eq!(renewal["switched"], true, "{renewal}");
    assert_ne!(
        std::fs::read(provider.join("tls.crt.pem")).unwrap(),
        old_tls
    );
    assert!(!provider.join("tls.crt.pem.next").exists());
    assert!(!provider.join("renewal.toml").exists());
    let new_der = lintas_certs::files::read_cert(&provider.join("tls.crt.pem")).unwrap();
    assert!(presents(&servers[0].peer, &new_der, &servers[1].dir, &inst.anchor()).await);
    assert!(!presents(&servers[0].peer, &old_der, &servers[1].dir, &inst.anchor()).await);
    cari_at(&servers[1].consumer_listen, None).await.unwrap();
    assert_eq!(servers[0].daemon.0.as_ref().unwrap().id(), pid);

    // And after a restart, on the same files.
    servers[0].daemon.stop_with("-TERM");
    let p = &servers[0];
    servers[0].daemon = serve_child(&p.dir, &p.consumer_listen, &p.peer).0;
    cari_at(&servers[1].consumer_listen, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_renews_by_itself_before_its_certificates_expire() {
    // Certificates are issued for 730 days: renewing 800 days ahead is due at once, and
    // switched to as soon as the configuration lists the new ones.
    let net = network_edited(true, |c| {
        c.renew_before_days = 800;
        c.renewal_switch_delay_secs = Some(0);
    })
    .await;
    let tls = net.provider_paths.tls_cert();
    let first = std::fs::read(&tls).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read(&tls).unwrap() == first
        || net.provider_paths.0.join("tls.crt.pem.next").exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no renewal switched to within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, health) = super::ops::ops_get(&net.provider_ops, "/readyz").await;
    assert!(!health.contains("renewed certificates"), "{health}");
    // The registry lists the new certificate and, beside it, the one used before.
    let cache = tempfile::tempdir().unwrap();
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let conf = lintas_globalconf::ConfClient::open(anchor, cache.path(), net.inst.clock.clone())
        .unwrap()
        .fetch()
        .await
        .unwrap();
    let entry = conf.server(&PROVIDER.parse().unwrap()).unwrap();
    let in_use = lintas_certs::files::read_cert(&tls).unwrap();
    assert_eq!(
        entry.tls_cert_sha256,
        lintas_certs::sha256(&in_use).to_vec()
    );
    let before =
        lintas_certs::pem::cert_from_pem(&String::from_utf8(first).unwrap(), "before").unwrap();
    assert_eq!(
        entry.other_tls_cert_sha256,
        vec![lintas_certs::sha256(&before).to_vec()]
    );
    // Calls go on, signed with the new key.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
}
