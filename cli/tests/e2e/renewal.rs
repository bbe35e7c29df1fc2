//! `lintas ss certs renew` on real processes: the registry approves a renewal the
//! server's own certificate authenticates, peers accept the server before it switches
//! (the configuration lists both certificates) and after, when it restarts on the new
//! ones.

use super::binary::{
    binary_pair, cari_at, lintas_cmd, population_app, publish_with_the_cli, serve_child,
};
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_server_is_accepted_before_and_after_it_switches() {
    let inst = Instance::start().await;
    inst.follow_system_clock();
    let mut servers = binary_pair(&inst).await;
    let (app_url, _stop_app) = population_app().await;
    publish_with_the_cli(&servers[0].config, &app_url);
    cari_at(&servers[1].consumer_listen, None).await.unwrap();

    let provider = servers[0].dir.clone();
    let old_tls = std::fs::read(provider.join("tls.crt.pem")).unwrap();
    // A request the registry no longer knows (expired undecided) is filed again.
    std::fs::write(provider.join("renewal.toml"), "request_id = \"0123\"\n").unwrap();
    let out = run(&mut lintas_cmd(&[
        "ss",
        "certs",
        "renew",
        "--json",
        "--config",
        &servers[0].config,
    ]));
    let renewal: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(renewal["state"], "approved", "{renewal}");
    assert!(
        renewal["decided_by"]
            .as_str()
            .unwrap()
            .contains("TLS certificate"),
        "{renewal}"
    );
    assert!(provider.join("tls.crt.pem.next").exists());
    assert_eq!(
        std::fs::read(provider.join("tls.crt.pem")).unwrap(),
        old_tls
    );

    // The consumer's server restarts with the configuration that lists the provider's
    // new certificate first (fetched into its cache by `ss conf`): the provider, not
    // restarted, still presents the old one, which is listed beside it.
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

    // The provider restarts on its new keys and certificates.
    servers[0].daemon.stop_with("-TERM");
    let p = &servers[0];
    servers[0].daemon = serve_child(&p.dir, &p.consumer_listen, &p.peer).0;
    assert_ne!(
        std::fs::read(provider.join("tls.crt.pem")).unwrap(),
        old_tls
    );
    assert!(!provider.join("tls.crt.pem.next").exists());
    assert!(!provider.join("renewal.toml").exists());
    cari_at(&servers[1].consumer_listen, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_renews_by_itself_before_its_certificates_expire() {
    // Certificates are issued for 730 days: renewing 800 days ahead is due at once.
    let net = network_edited(true, |c| c.renew_before_days = 800).await;
    let ready = net.provider_paths.0.join("tls.crt.pem.next");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no renewal within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, health) = super::ops::ops_get(&net.provider_ops, "/readyz").await;
    assert!(
        health.contains("renewed certificates are ready"),
        "{health}"
    );
    // The registry lists the new certificate and, beside it, the one in use.
    let cache = tempfile::tempdir().unwrap();
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let conf = lintas_globalconf::ConfClient::open(anchor, cache.path(), net.inst.clock.clone())
        .unwrap()
        .fetch()
        .await
        .unwrap();
    let entry = conf.server(&PROVIDER.parse().unwrap()).unwrap();
    let in_use = lintas_certs::files::read_cert(&net.provider_paths.tls_cert()).unwrap();
    assert_eq!(
        entry.other_tls_cert_sha256,
        vec![lintas_certs::sha256(&in_use).to_vec()]
    );
    // Calls go on meanwhile.
    net.cari(CONSUMER_CLIENT, NIK).await.unwrap();
}
