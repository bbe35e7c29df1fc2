//! The SQL adapter against a real PostgreSQL server, started for the test in a temporary
//! directory on a loopback port (initdb and pg_ctl must be installed; `.ci/run` installs
//! them). Runs the shipped school-database example on PostgreSQL.

mod common;
use lintas_testkit::pg;

use std::path::{Path, PathBuf};

use common::call;
use lintas_adapter::BackendSection;
use prost_reflect::Value;
use tonic::Code;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[tokio::test]
async fn the_school_database_example_runs_on_postgresql() {
    let server = pg::Server::start();
    server.load(lintas_examples::sekolah_db::SCRIPT).await;

    let dir = tempfile::tempdir().unwrap();
    let (adapter, backend) = school_at(dir.path(), &server.url());
    let backend = backend.unwrap();
    let config = dir.path().join("dapodik.toml");
    let dewi_nik = [("nik", Value::String("3174014107120003".into()))];

    let dewi = call(&adapter, &backend, "CariSiswa", &dewi_nik)
        .await
        .unwrap();
    assert_eq!(
        dewi.get_field_by_name("nama").unwrap().as_str(),
        Some("Dewi Rahayu")
    );
    assert_eq!(
        dewi.get_field_by_name("sekolah").unwrap().as_str(),
        Some("SMP Negeri 109 Jakarta")
    );
    assert_eq!(dewi.get_field_by_name("tingkat").unwrap().as_i32(), Some(8));
    assert_eq!(
        dewi.get_field_by_name("aktif").unwrap().as_bool(),
        Some(true)
    );

    let pupils = |aktif_saja: bool| {
        let (adapter, backend) = (&adapter, &backend);
        async move {
            let list = call(
                adapter,
                backend,
                "DaftarSiswa",
                &[
                    ("npsn", Value::String("20100002".into())),
                    ("aktif_saja", Value::Bool(aktif_saja)),
                ],
            )
            .await
            .unwrap();
            list.get_field_by_name("siswa")
                .unwrap()
                .as_list()
                .unwrap()
                .len()
        }
    };
    assert_eq!(pupils(true).await, 1);
    assert_eq!(pupils(false).await, 2);

    let none = call(
        &adapter,
        &backend,
        "CariSiswa",
        &[("nik", Value::String("0".into()))],
    )
    .await
    .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);

    // A slow query is cancelled at the timeout; a query beside it is not.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("timeout_ms = 5000", "timeout_ms = 300")
            .replacen(
                "WHERE s.nik = :nik",
                "WHERE s.nik = :nik AND (SELECT count(*) FROM pg_sleep(2)) = 1",
                1,
            ),
    )
    .unwrap();
    let slow_adapter = lintas_adapter::load(&config).unwrap();
    let BackendSection::Sql(t) = &slow_adapter.backend else {
        panic!()
    };
    let slow_backend = lintas_adapter_sql::build(&slow_adapter, t.clone()).unwrap();
    let aktif = [
        ("npsn", Value::String("20100002".into())),
        ("aktif_saja", Value::Bool(true)),
    ];
    let (slow, quick) = tokio::join!(
        call(&slow_adapter, &slow_backend, "CariSiswa", &dewi_nik),
        call(&slow_adapter, &slow_backend, "DaftarSiswa", &aktif),
    );
    let slow = slow.unwrap_err();
    assert_eq!(slow.code(), Code::DeadlineExceeded, "{slow:?}");
    assert!(
        slow.message().contains("did not answer within 300 ms"),
        "{slow:?}"
    );
    assert!(quick.is_ok(), "{quick:?}");

    // The server goes away: the caller hears the database is unreachable.
    server.stop();
    let down = call(&adapter, &backend, "CariSiswa", &dewi_nik)
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    let again = call(&adapter, &backend, "CariSiswa", &dewi_nik)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unavailable, "{again:?}");
    assert!(again.message().contains("unreachable"), "{again:?}");

    // It comes back: the next call connects again.
    server.resume();
    let back = call(&adapter, &backend, "CariSiswa", &dewi_nik)
        .await
        .unwrap();
    assert_eq!(
        back.get_field_by_name("nama").unwrap().as_str(),
        Some("Dewi Rahayu")
    );
}

/// The school example pointed at `database`, written to `dir/dapodik.toml`: the adapter,
/// and its backend or the error building it.
fn school_at(
    dir: &Path,
    database: &str,
) -> (
    lintas_adapter::Adapter,
    Result<std::sync::Arc<dyn lintas_adapter::Backend>, String>,
) {
    let config = dir.join("dapodik.toml");
    let text = std::fs::read_to_string(examples().join("adapters/dapodik-sql.toml"))
        .unwrap()
        .replace("sqlite:../sql/sekolah.db", database)
        .replace(
            "[\"../proto\"]",
            &format!("[{:?}]", examples().join("proto").display().to_string()),
        );
    std::fs::write(&config, text).unwrap();
    let adapter = lintas_adapter::load(&config).unwrap();
    let BackendSection::Sql(t) = &adapter.backend else {
        panic!()
    };
    let backend = lintas_adapter_sql::build(&adapter, t.clone()).map_err(|e| e.to_string());
    (adapter, backend)
}

#[tokio::test]
async fn database_passwords_never_appear_in_errors() {
    const SECRET: &str = "Sup3r-S3cret";
    let dir = tempfile::tempdir().unwrap();
    // A URL that does not parse: the message names it without the password.
    let (_, built) = school_at(
        dir.path(),
        &format!("postgres://lintas:{SECRET}@127.0.0.1:notaport/sekolah"),
    );
    let err = built.err().expect("a bad port is refused");
    assert!(err.contains("lintas:***@127.0.0.1"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    // A server that is not there: the call fails, without the password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (adapter, built) = school_at(
        dir.path(),
        &format!("postgres://lintas:{SECRET}@127.0.0.1:{port}/sekolah?password={SECRET}"),
    );
    let backend = built.unwrap();
    let status = call(
        &adapter,
        &backend,
        "CariSiswa",
        &[("nik", Value::String("3174014107120003".into()))],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!format!("{status:?}").contains(SECRET), "{status:?}");
}
