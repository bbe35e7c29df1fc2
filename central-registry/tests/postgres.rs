//! The registry's PostgreSQL store against a real PostgreSQL server that the test starts
//! (initdb and pg_ctl must be installed; `.ci/run` installs them): the same contract as
//! the embedded store, with two connections racing as two registry nodes would.

use std::sync::Arc;

use lintas_registry::store::{PostgresStore, RegistryStore, contract};
use lintas_testkit::pg;

/// A new, empty database on `server`, and its URL.
async fn database(server: &pg::Server, name: &str) -> String {
    server.load(&format!("CREATE DATABASE {name}")).await;
    server.url().replace("/postgres", &format!("/{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_contract_with_two_nodes_racing() {
    let server = pg::Server::start();

    let url = database(&server, "single").await;
    let store = tokio::task::spawn_blocking(move || {
        let store = PostgresStore::open(&url).unwrap();
        contract::check(&store);
        // Opened again, as a restarted node: the schema is kept, not applied twice.
        drop(store);
        let again = PostgresStore::open(&url).unwrap();
        assert_eq!(again.get("member/a").unwrap().unwrap().version, 2);
        url
    })
    .await
    .unwrap();

    let shared = database(&server, "shared").await;
    tokio::task::spawn_blocking(move || {
        let a: Arc<dyn RegistryStore> = Arc::new(PostgresStore::open(&shared).unwrap());
        let b: Arc<dyn RegistryStore> = Arc::new(PostgresStore::open(&shared).unwrap());
        contract::check_shared(a, b);
    })
    .await
    .unwrap();

    // A database from a newer lintas is refused, not written to.
    let (client, connection) = tokio_postgres::connect(&store, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("INSERT INTO lintas_schema (version) VALUES (99)", &[])
        .await
        .unwrap();
    let newer = tokio::task::spawn_blocking(move || PostgresStore::open(&store).err())
        .await
        .unwrap()
        .expect("a newer schema is refused");
    assert!(
        newer.to_string().contains("newer than this lintas knows"),
        "{newer}"
    );

    // An unreachable database is reported without its password.
    let down = tokio::task::spawn_blocking(|| {
        PostgresStore::open("postgres://lintas:s3cret@127.0.0.1:1/registry").err()
    })
    .await
    .unwrap()
    .expect("nothing listens on port 1");
    let shown = down.to_string();
    assert!(
        !shown.contains("s3cret") && shown.contains("lintas:***@"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_on_postgresql_recovers_from_a_database_outage_without_a_restart() {
    let server = pg::Server::start();
    let url = database(&server, "outage").await;
    let root = tempfile::tempdir().unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (grpc, http) = (port(), port());
    let dir = root.path().join("registry");
    let registry = tokio::task::spawn_blocking(move || {
        let clock: Arc<dyn lintas_globalconf::Clock> = Arc::new(lintas_globalconf::SystemClock);
        let report = lintas_registry::init(
            &lintas_registry::InitOptions {
                instance: "ID".parse().unwrap(),
                dir,
                grpc_listen: grpc,
                http_listen: http,
                public_host: "127.0.0.1".into(),
                admin_name: "admin".parse().unwrap(),
                database: url,
                other_nodes: Vec::new(),
                pkcs11: None,
            },
            clock.clone(),
        )
        .unwrap();
        let config =
            lintas_registry::RegistryConfig::load(&report.config_path, std::iter::empty()).unwrap();
        lintas_registry::open(&config, clock).unwrap()
    })
    .await
    .unwrap();
    let reg = registry.clone();
    let before = tokio::task::spawn_blocking(move || reg.add_member("admin", "ID/GOV/A", "A"))
        .await
        .unwrap()
        .unwrap();

    // The database goes away: the change fails, and changes are refused meanwhile.
    server.stop();
    let reg = registry.clone();
    let (failed, refused, still_down) = tokio::task::spawn_blocking(move || {
        (
            reg.add_member("admin", "ID/GOV/B", "B").is_err(),
            reg.add_member("admin", "ID/GOV/C", "C")
                .unwrap_err()
                .to_string(),
            reg.sync().is_err(),
        )
    })
    .await
    .unwrap();
    assert!(failed);
    assert!(refused.contains("until it answers again"), "{refused}");
    assert!(still_down && registry.is_poisoned());

    // It is back: the next sync reloads what the database holds and changes go on.
    server.resume();
    let reg = registry.clone();
    let after = tokio::task::spawn_blocking(move || {
        assert!(reg.sync().unwrap(), "the state was reloaded");
        reg.add_member("admin", "ID/GOV/D", "D")
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!registry.is_poisoned());
    assert!(after > before);
    let ids: Vec<String> = registry
        .members()
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    assert!(
        ids.contains(&"ID/GOV/A".into()) && ids.contains(&"ID/GOV/D".into()),
        "{ids:?}"
    );
}
