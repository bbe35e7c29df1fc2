//! `lintas ss backup` and `lintas ss restore`: a backup taken while the server serves
//! restores onto a fresh directory whose log verifies, and an older backup than what the
//! witness has seen is refused and explained.

use super::*;
use lintas_backup::Passphrase;

const PASSPHRASE: &str = "kunci cadangan kemendagri";

fn pass() -> Passphrase {
    Passphrase::new(PASSPHRASE.into()).unwrap()
}

async fn backup_of(net: &Network, out: &Path) -> lintas_ss::backup::BackupReport {
    let config = net.provider_paths.0.join("ss.toml");
    lintas_ss::backup::backup(
        &config,
        SsConfig::load(&config, []).unwrap(),
        out,
        &pass(),
        lintas_ss::errors::now_ms(&*net.inst.clock),
    )
    .await
    .unwrap()
}

async fn restore_to(
    net: &Network,
    archive: &Path,
    config: &Path,
    passphrase: &str,
) -> Result<lintas_ss::backup::RestoreReport, SsError> {
    lintas_ss::backup::restore(
        archive,
        config,
        &net.inst.anchor(),
        &Passphrase::for_reading(passphrase.into()),
        Vec::new(),
        net.inst.clock.clone(),
    )
    .await
}

/// Calls, then a checkpoint the witness cosigns.
async fn calls_witnessed(net: &Network, ids: &[&str]) {
    for id in ids {
        cari_with_id(net, id).await;
    }
    net.provider.evidence.checkpoint_now().unwrap().unwrap();
    net.provider.evidence.witness_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_and_an_older_one_is_refused() {
    let net = network().await;
    let dir = tempfile::tempdir().unwrap();
    calls_witnessed(&net, &["cadangan-1", "cadangan-2"]).await;
    net.provider.evidence.timestamp_now().await.unwrap();

    let old = dir.path().join("old.lbk");
    let report = backup_of(&net, &old).await;
    assert!(
        report.online,
        "the state store was read over the admin socket"
    );
    assert_eq!(report.server_id, PROVIDER);
    let bytes = std::fs::read(&old).unwrap();
    assert!(
        !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
        "keys are not in the clear"
    );
    // A backup never overwrites.
    let config = net.provider_paths.0.join("ss.toml");
    let again = lintas_ss::backup::backup(
        &config,
        SsConfig::load(&config, []).unwrap(),
        &old,
        &pass(),
        0,
    )
    .await
    .unwrap_err();
    assert!(again.to_string().contains("never overwrites"), "{again}");

    // The log goes on, and the witness sees more of it than the old backup holds.
    calls_witnessed(&net, &["cadangan-3"]).await;
    let target = dir.path().join("old-node");
    let err = restore_to(&net, &old, &target.join("ss.toml"), PASSPHRASE)
        .await
        .unwrap_err();
    assert!(matches!(err, SsError::Rollback(_)), "{err}");
    let said = err.to_string();
    for words in [
        "records were lost or changed after it was witnessed",
        "Restore a newer backup",
        "the server would refuse to start",
    ] {
        assert!(said.contains(words), "{words}: {said}");
    }
    assert!(!target.exists(), "nothing is written by a refused restore");

    // A wrong passphrase is named as such.
    let err = restore_to(
        &net,
        &old,
        &target.join("ss.toml"),
        "not the passphrase at all",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("passphrase is wrong"), "{err}");

    // Checked against another instance's anchor, the archive's signer is refused: the
    // anchor inside the archive proves nothing.
    let other = Instance::start().await;
    let err = lintas_ss::backup::restore(
        &old,
        &target.join("ss.toml"),
        &other.anchor(),
        &pass(),
        Vec::new(),
        net.inst.clock.clone(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not verify against the anchor given"),
        "{err}"
    );
    assert!(!target.exists());

    // Events and subscriptions are state too.
    let topic = "kependudukan.v1.StatusPenduduk";
    let subscription = lintas_ss::events::SubKey {
        publisher: PROVIDER_CLIENT.into(),
        topic: topic.into(),
        subscriber: CONSUMER_CLIENT.into(),
    };
    for what in [b"PINDAH".as_slice(), b"WAFAT"] {
        net.provider
            .events()
            .publish(PROVIDER_CLIENT, topic, "k", what.to_vec(), 1)
            .unwrap();
    }
    net.provider
        .events()
        .subscribe(&subscription, true)
        .unwrap();

    // A new backup, by the command line, restores: keys, services and grants, events,
    // and a log that verifies.
    let new = dir.path().join("new.lbk");
    let secret = dir.path().join("passphrase");
    std::fs::write(&secret, format!("{PASSPHRASE}\n")).unwrap();
    let out = super::binary::lintas_cmd(&["ss", "backup", "--json", "--config"])
        .arg(net.provider_paths.0.join("ss.toml"))
        .arg("--out")
        .arg(&new)
        .arg("--passphrase-file")
        .arg(&secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["online"], true);
    assert_eq!(said["server_id"], PROVIDER);
    // The passphrase never appears in what it prints.
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSPHRASE));
    let again = super::binary::lintas_cmd(&["ss", "backup", "--config"])
        .arg(net.provider_paths.0.join("ss.toml"))
        .arg("--out")
        .arg(&new)
        .arg("--passphrase-file")
        .arg(&secret)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(5),
        "an existing archive is refused"
    );
    let restored_config = target.join("ss.toml");
    let r = restore_to(&net, &new, &restored_config, PASSPHRASE)
        .await
        .unwrap();
    assert_eq!(r.server_id, PROVIDER);
    assert_eq!(r.data_dir, target);
    let witnessed = r.witnessed_records.expect("the witness was asked");
    assert!(r.log_records >= witnessed && witnessed > 0, "{r:?}");
    assert!(r.conf_serial.is_some());
    for key in ["tls.key.pem", "sign.key.pem", "log.key.pem"] {
        assert_eq!(
            std::fs::read(target.join(key)).unwrap(),
            std::fs::read(net.provider_paths.0.join(key)).unwrap(),
            "{key}"
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(target.join("sign.key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let node = Node::open(SsConfig::load(&restored_config, []).unwrap()).unwrap();
    let server = SecurityServer::open(node, net.inst.clock.clone()).unwrap();
    assert!(
        server
            .access
            .services()
            .iter()
            .any(|s| s.service.to_string() == SERVICE),
        "services are restored"
    );
    let events = server.events();
    assert_eq!(
        events
            .event(PROVIDER_CLIENT, topic, 2)
            .unwrap()
            .map(|e| e.payload),
        Some(b"WAFAT".to_vec()),
        "events are restored"
    );
    assert_eq!(events.place(&subscription).unwrap().unwrap().next, 1);
    assert_eq!(
        events
            .publish(PROVIDER_CLIENT, topic, "k", b"LAHIR".to_vec(), 2)
            .unwrap(),
        3,
        "a restored topic numbers on"
    );
    let bundle = server
        .evidence
        .export(&lintas_proto::ss::v1::EvidenceQuery {
            message_id: "cadangan-3".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let anchor = lintas_globalconf::Anchor::load(&net.inst.anchor()).unwrap();
    let verdict = lintas_audit::verify_bytes(&bundle.encode_to_vec(), &anchor);
    assert!(verdict.verified, "{:#?}", verdict.failures);

    // Not over a node that exists.
    let err = restore_to(&net, &new, &restored_config, PASSPHRASE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
}
