//! `lintas registry backup` and `lintas registry restore`, by the command line: a backup
//! read from the running registry restores as a new node, but only above the highest
//! configuration serial the instance has published, which servers then accept.

use super::*;

const PASSPHRASE: &str = "kunci cadangan registri";

fn lintas(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lintas"));
    cmd.args(args);
    cmd
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restores_above_the_serial_the_instance_published() {
    let mut inst = Instance::start().await;
    let node = inst.node(PROVIDER, &[PROVIDER_CLIENT]);
    inst.enrol(&node).await;
    let secret = inst.root.join("passphrase");
    std::fs::write(&secret, PASSPHRASE).unwrap();
    let config = inst.root.join("registry/registry.toml");
    let archive = inst.root.join("registry.lbk");
    let out = lintas(&["registry", "backup", "--json", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&archive)
        .arg("--passphrase-file")
        .arg(&secret)
        .output()
        .unwrap();
    let backup = json(&out);
    assert_eq!(backup["online"], true, "read over the admin API: {backup}");
    let in_backup = backup["conf_serial"].as_u64().unwrap();

    // The instance goes on: a group, so a later serial that a server now holds.
    inst.admin()
        .add_group(pb::AddGroupRequest {
            code: "bansos".into(),
            description: "social assistance".into(),
        })
        .await
        .unwrap();
    let held = inst.conf_client(&node).fetch().await.unwrap().serial();
    assert!(held > in_backup);

    let restored = inst.root.join("restored/registry.toml");
    let restore = |floor: Option<u64>| {
        let mut cmd = lintas(&["registry", "restore", "--json", "--archive"]);
        cmd.arg(&archive)
            .arg("--anchor")
            .arg(inst.anchor())
            .arg("--config")
            .arg(&restored)
            .arg("--passphrase-file")
            .arg(&secret);
        if let Some(f) = floor {
            cmd.arg("--serial-floor").arg(f.to_string());
        }
        cmd.output().unwrap()
    };
    // The running instance publishes a higher serial than the backup holds: refused,
    // explained, nothing written.
    let refused = restore(None);
    assert_eq!(refused.status.code(), Some(5));
    let said = String::from_utf8_lossy(&refused.stderr);
    for words in [
        &format!("holds configuration serial {in_backup}"),
        &format!("has published serial {held} since"),
        &format!("--serial-floor {held}"),
    ] {
        assert!(said.contains(words.as_str()), "{words}: {said}");
    }
    assert!(!restored.exists());
    let below = restore(Some(held - 1));
    assert_eq!(
        below.status.code(),
        Some(5),
        "a floor below what is published"
    );

    // Named knowingly, it restores and publishes above it.
    let report = json(&restore(Some(held)));
    assert_eq!(report["conf_serial_published"], held);
    assert_eq!(report["conf_serial"], held + 1);
    assert_eq!(report["store"], "embedded");

    // The restored node serves in the old one's place: the server takes its
    // configuration (no rollback) and is still in it; the group made after the backup
    // is not.
    inst.stop().await;
    inst.config = RegistryConfig::load(&restored, std::iter::empty()).unwrap();
    let grpc = TcpListener::bind(inst.config.grpc_listen).await.unwrap();
    let http = TcpListener::bind(inst.config.http_listen).await.unwrap();
    inst.serve(grpc, http).await;
    let conf = inst.conf_client(&node).fetch().await.unwrap();
    assert!(conf.serial() > held, "{} after {held}", conf.serial());
    node.check_listed(&conf).unwrap();
    assert!(conf.conf.groups.is_empty(), "{:?}", conf.conf.groups);
    let servers = inst
        .admin()
        .list_servers(pb::ListServersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 1);

    // The same archive restores into PostgreSQL (the configuration's `database`,
    // overridden here as a unit file's environment would), but only into an empty
    // database; now above what the restored registry serves.
    let serving = conf.serial();
    let pg = lintas_testkit::pg::Server::start();
    pg.load("CREATE DATABASE restored").await;
    let database = pg.url().replace("/postgres", "/restored");
    let into_pg = |dir: &str| {
        lintas(&["registry", "restore", "--json", "--serial-floor"])
            .arg(serving.to_string())
            .arg("--archive")
            .arg(&archive)
            .arg("--anchor")
            .arg(inst.root.join("registry/anchor.toml"))
            .arg("--config")
            .arg(inst.root.join(dir).join("registry.toml"))
            .arg("--passphrase-file")
            .arg(&secret)
            .env("LINTAS_REGISTRY_DATABASE", &database)
            .output()
            .unwrap()
    };
    let report = json(&into_pg("pg1"));
    assert_eq!(report["store"], "postgresql");
    assert!(report["records"].as_u64().unwrap() > 0);
    let again = into_pg("pg2");
    assert_eq!(again.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("restore needs an empty one"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A wrong passphrase is refused as such.
    let other = inst.root.join("other/registry.toml");
    let wrong = inst.root.join("wrong");
    std::fs::write(&wrong, "not the passphrase").unwrap();
    let out = lintas(&["registry", "restore", "--archive"])
        .arg(&archive)
        .arg("--anchor")
        .arg(inst.root.join("registry/anchor.toml"))
        .arg("--config")
        .arg(&other)
        .arg("--passphrase-file")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passphrase is wrong"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
