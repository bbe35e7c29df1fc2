//! The SQL adapter on SQLite: queries, conversions, refusals, timeouts and bad mappings.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::call;
use lintas_adapter::{Adapter, Backend};
use lintas_adapter_sql::build;
use prost_reflect::Value;
use tonic::Code;

const PROTO: &str = r#"syntax = "proto3"; package t;
service S {
  rpc Satu(Req) returns (Orang);
  rpc Banyak(Req) returns (Daftar);
  rpc Tambah(Baru) returns (Jumlah);
}
message Req { string kota = 1; int32 umur_min = 2; }
message Orang { string nama = 1; int32 umur = 2; bool aktif = 3; double tinggi = 4; bytes foto = 5; }
message Daftar { repeated Orang orang = 1; }
message Baru { string nama = 1; int32 umur = 2; }
message Jumlah { int64 n = 1; }
"#;

const SCHEMA: &str = "CREATE TABLE orang (nama TEXT NOT NULL, umur INTEGER CHECK (umur >= 0), \
    kota TEXT, aktif BOOLEAN, tinggi REAL, foto BLOB, catatan TEXT);
    INSERT INTO orang VALUES ('Siti', 38, 'Jakarta', TRUE, 1.6, x'0102', '42');
    INSERT INTO orang VALUES ('Agus', 40, 'Jakarta', FALSE, NULL, NULL, 'empat puluh');
    INSERT INTO orang VALUES ('Budi', 33, 'Bandung', TRUE, 1.7, NULL, NULL);";

/// An adapter configuration over a fresh SQLite database, with `methods` as its
/// `[sql.methods.*]` tables.
fn configure(dir: &Path, methods: &str) -> PathBuf {
    std::fs::write(dir.join("t.proto"), PROTO).unwrap();
    let db = dir.join("t.db");
    if !db.exists() {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(SCHEMA)
            .unwrap();
    }
    let config = dir.join(format!("a{}.toml", methods.len()));
    std::fs::write(
        &config,
        format!(
            "[adapter]\nlisten = \"127.0.0.1:0\"\nproto = \"t.proto\"\nservice = \"t.S\"\n\
             [sql]\ndatabase = \"sqlite:t.db\"\ntimeout_ms = 200\n{methods}"
        ),
    )
    .unwrap();
    config
}

const GOOD: &str = r#"
[sql.methods.Satu]
query = "SELECT nama, umur, aktif, tinggi, foto FROM orang WHERE kota = :kota AND umur >= :umur_min"
[sql.methods.Banyak]
query = "SELECT nama, umur FROM orang WHERE kota = :kota ORDER BY nama"
rows = "orang"
[sql.methods.Tambah]
query = "INSERT INTO orang (nama, umur) VALUES (:nama, :umur)"
affected = "n"
"#;

fn load(dir: &Path, methods: &str) -> Result<(Adapter, Arc<dyn Backend>), String> {
    let adapter = lintas_adapter::load(&configure(dir, methods)).map_err(|e| e.to_string())?;
    let lintas_adapter::BackendSection::Sql(t) = &adapter.backend else {
        panic!("not SQL")
    };
    let backend = build(&adapter, t.clone()).map_err(|e| e.to_string())?;
    Ok((adapter, backend))
}

#[tokio::test]
async fn queries_fill_messages_by_column_names_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = load(dir.path(), GOOD).unwrap();
    let kota = |k: &str| ("kota", Value::String(k.into()));

    let agus = call(
        &a,
        &b,
        "Satu",
        &[kota("Jakarta"), ("umur_min", Value::I32(39))],
    )
    .await
    .unwrap();
    assert_eq!(
        agus.get_field_by_name("nama").unwrap().as_str(),
        Some("Agus")
    );
    assert_eq!(
        agus.get_field_by_name("aktif").unwrap().as_bool(),
        Some(false)
    );
    // NULL leaves a field unset.
    assert!(!agus.has_field_by_name("tinggi"));

    let budi = call(&a, &b, "Satu", &[kota("Bandung")]).await.unwrap();
    assert_eq!(budi.get_field_by_name("umur").unwrap().as_i32(), Some(33));
    assert_eq!(
        budi.get_field_by_name("tinggi").unwrap().as_f64(),
        Some(1.7)
    );

    let none = call(&a, &b, "Satu", &[kota("Medan")]).await.unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    let two = call(&a, &b, "Satu", &[kota("Jakarta")]).await.unwrap_err();
    assert_eq!(two.code(), Code::Internal);
    assert!(
        two.message()
            .contains("returned 2 rows where one was expected"),
        "{two:?}"
    );

    let list = call(&a, &b, "Banyak", &[kota("Jakarta")]).await.unwrap();
    let names: Vec<String> = list
        .get_field_by_name("orang")
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .map(|o| {
            o.as_message()
                .unwrap()
                .get_field_by_name("nama")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["Agus", "Siti"]);

    // A value is never spliced into the text: quotes are data.
    let quoted = call(&a, &b, "Banyak", &[kota("x' OR '1'='1")])
        .await
        .unwrap();
    assert!(
        quoted
            .get_field_by_name("orang")
            .unwrap()
            .as_list()
            .unwrap()
            .is_empty()
    );

    let added = call(
        &a,
        &b,
        "Tambah",
        &[
            ("nama", Value::String("Dewi".into())),
            ("umur", Value::I32(12)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(added.get_field_by_name("n").unwrap().as_i64(), Some(1));
    // A constraint the database enforces is the caller's failed precondition.
    let refused = call(
        &a,
        &b,
        "Tambah",
        &[
            ("nama", Value::String("X".into())),
            ("umur", Value::I32(-1)),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("CHECK constraint failed"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn columns_that_do_not_fit_and_slow_queries_are_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = load(
        dir.path(),
        r#"
[sql.methods.Satu]
query = "SELECT nama, catatan AS umur FROM orang WHERE kota = :kota"
[sql.methods.Banyak]
query = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT nama FROM orang, n WHERE kota = :kota AND i > 1000000000"
rows = "orang"
[sql.methods.Tambah]
query = "SELECT umur AS n FROM orang WHERE nama = :nama AND umur = :umur"
"#,
    )
    .unwrap();
    // NULL leaves the field unset; two rows where one is expected are refused.
    let siti = call(&a, &b, "Satu", &[("kota", Value::String("Bandung".into()))])
        .await
        .unwrap();
    assert!(!siti.has_field_by_name("umur"));
    let wrong = call(&a, &b, "Satu", &[("kota", Value::String("Jakarta".into()))])
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Internal);
    assert!(wrong.message().contains("returned 2 rows"), "{wrong:?}");
    let slow = call(
        &a,
        &b,
        "Banyak",
        &[("kota", Value::String("Jakarta".into()))],
    )
    .await
    .unwrap_err();
    assert_eq!(slow.code(), Code::DeadlineExceeded, "{slow:?}");
    assert!(
        slow.message().contains("did not answer within 200 ms"),
        "{slow:?}"
    );
    // Callers that give up before the database answers take no connection with them:
    // more of them than the pool holds, then an ordinary call.
    for _ in 0..6 {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            call(
                &a,
                &b,
                "Banyak",
                &[("kota", Value::String("Jakarta".into()))],
            ),
        )
        .await;
        assert!(gave_up.is_err());
    }
    // The pool still works after interrupted queries.
    let n = call(
        &a,
        &b,
        "Tambah",
        &[
            ("nama", Value::String("Budi".into())),
            ("umur", Value::I32(33)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(n.get_field_by_name("n").unwrap().as_i64(), Some(33));

    let (a, b) = load(
        dir.path(),
        r#"
[sql.methods.Satu]
query = "SELECT nama, catatan AS umur FROM orang WHERE nama = 'Agus' AND kota = :kota"
[sql.methods.Banyak]
query = "SELECT umur AS nama FROM orang WHERE kota = :kota"
rows = "orang"
[sql.methods.Tambah]
query = "DELETE FROM orang WHERE nama = :nama AND umur = :umur"
affected = "n"
"#,
    )
    .unwrap();
    let text = call(&a, &b, "Satu", &[("kota", Value::String("Jakarta".into()))])
        .await
        .unwrap_err();
    assert_eq!(
        text.message(),
        "the database's answer does not fit t.Orang: column umur: field umur: 'empat puluh' is not a 32-bit integer"
    );
    let int_as_text = call(
        &a,
        &b,
        "Banyak",
        &[("kota", Value::String("Bandung".into()))],
    )
    .await
    .unwrap_err();
    assert!(
        int_as_text
            .message()
            .contains("column nama holds an integer, which does not fit field nama"),
        "{int_as_text:?}"
    );
}

#[test]
fn bad_mappings_stop_the_adapter_with_the_place_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            GOOD.replace(
                "SELECT nama, umur FROM orang",
                "SELECT nama, umur, kota FROM orang",
            ),
            "[sql.methods.Banyak]: column kota has no field in t.Orang",
        ),
        (
            GOOD.replace(
                "FROM orang WHERE kota = :kota ORDER",
                "FROM murid WHERE kota = :kota ORDER",
            ),
            "[sql.methods.Banyak]: the query does not prepare: no such table: murid",
        ),
        (
            GOOD.replace(":umur_min", ":usia"),
            "[sql.methods.Satu]: the query names :usia, but t.Req has no field usia (it has: kota, umur_min)",
        ),
        (
            GOOD.replace("rows = \"orang\"", "rows = \"nama\""),
            "t.Daftar has no field nama",
        ),
        (
            GOOD.replace("affected = \"n\"", "rows = \"n\""),
            "rows field n must be a repeated message field",
        ),
        (
            GOOD.replace(
                "INSERT INTO orang (nama, umur) VALUES (:nama, :umur)",
                "SELECT nama AS n FROM orang WHERE nama = :nama AND umur = :umur",
            ),
            "[sql.methods.Tambah]: the query returns rows; map them with rows, not affected",
        ),
        (
            GOOD.replace("kota = :kota AND", "kota = ? AND"),
            "positional parameter",
        ),
        (
            GOOD.replace(
                "query = \"SELECT nama, umur FROM",
                "qeury = \"SELECT nama, umur FROM",
            ),
            "unknown field `qeury`",
        ),
    ];
    for (methods, want) in cases {
        let err = load(dir.path(), &methods).map(|_| ()).unwrap_err();
        assert!(err.contains(want), "{want}: {err}");
    }
    let config = configure(dir.path(), GOOD);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("sqlite:t.db", "sqlite:tidak-ada.db"),
    )
    .unwrap();
    let adapter = lintas_adapter::load(&config).unwrap();
    let lintas_adapter::BackendSection::Sql(t) = &adapter.backend else {
        panic!()
    };
    let err = build(&adapter, t.clone())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tidak-ada.db: no such file"), "{err}");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("sqlite:tidak-ada.db", "mysql://x"),
    )
    .unwrap();
    let adapter = lintas_adapter::load(&config).unwrap();
    let lintas_adapter::BackendSection::Sql(t) = &adapter.backend else {
        panic!()
    };
    let err = build(&adapter, t.clone())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("must start with sqlite: or postgres://"),
        "{err}"
    );
}
