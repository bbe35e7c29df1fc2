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
    let grpc = TcpListener::bind(inst.config.grpc_listen).await.unwrap();
    let http = TcpListener::bind(inst.config.http_listen).await.unwrap();
    inst.serve(grpc, http).await;
    serde_json::from_str(&out).unwrap()
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
    // The old CA cannot be retired while the registry's own certificates come from it.
    refused(&inst, "retire", "ca", "issued by a CA being retired");
    // A new TSA key: configurations list its certificate after activation.
    step(&mut inst, "add", "tsa").await;
    let tsa = step(&mut inst, "activate", "tsa").await;
    let conf = inst.conf_client(&node).fetch().await.unwrap();
    let listed = &conf.conf.timestamping_authorities[0].cert;
    assert_eq!(
        lintas_certs::hex(&lintas_certs::sha256(listed)),
        tsa["cert_sha256"]
    );
}
