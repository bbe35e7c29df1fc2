//! `lintas registry keys`: the registry's configuration-signing key, CA and TSA rotate,
//! the new anchor reaching servers in configurations they verify with the one they hold.

use super::binary::lintas_cmd;
use super::*;

/// Runs one rotation step on the stopped registry, then starts it again. Activation
/// comes at once here (`--now`), not a configuration's validity after `add`.
async fn step(inst: &mut Instance, step: &str, kind: &str) -> serde_json::Value {
    inst.stop().await;
    let mut cmd = lintas_cmd(&["registry", "keys", step, kind, "--json", "--config"]);
    cmd.arg(inst.root.join("registry/registry.toml"));
    if step == "activate" {
        cmd.arg("--now");
    }
    let out = run(&mut cmd);
    start_again(inst).await;
    serde_json::from_str(&out).unwrap()
}

async fn start_again(inst: &mut Instance) {
    let grpc = TcpListener::bind(inst.config.grpc_listen).await.unwrap();
    let http = TcpListener::bind(inst.config.http_listen).await.unwrap();
    inst.serve(grpc, http).await;
}

/// Runs a rotation step that must be refused, saying `words`.
fn refused(inst: &Instance, step: &str, kind: &str, words: &str) {
    let out = lintas_cmd(&["registry", "keys", step, kind, "--config"])
        .arg(inst.root.join("registry/registry.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(said.contains(words), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_rotates_its_keys_and_servers_follow_the_announced_anchor() {
    let mut inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    inst.enrol(&node).await;
    let original = std::fs::read_to_string(node.paths.anchor()).unwrap();
    let held = || lintas_globalconf::Anchor::load(&node.paths.anchor()).unwrap();
    inst.conf_client(&node).fetch().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(node.paths.anchor()).unwrap(),
        original
    );

    // 1. A new configuration-signing key is announced: the server's anchor lists both.
    let added = step(&mut inst, "add", "conf-signing").await;
    assert_eq!(added["step"], "add", "{added}");
    inst.conf_client(&node).fetch().await.unwrap();
    assert_eq!(held().signing_certs.len(), 2);
    assert_eq!(held().fingerprint, added["anchor_sha256"]);
    assert_eq!(held().version, 1);
    // Activating before servers can all have fetched that anchor is refused.
    refused(&inst, "activate", "conf-signing", "give --now");
    // 2. Activated: the registry signs with it. The server verifies that with the
    // anchor it adopted; the anchor it was installed with no longer would.
    let activated = step(&mut inst, "activate", "conf-signing").await;
    let conf = inst.conf_client(&node).fetch().await.unwrap();
    node.check_listed(&conf).unwrap();
    let signer = lintas_proto::globalconf::v1::SignedGlobalConf::decode(conf.blob.as_slice())
        .unwrap()
        .signer_cert;
    assert_eq!(
        lintas_certs::hex(&lintas_certs::sha256(&signer)),
        activated["cert_sha256"]
    );
    let stale = lintas_globalconf::Anchor::parse(&original, "installed").unwrap();
    assert!(matches!(
        lintas_globalconf::verify(&conf.blob, &stale, SystemTime::now()),
        Err(ConfError::UnknownSigner)
    ));

    // 3. Retired: the anchor lists the new certificate only.
    step(&mut inst, "retire", "conf-signing").await;
    inst.conf_client(&node).fetch().await.unwrap();
    assert_eq!(held().signing_certs, vec![signer.clone()]);

    // A new CA: announced, activated (servers enrolled from now on get its
    // certificates), and both CAs are trusted meanwhile.
    step(&mut inst, "add", "ca").await;
    inst.conf_client(&node).fetch().await.unwrap();
    assert_eq!(held().ca_certs.len(), 2);
    let ca = step(&mut inst, "activate", "ca").await;
    let conf = inst.conf_client(&node).fetch().await.unwrap();
    assert_eq!(held().ca_certs.len(), 2);
    assert_eq!(conf.conf.approved_cas.len(), 2);
    let second = inst.node_at(CONSUMER, &[CONSUMER_CLIENT], "127.0.0.1:5501");
    inst.enrol(&second).await;
    let issued = lintas_certs::files::read_cert(&second.paths.tls_cert()).unwrap();
    let new_ca = held()
        .ca_certs
        .into_iter()
        .find(|c| lintas_certs::hex(&lintas_certs::sha256(c)) == ca["cert_sha256"])
        .unwrap();
    lintas_certs::TrustStore::new([new_ca.as_slice()])
        .unwrap()
        .verify(&issued, Role::Server, SystemTime::now())
        .unwrap();
    // Administrators' tools trust both CAs meanwhile; the one in admin/ got a
    // certificate of the new CA.
    let admin = inst.root.join("registry/admin");
    let admin_cas =
        || lintas_certs::files::read_certs(&lintas_registry::admin::ca_path(&admin)).unwrap();
    assert_eq!(admin_cas().len(), 2);
    let kept = lintas_certs::TrustStore::new([new_ca.as_slice()]).unwrap();
    let admin_cert =
        lintas_certs::files::read_cert(&lintas_registry::admin::cert_path(&admin)).unwrap();
    kept.verify(&admin_cert, Role::Admin, SystemTime::now())
        .unwrap();
    // The old CA cannot be retired while the registry's own certificates come from it.
    refused(&inst, "retire", "ca", "configuration-signing certificate");
    step(&mut inst, "add", "conf-signing").await;
    inst.conf_client(&node).fetch().await.unwrap();
    step(&mut inst, "activate", "conf-signing").await;
    inst.conf_client(&node).fetch().await.unwrap();
    step(&mut inst, "retire", "conf-signing").await;
    inst.conf_client(&node).fetch().await.unwrap();
    // A new TSA key: configurations list its certificate after activation.
    step(&mut inst, "add", "tsa").await;
    let tsa = step(&mut inst, "activate", "tsa").await;
    let conf = inst.conf_client(&node).fetch().await.unwrap();
    let listed = &conf.conf.timestamping_authorities[0].cert;
    assert_eq!(
        lintas_certs::hex(&lintas_certs::sha256(listed)),
        tsa["cert_sha256"]
    );
    refused(&inst, "retire", "ca", "TLS certificate");
    // A new TLS certificate for the same hosts, from the new CA.
    let old_tls = std::fs::read(inst.root.join("registry/tls.crt.pem")).unwrap();
    step(&mut inst, "add", "tls").await;
    step(&mut inst, "activate", "tls").await;
    let tls = lintas_certs::files::read_cert(&inst.root.join("registry/tls.crt.pem")).unwrap();
    assert_ne!(
        std::fs::read(inst.root.join("registry/tls.crt.pem")).unwrap(),
        old_tls
    );
    let tls = kept
        .verify(&tls, Role::Registry, SystemTime::now())
        .unwrap();
    assert!(
        tls.hosts().contains(&"127.0.0.1".to_owned()),
        "{:?}",
        tls.hosts()
    );
    refused(&inst, "retire", "tls", "not in the anchor");

    // The first server still holds the old CA's certificates only, and is named.
    refused(&inst, "retire", "ca", PROVIDER);
    let renewed = node.renew().await.unwrap();
    assert_eq!(renewed.state, "approved", "{renewed:?}");
    // Retired while the registry runs (it reads the configuration published now);
    // the next start announces the anchor with the new CA alone.
    let retired = run(
        lintas_cmd(&["registry", "keys", "retire", "ca", "--json", "--config"])
            .arg(inst.root.join("registry/registry.toml")),
    );
    assert!(retired.contains("\"retire\""), "{retired}");
    inst.stop().await;
    start_again(&mut inst).await;
    inst.conf_client(&node).fetch().await.unwrap();
    assert_eq!(held().ca_certs, vec![new_ca.clone()]);
    assert_eq!(admin_cas(), vec![new_ca]);
    // The administrator's tools still reach the registry, over its new TLS certificate.
    inst.admin()
        .list_servers(lintas_proto::registry::v1::ListServersRequest::default())
        .await
        .unwrap();
}
