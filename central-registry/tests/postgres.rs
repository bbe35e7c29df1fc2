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
